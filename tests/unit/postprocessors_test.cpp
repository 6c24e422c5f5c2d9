// The built-in postprocessors, called through the real loader and C ABI as the host calls them,
// on images drawn here with known masks, and judged as the host judges them: fitted, encoded,
// decoded and handed to the real validators.
#include "plugin_calls.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <stb/stb_image_write.h> // only to write JPEG at another quality than the host's 90

namespace kiln::host {
namespace {

using test::TempDir;

using Plugins = test::Builtins;

SettingValue string_setting(const std::string& s) {
  SettingValue v;
  v.type = SettingValue::Type::String;
  v.string_value = s;
  v.toml_type = "string";
  return v;
}

SettingValue int_setting(int64_t i) {
  SettingValue v;
  v.type = SettingValue::Type::Int;
  v.int_value = i;
  v.toml_type = "integer";
  return v;
}

struct Processed {
  std::optional<Image> image;
  kiln_error_category category = KILN_ERROR_NONE;
  std::string message;
};

Processed process(PluginInstance& p, const Image& in, uint32_t width, uint32_t height,
                  const std::string& type = "icon") {
  kiln_asset asset{};
  asset.struct_size = sizeof asset;
  asset.name = kiln_cstr("a");
  asset.type = {type.data(), type.size()};
  asset.format = kiln_cstr("png");
  asset.width = width;
  asset.height = height;
  asset.params_json = kiln_cstr("{}");
  kiln_image raw = in.raw();
  kiln_result r;
  kiln_status st = p.plugin().postprocessor()->process(p.handle(), &asset, &raw, &r);
  EXPECT_EQ(st == KILN_OK, !r.failed());
  Processed out;
  if (st == KILN_OK)
    out.image = r.image ? *r.image : in;
  out.category = r.category;
  out.message = r.message;
  return out;
}

// A validator's verdict, and its reason in `reason`.
bool validate(PluginInstance& v, std::string_view bytes, const std::string& format, uint32_t w,
              uint32_t h, std::string* reason = nullptr) {
  test::Validated verdict = test::validate(v, bytes, format, w, h);
  if (reason)
    *reason = verdict.reason;
  return verdict.ok;
}

std::string encode_jpeg(const Image& image, int quality) {
  std::vector<uint8_t> rgb;
  for (size_t i = 0; i < image.rgba.size(); i += 4)
    rgb.insert(rgb.end(), image.rgba.begin() + std::ptrdiff_t(i),
               image.rgba.begin() + std::ptrdiff_t(i + 3));
  std::string out;
  auto append = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), size_t(size));
  };
  EXPECT_TRUE(stbi_write_jpg_to_func(append, &out, int(image.width), int(image.height), 3,
                                     rgb.data(), quality));
  return out;
}

double brightness(const uint8_t* p) {
  return (p[0] + p[1] + p[2]) / 3.0;
}

// ---------------------------------------------------------------------------------------------
// remove-background: a subject drawn with 4x4 supersampling, so every pixel's coverage is known.

struct Colour {
  double r, g, b;
};

struct Subject {
  std::function<double(double, double)> sdf;         // pixels, negative inside
  std::function<Colour(double, double, double)> ink; // colour at a point inside (x, y, sdf)
};

// A sword lying at 45 degrees: a tapered steel blade with a white highlight down its middle,
// a gold guard, a brown grip and a red pommel with a white glint; a dark outline all round.
Subject sword(double size) {
  const double s = size / 512;
  struct Frame {
    double t, p; // along the sword from the guard towards the tip, and across it
  };
  auto frame = [s](double x, double y) {
    const double gx = 215 * s, gy = 315 * s, c = std::sqrt(0.5);
    const double dx = x - gx, dy = y - gy;
    return Frame{(dx - dy) * c, (dx + dy) * c};
  };
  auto box = [](double a, double ha, double b, double hb) {
    return std::max(std::abs(a) - ha, std::abs(b) - hb);
  };
  const double length = 230 * s;
  auto parts = [=](double x, double y) {
    Frame f = frame(x, y);
    const double half = (16 - 10 * std::clamp(f.t / length, 0.0, 1.0)) * s;
    std::array<double, 4> d{
        std::max({std::abs(f.p) - half, -f.t, f.t - length}), // blade
        box(f.t, 8 * s, f.p, 45 * s),                         // guard
        box(f.t + 32 * s, 32 * s, f.p, 7 * s),                // grip
        std::hypot(f.t + 76 * s, f.p) - 14 * s,               // pommel
    };
    return d;
  };
  Subject subject;
  subject.sdf = [=](double x, double y) {
    auto d = parts(x, y);
    return *std::min_element(d.begin(), d.end());
  };
  subject.ink = [=](double x, double y, double sdf) -> Colour {
    if (sdf > -4 * s)
      return {35, 28, 22}; // the outline
    auto d = parts(x, y);
    const size_t part = size_t(std::min_element(d.begin(), d.end()) - d.begin());
    Frame f = frame(x, y);
    switch (part) {
    case 0: {
      if (std::abs(f.p - 2 * s) < 2.5 * s && f.t > 20 * s && f.t < length - 40 * s)
        return {252, 252, 252}; // the highlight: as white as the backdrop
      const double light = std::clamp(f.p / (16 * s), -1.0, 1.0);
      return {160 + 30 * light, 170 + 30 * light, 185 + 25 * light};
    }
    case 1:
      return {205 - 30 * std::abs(f.p) / (45 * s), 165 - 30 * std::abs(f.p) / (45 * s), 50};
    case 2:
      return {110, 70, 40};
    default:
      if (std::hypot(f.t + 80 * s, f.p + 4 * s) < 3.5 * s)
        return {252, 250, 248};
      return {180, 40, 40};
    }
  };
  return subject;
}

