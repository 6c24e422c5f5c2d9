// An expected-style result for operations that can fail at run time (decode, cache I/O, HTTP),
// carrying the error category the retry layer acts on.
#pragma once

#include <cstdint>
#include <kiln/plugin.h>
#include <string>
#include <utility>
#include <variant>

namespace kiln::host {

struct Fault {
  Fault() = default;
  Fault(kiln_error_category category_, std::string message_, int64_t retry_after_ms_ = -1,
        uint32_t missing_ = 0, std::string download_ = {})
      : category(category_), message(std::move(message_)), retry_after_ms(retry_after_ms_),
        missing(missing_), download(std::move(download_)) {}

  kiln_error_category category = KILN_ERROR_PERMANENT;
  std::string message;
  int64_t retry_after_ms = -1;
  // A validator's rejection: the kiln_image_property bits the image lacks.
  uint32_t missing = 0;
  // The job delivered a file that could not be used as it came: "corrupt" (damaged, truncated:
  // downloading it again may help) or "unsupported" (not an image Kiln reads, or too large: a
  // new prediction of the same model will not do better). Empty for every other failure.
  std::string download;
};

// The report's name for a category: "retryable", "needs_a_person"...
inline const char* category_name(kiln_error_category category) {
  static const char* names[] = {"none",           "retryable",  "permanent",  "needs_a_person",
                                "content_policy", "validation", "interrupted"};
  return category <= KILN_ERROR_INTERRUPTED ? names[category] : "permanent";
}

template <class T> class Result {
public:
  Result(T value) : m_v(std::move(value)) {}
  Result(Fault failure) : m_v(std::move(failure)) {}

  bool ok() const { return m_v.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(m_v); }
  const T& value() const { return std::get<0>(m_v); }
  T& operator*() { return value(); }
  T* operator->() { return &value(); }
  const Fault& error() const { return std::get<1>(m_v); }

private:
  std::variant<T, Fault> m_v;
};

} // namespace kiln::host
