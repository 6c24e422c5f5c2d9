// kiln/image_format.hpp — recognising image files and their truncation, for validators.
// Header-only, C++17 standard library only. The host uses the same checks.
#ifndef KILN_IMAGE_FORMAT_HPP
#define KILN_IMAGE_FORMAT_HPP

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln {

// "png", "jpg" or "webp" from the magic bytes; "" when the bytes are none of those.
inline std::string_view detect_format(std::string_view b) {
  if (b.size() >= 8 && b.substr(0, 8) == std::string_view("\x89PNG\r\n\x1a\n", 8))
    return "png";
  if (b.size() >= 3 && b.substr(0, 3) == std::string_view("\xff\xd8\xff", 3))
    return "jpg";
  if (b.size() >= 12 && b.substr(0, 4) == "RIFF" && b.substr(8, 4) == "WEBP")
    return "webp";
  return "";
}

// Why the file is structurally incomplete (PNG without its IEND chunk, JPEG without its
// end-of-image marker, WebP whose RIFF size disagrees with the file), or nullopt when it is
// whole. Lenient decoders paper over such truncations; this does not.
inline std::optional<std::string> structural_problem(std::string_view b) {
  std::string_view format = detect_format(b);
  if (format == "png") {
    static const std::string_view iend("\0\0\0\0IEND\xae\x42\x60\x82", 12);
    if (b.size() < 8 + 12 || b.substr(b.size() - 12) != iend)
      return std::string("PNG file is truncated (no IEND chunk at the end)");
  } else if (format == "jpg") {
    if (b.size() < 4 || b.substr(b.size() - 2) != std::string_view("\xff\xd9", 2))
      return std::string("JPEG file is truncated (no end-of-image marker)");
  } else if (format == "webp") {
    uint32_t declared = 0;
    for (size_t i = 0; i < 4; ++i)
      declared |= uint32_t(uint8_t(b[4 + i])) << (8 * i);
    if (size_t(declared) + 8 != b.size())
      return "WebP file is truncated (its RIFF header says " +
             std::to_string(size_t(declared) + 8) + " bytes, the file has " +
             std::to_string(b.size()) + ")";
  } else {
    return std::string("not a PNG, JPEG or WebP file");
  }
  return std::nullopt;
}

} // namespace kiln

#endif // KILN_IMAGE_FORMAT_HPP