// Three separate parts: a blue gem and a gold coin with white glints, and a red diamond. No
// outline: their own colours meet the backdrop.
Subject gems(double size) {
  const double s = size / 512;
  auto parts = [=](double x, double y) {
    return std::array<double, 3>{std::hypot(x - 150 * s, y - 170 * s) - 50 * s,
                                 (std::abs(x - 350 * s) + std::abs(y - 180 * s) - 55 * s) /
                                     std::sqrt(2.0),
                                 std::hypot(x - 250 * s, y - 360 * s) - 45 * s};
  };
  Subject subject;
  subject.sdf = [=](double x, double y) {
    auto d = parts(x, y);
    return *std::min_element(d.begin(), d.end());
  };
  subject.ink = [=](double x, double y, double) -> Colour {
    auto d = parts(x, y);
    const size_t part = size_t(std::min_element(d.begin(), d.end()) - d.begin());
    if (part == 0)
      return std::hypot(x - 130 * s, y - 150 * s) < 10 * s ? Colour{250, 250, 255}
                                                           : Colour{40, 90, 200};
    if (part == 1)
      return {200, 40 + 40 * (y - 125 * s) / (110 * s), 60};
    if (std::hypot(x - 235 * s, y - 345 * s) < 7 * s)
      return {255, 255, 240};
    return d[2] > -8 * s ? Colour{170, 130, 30} : Colour{225, 185, 45};
  };
  return subject;
}

// A flat disc with no outline, its lower half `shade` darker: a pale subject (a silver coin, a
// parchment, a grey stone) whose own colour is a darkening of a white backdrop's.
Subject disc(double size, Colour c, double shade = 0) {
  const double s = size / 512;
  Subject subject;
  subject.sdf = [=](double x, double y) {
    return std::hypot(x - 256 * s, y - 256 * s) - 150 * s;
  };
  subject.ink = [=](double, double y, double) -> Colour {
    const double k = y > 256 * s ? 1 - shade : 1;
    return {c.r * k, c.g * k, c.b * k};
  };
  return subject;
}

struct Backdrop {
  std::function<Colour(double, double)> colour;
  double shadow_depth = 0; // how much the shadow darkens, 0-1
  double shadow_dx = 0, shadow_dy = 0, shadow_sigma = 1;
};

Backdrop flat(Colour c) {
  return {[c](double, double) {
    return c;
  }};
}

struct Scene {
  uint32_t size;
  Image image;
  std::vector<float> coverage; // of the subject, 0-1
};

// About a Gaussian blur of `sigma`: three box blurs, each a running sum (cheap at any sigma).
std::vector<float> gaussian_blur(std::vector<float> v, uint32_t n, double sigma) {
  const int radius = std::max(1, int(std::lround((std::sqrt(4 * sigma * sigma + 1) - 1) / 2)));
  std::vector<float> line(n);
  for (int pass = 0; pass < 6; ++pass) {
    const bool rows = pass % 2 == 0;
    for (uint32_t a = 0; a < n; ++a) {
      auto at = [&](int64_t b) -> float& {
        return rows ? v[size_t(a) * n + size_t(b)] : v[size_t(b) * n + a];
      };
      double sum = 0;
      for (int64_t b = -radius; b < radius; ++b)
        sum += b >= 0 && b < n ? at(b) : 0;
      for (int64_t b = 0; b < n; ++b) {
        if (b + radius < n)
          sum += at(b + radius);
        line[size_t(b)] = float(sum / (2 * radius + 1));
        if (b - radius >= 0)
          sum -= at(b - radius);
      }
      for (int64_t b = 0; b < n; ++b)
        at(b) = line[size_t(b)];
    }
  }
  return v;
}

Scene render(uint32_t n, const Subject& subject, const Backdrop& backdrop) {
  Scene scene{n, Image(n, n), std::vector<float>(size_t(n) * n)};
  std::vector<Colour> ink(size_t(n) * n, Colour{0, 0, 0});
  for (uint32_t y = 0; y < n; ++y)
    for (uint32_t x = 0; x < n; ++x) {
      int inside = 0;
      Colour sum{0, 0, 0};
      // Far from the edge (the distances are true to within a pixel): one sample is exact.
      const double centre = subject.sdf(x + 0.5, y + 0.5);
      if (std::abs(centre) > 1.5) {
        const bool in = centre < 0;
        scene.coverage[size_t(y) * n + x] = in;
        if (in)
          ink[size_t(y) * n + x] = subject.ink(x + 0.5, y + 0.5, centre);
        continue;
      }
      for (int sy = 0; sy < 4; ++sy)
        for (int sx = 0; sx < 4; ++sx) {
          const double px = x + (sx + 0.5) / 4, py = y + (sy + 0.5) / 4;
          const double d = subject.sdf(px, py);
          if (d < 0) {
            Colour c = subject.ink(px, py, d);
            sum = {sum.r + c.r, sum.g + c.g, sum.b + c.b};
            ++inside;
          }
        }
      scene.coverage[size_t(y) * n + x] = float(inside) / 16;
      if (inside)
        ink[size_t(y) * n + x] = {sum.r / inside, sum.g / inside, sum.b / inside};
    }
  std::vector<float> shadow(scene.coverage.size(), 0);
  if (backdrop.shadow_depth > 0) {
    std::vector<float> moved(shadow.size(), 0);
    for (uint32_t y = 0; y < n; ++y)
      for (uint32_t x = 0; x < n; ++x) {
        int64_t sx = int64_t(x) - int64_t(backdrop.shadow_dx),
                sy = int64_t(y) - int64_t(backdrop.shadow_dy);
        if (sx >= 0 && sy >= 0 && sx < n && sy < n)
          moved[size_t(y) * n + x] = scene.coverage[size_t(sy) * n + size_t(sx)];
      }
    shadow = gaussian_blur(moved, n, backdrop.shadow_sigma);
  }
  for (uint32_t y = 0; y < n; ++y)
    for (uint32_t x = 0; x < n; ++x) {
      const size_t i = size_t(y) * n + x;
      Colour b = backdrop.colour(x + 0.5, y + 0.5);
      const double dark = 1 - backdrop.shadow_depth * shadow[i];
      const double c = scene.coverage[i];
      const Colour& f = ink[i];
      uint8_t* p = scene.image.at(x, y);
      p[0] = uint8_t(std::lround(c * f.r + (1 - c) * b.r * dark));
      p[1] = uint8_t(std::lround(c * f.g + (1 - c) * b.g * dark));
      p[2] = uint8_t(std::lround(c * f.b + (1 - c) * b.b * dark));
      p[3] = 255;
    }
  return scene;
}

