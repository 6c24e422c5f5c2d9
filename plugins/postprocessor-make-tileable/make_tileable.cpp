// The `make-tileable` postprocessor, for textures: makes any image repeat without a seam. Models
// asked for a "seamless texture" rarely paint one: the left edge does not continue the right
// one, and light falls from one side.
//
// The image is first brought to the asset's size here (cropped to its aspect, then scaled with
// the host's filter), because a later fit would resample the edges and bring a seam back. An
// image that tiles already (checked as in step 3) is kept as it is. Otherwise:
// 1. The lighting is evened out: a plane fitted to each colour channel (light from one side) is
//    taken away, the mean kept. No periodic image can keep a slope across it.
// 2. The image is cross-faded with its copies shifted by about half its width, half its height
//    and both (to where the image is quietest, which becomes the new edge), weighted so that
//    near each edge only copies whose own edges are far away show; the middle of the image
//    stays untouched.
// 3. Healing: what is left of the jump between the last and first column (and row) is spread
//    over a band on both sides of the wrap-around, so crossing it costs no more than a step
//    inside the image. The result is checked as the `tileable` validator checks it, with a
//    margin for lossy encoding; when the check fails, the jump is spread whole over the full
//    width, and as a last resort (tiny or pathological images) the band along the edges is
//    blended with its mirror image, which makes opposite edges equal.
#include <algorithm>
#include <array>
#include <cmath>
#include <kiln/kiln.hpp>
#include <string>
#include <vector>

namespace {

constexpr int k_channels = 4;

// Floating-point RGBA, so the steps below add no rounding of their own.
struct Planes {
  uint32_t width = 0, height = 0;
  std::vector<float> v; // (y * width + x) * 4 + channel

