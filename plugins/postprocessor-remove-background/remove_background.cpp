// The `remove-background` postprocessor, for icons and sprites: makes the plain backdrop that
// text-to-image models paint behind a subject ("isolated on a plain white background")
// transparent. Models return opaque images, and a sprite needs its alpha.
//
// The backdrop is what is connected to the image's border and close to the backdrop's colour.
// That colour is `key`, or else learnt from the border: a smooth surface (up to quadratic, so a
// gradient or a vignette is fine) fitted robustly to the border pixels, the subject's pixels
// where it touches the border ignored. Every decision is taken on a slightly blurred copy, and
// the tolerance grows with the noise measured on the border, so per-pixel noise and JPEG or
// WebP artefacts do not break the backdrop apart. A soft shadow cast on the backdrop is a
// smooth darkening of the backdrop's own colour: it is removed with it (`shadows`). A colour
// close to the backdrop's inside the subject (a white highlight on a blade) stays, since it is
// not connected to the border through backdrop.
//
// At the subject's edge, pixels partly cover the backdrop. Each gets the alpha of its position
// between the local backdrop colour B and the subject's colour F a pixel further in, and its
// colour is decontaminated, (C - (1 - a) B) / a, so no light halo of the old backdrop is left
// around the subject. (A dark outline on a black backdrop is itself such a mix of black and the
// fill inside it: its outer pixels come out partly transparent. Ask for a light backdrop.) An image
// whose border is already transparent (the offline placeholder draws shapes on transparency) is
// returned as it is; one with no plain backdrop (a busy scene) fails with a validation error, so
// the retry strategies may ask for another image.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <kiln/kiln.hpp>
#include <optional>
#include <string>
#include <vector>