void add_noise(Image& image, double sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0, sigma);
  for (size_t i = 0; i < image.rgba.size(); ++i)
    if (i % 4 != 3)
      image.rgba[i] = uint8_t(std::clamp<long>(std::lround(image.rgba[i] + noise(rng)), 0, 255));
}

// Pixels whose every neighbour within `radius` (8-connected) satisfies `pred`.
std::vector<char> eroded(const std::vector<float>& cov, uint32_t n, int radius,
                         const std::function<bool(float)>& pred) {
  std::vector<char> out(cov.size(), 0);
  for (uint32_t y = 0; y < n; ++y)
    for (uint32_t x = 0; x < n; ++x) {
      bool all = true;
      for (int dy = -radius; dy <= radius && all; ++dy)
        for (int dx = -radius; dx <= radius && all; ++dx) {
          int64_t xx = int64_t(x) + dx, yy = int64_t(y) + dy;
          if (xx >= 0 && yy >= 0 && xx < n && yy < n)
            all = pred(cov[size_t(yy) * n + size_t(xx)]);
        }
      out[size_t(y) * n + x] = all;
    }
  return out;
}

struct Figures {
  double clear_percent, opaque_percent;
  double edge_brightness, subject_edge_brightness;
};

// The acceptance measures: the known backdrop (shadow included, 2 px from the subject's edge
// left out) fully transparent, the known subject (eroded by 2 px) opaque, and the edge colours
// against the subject's own colour next to its edge in the input.
Figures measure(const Scene& scene, const Image& input, const Image& out) {
  const uint32_t n = scene.size;
  auto backdrop = eroded(scene.coverage, n, 2, [](float c) { return c == 0; });
  auto subject = eroded(scene.coverage, n, 2, [](float c) { return c == 1; });
  auto subject_1 = eroded(scene.coverage, n, 1, [](float c) { return c == 1; });
  size_t nb = 0, clear = 0, ns = 0, opaque = 0, n_edge = 0, n_own = 0;
  double edge = 0, own = 0;
  for (uint32_t y = 0; y < n; ++y)
    for (uint32_t x = 0; x < n; ++x) {
      const size_t i = size_t(y) * n + x;
      const uint8_t* p = out.at(x, y);
      nb += backdrop[i];
      clear += backdrop[i] && p[3] == 0;
      ns += subject[i];
      opaque += subject[i] && p[3] == 255;
      // The subject's own colour at its edge: the outermost ring of known subject.
      if (scene.coverage[i] == 1 && !subject_1[i]) {
        own += brightness(input.at(x, y));
        ++n_own;
      }
      // The edge band of the output: partly transparent, or opaque next to a clearer pixel.
      bool band = p[3] > 0 && p[3] < 255;
      if (p[3] == 255)
        for (int dy = -1; dy <= 1 && !band; ++dy)
          for (int dx = -1; dx <= 1 && !band; ++dx) {
            int64_t xx = int64_t(x) + dx, yy = int64_t(y) + dy;
            band = xx >= 0 && yy >= 0 && xx < n && yy < n &&
                   out.at(uint32_t(xx), uint32_t(yy))[3] < 255;
          }
      if (band) {
        edge += brightness(p);
        ++n_edge;
      }
    }
  return {100.0 * double(clear) / double(nb), 100.0 * double(opaque) / double(ns),
          n_edge ? edge / double(n_edge) : 0, n_own ? own / double(n_own) : 0};
}

struct Case {
  const char* name;
  Scene scene;
  Image input; // what the plugin is given: the scene, maybe with noise or through JPEG
  // A dark outline on black is itself a mix of black and the fill inside it: there, the edge's
  // colour cannot be told from a halo and is not checked.
  bool check_edge = true;
  double min_opaque_percent = 99; // the acceptance's figure
};

void check_removal(PluginInstance& plugin, const Case& c) {
  SCOPED_TRACE(c.name);
  Processed r = process(plugin, c.input, 256, 256);
  ASSERT_TRUE(r.image) << r.message;
  ASSERT_EQ(r.image->width, c.input.width);
  Figures f = measure(c.scene, c.input, *r.image);
  std::printf("[ remove-background ] %-24s backdrop clear %6.2f%%  subject opaque %6.2f%%  "
              "edge brightness %5.1f vs subject's %5.1f\n",
              c.name, f.clear_percent, f.opaque_percent, f.edge_brightness,
              f.subject_edge_brightness);
  EXPECT_GE(f.clear_percent, 98.0);
  EXPECT_GE(f.opaque_percent, c.min_opaque_percent);
  if (c.check_edge) { // no halo of the old backdrop: the edge has the subject's own colour
    EXPECT_NEAR(f.edge_brightness, f.subject_edge_brightness, 10);
  }
}

Backdrop with_shadow(Backdrop b, double scale = 1) {
  b.shadow_depth = 0.5;
  b.shadow_dx = 14 * scale;
  b.shadow_dy = 18 * scale;
  b.shadow_sigma = 9 * scale;
  return b;
}

Case scene_case(const char* name, uint32_t n, const Subject& subject, const Backdrop& backdrop) {
  Scene scene = render(n, subject, backdrop);
  Image input = scene.image;
  return {name, std::move(scene), std::move(input)};
}

TEST(PostprocessRemoveBackground, PlainBackdropsOfEveryColour) {
  Plugins p;
  auto plugin = p.make("remove-background");
  ASSERT_TRUE(plugin) << p.diag.text();
  EXPECT_EQ(plugin->plugin().provides(), uint32_t(KILN_PROPERTY_ALPHA));
  const uint32_t n = 384;
  check_removal(*plugin, scene_case("white, floating", n, sword(n), flat({255, 255, 255})));
  check_removal(*plugin, scene_case("grey", n, sword(n), flat({128, 128, 128})));
  check_removal(*plugin, scene_case("green", n, sword(n), flat({0, 177, 64})));
  Case black = scene_case("black", n, sword(n), flat({0, 0, 0}));
  black.check_edge = false;
  check_removal(*plugin, black);
  check_removal(*plugin, scene_case("several parts, white", n, gems(n), flat({255, 255, 255})));
  check_removal(*plugin, scene_case("several parts, grey", n, gems(n), flat({150, 150, 150})));
}