  float& at(uint32_t x, uint32_t y, int c) { return v[(size_t(y) * width + x) * 4 + size_t(c)]; }
  float at(uint32_t x, uint32_t y, int c) const {
    return v[(size_t(y) * width + x) * 4 + size_t(c)];
  }
};

Planes to_planes(const kiln::Image& image) {
  Planes p{image.width, image.height, std::vector<float>(image.rgba.begin(), image.rgba.end())};
  return p;
}

kiln::Image to_image(const Planes& p) {
  kiln::Image out(p.width, p.height);
  for (size_t i = 0; i < p.v.size(); ++i)
    out.rgba[i] = uint8_t(std::lround(std::clamp(p.v[i], 0.0f, 255.0f)));
  return out;
}

// Planes transposed, so that every step written for columns works on rows too.
Planes transpose(const Planes& p) {
  Planes t{p.height, p.width, std::vector<float>(p.v.size())};
  for (uint32_t y = 0; y < p.height; ++y)
    for (uint32_t x = 0; x < p.width; ++x)
      for (int c = 0; c < k_channels; ++c)
        t.at(y, x, c) = p.at(x, y, c);
  return t;
}

// 1. Takes away the plane that best fits each colour channel, keeping its mean (alpha is left
// alone).
void even_lighting(Planes& p) {
  const double cx = (p.width - 1) / 2.0, cy = (p.height - 1) / 2.0;
  double sxx = 0, syy = 0;
  for (uint32_t x = 0; x < p.width; ++x)
    sxx += (x - cx) * (x - cx);
  for (uint32_t y = 0; y < p.height; ++y)
    syy += (y - cy) * (y - cy);
  sxx *= p.height;
  syy *= p.width;
  for (int c = 0; c < 3; ++c) {
    double sx = 0, sy = 0;
    for (uint32_t y = 0; y < p.height; ++y)
      for (uint32_t x = 0; x < p.width; ++x) {
        sx += (x - cx) * p.at(x, y, c);
        sy += (y - cy) * p.at(x, y, c);
      }
    const double gx = sxx > 0 ? sx / sxx : 0, gy = syy > 0 ? sy / syy : 0;
    for (uint32_t y = 0; y < p.height; ++y)
      for (uint32_t x = 0; x < p.width; ++x)
        p.at(x, y, c) -= float(gx * (x - cx) + gy * (y - cy));
  }
}

// The weight of the unshifted copy at column x of n: 0 at the edges, 1 over the middle half.
double middle_weight(uint32_t x, uint32_t n) {
  const double u = (x + 0.5) / n;
  const double t = std::clamp(std::min(u, 1 - u) * 4, 0.0, 1.0);
  return t * t * (3 - 2 * t);
}

// How far to shift the copies across the columns: about half the width, but where the
// image is quietest (the least change between neighbouring columns around it), since that
// column becomes the new left/right edge. The shifted copy's own seam must fall where it is
// not shown, in the middle half.
uint32_t quiet_shift(const Planes& p) {
  const uint32_t w = p.width, h = p.height;
  const uint32_t lo = uint32_t(std::ceil(w / 4.0 + 0.5)), hi = uint32_t(std::floor(w * 0.75 - 0.5));
  if (lo > hi || w < 8)
    return w / 2;
  std::vector<double> change(w, 0); // between column x and x + 1
  for (uint32_t y = 0; y < h; ++y)
    for (uint32_t x = 0; x + 1 < w; ++x)
      for (int c = 0; c < 3; ++c)
        change[x] += std::abs(p.at(x + 1, y, c) - p.at(x, y, c));
  auto off_centre = [w](uint32_t s) {
    return s > w / 2 ? s - w / 2 : w / 2 - s;
  };
  uint32_t best = w / 2;
  double best_change = INFINITY;
  for (uint32_t s = lo; s <= hi; ++s) {
    const double around = change[s - 2] + change[s - 1] + change[s] + change[s + 1];
    if (around < best_change || (around == best_change && off_centre(s) < off_centre(best))) {
      best_change = around;
      best = s;
    }
  }
  return best;
}

// 2. The cross-fade of the four copies: the image, and copies shifted by `sx` columns, `sy`
// rows, and both.
Planes cross_fade(const Planes& p, uint32_t sx, uint32_t sy) {
  Planes out{p.width, p.height, std::vector<float>(p.v.size())};
  const uint32_t w = p.width, h = p.height;
  for (uint32_t y = 0; y < h; ++y) {
    const double wy = middle_weight(y, h);
    const uint32_t ys = (y + sy) % h;
    for (uint32_t x = 0; x < w; ++x) {
      const double wx = middle_weight(x, w);
      const uint32_t xs = (x + sx) % w;
      for (int c = 0; c < k_channels; ++c)
        out.at(x, y, c) =
            float(wx * wy * p.at(x, y, c) + (1 - wx) * wy * p.at(xs, y, c) +
                  wx * (1 - wy) * p.at(x, ys, c) + (1 - wx) * (1 - wy) * p.at(xs, ys, c));
    }
  }
  return out;
}

// 3. Spreads the jump across the left/right wrap-around of every row over `band` columns on
// each side: the jump becomes jump / (2 band), and each step in the band grows by as much.
// `smooth_rows` > 0 averages the jump over that many rows each way first, so only its
// large-scale part (an edge running into the wrap-around, uneven light) is taken away and the
// texture's own fine mismatch, as natural as any step inside, stays.
void spread_seam(Planes& p, uint32_t band, uint32_t smooth_rows) {
  const uint32_t w = p.width, h = p.height;
  band = std::min(band, w / 2);
  if (band == 0)
    return;
  std::vector<std::array<double, k_channels>> jump(h);
  for (uint32_t y = 0; y < h; ++y)
    for (int c = 0; c < k_channels; ++c)
      jump[y][size_t(c)] = double(p.at(0, y, c)) - p.at(w - 1, y, c);
  if (smooth_rows > 0) {
    const uint32_t r = std::min(smooth_rows, (h - 1) / 2);
    std::vector<std::array<double, k_channels>> smooth(h);
    for (uint32_t y = 0; y < h; ++y)
      for (int c = 0; c < k_channels; ++c) {
        double sum = 0;
        for (uint32_t i = 0; i < 2 * r + 1; ++i)
          sum += jump[(y + h - r + i) % h][size_t(c)]; // the rows wrap around too
        smooth[y][size_t(c)] = sum / (2 * r + 1);
      }
    jump = smooth;
  }
  for (uint32_t y = 0; y < h; ++y)
    for (uint32_t i = 0; i < band; ++i) {
      const double share = (band - i - 0.5) / (2.0 * band);
      for (int c = 0; c < k_channels; ++c) {
        p.at(i, y, c) -= float(jump[y][size_t(c)] * share);
        p.at(w - 1 - i, y, c) += float(jump[y][size_t(c)] * share);
      }
    }
}

// The last resort: the band along the left and right edges is blended with the image's mirror,
// half and half at the edges themselves, so column 0 and column w-1 become equal.
void mirror_edges(Planes& p) {
  const uint32_t w = p.width, h = p.height;
  const uint32_t band = std::max(1u, w / 4);
  for (uint32_t y = 0; y < h; ++y)
    for (uint32_t x = 0; x < band && x < w - 1 - x; ++x) {
      const double t = std::min(1.0, double(x) / band); // m is exactly 0.5 at the edges
      const double m = 0.5 * (1 - t * t * (3 - 2 * t));
      for (int c = 0; c < k_channels; ++c) {
        const double a = p.at(x, y, c), b = p.at(w - 1 - x, y, c);
        p.at(x, y, c) = float((1 - m) * a + m * b);
        p.at(w - 1 - x, y, c) = float((1 - m) * b + m * a);
      }
    }
}

double difference(const uint8_t* a, const uint8_t* b) {
  return (std::abs(a[0] - b[0]) + std::abs(a[1] - b[1]) + std::abs(a[2] - b[2])) / 3.0;
}

// The left/right wrap-around as the `tileable` validator measures it: the mean difference
// between the first and last column, and the image's own, between neighbouring columns (the
// smaller of the validator's sample and all of them).
struct Seam {
  double seam = 0, inner = 0;
};

Seam measure_seam(const kiln::Image& image) {
  const uint32_t w = image.width, h = image.height;
  Seam s;
  if (w < 2)
    return s;
  double sampled = 0, all = 0;
  size_t n_sampled = 0, n_all = 0;
  for (uint32_t y = 0; y < h; ++y)
    s.seam += difference(image.at(0, y), image.at(w - 1, y));
  s.seam /= h;
  const uint32_t step = std::max(1u, w / 16);
  for (uint32_t x = 0; x + 1 < w; ++x)
    for (uint32_t y = 0; y < h; ++y) {
      const double d = difference(image.at(x, y), image.at(x + 1, y));
      if (x >= 1 && (x - 1) % step == 0) {
        sampled += d;
        ++n_sampled;
      }
      all += d;
      ++n_all;
    }
  s.inner = all / double(n_all);
  if (n_sampled)
    s.inner = std::min(s.inner, sampled / double(n_sampled));
  return s;
}

// The image blurred by a 3x3 box, edges clamped: roughly what lossy encoding does to fine
// detail. It shows a sharp edge right beside the wrap-around, which JPEG or WebP smear into
// one side only, opening a seam.
kiln::Image blur(const kiln::Image& image) {
  const uint32_t w = image.width, h = image.height;
  kiln::Image out(w, h);
  for (uint32_t y = 0; y < h; ++y)
    for (uint32_t x = 0; x < w; ++x)
      for (int c = 0; c < 4; ++c) {
        int sum = 0, n = 0;
        for (uint32_t yy = y ? y - 1 : 0; yy <= std::min(h - 1, y + 1); ++yy)
          for (uint32_t xx = x ? x - 1 : 0; xx <= std::min(w - 1, x + 1); ++xx, ++n)
            sum += image.at(xx, yy)[c];
        out.at(x, y)[c] = uint8_t((sum + n / 2) / n);
      }
  return out;
}

// Whether the left/right wrap-around passes the `tileable` validator (seam at most twice the
// image's own difference, or below 6) with room to spare: as it is, at most a quarter more than
// the image's own difference or below 3 (a wrap-around that differs as a step inside the image
// does is no seam); and for a `lossy` format (JPEG, WebP), blurred, at most twice its own or
// below 3.
bool seam_passes(const kiln::Image& image, bool lossy) {
  const Seam plain = measure_seam(image);
  if (plain.seam > std::max(3.0, 1.25 * plain.inner))
    return false;
  if (!lossy)
    return true;
  const Seam blurred = measure_seam(blur(image));
  return blurred.seam <= std::max(3.0, 2 * blurred.inner);
}

kiln::Image transpose(const kiln::Image& image) {
  kiln::Image t(image.height, image.width);
  for (uint32_t y = 0; y < image.height; ++y)
    for (uint32_t x = 0; x < image.width; ++x)
      std::copy_n(image.at(x, y), 4, t.at(y, x));
  return t;
}

class MakeTileable : public kiln::Postprocessor {
public:
  static constexpr uint32_t k_provides = KILN_PROPERTY_TILEABLE;

