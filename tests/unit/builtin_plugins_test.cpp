// The built-in plugins, called through the real loader and C ABI as the host calls them.
#include "image.hpp"
#include "plugins.hpp"
#include "test_support.hpp"

#include <cmath>

namespace kiln::host {
namespace {

struct Builtins {
  Log log{KILN_LOG_ERROR};
  PluginRegistry registry{log};
  Diagnostics diag{"assets.toml", ""};

  Builtins() { registry.load_directory(KILN_PLUGIN_BUILD_DIR); }
  std::unique_ptr<PluginInstance> make(const char* id) {
    auto inst = registry.instantiate(*registry.find(id), nullptr, diag);
    EXPECT_TRUE(inst) << diag.text();
    return inst;
  }
};

struct Call {
  std::string type = "icon", format = "png", prompt = "a steel sword", model = "m";
  uint32_t width = 96, height = 64;
  std::optional<uint64_t> seed;
};

Result<Image> generate(PluginInstance& backend, const Call& c) {
  kiln_asset asset{};
  asset.struct_size = sizeof asset;
  asset.name = kiln_cstr("a");
  asset.type = {c.type.data(), c.type.size()};
  asset.format = {c.format.data(), c.format.size()};
  asset.width = c.width;
  asset.height = c.height;
  kiln_request q{};
  q.struct_size = sizeof q;
  q.asset = &asset;
  q.prompt = {c.prompt.data(), c.prompt.size()};
  q.model = {c.model.data(), c.model.size()};
  q.width = c.width;
  q.height = c.height;
  q.format = asset.format;
  q.has_seed = c.seed.has_value();
  q.seed = c.seed.value_or(0);
  q.params_json = kiln_cstr("{}");
  kiln_result r;
  if (backend.plugin().backend()->generate(backend.handle(), &q, &r) != KILN_OK)
    return Fault{r.category, r.message, -1};
  EXPECT_EQ(r.cost_usd, 0.0);
  EXPECT_TRUE(r.image);
  return *r.image;
}

double mean_abs_diff(const Image& img, uint32_t x0, uint32_t y0, uint32_t x1, uint32_t y1,
                     uint32_t count, bool vertical) {
  double sum = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* a = vertical ? img.at(x0, i) : img.at(i, y0);
    const uint8_t* b = vertical ? img.at(x1, i) : img.at(i, y1);
    for (int c = 0; c < 3; ++c)
      sum += std::abs(int(a[c]) - int(b[c]));
  }
  return sum / (count * 3);
}

TEST(Placeholder, SameRequestSameBytes) {
  Builtins b;
  auto backend = b.make("placeholder");
  auto one = generate(*backend, {});
  auto two = generate(*backend, {});
  ASSERT_TRUE(one && two);
  EXPECT_EQ(one->width, 96u);
  EXPECT_EQ(one->height, 64u);
  EXPECT_EQ(one->rgba, two->rgba);
  EXPECT_EQ(encode_image(*one, "png"), encode_image(*two, "png"));
}

TEST(Placeholder, DifferentRequestsLookDifferent) {
  Builtins b;
  auto backend = b.make("placeholder");
  Call other_prompt;
  other_prompt.prompt = "a wooden shield";
  Call other_seed;
  other_seed.seed = 5;
  auto base = generate(*backend, {});
  EXPECT_NE(base->rgba, generate(*backend, other_prompt)->rgba);
  EXPECT_NE(base->rgba, generate(*backend, other_seed)->rgba);
}

TEST(Placeholder, TexturesTileAndIconsAreTransparent) {
  Builtins b;
  auto backend = b.make("placeholder");
  Call texture;
  texture.type = "texture";
  texture.width = texture.height = 128;
  auto t = generate(*backend, texture);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->at(0, 0)[3], 255);
  // The seam (last column next to the first) differs no more than neighbouring columns do.
  double seam_x = mean_abs_diff(*t, 127, 0, 0, 0, 128, true);
  double inner_x = mean_abs_diff(*t, 63, 0, 64, 0, 128, true);
  double seam_y = mean_abs_diff(*t, 0, 127, 0, 0, 128, false);
  double inner_y = mean_abs_diff(*t, 0, 63, 0, 64, 128, false);
  EXPECT_LE(seam_x, 2 * inner_x + 2);
  EXPECT_LE(seam_y, 2 * inner_y + 2);