// A subject whose colour is the white backdrop's, darker (grey, cream), with a hard edge and no
// outline, is the subject, not a shadow: a shadow's edge is soft.
TEST(PostprocessRemoveBackground, PaleSubjectsWithoutAnOutlineAreNotShadows) {
  Plugins p;
  auto plugin = p.make("remove-background");
  ASSERT_TRUE(plugin) << p.diag.text();
  const uint32_t n = 256;
  check_removal(*plugin,
                scene_case("grey disc", n, disc(n, {200, 200, 200}), flat({255, 255, 255})));
  check_removal(*plugin, scene_case("cream disc, shaded", n, disc(n, {245, 235, 210}, 0.1),
                                    flat({255, 255, 255})));
  // With noise, the backdrop's tolerance grows, and a rim of a subject this close to it (its top
  // half 43 RGB units off) may go with the backdrop where the noise says so: 98 % opaque, not 99.
  Case noisy =
      scene_case("cream disc, noise", n, disc(n, {245, 235, 210}, 0.1), flat({250, 250, 250}));
  add_noise(noisy.input, 3, 7);
  noisy.min_opaque_percent = 98;
  check_removal(*plugin, noisy);
  // A grey disc lying on its own shadow of the same grey cannot be told from it: it goes with
  // the shadow, and the postprocessor says so and what to do, rather than handing on an empty
  // image (another image may do better: a validation failure). Without shadow removal it stays.
  Case on_shadow = scene_case("grey disc, shadow", n, disc(n, {200, 200, 200}),
                              with_shadow(flat({255, 255, 255})));
  Processed lost = process(*plugin, on_shadow.input, 256, 256);
  ASSERT_FALSE(lost.image);
  EXPECT_EQ(lost.category, KILN_ERROR_VALIDATION);
  EXPECT_NE(lost.message.find("nothing but backdrop"), std::string::npos) << lost.message;
  EXPECT_NE(lost.message.find("set shadows = false"), std::string::npos) << lost.message;
  PluginSettings keep;
  SettingValue off;
  off.type = SettingValue::Type::Bool;
  off.bool_value = false;
  off.toml_type = "boolean";
  keep.values["shadows"] = off;
  auto keeping = p.make("remove-background", &keep);
  ASSERT_TRUE(keeping) << p.diag.text();
  Processed kept = process(*keeping, on_shadow.input, 256, 256);
  ASSERT_TRUE(kept.image) << kept.message;
  EXPECT_GE(measure(on_shadow.scene, on_shadow.input, *kept.image).opaque_percent, 99.0);
}

TEST(PostprocessRemoveBackground, SoftShadowsAndGradientsGoWithTheBackdrop) {
  Plugins p;
  auto plugin = p.make("remove-background");
  ASSERT_TRUE(plugin) << p.diag.text();
  // At the size models return.
  check_removal(*plugin, scene_case("white, shadow, 1024", 1024, sword(1024),
                                    with_shadow(flat({255, 255, 255}), 2)));
  const uint32_t n = 384;
  check_removal(*plugin, scene_case("green, shadow", n, sword(n), with_shadow(flat({0, 177, 64}))));
  Backdrop gradient{[n](double, double y) {
    const double t = y / n;
    return Colour{245 - 70 * t, 245 - 65 * t, 250 - 55 * t};
  }};
  check_removal(*plugin, scene_case("gradient", n, sword(n), gradient));
  check_removal(*plugin, scene_case("gradient, shadow", n, gems(n), with_shadow(gradient)));
  Backdrop vignette{[n](double x, double y) {
    const double r = std::hypot(x - n / 2.0, y - n / 2.0) / n;
    return Colour{240 - 90 * r * r, 236 - 90 * r * r, 228 - 80 * r * r};
  }};
  check_removal(*plugin, scene_case("vignette", n, sword(n), vignette));

  // The measure sees a shadow left behind: with `shadows = false` it stays, opaque.
  PluginSettings keep;
  SettingValue off;
  off.type = SettingValue::Type::Bool;
  off.bool_value = false;
  off.toml_type = "boolean";
  keep.values["shadows"] = off;
  auto keeping = p.make("remove-background", &keep);
  ASSERT_TRUE(keeping) << p.diag.text();
  Case shadowed = scene_case("white, shadow", n, sword(n), with_shadow(flat({255, 255, 255})));
  Processed r = process(*keeping, shadowed.input, 256, 256);
  ASSERT_TRUE(r.image) << r.message;
  Figures kept = measure(shadowed.scene, shadowed.input, *r.image);
  std::printf("[ remove-background ] %-24s backdrop clear %6.2f%% with shadows = false\n",
              shadowed.name, kept.clear_percent);
  EXPECT_LT(kept.clear_percent, 98.0);
  check_removal(*plugin, shadowed);
}

TEST(PostprocessRemoveBackground, NoiseAndJpegArtefacts) {
  Plugins p;
  auto plugin = p.make("remove-background");
  ASSERT_TRUE(plugin) << p.diag.text();
  const uint32_t n = 384;
  Case noisy = scene_case("noise sigma 8, shadow", n, sword(n), with_shadow(flat({235, 235, 235})));
  add_noise(noisy.input, 8, 1);
  check_removal(*plugin, noisy);
  Case noisy_green = scene_case("noise sigma 8, green", n, gems(n), flat({0, 177, 64}));
  add_noise(noisy_green.input, 8, 2);
  check_removal(*plugin, noisy_green);

  for (auto [name, backdrop] :
       {std::pair{"jpeg q70, white, shadow", with_shadow(flat({255, 255, 255}))},
        std::pair{"jpeg q70, grey", flat({128, 128, 128})},
        std::pair{"jpeg q70, green, shadow", with_shadow(flat({0, 177, 64}))}}) {
    Case c = scene_case(name, n, sword(n), backdrop);
    auto decoded = decode_image(encode_jpeg(c.input, 70));
    ASSERT_TRUE(decoded);
    c.input = *decoded;
    check_removal(*plugin, c);
  }
  Case webp = scene_case("webp q90, white, shadow", n, gems(n), with_shadow(flat({255, 255, 255})));
  webp.input = *decode_image(encode_image(webp.input, "webp"));
  check_removal(*plugin, webp);
}