namespace {

using Rgb = std::array<float, 3>;

float distance(const Rgb& a, const Rgb& b) {
  const float dr = a[0] - b[0], dg = a[1] - b[1], db = a[2] - b[2];
  return std::sqrt(dr * dr + dg * dg + db * db);
}

float luminance(const Rgb& c) {
  return (c[0] + c[1] + c[2]) / 3;
}

std::optional<Rgb> parse_colour(std::string text) {
  if (!text.empty() && text[0] == '#')
    text.erase(0, 1);
  if (text.size() != 6 || text.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
    return std::nullopt;
  const unsigned long v = std::stoul(text, nullptr, 16);
  return Rgb{float((v >> 16) & 255), float((v >> 8) & 255), float(v & 255)};
}

// A smooth colour surface over the image: each channel a polynomial in x and y of degree 0, 1
// or 2, in coordinates scaled to [-1, 1].
class Surface {
public:
  Surface(uint32_t width, uint32_t height) : m_width(width), m_height(height) {}

  static Surface constant(uint32_t width, uint32_t height, const Rgb& c) {
    Surface s(width, height);
    for (int ch = 0; ch < 3; ++ch)
      s.m_coef[size_t(ch)][0] = c[size_t(ch)];
    return s;
  }

  Rgb at(uint32_t x, uint32_t y) const {
    std::array<double, 6> b = basis(x, y);
    Rgb out;
    for (size_t ch = 0; ch < 3; ++ch) {
      double v = 0;
      for (size_t i = 0; i < 6; ++i)
        v += m_coef[ch][i] * b[i];
      out[ch] = float(v);
    }
    return out;
  }

  // Least squares over the samples `use` selects, with `terms` basis terms (1, 3 or 6). False
  // when the samples do not determine them.
  template <class Sample>
  bool fit(const std::vector<Sample>& samples, const std::vector<char>& use, size_t terms) {
    double ata[6][6] = {}, atb[6][3] = {};
    size_t n = 0;
    for (size_t s = 0; s < samples.size(); ++s) {
      if (!use[s])
        continue;
      ++n;
      std::array<double, 6> b = basis(samples[s].x, samples[s].y);
      for (size_t i = 0; i < terms; ++i) {
        for (size_t j = 0; j < terms; ++j)
          ata[i][j] += b[i] * b[j];
        for (size_t ch = 0; ch < 3; ++ch)
          atb[i][ch] += b[i] * samples[s].colour[ch];
      }
    }
    if (n < terms * 2)
      return false;
    // Gaussian elimination with partial pivoting.
    for (size_t col = 0; col < terms; ++col) {
      size_t pivot = col;
      for (size_t r = col + 1; r < terms; ++r)
        if (std::abs(ata[r][col]) > std::abs(ata[pivot][col]))
          pivot = r;
      if (std::abs(ata[pivot][col]) < 1e-9 * double(n))
        return false;
      std::swap(ata[col], ata[pivot]);
      std::swap(atb[col], atb[pivot]);
      for (size_t r = 0; r < terms; ++r) {
        if (r == col)
          continue;
        const double f = ata[r][col] / ata[col][col];
        for (size_t k = col; k < terms; ++k)
          ata[r][k] -= f * ata[col][k];
        for (size_t ch = 0; ch < 3; ++ch)
          atb[r][ch] -= f * atb[col][ch];
      }
    }
    for (auto& c : m_coef)
      c.fill(0);
    for (size_t i = 0; i < terms; ++i)
      for (size_t ch = 0; ch < 3; ++ch)
        m_coef[ch][i] = atb[i][ch] / ata[i][i];
    return true;
  }

private:
  std::array<double, 6> basis(uint32_t x, uint32_t y) const {
    const double u = m_width > 1 ? 2.0 * x / (m_width - 1) - 1 : 0;
    const double v = m_height > 1 ? 2.0 * y / (m_height - 1) - 1 : 0;
    return {1, u, v, u * u, u * v, v * v};
  }

  uint32_t m_width, m_height;
  std::array<std::array<double, 6>, 3> m_coef{};
};

struct Sample {
  uint32_t x, y;
  Rgb colour;
};

// The image's colours as floats, and a copy blurred by a 5x5 binomial filter (noise and
// compression artefacts shrink to about a quarter; edges widen by two pixels).
struct Colours {
  uint32_t width, height;
  std::vector<Rgb> raw, smooth;

  explicit Colours(const kiln::Image& image)
      : width(image.width), height(image.height), raw(size_t(width) * height), smooth(raw.size()) {
    for (size_t i = 0; i < raw.size(); ++i)
      for (size_t c = 0; c < 3; ++c)
        raw[i][c] = image.rgba[i * 4 + c];
    // The [1 4 6 4 1] / 16 filter along rows, then along columns, edges repeated; the last
    // five rows filtered are kept in a ring.
    auto clamp = [](int64_t i, uint32_t n) {
      return uint32_t(std::clamp<int64_t>(i, 0, int64_t(n) - 1));
    };
    std::vector<Rgb> ring(size_t(width) * 5);
    auto filter_row = [&](uint32_t y) {
      const Rgb* in = &raw[size_t(y) * width];
      Rgb* out = &ring[size_t(y % 5) * width];
      for (uint32_t x = 0; x < width; ++x)
        mix(in[clamp(x - 2LL, width)], in[clamp(x - 1LL, width)], in[x], in[clamp(x + 1LL, width)],
            in[clamp(x + 2LL, width)], out[x]);
    };
    for (uint32_t y = 0; y < std::min(height, 2u); ++y)
      filter_row(y);
    for (uint32_t y = 0; y < height; ++y) {
      if (y + 2 < height)
        filter_row(y + 2);
      const Rgb* in[5];
      for (int i = 0; i < 5; ++i)
        in[i] = &ring[size_t(clamp(int64_t(y) + i - 2, height) % 5) * width];
      Rgb* out = &smooth[size_t(y) * width];
      for (uint32_t x = 0; x < width; ++x)
        mix(in[0][x], in[1][x], in[2][x], in[3][x], in[4][x], out[x]);
    }
  }

  static void mix(const Rgb& a, const Rgb& b, const Rgb& c, const Rgb& d, const Rgb& e, Rgb& o) {
    for (size_t ch = 0; ch < 3; ++ch)
      o[ch] = (a[ch] + e[ch] + 4 * (b[ch] + d[ch]) + 6 * c[ch]) * (1 / 16.f);
  }
};

// How deep into the subject (in thirds of a pixel) its edge pixels may mix with the backdrop.
constexpr uint8_t k_edge = 7;
// How many pixels a shadow is followed where the smoothed image is steep (next to the subject).
constexpr uint8_t k_shadow_reach = 6;

class RemoveBackground : public kiln::Postprocessor {
public:
  static constexpr uint32_t k_provides = KILN_PROPERTY_ALPHA;

  explicit RemoveBackground(const kiln::Context& context)
      : m_tolerance(float(context.options().get_float("tolerance"))),
        m_shadows(context.options().get_bool("shadows")),
        m_hint(context.options().get_string("prompt_hint")) {
    const std::string key = context.options().get_string("key");
    if (!key.empty()) {
      m_key = parse_colour(key);
      if (!m_key)
        throw kiln::Error("key must be a colour \"#rrggbb\", not '" + key + "'");
    }
    if (m_tolerance < 1 || m_tolerance > 200)
      throw kiln::Error("tolerance must be 1 to 200");
  }

  static kiln::OptionSchema options() {
    return {
        {"key", "the backdrop's colour \"#rrggbb\"; \"\" learns it from the image's border",
         KILN_OPTION_STRING, ""},
        {"tolerance",
         "how far (RGB distance) from the backdrop's colour a pixel still belongs to it; raised "
         "by itself for noisy images",
         KILN_OPTION_FLOAT, "24"},
        {"shadows", "remove soft shadows cast on the backdrop too", KILN_OPTION_BOOL, "true"},
        {"prompt_hint", "appended to the prompt (\"\" for none)", KILN_OPTION_STRING,
         "isolated on a plain white background"},
    };
  }

  std::string prompt_hint(const kiln::Asset&) override { return m_hint; }

  kiln::Image process(const kiln::Asset&, kiln::Image image) override {
    const uint32_t w = image.width, h = image.height;
    if (w == 0 || h == 0 || border_is_transparent(image))
      return image;
    const Colours colours(image);

    // The backdrop's colour surface and how far from it a backdrop pixel may stray.
    float tolerance = m_tolerance, noise = 0;
    Surface backdrop = fit_backdrop(colours, tolerance, noise);

    // Flood fill from the border through backdrop.
    const size_t n = size_t(w) * h;
    std::vector<Rgb> expected(n);
    for (uint32_t y = 0; y < h; ++y)
      for (uint32_t x = 0; x < w; ++x)
        expected[size_t(y) * w + x] = backdrop.at(x, y);
    const float step = std::max(12.0f, tolerance / 2);
    std::vector<char> plain_at(n);
    for (size_t i = 0; i < n; ++i)
      plain_at[i] = distance(colours.smooth[i], expected[i]) <= tolerance;
    auto plain = [&](size_t i) {
      return plain_at[i] != 0;
    };
    // A smooth darkening (or brightening) of the backdrop's own colour: a shadow, or light.
    // Smooth in every direction: a pale subject's hard edge (a grey disc on white is a darkening
    // of white too) is steep across it, whichever way a path would cross it. A shadow is entered
    // from the backdrop as it truly is (not only blurred: the blur makes the rim of a pale,
    // low-contrast subject look like backdrop) or from more shadow. Where a shadow meets the
    // subject, the image is steep too (the subject's edge): from the shadow, the fill goes on a
    // few pixels more through steps no larger than the noise makes, so the shadow is taken up
    // to the subject's own anti-aliased edge.
    const std::vector<float> slope =
        m_shadows ? gradient(colours.smooth, w, h) : std::vector<float>();
    const float raw_step = std::max(step, 4.5f * noise);
    const float raw_plain = tolerance + 2.5f * noise;
    std::vector<uint8_t> leak(n, 0); // pixels entered past a steep place, in a row
    std::vector<char> shadow(n, 0);  // entered as shadow, not as plain backdrop
    auto shaded = [&](size_t i, size_t from) {
      const Rgb &s = colours.smooth[i], &b = expected[i];
      if (!m_shadows || luminance(b) < 40)
        return false;
      if (!shadow[from] && distance(colours.raw[from], expected[from]) > raw_plain)
        return false;
      // Past a steep place every step counts: the fill does not find its way round a hard
      // edge into a pale subject's flat inside.
      if (slope[i] > step || leak[from] > 0) {
        if (!shadow[from] || leak[from] >= k_shadow_reach ||
            distance(colours.raw[i], colours.raw[from]) > raw_step)
          return false;
        leak[i] = uint8_t(leak[from] + 1);
      }
      const float k =
          (s[0] * b[0] + s[1] * b[1] + s[2] * b[2]) / (b[0] * b[0] + b[1] * b[1] + b[2] * b[2]);
      if (k < 0.3f || k > 1.3f)
        return false;
      if (distance(s, Rgb{k * b[0], k * b[1], k * b[2]}) > tolerance)
        return false;
      shadow[i] = 1;
      return true;
    };
    std::vector<char> back(n, 0);
    std::vector<size_t> queue;
    for (uint32_t y = 0; y < h; ++y)
      for (uint32_t x = 0; x < w; ++x)
        if ((x == 0 || y == 0 || x == w - 1 || y == h - 1) && plain(size_t(y) * w + x)) {
          back[size_t(y) * w + x] = 1;
          queue.push_back(size_t(y) * w + x);
        }
    for (size_t head = 0; head < queue.size(); ++head) {
      const size_t i = queue[head];
      const uint32_t x = uint32_t(i % w), y = uint32_t(i / w);
      auto visit = [&](size_t j) {
        if (!back[j] && (plain(j) || shaded(j, i))) {
          back[j] = 1;
          queue.push_back(j);
        }
      };
      if (x > 0)
        visit(i - 1);
      if (x + 1 < w)
        visit(i + 1);
      if (y > 0)
        visit(i - w);
      if (y + 1 < h)
        visit(i + w);
    }
    drop_specks(colours, expected, tolerance, back);

    // Alpha: 0 on the backdrop, fractional at the subject's edge, the image's own elsewhere.
    kiln::Image out(w, h);
    const std::vector<uint8_t> near = distance_to_backdrop(back, w, h);
    for (uint32_t y = 0; y < h; ++y)
      for (uint32_t x = 0; x < w; ++x) {
        const size_t i = size_t(y) * w + x;
        uint8_t* px = out.at(x, y);
        if (back[i])
          continue; // transparent black
        const uint8_t* in = image.at(x, y);
        if (near[i] > k_edge) {
          std::copy_n(in, 4, px);
          continue;
        }
        Rgb colour;
        const float alpha = unmix(colours, back, near, x, y, tolerance, noise, colour);
        const long a = std::lround(alpha * in[3]);
        if (a == 0)
          continue;
        for (size_t c = 0; c < 3; ++c)
          px[c] = uint8_t(std::lround(std::clamp(colour[c], 0.0f, 255.0f)));
        px[3] = uint8_t(a);
      }
    // A subject of a few pixels is no subject: the image was all backdrop, or the subject is as
    // pale as the backdrop's shadows and went with them. Said here, not as an empty image later.
    size_t solid = 0, shadowed = 0;
    for (size_t i = 0; i < n; ++i) {
      solid += out.rgba[i * 4 + 3] >= 128;
      shadowed += back[i] && shadow[i];
    }
    if (solid * 200 < n) {
      char buf[320];
      std::snprintf(buf, sizeof buf,
                    "nothing but backdrop: %.1f%% of the image is left as the subject%s",
                    100.0 * double(solid) / double(n),
                    shadowed * 20 > n ? "; a subject nearly as light as the backdrop is taken "
                                        "for its shadow: set shadows = false, or ask for a "
                                        "backdrop that contrasts with it (key and prompt_hint)"
                                      : "");
      throw kiln::Error(buf, KILN_ERROR_VALIDATION);
    }
    return out;
  }

private:
  // How steep an image is at each pixel: the length of its colour gradient (central
  // differences, per pixel, over the three channels).
  static std::vector<float> gradient(const std::vector<Rgb>& image, uint32_t w, uint32_t h) {
    std::vector<float> out(size_t(w) * h, 0);
    for (uint32_t y = 0; y < h; ++y)
      for (uint32_t x = 0; x < w; ++x) {
        const Rgb& l = image[size_t(y) * w + (x ? x - 1 : x)];
        const Rgb& r = image[size_t(y) * w + std::min(w - 1, x + 1)];
        const Rgb& u = image[size_t(y ? y - 1 : y) * w + x];
        const Rgb& d = image[size_t(std::min(h - 1, y + 1)) * w + x];
        float sum = 0;
        for (size_t c = 0; c < 3; ++c) {
          const float gx = (r[c] - l[c]) / 2, gy = (d[c] - u[c]) / 2;
          sum += gx * gx + gy * gy;
        }
        out[size_t(y) * w + x] = std::sqrt(sum);
      }
    return out;
  }

  // 95 % of the outermost pixels at most 16 alpha: the image has a transparent background.
  static bool border_is_transparent(const kiln::Image& image) {
    const uint32_t w = image.width, h = image.height;
    size_t border = 0, clear = 0;
    for (uint32_t y = 0; y < h; ++y)
      for (uint32_t x = 0; x < w; ++x)
        if (x == 0 || y == 0 || x == w - 1 || y == h - 1) {
          ++border;
          clear += image.at(x, y)[3] <= 16;
        }
    return clear * 100 >= border * 95;
  }

  // The backdrop's colour surface from the border (or the key), robustly: start from the most
  // common border colour, then fit a plane and a quadratic to the border pixels close to the
  // surface so far. Raises `tolerance` to the noise seen on the border, and sets `noise` to the
  // raw pixels' typical distance from the surface. Throws when most of the border is not
  // backdrop.
  Surface fit_backdrop(const Colours& colours, float& tolerance, float& noise) const {
    const uint32_t w = colours.width, h = colours.height;
    const uint32_t ring = std::min<uint32_t>({2, w, h});
    std::vector<Sample> samples;
    for (uint32_t y = 0; y < h; ++y)
      for (uint32_t x = 0; x < w; ++x)
        if (x < ring || y < ring || x + ring >= w || y + ring >= h)
          samples.push_back({x, y, colours.smooth[size_t(y) * w + x]});

    Surface surface = Surface::constant(w, h, m_key ? *m_key : dominant(samples));
    std::vector<char> inlier(samples.size());
    std::vector<float> residual(samples.size());
    const float base = tolerance;
    auto classify = [&](float limit) {
      std::vector<float> inlying;
      for (size_t s = 0; s < samples.size(); ++s) {
        residual[s] = distance(samples[s].colour, surface.at(samples[s].x, samples[s].y));
        inlier[s] = residual[s] <= limit;
        if (inlier[s])
          inlying.push_back(residual[s]);
      }
      // Noise: per-pixel noise left after the blur shows as the typical distance to the
      // surface; the backdrop's pixels may stray several times as far.
      if (!inlying.empty()) {
        std::nth_element(inlying.begin(), inlying.begin() + std::ptrdiff_t(inlying.size() / 2),
                         inlying.end());
        tolerance = std::max(base, 3.5f * inlying[inlying.size() / 2]);
      }
    };
    classify(2 * base);
    if (!m_key) {
      const size_t terms[] = {3, 6, 6, 6};
      for (size_t t : terms) {
        Surface next = surface;
        if (next.fit(samples, inlier, t))
          surface = next;
        classify(t == 3 ? 2 * tolerance : tolerance);
      }
    }
    classify(tolerance);
    size_t inliers = 0;
    for (char c : inlier)
      inliers += c;
    if (inliers * 10 < samples.size() * 6) {
      char buf[200];
      if (m_key)
        std::snprintf(buf, sizeof buf,
                      "no plain backdrop around the subject: only %.0f%% of the border is the key "
                      "colour (ask for a plain background)",
                      100.0 * double(inliers) / double(samples.size()));
      else
        std::snprintf(buf, sizeof buf,
                      "no plain backdrop around the subject: the border is not one colour (%.0f%% "
                      "of it is; ask for a plain background)",
                      100.0 * double(inliers) / double(samples.size()));
      throw kiln::Error(buf, KILN_ERROR_VALIDATION);
    }
    // The noise of the raw pixels, for the alpha at the subject's edge.
    std::vector<float> raw;
    for (size_t s = 0; s < samples.size(); ++s)
      if (inlier[s])
        raw.push_back(distance(colours.raw[size_t(samples[s].y) * w + samples[s].x],
                               surface.at(samples[s].x, samples[s].y)));
    std::nth_element(raw.begin(), raw.begin() + std::ptrdiff_t(raw.size() / 2), raw.end());
    noise = raw[raw.size() / 2];
    return surface;
  }

  // The most common colour of the samples: the median of those in the fullest cell of a
  // 32-level grid over RGB.
  static Rgb dominant(const std::vector<Sample>& samples) {
    constexpr int k_cells = 8; // 256 / 32
    auto cell = [](const Rgb& c) {
      int i = 0;
      for (size_t ch = 0; ch < 3; ++ch)
        i = i * k_cells + std::clamp(int(c[ch]) / 32, 0, k_cells - 1);
      return size_t(i);
    };
    std::vector<uint32_t> count(k_cells * k_cells * k_cells, 0);
    for (const Sample& s : samples)
      ++count[cell(s.colour)];
    const size_t best = size_t(std::max_element(count.begin(), count.end()) - count.begin());
    std::array<std::vector<float>, 3> values;
    for (const Sample& s : samples)
      if (cell(s.colour) == best)
        for (size_t ch = 0; ch < 3; ++ch)
          values[ch].push_back(s.colour[ch]);
    Rgb out{};
    for (size_t ch = 0; ch < 3; ++ch) {
      auto& v = values[ch];
      std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(v.size() / 2), v.end());
      out[ch] = v[v.size() / 2];
    }
    return out;
  }

  // Specks: tiny islands left inside the backdrop by noise or compression artefacts, barely
  // off the backdrop's colour, join it. A small but distinct part of the subject stays.
  static void drop_specks(const Colours& colours, const std::vector<Rgb>& expected, float tolerance,
                          std::vector<char>& back) {
    const uint32_t w = colours.width, h = colours.height;
    const size_t n = size_t(w) * h;
    const size_t small = std::max<size_t>(4, n / 40000);
    std::vector<char> seen(n, 0);
    std::vector<size_t> part;
    for (size_t start = 0; start < n; ++start) {
      if (back[start] || seen[start])
        continue;
      part.assign(1, start);
      seen[start] = 1;
      float far = 0;
      for (size_t head = 0; head < part.size(); ++head) {
        const size_t i = part[head];
        far = std::max(far, distance(colours.smooth[i], expected[i]));
        const uint32_t x = uint32_t(i % w), y = uint32_t(i / w);
        for (uint32_t yy = y ? y - 1 : 0; yy <= std::min(h - 1, y + 1); ++yy)
          for (uint32_t xx = x ? x - 1 : 0; xx <= std::min(w - 1, x + 1); ++xx) {
            const size_t j = size_t(yy) * w + xx;
            if (!back[j] && !seen[j]) {
              seen[j] = 1;
              part.push_back(j);
            }
          }
      }
      if (part.size() <= small && far <= 2.5f * tolerance)
        for (size_t i : part)
          back[i] = 1;
    }
  }

  // For every pixel, its distance to the backdrop in thirds of a pixel (a 3-4 chamfer distance:
  // close to the true distance at any angle), at most 255.
  static std::vector<uint8_t> distance_to_backdrop(const std::vector<char>& back, uint32_t w,
                                                   uint32_t h) {
    std::vector<uint8_t> d(back.size());
    for (size_t i = 0; i < back.size(); ++i)
      d[i] = back[i] ? 0 : 255;
    auto relax = [&](size_t i, int64_t xx, int64_t yy, int step) {
      if (xx >= 0 && yy >= 0 && xx < w && yy < h)
        d[i] = uint8_t(std::min<int>(d[i], d[size_t(yy) * w + size_t(xx)] + step));
    };
    for (uint32_t y = 0; y < h; ++y)
      for (uint32_t x = 0; x < w; ++x) {
        const size_t i = size_t(y) * w + x;
        relax(i, int64_t(x) - 1, y, 3);
        relax(i, int64_t(x) - 1, int64_t(y) - 1, 4);
        relax(i, x, int64_t(y) - 1, 3);
        relax(i, int64_t(x) + 1, int64_t(y) - 1, 4);
      }
    for (uint32_t y = h; y-- > 0;)
      for (uint32_t x = w; x-- > 0;) {
        const size_t i = size_t(y) * w + x;
        relax(i, int64_t(x) + 1, y, 3);
        relax(i, int64_t(x) + 1, int64_t(y) + 1, 4);
        relax(i, x, int64_t(y) + 1, 3);
        relax(i, int64_t(x) - 1, int64_t(y) + 1, 4);
      }
    return d;
  }

  // The alpha of a subject pixel near the backdrop, and its colour without the backdrop's part.
  // B is the mean of the backdrop pixels around it. Each subject pixel around it is a candidate
  // for F, the colour that covers part of it, if C is a mix of B and F (C = a F + (1 - a) B), so
  // an edge pixel between the backdrop and a dark outline takes the outline's colour, and the
  // light fill next to a thin outline stays opaque. `noise` is the typical distance of a raw
  // backdrop pixel from its colour: alphas that small differences could make are 0.
  static float unmix(const Colours& colours, const std::vector<char>& back,
                     const std::vector<uint8_t>& near, uint32_t x, uint32_t y, float tolerance,
                     float noise, Rgb& colour) {
    const uint32_t w = colours.width, h = colours.height;
    const Rgb& c = colours.raw[size_t(y) * w + x];
    constexpr int k_radius = 3;
    Rgb b{0, 0, 0};
    int nb = 0;
    for (int dy = -k_radius; dy <= k_radius; ++dy)
      for (int dx = -k_radius; dx <= k_radius; ++dx) {
        const int64_t xx = int64_t(x) + dx, yy = int64_t(y) + dy;
        if (xx < 0 || yy < 0 || xx >= w || yy >= h || !back[size_t(yy) * w + size_t(xx)])
          continue;
        for (size_t ch = 0; ch < 3; ++ch)
          b[ch] += colours.raw[size_t(yy) * w + size_t(xx)][ch];
        ++nb;
      }
    colour = c;
    if (nb == 0)
      return 1;
    for (float& v : b)
      v /= float(nb);
    const Rgb v{c[0] - b[0], c[1] - b[1], c[2] - b[2]};
    // Candidates for F: the subject pixels one pixel deeper inside (edge pixels are mixes
    // themselves; deeper ones may be another colour, the fill inside an outline). Of those that
    // explain C as a mix of B and F within the noise (or an eighth of their distance from B, for
    // the colour shifts of lossy compression), the farthest from B is the pure colour, the others
    // being mixes on the same line. When none explains C, C is a colour of its own: opaque,
    // unless it is close to the backdrop's (compression ringing next to the edge).
    const float fits = std::max(tolerance / 2, 2.5f * noise);
    float best_alpha = 0, best_reach = 0;
    Rgb best_f{0, 0, 0};
    const uint8_t depth = near[size_t(y) * w + x];
    for (int dy = -k_radius; dy <= k_radius; ++dy)
      for (int dx = -k_radius; dx <= k_radius; ++dx) {
        const int64_t xx = int64_t(x) + dx, yy = int64_t(y) + dy;
        if (xx < 0 || yy < 0 || xx >= w || yy >= h)
          continue;
        const size_t j = size_t(yy) * w + size_t(xx);
        if (back[j] || near[j] < depth + 3 || near[j] > depth + 4)
          continue;
        const Rgb& f = colours.raw[j];
        const Rgb d{f[0] - b[0], f[1] - b[1], f[2] - b[2]};
        const float reach = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
        if (reach < tolerance || reach <= best_reach)
          continue; // as good as the backdrop's colour, or not farther than the best so far
        const float a =
            std::clamp((v[0] * d[0] + v[1] * d[1] + v[2] * d[2]) / (reach * reach), 0.0f, 1.0f);
        if (distance(v, Rgb{a * d[0], a * d[1], a * d[2]}) <= std::max(fits, reach / 8)) {
          best_alpha = a;
          best_f = f;
          best_reach = reach;
        }
      }
    if (best_reach == 0)
      return distance(c, b) <= 3 * tolerance ? 0 : 1;
    if (best_alpha < std::max(0.1f, 1.5f * noise / best_reach))
      return 0; // too little to tell from noise
    // F, plus what the mix does not explain (noise, texture): C itself when a is 1.
    for (size_t ch = 0; ch < 3; ++ch)
      colour[ch] = best_f[ch] + v[ch] - best_alpha * (best_f[ch] - b[ch]);
    return best_alpha > 0.92f ? 1 : best_alpha;
  }

  float m_tolerance;
  bool m_shadows;
  std::string m_hint;
  std::optional<Rgb> m_key;
};

} // namespace

KILN_PLUGIN(RemoveBackground, "remove-background", "1.0.0",
            "Makes the plain backdrop behind a subject transparent, with clean anti-aliased edges")
