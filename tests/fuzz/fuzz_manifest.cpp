// libFuzzer target: the manifest parser (whole file, then every asset read again on its own as
// a build does), differential against toml++: text toml++ reads as a table must never make Kiln
// crash, and text toml++ refuses must never be accepted by Kiln.
#include "fatal.hpp"
#include "manifest.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <toml++/toml.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  bool toml_ok = true;
  try {
    (void)toml::parse(text);
  } catch (const toml::parse_error&) {
    toml_ok = false;
  }
  try {
    kiln::host::Manifest m =
        kiln::host::parse_manifest(text, "/tmp/fuzz/assets.toml", "assets.toml");
    if (!toml_ok)
      __builtin_trap(); // Kiln accepted what is not TOML
    for (size_t i = 0; i < m.size(); ++i)
      (void)m.asset(i);
  } catch (const kiln::host::Fatal&) {
  }
  return 0;
}