TEST(PostprocessRemoveBackground, TransparentInputIsLeftAlone) {
  Plugins p;
  auto plugin = p.make("remove-background");
  ASSERT_TRUE(plugin) << p.diag.text();
  Scene scene = render(128, gems(128), flat({255, 255, 255}));
  Image icon = scene.image;
  for (size_t i = 0; i < scene.coverage.size(); ++i)
    icon.rgba[i * 4 + 3] = uint8_t(std::lround(scene.coverage[i] * 255));
  Processed r = process(*plugin, icon, 128, 128);
  ASSERT_TRUE(r.image) << r.message;
  EXPECT_EQ(r.image->rgba, icon.rgba);
}

TEST(PostprocessRemoveBackground, BusyBorderIsAValidationFailure) {
  Plugins p;
  auto plugin = p.make("remove-background");
  ASSERT_TRUE(plugin) << p.diag.text();
  // A busy scene: overlapping coloured blocks everywhere.
  Image busy(256, 256);
  std::mt19937 rng(7);
  for (int k = 0; k < 300; ++k) {
    uint32_t x0 = rng() % 256, y0 = rng() % 256, w = 8 + rng() % 40, h = 8 + rng() % 40;
    uint8_t r = uint8_t(rng()), g = uint8_t(rng()), b = uint8_t(rng());
    for (uint32_t y = y0; y < std::min(256u, y0 + h); ++y)
      for (uint32_t x = x0; x < std::min(256u, x0 + w); ++x) {
        uint8_t* px = busy.at(x, y);
        px[0] = r;
        px[1] = g;
        px[2] = b;
        px[3] = 255;
      }
  }
  Processed r = process(*plugin, busy, 128, 128);
  EXPECT_FALSE(r.image);
  EXPECT_EQ(r.category, KILN_ERROR_VALIDATION);
  EXPECT_NE(r.message.find("no plain backdrop"), std::string::npos) << r.message;

  // Nothing but backdrop is no sprite either.
  Image empty(64, 64);
  for (size_t i = 0; i < empty.rgba.size(); ++i)
    empty.rgba[i] = 255;
  r = process(*plugin, empty, 64, 64);
  EXPECT_EQ(r.category, KILN_ERROR_VALIDATION);
  EXPECT_NE(r.message.find("nothing but backdrop"), std::string::npos) << r.message;
}

TEST(PostprocessRemoveBackground, KeyColourAndDeterminism) {
  Plugins p;
  PluginSettings green;
  green.values["key"] = string_setting("#00b140");
  auto keyed = p.make("remove-background", &green);
  ASSERT_TRUE(keyed) << p.diag.text();
  Case c = scene_case("green, key #00b140", 256, sword(256), flat({0, 177, 64}));
  check_removal(*keyed, c);
  Scene white = render(256, sword(256), flat({255, 255, 255}));
  Processed r = process(*keyed, white.image, 256, 256);
  EXPECT_EQ(r.category, KILN_ERROR_VALIDATION);
  EXPECT_NE(r.message.find("key colour"), std::string::npos) << r.message;

  PluginSettings bad;
  bad.values["key"] = string_setting("green");
  EXPECT_FALSE(p.make("remove-background", &bad));
  EXPECT_NE(p.diag.text().find("key must be a colour"), std::string::npos) << p.diag.text();

  auto plugin = p.make("remove-background");
  ASSERT_TRUE(plugin);
  Image noisy = render(256, gems(256), with_shadow(flat({240, 240, 240}))).image;
  add_noise(noisy, 6, 3);
  auto one = process(*plugin, noisy, 256, 256), two = process(*plugin, noisy, 256, 256);
  ASSERT_TRUE(one.image && two.image);
  EXPECT_EQ(one.image->rgba, two.image->rgba);
}

// ---------------------------------------------------------------------------------------------
// make-tileable: whatever the input, the output passes the real `tileable` validator after the
// host's fit and encoding.

struct TileCase {
  std::string what;
  Image input;
  uint32_t width, height; // declared
};

// A random texture that does not tile: noise, waves and stripes, under light from one side,
// cut by hard edges.
TileCase random_texture(std::mt19937& rng, int index) {
  auto uniform = [&](double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  };
  auto pick = [&](uint32_t lo, uint32_t hi) {
    return std::uniform_int_distribution<uint32_t>(lo, hi)(rng);
  };
  TileCase c;
  uint32_t iw = pick(16, 256), ih = pick(16, 256);
  c.width = pick(8, 160);
  c.height = index % 3 == 0 ? c.width : pick(8, 160);
  if (index % 10 == 3) { // tiny
    c.width = pick(1, 9);
    c.height = pick(4, 9);
    iw = pick(2, 40);
    ih = pick(2, 40);
  }
  const double noise = rng() % 3 == 0 ? 0 : uniform(2, 90);
  const double wave = uniform(0, 60), wave_period = uniform(5, 200), wave_angle = uniform(0, 7);
  const double stripes = rng() % 4 == 0 ? uniform(10, 80) : 0, stripe_period = uniform(2.5, 12);
  const double light = uniform(0, 160), light_angle = uniform(0, 7);
  const int edges = int(rng() % 3);
  std::array<double, 3> base{uniform(40, 215), uniform(40, 215), uniform(40, 215)};
  struct Edge {
    double nx, ny, offset;
    std::array<double, 3> step;
  };
  std::vector<Edge> cuts;
  for (int e = 0; e < edges; ++e) {
    const double a = rng() % 2 ? 0 : uniform(0, 7); // often a vertical edge
    cuts.push_back({std::cos(a),
                    std::sin(a),
                    uniform(0.2, 0.8),
                    {uniform(-150, 150), uniform(-150, 150), uniform(-150, 150)}});
  }
  char what[200];
  std::snprintf(what, sizeof what,
                "#%d %ux%u -> %ux%u noise %.0f wave %.0f stripes %.0f light %.0f edges %d", index,
                iw, ih, c.width, c.height, noise, wave, stripes, light, edges);
  c.what = what;
  c.input = Image(iw, ih);
  auto gauss = [&] { // about normal: four bytes of one draw summed, unit variance
    const uint32_t r = rng();
    return (int(r & 255) + int(r >> 8 & 255) + int(r >> 16 & 255) + int(r >> 24) - 510) / 147.8;
  };
  for (uint32_t y = 0; y < ih; ++y)
    for (uint32_t x = 0; x < iw; ++x) {
      const double u = double(x) / iw, v = double(y) / ih;
      const double along = (x * std::cos(wave_angle) + y * std::sin(wave_angle)) / wave_period;
      const double lit =
          light * ((u - 0.5) * std::cos(light_angle) + (v - 0.5) * std::sin(light_angle));
      double shade = wave * std::sin(along * 6.283) + stripes * std::sin(x / stripe_period) + lit;
      uint8_t* p = c.input.at(x, y);
      for (size_t ch = 0; ch < 3; ++ch) {
        double value = base[ch] + shade + noise * gauss();
        for (const Edge& e : cuts)
          if (u * e.nx + v * e.ny > e.offset * (std::abs(e.nx) + std::abs(e.ny)))
            value += e.step[ch];
        p[ch] = uint8_t(std::clamp<long>(std::lround(value), 0, 255));
      }
      p[3] = 255;
    }
  return c;
}

