// Calling the built-in plugins from tests as the host calls them: loaded through the real
// loader, called through the C ABI with the structs the engine builds.
#pragma once

#include "image.hpp"
#include "plugins.hpp"

#include <gtest/gtest.h>
#include <memory>
#include <string>
#include <string_view>

namespace kiln::host::test {

// The plugins of the build tree's plugin folder.
struct Builtins {
  Log log{KILN_LOG_ERROR};
  PluginRegistry registry{log};
  Diagnostics diag{"assets.toml", std::make_shared<const std::string>()};

  Builtins() { registry.load_directory(KILN_PLUGIN_BUILD_DIR); }
  // An instance with `settings` (none: the defaults); null, with the reason in `diag`, when the
  // options or create() fail.
  std::unique_ptr<PluginInstance> make(const char* id, const PluginSettings* settings = nullptr) {
    return registry.instantiate(*registry.find(id), settings, diag);
  }
  // The same, failing the test with the loader's message when it cannot be made.
  std::unique_ptr<PluginInstance> must(const char* id, const PluginSettings* settings = nullptr) {
    auto instance = make(id, settings);
    EXPECT_TRUE(instance) << diag.text();
    return instance;
  }
};

struct Validated {
  bool ok;
  std::string reason;
  kiln_error_category category = KILN_ERROR_NONE;
  uint32_t missing = 0; // the kiln_image_property bits the validator said the image lacks
};

// A validator's verdict on the pixels of a lossless file (a PNG decodes to exactly these), without
// the cost of encoding them: for tests that judge thousands of images.
inline Validated validate_pixels(PluginInstance& v, const Image& image) {
  kiln_asset asset{};
  asset.struct_size = sizeof asset;
  asset.format = kiln_cstr("png");
  asset.width = image.width;
  asset.height = image.height;
  kiln_image img = image.raw();
  kiln_image_file file{};
  file.struct_size = sizeof file;
  file.detected_format = kiln_cstr("png");
  file.image = &img;
  kiln_result r;
  kiln_status st = v.plugin().validator()->validate(v.handle(), &asset, &file, &r);
  return {st == KILN_OK, r.message, r.category, r.missing_property};
}

// A validator's verdict on encoded bytes, fully decoded first, as the engine hands them over.
inline Validated validate(PluginInstance& v, std::string_view bytes, const std::string& format,
                          uint32_t w, uint32_t h) {
  kiln_asset asset{};
  asset.struct_size = sizeof asset;
  asset.format = {format.data(), format.size()};
  asset.width = w;
  asset.height = h;
  auto decoded = decode_image(bytes);
  kiln_image img{};
  kiln_image_file file{};
  file.struct_size = sizeof file;
  file.bytes = reinterpret_cast<const uint8_t*>(bytes.data());
  file.size = bytes.size();
  std::string detected(detect_format(bytes));
  file.detected_format = {detected.data(), detected.size()};
  std::string error = decoded ? "" : decoded.error().message;
  if (decoded) {
    img = {decoded->width, decoded->height, decoded->width * size_t(4), decoded->rgba.data()};
    file.image = &img;
  }
  file.decode_error = {error.data(), error.size()};
  kiln_result r;
  kiln_status st = v.plugin().validator()->validate(v.handle(), &asset, &file, &r);
  EXPECT_EQ(st == KILN_OK, !r.failed());
  if (r.failed()) {
    EXPECT_TRUE(r.category == KILN_ERROR_VALIDATION || r.category == KILN_ERROR_PERMANENT);
  }
  return {st == KILN_OK, r.message, r.category, r.missing_property};
}

} // namespace kiln::host::test