  explicit MakeTileable(const kiln::Context& context)
      : m_host(context.host()), m_hint(context.options().get_string("prompt_hint")) {}

  static kiln::OptionSchema options() {
    return {{"prompt_hint", "appended to the prompt (\"\" for none)", KILN_OPTION_STRING,
             "seamless tileable texture, even lighting"}};
  }

  kiln::Image process(const kiln::Asset& asset, kiln::Image image) override {
    // An image that tiles already (the offline placeholder's, a model's lucky one) is kept as
    // it is: cross-fading it would only ghost it.
    kiln::Image sized = fit(asset, image);
    const bool lossy = asset.format != "png";
    if (seam_passes(sized, lossy) && seam_passes(transpose(sized), lossy))
      return sized;
    Planes p = to_planes(sized);
    even_lighting(p);
    p = cross_fade(p, quiet_shift(p), quiet_shift(transpose(p)));
    // Columns first, then rows (on the transposed planes); healing the rows keeps columns 0 and
    // w-1 as close as they were, since both get the same correction.
    spread_seam(p, std::max(1u, p.width / 4), std::max(1u, p.height / 32));
    p = transpose(p);
    spread_seam(p, std::max(1u, p.width / 4), std::max(1u, p.height / 32));
    p = transpose(p);

    // Check, and heal harder an axis that fails: spread the whole jump, then blend with the
    // mirror image. The mirror blend makes an axis's edges equal, and keeps the other axis's
    // edges equal when they already are, so the last round passes whatever the image.
    kiln::Image out = to_image(p);
    for (int level = 1; level <= 3; ++level) {
      const bool columns_ok = seam_passes(out, lossy), rows_ok = seam_passes(transpose(out), lossy);
      if (columns_ok && rows_ok)
        break;
      auto heal = [&](Planes& planes) {
        level == 1 ? spread_seam(planes, planes.width / 2, 0) : mirror_edges(planes);
      };
      if (!columns_ok || level == 3)
        heal(p);
      if (!rows_ok || level == 3) {
        p = transpose(p);
        heal(p);
        p = transpose(p);
      }
      out = to_image(p);
    }
    return out;
  }