// The adversarial cases first, named.
std::vector<TileCase> tile_cases(size_t count = 200) {
  std::vector<TileCase> cases;
  auto make = [&](const char* what, uint32_t iw, uint32_t ih, uint32_t w, uint32_t h,
                  const std::function<uint8_t(uint32_t, uint32_t, size_t)>& f) {
    TileCase c{what, Image(iw, ih), w, h};
    for (uint32_t y = 0; y < ih; ++y)
      for (uint32_t x = 0; x < iw; ++x) {
        for (size_t ch = 0; ch < 3; ++ch)
          c.input.at(x, y)[ch] = f(x, y, ch);
        c.input.at(x, y)[3] = 255;
      }
    cases.push_back(std::move(c));
  };
  std::mt19937 noise_rng(11);
  make("one hard vertical edge", 200, 200, 128, 128,
       [](uint32_t x, uint32_t, size_t) { return uint8_t(x < 100 ? 0 : 255); });
  make("hard edge at a third", 300, 200, 96, 64,
       [](uint32_t x, uint32_t, size_t ch) { return uint8_t(x < 100 ? 20 * ch : 250 - ch); });
  make("pure noise", 128, 128, 128, 128,
       [&](uint32_t, uint32_t, size_t) { return uint8_t(noise_rng()); });
  make("flat", 100, 100, 64, 64, [](uint32_t, uint32_t, size_t) { return uint8_t(90); });
  make("light from the left", 256, 256, 128, 128,
       [](uint32_t x, uint32_t y, size_t) { return uint8_t(20 + x * 0.8 + ((x ^ y) & 7)); });
  make("4x4", 64, 64, 4, 4, [](uint32_t x, uint32_t y, size_t) { return uint8_t(x * 3 + y); });
  make("1x7", 30, 50, 1, 7, [](uint32_t x, uint32_t y, size_t) { return uint8_t(x + 4 * y); });
  make("non-square 300x120", 512, 512, 300, 120,
       [](uint32_t x, uint32_t y, size_t ch) { return uint8_t((x / 3 + y / 5 + ch * 40) % 256); });
  std::mt19937 rng(2024);
  for (int i = int(cases.size()); i < int(count); ++i)
    cases.push_back(random_texture(rng, i));
  return cases;
}

TEST(PostprocessMakeTileable, TwoHundredTexturesAllPassTheTileableValidator) {
  Plugins p;
  auto plugin = p.make("make-tileable");
  auto tileable = p.make("tileable");
  ASSERT_TRUE(plugin && tileable) << p.diag.text();
  EXPECT_EQ(plugin->plugin().provides(), uint32_t(KILN_PROPERTY_TILEABLE));
  int raw_rejected = 0, passed[3] = {0, 0, 0};
  const char* formats[3] = {"png", "jpg", "webp"};
  std::vector<TileCase> cases = tile_cases();
  for (const TileCase& c : cases) {
    SCOPED_TRACE(c.what);
    // The raw input, as the host would write it without the postprocessor.
    raw_rejected += !validate(*tileable, encode_image(fit_image(c.input, c.width, c.height), "png"),
                              "png", c.width, c.height);
    Processed r = process(*plugin, c.input, c.width, c.height, "texture");
    ASSERT_TRUE(r.image) << r.message;
    ASSERT_EQ(r.image->width, c.width);
    ASSERT_EQ(r.image->height, c.height);
    Image fitted = fit_image(*r.image, c.width, c.height); // a no-op: already the size
    for (int f = 0; f < 3; ++f) {
      std::string reason;
      bool ok = validate(*tileable, encode_image(fitted, formats[f]), formats[f], c.width, c.height,
                         &reason);
      EXPECT_TRUE(ok) << formats[f] << ": " << reason;
      passed[f] += ok;
    }
  }
  std::printf("[ make-tileable ] `tileable` rejects %d of %zu raw inputs; it passes %d of them "
              "processed as png, %d as jpg, %d as webp\n",
              raw_rejected, cases.size(), passed[0], passed[1], passed[2]);
  EXPECT_EQ(passed[0], 200);
  // The inputs are a real test: the validator turns most of them away as they are.
  EXPECT_GE(raw_rejected, 150);
}

TEST(PostprocessMakeTileable, SameInputSameBytes) {
  Plugins p;
  auto plugin = p.make("make-tileable");
  ASSERT_TRUE(plugin) << p.diag.text();
  std::vector<TileCase> cases = tile_cases(43);
  for (size_t i : {0, 2, 9, 42}) {
    auto one = process(*plugin, cases[i].input, cases[i].width, cases[i].height, "texture");
    auto two = process(*plugin, cases[i].input, cases[i].width, cases[i].height, "texture");
    ASSERT_TRUE(one.image && two.image);
    EXPECT_EQ(one.image->rgba, two.image->rgba) << cases[i].what;
  }
}

// ---------------------------------------------------------------------------------------------
// pixelate

