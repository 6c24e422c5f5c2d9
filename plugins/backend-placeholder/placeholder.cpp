// The placeholder backend: free, offline, deterministic images drawn from the request, so every
// build works with no network or token, and so the retry chain has a last resort.
//
// Same request, same bytes: every colour, pattern and word comes from a hash of the final
// prompt, negative prompt, model, seed, params and size. The background pattern is periodic in
// both axes, and turned so that the wrap-around falls where it changes least: every image tiles
// seamlessly and passes the `tileable` validator (textures need it; it costs nothing for the
// rest). Asset types listed in `transparent_types` get a shape on a transparent background
// instead. It says so through paints(), so a validator asking for either is worth a retry.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <kiln/kiln.hpp>
#include <stb_easy_font.h>
#include <string>
#include <vector>

namespace {

constexpr double k_pi = 3.14159265358979323846;

uint64_t fnv1a(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// splitmix64: a tiny, well-mixed deterministic sequence.
class Rng {
public:
  explicit Rng(uint64_t seed) : m_state(seed) {}
  uint64_t next() {
    uint64_t z = (m_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double unit() { return double(next() >> 11) / double(1ull << 53); }
  int range(int lo, int hi) { return lo + int(next() % uint64_t(hi - lo + 1)); }

private:
  uint64_t m_state;
};

struct Rgb {
  double r, g, b;
};

Rgb hsv(double h, double s, double v) {
  h = std::fmod(h, 1.0) * 6;
  int i = int(h);
  double f = h - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  switch (i % 6) {
  case 0:
    return {v, t, p};
  case 1:
    return {q, v, p};
  case 2:
    return {p, v, t};
  case 3:
    return {p, q, v};
  case 4:
    return {t, p, v};
  default:
    return {v, p, q};
  }
}

uint8_t to_byte(double v) {
  return uint8_t(std::clamp(v, 0.0, 1.0) * 255.0 + 0.5);
}

struct Palette {
  Rgb a, b, ink;
};

// The words of the prompt that say what the asset is, upper-cased, wrapped into at most
// three lines of about `max_chars`.
std::vector<std::string> caption_lines(std::string_view prompt, size_t max_chars) {
  std::vector<std::string> words;
  std::string word;
  for (char c : prompt) {
    if (c == ',' || c == '.' || c == ';' || c == ':')
      break; // the subject comes before the first comma; styles follow it
    if (c == ' ' || c == '\t' || c == '\n') {
      if (!word.empty())
        words.push_back(word);
      word.clear();
    } else if (uint8_t(c) >= 32 && uint8_t(c) < 127) {
      word += char(std::toupper(uint8_t(c)));
    }
  }
  if (!word.empty())
    words.push_back(word);
  std::vector<std::string> lines;
  std::string line;
  for (auto& w : words) {
    if (!line.empty() && line.size() + 1 + w.size() > max_chars) {
      lines.push_back(line);
      line.clear();
      if (lines.size() == 3)
        break;
    }
    line += (line.empty() ? "" : " ") + w;
  }
  if (!line.empty() && lines.size() < 3)
    lines.push_back(line);
  return lines;
}

// Rolls a periodic image so that the column pair (and row pair) that differ least meet at the
// wrap-around: the seam is then smaller than any neighbour difference inside, which a periodic
// pattern alone does not promise (a checker's edge may fall exactly on the border).
void roll_seams_to_smoothest(kiln::Image& img) {
  const uint32_t w = img.width, h = img.height;
  if (w < 2 || h < 2)
    return;
  auto diff = [&](uint32_t x0, uint32_t y0, uint32_t x1, uint32_t y1) {
    const uint8_t *a = img.at(x0, y0), *b = img.at(x1, y1);
    return std::abs(a[0] - b[0]) + std::abs(a[1] - b[1]) + std::abs(a[2] - b[2]);
  };
  uint32_t best_x = w - 1, best_y = h - 1;
  uint64_t best = UINT64_MAX;
  for (uint32_t x = 0; x < w; ++x) { // the pair (x, x+1), wrapping
    uint64_t sum = 0;
    for (uint32_t y = 0; y < h; ++y)
      sum += uint64_t(diff(x, y, (x + 1) % w, y));
    if (sum < best)
      best = sum, best_x = x;
  }
  best = UINT64_MAX;
  for (uint32_t y = 0; y < h; ++y) {
    uint64_t sum = 0;
    for (uint32_t x = 0; x < w; ++x)
      sum += uint64_t(diff(x, y, x, (y + 1) % h));
    if (sum < best)
      best = sum, best_y = y;
  }
  // Pixel (x, y) of the result is (x + best_x + 1, y + best_y + 1) of the pattern.
  kiln::Image out(w, h);
  for (uint32_t y = 0; y < h; ++y)
    for (uint32_t x = 0; x < w; ++x)
      std::memcpy(out.at(x, y), img.at((x + best_x + 1) % w, (y + best_y + 1) % h), 4);
  img = std::move(out);
}

void blend(uint8_t* px, Rgb c, double alpha) {
  double a0 = px[3] / 255.0;
  double out_a = alpha + a0 * (1 - alpha);
  if (out_a <= 0)
    return;
  auto mix = [&](uint8_t dst, double src) {
    return to_byte((src * alpha + dst / 255.0 * a0 * (1 - alpha)) / out_a);
  };
  px[0] = mix(px[0], c.r);
  px[1] = mix(px[1], c.g);
  px[2] = mix(px[2], c.b);
  px[3] = to_byte(out_a);
}

void fill_rect(kiln::Image& img, double x0, double y0, double x1, double y1, Rgb c, double alpha) {
  int ix0 = std::max(0, int(std::floor(x0))), iy0 = std::max(0, int(std::floor(y0)));
  int ix1 = std::min(int(img.width), int(std::ceil(x1)));
  int iy1 = std::min(int(img.height), int(std::ceil(y1)));
  for (int y = iy0; y < iy1; ++y)
    for (int x = ix0; x < ix1; ++x) {
      // Coverage of the pixel by the rectangle: smooth edges at any scale.
      double cx = std::min(x + 1.0, x1) - std::max(double(x), x0);
      double cy = std::min(y + 1.0, y1) - std::max(double(y), y0);
      if (cx > 0 && cy > 0)
        blend(img.at(uint32_t(x), uint32_t(y)), c, alpha * cx * cy);
    }
}

// Renders the caption with stb_easy_font's vector glyphs, scaled to fit, centred, on a band.
void draw_caption(kiln::Image& img, std::string_view prompt, const Palette& pal) {
  if (img.width < 48 || img.height < 48)
    return;
  auto lines = caption_lines(prompt, 16);
  if (lines.empty())
    return;
  double text_w = 0;
  for (auto& l : lines)
    text_w = std::max<double>(text_w, stb_easy_font_width(const_cast<char*>(l.c_str())));
  const double line_h = 10; // stb_easy_font glyphs are 7 units tall, plus spacing
  double scale = std::min(img.width * 0.84 / text_w, img.height * 0.36 / (line_h * lines.size()));
  double block_h = line_h * scale * lines.size();
  double top = (img.height - block_h) / 2;
  fill_rect(img, img.width * 0.05, top - scale * 3, img.width * 0.95, top + block_h + scale,
            Rgb{0, 0, 0}, 0.55);
  std::vector<float> buffer(4 * 4 * 512);
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string text = lines[i];
    int quads = stb_easy_font_print(0, 0, text.data(), nullptr, buffer.data(),
                                    int(buffer.size() * sizeof(float)));
    double w = stb_easy_font_width(text.data()) * scale;
    double left = (img.width - w) / 2, y = top + i * line_h * scale;
    // Each vertex is x, y, z and four colour bytes: 16 bytes, four per quad.
    for (int q = 0; q < quads; ++q) {
      const float* v0 = &buffer[size_t(q) * 16];
      const float* v2 = v0 + 8;
      fill_rect(img, left + v0[0] * scale, y + v0[1] * scale, left + v2[0] * scale,
                y + v2[1] * scale, pal.ink, 1.0);
    }
  }
}

class Placeholder : public kiln::Backend {
public:
  static constexpr uint32_t k_capabilities = KILN_BACKEND_OFFLINE;

  explicit Placeholder(const kiln::Context& context)
      : m_transparent_types(context.options().get_list("transparent_types")),
        m_caption(context.options().get_bool("caption")) {}

  static kiln::OptionSchema options() {
    return {{"transparent_types",
             "asset types drawn as a shape on a transparent background (png and webp only)",
             KILN_OPTION_STRING_LIST, "icon,sprite"},
            {"caption", "write the prompt's subject on the image", KILN_OPTION_BOOL, "true"}};
  }

  void generate(const kiln::Request& request, kiln::BackendResult& result) override {
    uint64_t h = fnv1a(request.prompt);
    for (std::string_view part : {request.negative_prompt, request.model, request.params_json})
      h = fnv1a(part, h ^ 0xff);
    h ^= request.seed.value_or(0) * 0x9e3779b97f4a7c15ull;
    Rng rng(h);

    double hue = rng.unit();
    Palette pal{hsv(hue, 0.55 + 0.3 * rng.unit(), 0.85),
                hsv(hue + 0.35 + 0.3 * rng.unit(), 0.7, 0.45 + 0.2 * rng.unit()), Rgb{1, 1, 1}};
    int pattern = rng.range(0, 3);
    // Whole numbers of periods across each side: the pattern wraps at the edges.
    int kx = rng.range(2, 6), ky = rng.range(2, 6);
    double phase = rng.unit();

    kiln::Image img(request.width, request.height);
    const double W = request.width, H = request.height;
    for (uint32_t y = 0; y < request.height; ++y) {
      for (uint32_t x = 0; x < request.width; ++x) {
        double u = x / W, v = y / H, t;
        switch (pattern) {
        case 0: // plasma
          t = 0.5 + 0.25 * std::sin(2 * k_pi * (kx * u + phase)) +
              0.25 * std::cos(2 * k_pi * (ky * v + 2 * std::sin(2 * k_pi * u)));
          break;
        case 1: // soft checker
          t = 0.5 + 0.5 * std::tanh(6 * std::sin(2 * k_pi * kx * u) * std::sin(2 * k_pi * ky * v));
          break;
        case 2: // diagonal stripes
          t = 0.5 + 0.5 * std::sin(2 * k_pi * (kx * u + ky * v + phase));
          break;
        default: { // rings around the centre, measured on the torus
          double du = std::min(std::abs(u - 0.5), 1 - std::abs(u - 0.5));
          double dv = std::min(std::abs(v - 0.5), 1 - std::abs(v - 0.5));
          t = 0.5 + 0.5 * std::cos(2 * k_pi * kx * std::sqrt(du * du + dv * dv) * 1.4);
        }
        }
        uint8_t* px = img.at(x, y);
        px[0] = to_byte(pal.a.r + (pal.b.r - pal.a.r) * t);
        px[1] = to_byte(pal.a.g + (pal.b.g - pal.a.g) * t);
        px[2] = to_byte(pal.a.b + (pal.b.b - pal.a.b) * t);
        px[3] = 255;
      }
    }
    roll_seams_to_smoothest(img);

    if (transparent(request))
      cut_out_shape(img, rng.range(0, 2), pal);
    if (m_caption)
      draw_caption(img, request.prompt, pal);
    result.set_image(img);
    result.set_cost_usd(0.0);
  }

  // Every image tiles; the transparent types get a transparent background.
  uint32_t paints(const kiln::Request& request) override {
    return KILN_PROPERTY_TILEABLE | (transparent(request) ? uint32_t(KILN_PROPERTY_ALPHA) : 0u);
  }

private:
  bool transparent(const kiln::Request& request) const {
    return request.format != "jpg" &&
           std::find(m_transparent_types.begin(), m_transparent_types.end(), request.asset.type) !=
               m_transparent_types.end();
  }

  // Keeps a circle, rounded square or diamond with a dark outline; the rest becomes transparent.
  static void cut_out_shape(kiln::Image& img, int shape, const Palette& pal) {
    const double W = img.width, H = img.height, r = 0.42 * std::min(W, H);
    const double outline = std::max(1.5, r * 0.06);
    for (uint32_t y = 0; y < img.height; ++y)
      for (uint32_t x = 0; x < img.width; ++x) {
        double dx = x + 0.5 - W / 2, dy = y + 0.5 - H / 2, d;
        if (shape == 0) {
          d = std::sqrt(dx * dx + dy * dy) - r;
        } else if (shape == 1) {
          double qx = std::abs(dx) - r * 0.75, qy = std::abs(dy) - r * 0.75;
          d = std::sqrt(std::pow(std::max(qx, 0.0), 2) + std::pow(std::max(qy, 0.0), 2)) +
              std::min(std::max(qx, qy), 0.0) - r * 0.25;
        } else {
          d = (std::abs(dx) + std::abs(dy)) * 0.7071 - r * 0.85;
        }
        uint8_t* px = img.at(x, y);
        double inside = std::clamp(0.5 - d, 0.0, 1.0);
        if (d > -outline) // the outline band, darkened
          for (int c = 0; c < 3; ++c)
            px[c] = to_byte(px[c] / 255.0 * 0.25 + (c == 0   ? pal.b.r
                                                    : c == 1 ? pal.b.g
                                                             : pal.b.b) *
                                                       0.2);
        px[3] = to_byte(inside);
        if (px[3] == 0)
          px[0] = px[1] = px[2] = 0;
      }
  }

  std::vector<std::string> m_transparent_types;
  bool m_caption;
};

} // namespace

// 1.1.0: patterns rolled so their seams are the smoothest column and row (new bytes for the same
// request, so a new version: every placeholder image is drawn again, for free).
KILN_PLUGIN(Placeholder, "placeholder", "1.1.0",
            "Free offline images drawn from the prompt: deterministic, tileable, never blank")
