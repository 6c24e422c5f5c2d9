// libFuzzer target: everything Kiln reads from Replicate's answers (a prediction, a problem
// document, a page of the prediction list, a create answer, wait hints).
#include "protocol.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kiln::replicate;
  std::string_view body(reinterpret_cast<const char*>(data), size);
  (void)parse_prediction(body);
  Problem p = parse_problem(body);
  (void)retry_after_ms(p, body.substr(0, 40));
  (void)classify_create_answer(201, body);
  (void)classify_create_answer(504, body);
  (void)find_lost_prediction(body, ModelRef{}, "{}");
  (void)parse_iso_time(body);
  (void)parse_http_date(body);
  (void)base_url_problem(body);
  return 0;
}