// An icon: colourful shading on a soft-edged disc, transparent around it.
Image colourful_icon(uint32_t w, uint32_t h) {
  Image img(w, h);
  for (uint32_t y = 0; y < h; ++y)
    for (uint32_t x = 0; x < w; ++x) {
      uint8_t* p = img.at(x, y);
      const double u = double(x) / w, v = double(y) / h;
      p[0] = uint8_t(255 * u);
      p[1] = uint8_t(255 * v);
      p[2] = uint8_t(127 + 127 * std::sin(10 * u * v));
      const double r = std::hypot(u - 0.5, v - 0.5);
      p[3] = uint8_t(std::clamp(255 * (0.45 - r) / 0.05, 0.0, 255.0));
    }
  return img;
}

// Checks the pixel-art invariants; returns the distinct opaque colours.
std::set<std::array<uint8_t, 3>> check_pixel_art(const Image& img, uint32_t w, uint32_t h,
                                                 uint32_t block) {
  EXPECT_EQ(img.width, w);
  EXPECT_EQ(img.height, h);
  std::set<std::array<uint8_t, 3>> colours;
  size_t not_flat = 0;
  for (uint32_t y = 0; y < img.height; ++y)
    for (uint32_t x = 0; x < img.width; ++x) {
      const uint8_t* p = img.at(x, y);
      EXPECT_TRUE(p[3] == 0 || p[3] == 255) << int(p[3]);
      if (p[3] == 0) {
        EXPECT_TRUE(p[0] == 0 && p[1] == 0 && p[2] == 0);
      } else {
        colours.insert({p[0], p[1], p[2]});
      }
      // Flat blocks: every pixel equals its block's top-left pixel.
      not_flat += !std::equal(p, p + 4, img.at(x / block * block, y / block * block));
    }
  EXPECT_EQ(not_flat, 0u);
  return colours;
}

TEST(PostprocessPixelate, SixteenColoursFlatBlocksBinaryAlpha) {
  Plugins p;
  auto plugin = p.make("pixelate");
  ASSERT_TRUE(plugin) << p.diag.text();
  EXPECT_EQ(plugin->plugin().provides(), uint32_t(KILN_PROPERTY_PALETTE));
  Image source = colourful_icon(300, 240);
  Processed r = process(*plugin, source, 128, 96);
  ASSERT_TRUE(r.image) << r.message;
  auto colours = check_pixel_art(*r.image, 128, 96, 4);
  std::printf("[ pixelate ] 128x96, pixel_size 4, colors 16: %zu colours\n", colours.size());
  EXPECT_LE(colours.size(), 16u);
  EXPECT_GE(colours.size(), 12u); // a colourful source uses the palette it is given
  // The transparent corners stay transparent, the middle is opaque.
  EXPECT_EQ(r.image->at(0, 0)[3], 0);
  EXPECT_EQ(r.image->at(64, 48)[3], 255);

  // A size that is not a multiple of the block: cut blocks at the right and bottom.
  r = process(*plugin, source, 30, 21);
  ASSERT_TRUE(r.image) << r.message;
  check_pixel_art(*r.image, 30, 21, 4);

  PluginSettings settings;
  settings.values["pixel_size"] = int_setting(1);
  settings.values["colors"] = int_setting(2);
  auto two = p.make("pixelate", &settings);
  ASSERT_TRUE(two) << p.diag.text();
  r = process(*two, source, 40, 32);
  ASSERT_TRUE(r.image) << r.message;
  EXPECT_LE(check_pixel_art(*r.image, 40, 32, 1).size(), 2u);

  auto again = process(*plugin, source, 128, 96);
  EXPECT_EQ(process(*plugin, source, 128, 96).image->rgba, again.image->rgba);

  settings.values["colors"] = int_setting(300);
  EXPECT_FALSE(p.make("pixelate", &settings));
  EXPECT_NE(p.diag.text().find("colors must be 2 to 256"), std::string::npos);
}

TEST(PostprocessPixelate, PaletteFilesGimpAndHexList) {
  Plugins p;
  TempDir dir;
  {
    std::ofstream gpl(dir / "sweetie.gpl");
    gpl << "GIMP Palette\nName: four\nColumns: 4\n# the colours\n"
           " 26  28  44\tNight\n177  62  83 Red\n56 183 100  Green\n 65 166 246 Blue\n"
           "255 205 117\n";
    std::ofstream hex(dir / "list.hex");
    hex << "# my palette\n#ff0000\n\n00ff00\n# blue below\n#0000FF\n#ffffff  white\n";
  }
  Image source = colourful_icon(200, 200);
  for (auto [file, palette] :
       {std::pair<const char*, std::set<std::array<uint8_t, 3>>>{
            "sweetie.gpl",
            {{26, 28, 44}, {177, 62, 83}, {56, 183, 100}, {65, 166, 246}, {255, 205, 117}}},
        {"list.hex", {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 255}}}}) {
    SCOPED_TRACE(file);
    PluginSettings settings;
    settings.dir = dir.path();
    settings.values["palette"] = string_setting(file);
    auto plugin = p.make("pixelate", &settings);
    ASSERT_TRUE(plugin) << p.diag.text();
    Processed r = process(*plugin, source, 64, 64);
    ASSERT_TRUE(r.image) << r.message;
    auto colours = check_pixel_art(*r.image, 64, 64, 4);
    EXPECT_GE(colours.size(), 3u);
    for (auto& c : colours)
      EXPECT_TRUE(palette.count(c)) << int(c[0]) << "," << int(c[1]) << "," << int(c[2]);
  }
}