  auto icon = generate(*backend, {});
  EXPECT_EQ(icon->at(0, 0)[3], 0);     // corner: transparent
  EXPECT_EQ(icon->at(48, 32)[3], 255); // centre: opaque
  Call jpg_icon;
  jpg_icon.format = "jpg";
  EXPECT_EQ(generate(*backend, jpg_icon)->at(0, 0)[3], 255); // JPEG has no alpha to cut
}

struct Validated {
  bool ok;
  std::string reason;
};

Validated validate(PluginInstance& v, std::string_view bytes, const std::string& format, uint32_t w,
                   uint32_t h) {
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
    EXPECT_EQ(r.category, KILN_ERROR_VALIDATION);
  }
  return {st == KILN_OK, r.message};
}

Image solid(uint32_t w, uint32_t h, uint8_t v, uint8_t a = 255) {
  Image img(w, h);
  for (size_t i = 0; i < img.rgba.size(); i += 4) {
    img.rgba[i] = img.rgba[i + 1] = img.rgba[i + 2] = v;
    img.rgba[i + 3] = a;
  }
  return img;
}

TEST(Validators, NotBlankRejectsSolidAndTransparentImages) {
  Builtins b;
  auto v = b.make("not-blank");
  Validated black = validate(*v, encode_image(solid(32, 32, 0), "png"), "png", 32, 32);
  EXPECT_FALSE(black.ok);
  EXPECT_EQ(black.reason, "image is blank: luminance varies by 0.00 (stddev), below 3.00; mean 0");
  EXPECT_EQ(validate(*v, encode_image(solid(32, 32, 0, 0), "png"), "png", 32, 32).reason,
            "image is fully transparent");
  auto placeholder = b.make("placeholder");
  auto img = generate(*placeholder, {});
  EXPECT_TRUE(validate(*v, encode_image(*img, "png"), "png", 96, 64).ok);
}

TEST(Validators, ResolutionAndFormatCompareWithTheAsset) {
  Builtins b;
  auto res = b.make("resolution");
  auto fmt = b.make("format");
  std::string png = encode_image(solid(32, 16, 90), "png");
  EXPECT_TRUE(validate(*res, png, "png", 32, 16).ok);
  EXPECT_EQ(validate(*res, png, "png", 16, 16).reason, "image is 32x16, expected 16x16");
  EXPECT_TRUE(validate(*fmt, png, "png", 32, 16).ok);
  EXPECT_EQ(validate(*fmt, png, "webp", 32, 16).reason, "file is png, expected webp");
  EXPECT_EQ(validate(*fmt, "GIF89a....", "png", 32, 16).reason,
            "file is not a PNG, JPEG or WebP image");
}

TEST(Validators, NotCorruptCatchesTruncationsOfEveryFormat) {
  Builtins b;
  auto v = b.make("not-corrupt");
  auto placeholder = b.make("placeholder");
  Call c;
  c.type = "texture";
  auto img = generate(*placeholder, c);
  for (const char* format : {"png", "jpg", "webp"}) {
    std::string bytes = encode_image(*img, format);
    EXPECT_TRUE(validate(*v, bytes, format, 96, 64).ok) << format;
    Validated cut = validate(*v, bytes.substr(0, bytes.size() * 2 / 3), format, 96, 64);
    EXPECT_FALSE(cut.ok) << format;
    EXPECT_NE(cut.reason.find("truncated"), std::string::npos) << cut.reason;
  }
  EXPECT_EQ(validate(*v, "", "png", 1, 1).reason, "file is empty");
  // Whole structure, damaged data: only a full decode notices.
  std::string bytes = encode_image(*img, "png");
  for (size_t i = 100; i < bytes.size() - 100; i += 7)
    bytes[i] = char(~bytes[i]);
  Validated damaged = validate(*v, bytes, "png", 96, 64);
  EXPECT_FALSE(damaged.ok);
  EXPECT_EQ(damaged.reason.rfind("image does not decode: PNG data is corrupt", 0), 0u)
      << damaged.reason;
}

} // namespace
} // namespace kiln::host
