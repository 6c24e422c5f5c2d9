// libFuzzer target: image sniffing and decoding of whatever a server delivers: never a crash,
// never an allocation past the pixel limit.
#include "image.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)kiln::host::probe_image(bytes);
  (void)kiln::host::decode_image(bytes);
  return 0;
}