TEST(PostprocessPixelate, BadPaletteNamesTheFileAndLine) {
  Plugins p;
  TempDir dir;
  {
    std::ofstream(dir / "bad.gpl") << "GIMP Palette\nName: bad\n0 0 0\n12 300 5\n";
    std::ofstream(dir / "bad.hex") << "#ff0000\n\nnot a colour\n";
    std::ofstream(dir / "empty.hex") << "# nothing here\n";
    std::ofstream(dir / "short.hex") << "# web colours\n#ff0000\n#fff\n";
    // Not a palette at all, and what it holds must not reach a build log.
    std::ofstream(dir / "environ") << "REPLICATE_API_TOKEN=kiln-test-secret-4f2a\n";
  }
  for (auto [file, expected] : {std::pair{"bad.gpl", "bad.gpl:4: a channel is outside 0-255"},
                                {"bad.hex", "bad.hex:3: expected a colour"},
                                {"empty.hex", "empty.hex: the palette has no colours"},
                                {"short.hex", "short.hex:3: expected six hex digits"},
                                {"environ", "environ:1: expected a colour"}}) {
    PluginSettings settings;
    settings.dir = dir.path();
    settings.values["palette"] = string_setting(file);
    p.diag = Diagnostics("assets.toml", std::make_shared<const std::string>());
    EXPECT_FALSE(p.make("pixelate", &settings)) << file;
    EXPECT_NE(p.diag.text().find((dir / expected).string()), std::string::npos) << p.diag.text();
    EXPECT_EQ(p.diag.text().find("kiln-test-secret"), std::string::npos) << p.diag.text();
  }
}

// ---------------------------------------------------------------------------------------------
// trim

// An anti-aliased opaque ellipse on transparency, its box known.
Image ellipse(uint32_t w, uint32_t h, double cx, double cy, double rx, double ry) {
  Image img(w, h);
  for (uint32_t y = 0; y < h; ++y)
    for (uint32_t x = 0; x < w; ++x) {
      int inside = 0;
      for (int s = 0; s < 16; ++s) {
        const double px = x + (s % 4 + 0.5) / 4, py = y + (s / 4 + 0.5) / 4;
        inside += std::pow((px - cx) / rx, 2) + std::pow((py - cy) / ry, 2) < 1;
      }
      uint8_t* p = img.at(x, y);
      p[0] = 200;
      p[1] = uint8_t(60 + y % 50);
      p[2] = 40;
      p[3] = uint8_t(inside * 255 / 16);
    }
  return img;
}

struct Box {
  uint32_t x0 = UINT32_MAX, y0 = UINT32_MAX, x1 = 0, y1 = 0; // [x0, x1) x [y0, y1)
};

Box subject_box(const Image& img) {
  Box b;
  for (uint32_t y = 0; y < img.height; ++y)
    for (uint32_t x = 0; x < img.width; ++x)
      if (img.at(x, y)[3] > 16) {
        b.x0 = std::min(b.x0, x);
        b.y0 = std::min(b.y0, y);
        b.x1 = std::max(b.x1, x + 1);
        b.y1 = std::max(b.y1, y + 1);
      }
  return b;
}

TEST(PostprocessTrim, CentresTheSubjectWithTheMargin) {
  Plugins p;
  auto plugin = p.make("trim");
  ASSERT_TRUE(plugin) << p.diag.text();
  EXPECT_EQ(plugin->plugin().provides(), 0u);
  struct Sizes {
    uint32_t w, h;
  };
  // A wide subject off to the side, into a square and into a wide and a tall canvas.
  Image wide = ellipse(400, 300, 110, 220, 90, 40);
  for (Sizes s : {Sizes{128, 128}, Sizes{200, 100}, Sizes{60, 160}}) {
    SCOPED_TRACE(std::to_string(s.w) + "x" + std::to_string(s.h));
    Processed r = process(*plugin, wide, s.w, s.h);
    ASSERT_TRUE(r.image) << r.message;
    ASSERT_EQ(r.image->width, s.w);
    ASSERT_EQ(r.image->height, s.h);
    Box b = subject_box(*r.image);
    std::printf("[ trim ] 400x300 subject 180x80 into %ux%u: box x %u-%u, y %u-%u\n", s.w, s.h,
                b.x0, b.x1, b.y0, b.y1);
    // Centred within a pixel.
    EXPECT_NEAR((b.x0 + b.x1) / 2.0, s.w / 2.0, 1.0);
    EXPECT_NEAR((b.y0 + b.y1) / 2.0, s.h / 2.0, 1.0);
    // The 8 % margin kept on every side, and reached on the side that limits the scale.
    const double mx = s.w * 0.08, my = s.h * 0.08;
    EXPECT_GE(b.x0, mx - 1);
    EXPECT_LE(b.x1, s.w - mx + 1);
    EXPECT_GE(b.y0, my - 1);
    EXPECT_LE(b.y1, s.h - my + 1);
    const double fill_x = (b.x1 - b.x0) / (s.w - 2 * mx), fill_y = (b.y1 - b.y0) / (s.h - 2 * my);
    EXPECT_NEAR(std::max(fill_x, fill_y), 1.0, 0.03);
    // The aspect ratio kept (180 x 80).
    EXPECT_NEAR(double(b.x1 - b.x0) / (b.y1 - b.y0), 180.0 / 80, 0.15);
  }

  PluginSettings none;
  none.values["margin"] = int_setting(0);
  auto flush = p.make("trim", &none);
  ASSERT_TRUE(flush) << p.diag.text();
  Processed r = process(*flush, wide, 100, 100);
  ASSERT_TRUE(r.image);
  Box b = subject_box(*r.image);
  EXPECT_LE(b.x0, 1u);
  EXPECT_GE(b.x1, 99u);

  auto one = process(*plugin, wide, 128, 128), two = process(*plugin, wide, 128, 128);
  EXPECT_EQ(one.image->rgba, two.image->rgba);
}

TEST(PostprocessTrim, OpaqueUnchangedEmptyFails) {
  Plugins p;
  auto plugin = p.make("trim");
  ASSERT_TRUE(plugin) << p.diag.text();
  Image opaque = ellipse(90, 70, 45, 35, 30, 20);
  for (size_t i = 3; i < opaque.rgba.size(); i += 4)
    opaque.rgba[i] = 255;
  Processed r = process(*plugin, opaque, 64, 64);
  ASSERT_TRUE(r.image) << r.message;
  EXPECT_EQ(r.image->width, 90u);
  EXPECT_EQ(r.image->rgba, opaque.rgba);

  r = process(*plugin, Image(80, 80), 64, 64);
  EXPECT_FALSE(r.image);
  EXPECT_EQ(r.category, KILN_ERROR_VALIDATION);
  EXPECT_NE(r.message.find("empty"), std::string::npos) << r.message;
}

} // namespace
} // namespace kiln::host