  std::string prompt_hint(const kiln::Asset&) override { return m_hint; }

private:
  // The image cropped to the asset's aspect and scaled to its size, as the host's fit would.
  kiln::Image fit(const kiln::Asset& asset, const kiln::Image& image) const {
    const uint32_t w = asset.width ? asset.width : image.width;
    const uint32_t h = asset.height ? asset.height : image.height;
    const double scale = std::max(double(w) / image.width, double(h) / image.height);
    const uint32_t crop_w = std::clamp<uint32_t>(uint32_t(std::lround(w / scale)), 1, image.width);
    const uint32_t crop_h = std::clamp<uint32_t>(uint32_t(std::lround(h / scale)), 1, image.height);
    kiln::Image crop(crop_w, crop_h);
    const uint32_t x0 = (image.width - crop_w) / 2, y0 = (image.height - crop_h) / 2;
    for (uint32_t y = 0; y < crop_h; ++y)
      std::copy_n(image.at(x0, y0 + y), size_t(crop_w) * 4, crop.at(0, y));
    return kiln::scale(m_host, crop, w, h);
  }

  const kiln_host_api* m_host;
  std::string m_hint;
};

} // namespace

KILN_PLUGIN(MakeTileable, "make-tileable", "1.0.0",
            "Makes textures tile seamlessly: even lighting, cross-faded and healed edges")
