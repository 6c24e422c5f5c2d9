// The `file-size` validator: the encoded file must weigh between `min_bytes` and `max_bytes`.
// Too small usually means a broken or empty image; too large blows a platform's asset budget.
#include <kiln/kiln.hpp>
#include <string>

namespace {

class FileSize : public kiln::Validator {
public:
  explicit FileSize(const kiln::Context& context)
      : m_min(context.options().get_int("min_bytes")),
        m_max(context.options().get_int("max_bytes")) {
    if (m_min < 0 || m_max < 0)
      throw kiln::Error("min_bytes and max_bytes must be zero or more");
    if (m_max && m_max < m_min)
      throw kiln::Error("max_bytes (" + std::to_string(m_max) + ") is below min_bytes (" +
                        std::to_string(m_min) + ")");
  }

  static kiln::OptionSchema options() {
    return {{"min_bytes", "smallest file accepted", KILN_OPTION_INT, "100"},
            {"max_bytes", "largest file accepted; 0 for no limit", KILN_OPTION_INT, "0"}};
  }

  kiln::Verdict validate(const kiln::Asset&, const kiln::ImageFile& file) override {
    int64_t size = int64_t(file.size);
    if (size < m_min)
      return kiln::Verdict::reject("file is " + std::to_string(size) + " bytes, below min_bytes " +
                                   std::to_string(m_min));
    if (m_max && size > m_max)
      return kiln::Verdict::reject("file is " + std::to_string(size) + " bytes, above max_bytes " +
                                   std::to_string(m_max));
    return kiln::Verdict::accept();
  }

private:
  int64_t m_min, m_max;
};

} // namespace

KILN_PLUGIN(FileSize, "file-size", "1.0.0", "Rejects files outside min_bytes..max_bytes")
