// Writes a real encoded image for the fake provider servers, which speak Python's standard
// library and cannot encode WebP or JPEG themselves. JPEG and WebP come from the host's own
// encoder; PNGs are 8-bit RGB without an alpha channel, as the models' servers write them.
//
//   kiln-test-image <png|jpg|webp> <width> <height> <seed|black> <output file> [--prompt TEXT]
//
// Paints what text-to-image models such as flux-schnell and SDXL paint, so that Kiln's tests judge
// it on realistic input (see shared/reference/replicate.md, "What models paint"):
// - always opaque RGB (alpha 255 everywhere), whatever the prompt asks;
// - a prompt that asks for a plain backdrop ("plain white background", "on a plain grey
//   background", "white background", "isolated on ...") gets one illustrated subject (outline,
//   shading, highlight) centred on a near-uniform, slightly noisy backdrop of that colour, about
//   half the time with a soft drop shadow; "transparent background" gets a painted checkerboard
//   or a plain white backdrop, never alpha;
// - a texture prompt ("texture", "tileable", "seamless", "tile", "material") gets a non-periodic
//   noise texture lit from one side: it does not tile, its opposite edges differ;
// - anything else, and no prompt at all, gets a busy scene with the subject in the middle.
// Deterministic: the same prompt, seed, size and format give the same bytes. "black" draws the
// all-black frame that safety filters return.
#include "image.hpp"
#include "util.hpp"

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <png.h>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// Randomness: our own generators, so that the bytes do not depend on the standard library.

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t hash2(uint64_t seed, int64_t i, int64_t j) {
  return mix64(seed ^ mix64(uint64_t(i) * 0x9e3779b97f4a7c15ull +
                            uint64_t(j) * 0x632be59bd9b4e019ull + 0x2545f4914f6cdd1dull));
}

uint64_t hash_text(std::string_view text) {
  uint64_t h = 0xcbf29ce484222325ull; // FNV-1a
  for (char c : text)
    h = (h ^ uint8_t(c)) * 0x100000001b3ull;
  return mix64(h);
}

struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(mix64(seed ^ 0x5851f42d4c957f2dull)) {}
  uint64_t next() { return mix64(state += 0x9e3779b97f4a7c15ull); }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  float range(double a, double b) { return float(a + (b - a) * uniform()); }
  bool chance(double p) { return uniform() < p; }
  int below(int n) { return int(next() % uint64_t(n)); }
  float sign() { return chance(0.5) ? 1.0f : -1.0f; }
};

// ---------------------------------------------------------------------------------------------
// Colours and the canvas (floating point, 0-255 per channel).

struct Rgb {
  float r = 0, g = 0, b = 0;
};
Rgb operator+(Rgb a, Rgb b) {
  return {a.r + b.r, a.g + b.g, a.b + b.b};
}
Rgb operator*(Rgb a, float k) {
  return {a.r * k, a.g * k, a.b * k};
}
Rgb mix(Rgb a, Rgb b, float t) {
  return {a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t};
}
const Rgb k_white{250, 250, 247};

// Hue 0-1, saturation and value 0-1.
Rgb hsv(float h, float s, float v) {
  h = (h - std::floor(h)) * 6;
  int i = int(h) % 6;
  float f = h - std::floor(h), p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  float r[] = {v, q, p, p, t, v}, g[] = {t, v, v, q, p, p}, b[] = {p, p, t, v, v, q};
  return {r[i] * 255, g[i] * 255, b[i] * 255};
}

float clamp01(float v) {
  return std::min(1.0f, std::max(0.0f, v));
}
float smoothstep(float a, float b, float v) {
  float t = clamp01((v - a) / (b - a));
  return t * t * (3 - 2 * t);
}

struct Canvas {
  int w, h;
  std::vector<Rgb> px;
  Canvas(int width, int height) : w(width), h(height), px(size_t(width) * height) {}
  Rgb& at(int x, int y) { return px[size_t(y) * w + x]; }
  int short_side() const { return std::min(w, h); }
};

// ---------------------------------------------------------------------------------------------
// Noise. Value noise on a random lattice (not periodic over the image), summed over octaves.

struct Field {
  int w, h;
  std::vector<float> v;
  Field(int width, int height) : w(width), h(height), v(size_t(width) * height, 0.0f) {}
  float at(int x, int y) const { return v[size_t(y) * w + x]; }
  // Bilinear, clamped at the edges.
  float sample(float x, float y) const {
    x = std::min(std::max(x, 0.0f), float(w - 1));
    y = std::min(std::max(y, 0.0f), float(h - 1));
    int x0 = std::min(int(x), std::max(0, w - 2)), y0 = std::min(int(y), std::max(0, h - 2));
    int x1 = std::min(x0 + 1, w - 1), y1 = std::min(y0 + 1, h - 1);
    float tx = x - float(x0), ty = y - float(y0);
    float a = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * tx;
    float b = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * tx;
    return a + (b - a) * ty;
  }
};

// Adds amp x value noise in [-1, 1] with lattice cells `cell_x` by `cell_y` pixels.
void add_value_noise(Field& f, double cell_x, double cell_y, float amp, uint64_t seed) {
  cell_x = std::max(1.0, cell_x);
  cell_y = std::max(1.0, cell_y);
  Rng rng(seed);
  double ox = rng.uniform(), oy = rng.uniform();
  int gw = int(f.w / cell_x) + 3, gh = int(f.h / cell_y) + 3;
  std::vector<float> grid(size_t(gw) * gh);
  for (int j = 0; j < gh; ++j)
    for (int i = 0; i < gw; ++i)
      grid[size_t(j) * gw + i] = float(hash2(seed, i, j) >> 40) * (2.0f / 16777216.0f) - 1.0f;
  std::vector<int> xi(size_t(f.w));
  std::vector<float> xt(size_t(f.w));
  for (int x = 0; x < f.w; ++x) {
    double fx = x / cell_x + ox;
    xi[size_t(x)] = int(fx);
    float t = float(fx - xi[size_t(x)]);
    xt[size_t(x)] = t * t * (3 - 2 * t);
  }
  for (int y = 0; y < f.h; ++y) {
    double fy = y / cell_y + oy;
    int yj = int(fy);
    float ty = float(fy - yj);
    ty = ty * ty * (3 - 2 * ty);
    const float* r0 = &grid[size_t(yj) * gw];
    const float* r1 = r0 + gw;
    float* out = &f.v[size_t(y) * f.w];
    for (int x = 0; x < f.w; ++x) {
      int i = xi[size_t(x)];
      float tx = xt[size_t(x)];
      float a = r0[i] + (r0[i + 1] - r0[i]) * tx;
      float b = r1[i] + (r1[i + 1] - r1[i]) * tx;
      out[x] += amp * (a + (b - a) * ty);
    }
  }
}

// Fractal noise, roughly in [-1, 1]: octaves from `cell` pixels down to about 2 pixels.
Field fbm(int w, int h, double cell, int octaves, uint64_t seed, double stretch_y = 1.0) {
  Field f(w, h);
  float amp = 0.5f;
  for (int o = 0; o < octaves && cell >= 1.5; ++o) {
    add_value_noise(f, cell, cell * stretch_y, amp, mix64(seed + uint64_t(o)));
    cell *= 0.47;
    amp *= 0.52f;
  }
  return f;
}

// Cellular (Worley) noise on a jittered grid: distances to the nearest and second nearest
// feature points, and the nearest point's cell.
struct Worley {
  double cell;
  uint64_t seed;
  void eval(double x, double y, float& f1, float& f2, uint64_t& id, float& fx, float& fy) const {
    int ci = int(std::floor(x / cell)), cj = int(std::floor(y / cell));
    double d1 = 1e30, d2 = 1e30;
    for (int j = cj - 1; j <= cj + 1; ++j)
      for (int i = ci - 1; i <= ci + 1; ++i) {
        uint64_t hv = hash2(seed, i, j);
        double px = (i + 0.15 + 0.7 * double(hv & 0xffff) / 65536.0) * cell;
        double py = (j + 0.15 + 0.7 * double((hv >> 16) & 0xffff) / 65536.0) * cell;
        double d = (px - x) * (px - x) + (py - y) * (py - y);
        if (d < d1) {
          d2 = d1;
          d1 = d;
          id = hv;
          fx = float(px);
          fy = float(py);
        } else if (d < d2) {
          d2 = d;
        }
      }
    f1 = float(std::sqrt(d1));
    f2 = float(std::sqrt(d2));
  }
};

// ---------------------------------------------------------------------------------------------
// The prompt: lower-case words.

std::vector<std::string> words_of(std::string_view prompt) {
  std::vector<std::string> words;
  std::string word;
  for (char c : prompt) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      word += char(std::tolower(static_cast<unsigned char>(c)));
    } else if (!word.empty()) {
      words.push_back(word);
      word.clear();
    }
  }
  if (!word.empty())
    words.push_back(word);
  return words;
}

bool has_word(const std::vector<std::string>& words, std::initializer_list<std::string_view> any) {
  for (const auto& w : words)
    for (auto a : any)
      if (w == a)
        return true;
  return false;
}

bool has_prefix(const std::vector<std::string>& words,
                std::initializer_list<std::string_view> any) {
  for (const auto& w : words)
    for (auto a : any)
      if (std::string_view(w).substr(0, a.size()) == a)
        return true;
  return false;
}

struct NamedColour {
  std::string_view name;
  Rgb rgb;
};
const NamedColour k_colours[] = {
    {"white", {245, 245, 243}}, {"black", {16, 16, 18}},     {"grey", {128, 128, 128}},
    {"gray", {128, 128, 128}},  {"red", {196, 44, 40}},      {"green", {64, 150, 72}},
    {"blue", {48, 92, 196}},    {"yellow", {238, 206, 64}},  {"orange", {236, 136, 44}},
    {"pink", {240, 170, 192}},  {"purple", {124, 70, 166}},  {"violet", {140, 90, 196}},
    {"brown", {118, 80, 50}},   {"beige", {236, 224, 200}},  {"cream", {242, 234, 212}},
    {"cyan", {72, 200, 212}},   {"teal", {40, 128, 128}},    {"magenta", {200, 60, 170}},
    {"ivory", {246, 242, 228}}, {"silver", {196, 198, 202}}, {"navy", {28, 38, 86}},
};

enum class Backdrop { None, Plain, Checker };

struct Wanted {
  Backdrop backdrop = Backdrop::None;
  Rgb colour{245, 245, 243};
};

// What backdrop the prompt asks for: "plain white background", "plain blue backdrop", "solid
// black background", "white background", "isolated on ...", "transparent background".
Wanted wanted_backdrop(const std::vector<std::string>& words) {
  Wanted wanted;
  auto colour_in = [&](size_t from, size_t to, Rgb& out) {
    for (size_t k = from; k < to; ++k)
      for (const auto& c : k_colours)
        if (words[k] == c.name) {
          out = c.rgb;
          if (k > 0 && (words[k - 1] == "light" || words[k - 1] == "pale"))
            out = mix(out, Rgb{250, 250, 250}, 0.55f);
          else if (k > 0 && words[k - 1] == "dark")
            out = out * 0.45f;
          return true;
        }
    return false;
  };
  for (size_t i = 0; i < words.size(); ++i) {
    bool ground = words[i] == "background" || words[i] == "backdrop" || words[i] == "bg";
    size_t from = i >= 3 ? i - 3 : 0;
    if (ground) {
      for (size_t k = from; k < i; ++k)
        if (words[k] == "transparent" || words[k] == "alpha" || words[k] == "transparency") {
          wanted.backdrop = Backdrop::Checker;
          return wanted;
        }
      bool plain = false;
      for (size_t k = from; k < i; ++k)
        plain = plain || words[k] == "plain" || words[k] == "solid" || words[k] == "white" ||
                words[k] == "blank" || words[k] == "uniform" || words[k] == "empty";
      if (plain) {
        wanted.backdrop = Backdrop::Plain;
        colour_in(from, i, wanted.colour);
        return wanted;
      }
    }
    if (words[i] == "isolated" && i + 1 < words.size() &&
        (words[i + 1] == "on" || words[i + 1] == "against" || words[i + 1] == "over")) {
      wanted.backdrop = Backdrop::Plain;
      colour_in(i + 1, std::min(words.size(), i + 6), wanted.colour);
      return wanted;
    }
  }
  return wanted;
}

bool wants_texture(const std::vector<std::string>& words) {
  return has_prefix(words, {"textur", "tileable", "seamless", "tile", "material"});
}

// ---------------------------------------------------------------------------------------------
// Subjects: illustrated shapes made of parts, each a signed distance function in the subject's
// unit space (about -1..1, y down), filled with shading, a dark outline and a highlight.

struct V2 {
  float x = 0, y = 0;
};
V2 operator+(V2 a, V2 b) {
  return {a.x + b.x, a.y + b.y};
}
V2 operator-(V2 a, V2 b) {
  return {a.x - b.x, a.y - b.y};
}
V2 operator*(V2 a, float k) {
  return {a.x * k, a.y * k};
}
float dot(V2 a, V2 b) {
  return a.x * b.x + a.y * b.y;
}
float length(V2 a) {
  return std::sqrt(dot(a, a));
}
V2 rotate(V2 a, float cs, float sn) {
  return {cs * a.x - sn * a.y, sn * a.x + cs * a.y};
}

enum class Kind { Ellipse, Box, Capsule, Polygon };

struct Part {
  Kind kind = Kind::Ellipse;
  V2 c;                  // centre
  float cs = 1, sn = 0;  // the part's rotation
  V2 half{0.5f, 0.5f};   // ellipse radii, box half sizes; capsule: radius, half length
  float round = 0;       // box corner radius
  std::vector<V2> poly;  // polygon vertices, relative to c
  float clip_top = -1e9; // only where y >= clip_top (unit space): liquid in a bottle
  bool outline = true;
  Rgb base;
  float gloss = 0.8f; // strength of the highlight
  // Filled by layout: the part's box in rotated unit space, its centre and size.
  V2 lo{1e9, 1e9}, hi{-1e9, -1e9};
  V2 centre;
  float radius = 1;
};

Part ellipse(V2 c, float rx, float ry, Rgb base) {
  Part p;
  p.kind = Kind::Ellipse;
  p.c = c;
  p.half = {rx, ry};
  p.base = base;
  return p;
}
Part box(V2 c, float hx, float hy, float round, Rgb base, float angle = 0) {
  Part p;
  p.kind = Kind::Box;
  p.c = c;
  p.half = {hx, hy};
  p.round = round;
  p.base = base;
  p.cs = std::cos(angle);
  p.sn = std::sin(angle);
  return p;
}
Part capsule(V2 c, float radius, float half_length, float angle, Rgb base) {
  Part p = box(c, radius, half_length, 0, base, angle);
  p.kind = Kind::Capsule;
  return p;
}
Part polygon(V2 c, std::vector<V2> vertices, Rgb base, float angle = 0, float size = 1) {
  Part p = box(c, 1, 1, 0, base, angle);
  p.kind = Kind::Polygon;
  for (auto& v : vertices)
    v = v * size;
  p.poly = std::move(vertices);
  return p;
}

float sd_polygon(V2 p, const std::vector<V2>& v) {
  float d = dot(p - v[0], p - v[0]), s = 1;
  for (size_t i = 0, j = v.size() - 1; i < v.size(); j = i, ++i) {
    V2 e = v[j] - v[i], w = p - v[i];
    V2 b = w - e * clamp01(dot(w, e) / dot(e, e));
    d = std::min(d, dot(b, b));
    bool c1 = p.y >= v[i].y, c2 = p.y<v[j].y, c3 = e.x * w.y> e.y * w.x;
    if ((c1 && c2 && c3) || (!c1 && !c2 && !c3))
      s = -s;
  }
  return s * std::sqrt(d);
}

float sdf(const Part& p, V2 u) {
  V2 q = rotate(u - p.c, p.cs, -p.sn);
  float d = 0;
  switch (p.kind) {
  case Kind::Ellipse: {
    V2 k0{q.x / p.half.x, q.y / p.half.y},
        k1{q.x / (p.half.x * p.half.x), q.y / (p.half.y * p.half.y)};
    float l0 = length(k0), l1 = length(k1);
    d = l1 > 1e-6f ? l0 * (l0 - 1) / l1 : -std::min(p.half.x, p.half.y);
    break;
  }
  case Kind::Box: {
    float ax = std::fabs(q.x) - p.half.x + p.round, ay = std::fabs(q.y) - p.half.y + p.round;
    d = length({std::max(ax, 0.0f), std::max(ay, 0.0f)}) + std::min(std::max(ax, ay), 0.0f) -
        p.round;
    break;
  }
  case Kind::Capsule: {
    float y = std::min(std::max(q.y, -p.half.y), p.half.y);
    d = length({q.x, q.y - y}) - p.half.x;
    break;
  }
  case Kind::Polygon:
    d = sd_polygon(q, p.poly);
    break;
  }
  return std::max(d, p.clip_top - u.y);
}

// Common materials, jittered per image.
struct Materials {
  Rgb steel, iron, gold, wood, leather, cork, paint, paint2, glass_tint;
  Materials(Rng& rng, const std::vector<std::string>& words) {
    auto j = [&](Rgb c) {
      float k = rng.range(0.92, 1.06);
      return Rgb{c.r * k * rng.range(0.97, 1.03), c.g * k * rng.range(0.97, 1.03),
                 c.b * k * rng.range(0.97, 1.03)};
    };
    steel = j({176, 186, 200});
    iron = j({112, 118, 130});
    gold = j({228, 172, 56});
    wood = j({146, 96, 52});
    leather = j({108, 66, 40});
    cork = j({182, 136, 88});
    float hue = rng.range(0, 1);
    paint = hsv(hue, rng.range(0.55, 0.8), rng.range(0.6, 0.85));
    paint2 = hsv(hue + rng.range(0.3, 0.7), rng.range(0.5, 0.8), rng.range(0.6, 0.9));
    glass_tint = hsv(hue, 0.12f, 0.95f);
    // "a red potion", "a blue shield": the first colour named that is not the background's
    // (nor white or black, as in "bold black outline").
    bool found = false;
    for (size_t i = 0; i < words.size() && !found; ++i) {
      bool backdrop = false;
      for (size_t k = i + 1; k < std::min(words.size(), i + 4); ++k)
        backdrop = backdrop || words[k] == "background" || words[k] == "backdrop";
      for (const auto& c : k_colours)
        if (!backdrop && words[i] == c.name && c.name != "white" && c.name != "black") {
          paint = c.rgb;
          found = true;
          break;
        }
    }
    if (has_word(words, {"golden", "gold"}))
      gold = j({232, 178, 52});
    if (has_word(words, {"wooden", "wood"}))
      paint = wood;
  }
};

enum class Shape { Blade, Round, Bottle, Cluster, Figure };

Shape shape_for(const std::vector<std::string>& words, uint64_t prompt_hash) {
  for (const auto& w : words) {
    auto in = [&](std::initializer_list<std::string_view> list) {
      for (auto a : list)
        if (w == a)
          return true;
      return false;
    };
    if (in({"sword", "swords", "blade", "dagger", "knife", "katana", "sabre", "saber", "axe",
            "spear", "halberd", "scythe", "wand", "staff", "hammer", "mace"}))
      return Shape::Blade;
    if (in({"shield", "coin", "coins", "orb", "ball", "medal", "ring", "apple", "planet", "clock",
            "compass", "buckler", "badge", "cookie", "pie", "donut", "wheel"}))
      return Shape::Round;
    if (in({"potion", "bottle", "flask", "vial", "jar", "elixir", "jug", "lantern"}))
      return Shape::Bottle;
    if (in({"crystal", "crystals", "gem", "gems", "jewel", "jewels", "ore", "mushroom", "mushrooms",
            "cluster", "berries", "flowers", "rocks"}))
      return Shape::Cluster;
    if (in({"knight", "warrior",  "hero",   "character", "wizard",   "mage",   "soldier", "king",
            "queen",  "princess", "prince", "man",       "woman",    "person", "figure",  "goblin",
            "orc",    "elf",      "archer", "villager",  "creature", "robot"}))
      return Shape::Figure;
  }
  return Shape(prompt_hash % 5);
}

struct Subject {
  std::vector<Part> parts;
  float angle = 0, cs = 1, sn = 0; // rotation of the whole subject
  float outline = 0.03f;           // outline width, unit space
  Rgb ink{28, 22, 32};
  // Layout: pixel p maps to rotated unit space g = (p - origin) / scale, then u = R(-angle) g.
  V2 origin;
  float scale = 1;
  V2 light_img{-0.6f, -0.8f}, light_u; // towards the light
  V2 lo, hi;                           // box of the whole subject, rotated unit space

  V2 to_u(V2 g) const { return rotate(g, cs, -sn); }

  float union_sdf(V2 u) const {
    float d = 1e9f;
    for (const auto& p : parts)
      d = std::min(d, sdf(p, u));
    return d;
  }

  // Measures the parts (in rotated unit space) by sampling.
  void measure() {
    const int n = 160;
    const float span = 1.8f, step = 2 * span / n;
    lo = {1e9, 1e9};
    hi = {-1e9, -1e9};
    for (int j = 0; j <= n; ++j)
      for (int i = 0; i <= n; ++i) {
        V2 g{-span + i * step, -span + j * step};
        V2 u = to_u(g);
        for (auto& p : parts)
          if (sdf(p, u) < 0) {
            p.lo = {std::min(p.lo.x, g.x), std::min(p.lo.y, g.y)};
            p.hi = {std::max(p.hi.x, g.x), std::max(p.hi.y, g.y)};
          }
      }
    for (auto& p : parts) {
      if (p.lo.x > p.hi.x) { // too small to be sampled
        p.lo = p.hi = rotate(p.c, cs, sn);
      }
      p.lo = p.lo - V2{step, step};
      p.hi = p.hi + V2{step, step};
      lo = {std::min(lo.x, p.lo.x), std::min(lo.y, p.lo.y)};
      hi = {std::max(hi.x, p.hi.x), std::max(hi.y, p.hi.y)};
      p.centre = to_u((p.lo + p.hi) * 0.5f);
      p.radius = std::max(0.05f, 0.5f * std::max(p.hi.x - p.lo.x, p.hi.y - p.lo.y));
    }
  }

  // Scales the subject so its larger side is `extent` pixels, centred on (cx, cy).
  void place(float cx, float cy, float extent) {
    scale = extent / std::max(hi.x - lo.x, hi.y - lo.y);
    origin = V2{cx, cy} - (lo + hi) * (0.5f * scale);
    light_u = to_u(light_img);
  }

  // Pixel box (exclusive end) of the subject with its outline and anti-aliasing.
  void pixel_box(int w, int h, int& x0, int& y0, int& x1, int& y1) const {
    float m = outline * scale + 2;
    x0 = std::max(0, int(std::floor(origin.x + lo.x * scale - m)));
    y0 = std::max(0, int(std::floor(origin.y + lo.y * scale - m)));
    x1 = std::min(w, int(std::ceil(origin.x + hi.x * scale + m)) + 1);
    y1 = std::min(h, int(std::ceil(origin.y + hi.y * scale + m)) + 1);
  }

  Rgb fill(const Part& p, V2 u, float d) const {
    float t = std::max(-1.0f, std::min(1.0f, dot(u - p.centre, light_u) / p.radius));
    float shade = 0.83f + 0.19f * t; // a lighter side towards the light, a darker one away
    // A core shadow along the edge away from the light.
    float away = smoothstep(-0.01f, 0.03f, sdf(p, u - light_u * 0.09f));
    shade *= 1 - 0.2f * away;
    Rgb c = p.base * shade;
    // A highlight band just inside the lit edge, near white at its core.
    float depth = -d - outline;
    float band = smoothstep(0.012f, 0.03f, depth) *
                 smoothstep(-0.012f, 0.012f, sdf(p, u + light_u * 0.075f));
    return mix(c, k_white, p.gloss * band);
  }

  void paint(Canvas& canvas) const {
    int x0, y0, x1, y1;
    pixel_box(canvas.w, canvas.h, x0, y0, x1, y1);
    float margin = outline + 4 / scale;
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) {
        V2 g{(float(x) + 0.5f - origin.x) / scale, (float(y) + 0.5f - origin.y) / scale};
        V2 u = to_u(g);
        Rgb c = canvas.at(x, y);
        for (const auto& p : parts) {
          if (g.x < p.lo.x - margin || g.x > p.hi.x + margin || g.y < p.lo.y - margin ||
              g.y > p.hi.y + margin)
            continue;
          float d = sdf(p, u);
          float cover = clamp01(0.5f - d * scale);
          if (cover <= 0)
            continue;
          if (p.outline) {
            c = mix(c, mix(ink, p.base * 0.3f, 0.3f), cover);
            cover = clamp01(0.5f - (d + outline) * scale);
            if (cover <= 0)
              continue;
          }
          c = mix(c, fill(p, u, p.outline ? d : d - outline), cover);
        }
        canvas.at(x, y) = c;
      }
  }
};

Subject make_subject(Shape shape, Rng& rng, const Materials& m,
                     const std::vector<std::string>& words) {
  Subject s;
  bool axe = has_word(words, {"axe", "axes", "hatchet"});
  bool sword = has_word(words, {"sword", "swords", "dagger", "knife", "katana", "sabre", "saber"});
  auto& parts = s.parts;
  switch (shape) {
  case Shape::Blade:
    if (axe || (!sword && rng.chance(0.3))) { // an axe
      parts.push_back(box({0, 0.05f}, 0.065f, 0.95f, 0.04f, m.wood));
      parts.push_back(polygon(
          {0.05f, -0.55f},
          {{0, -0.22f}, {0.45f, -0.48f}, {0.62f, -0.05f}, {0.45f, 0.42f}, {0, 0.16f}}, m.steel));
      parts.push_back(box({0, -0.55f}, 0.1f, 0.2f, 0.03f, m.iron));
    } else { // a sword
      parts.push_back(polygon(
          {0, 0}, {{-0.1f, 0.36f}, {0.1f, 0.36f}, {0.1f, -0.72f}, {0, -0.97f}, {-0.1f, -0.72f}},
          m.steel));
      parts.push_back(box({0, 0.63f}, 0.055f, 0.19f, 0.02f, m.leather));
      parts.push_back(box({0, 0.41f}, 0.34f, 0.055f, 0.035f, m.gold));
      parts.push_back(ellipse({0, 0.87f}, 0.095f, 0.095f, m.gold));
    }
    s.angle = rng.sign() * rng.range(0.62, 0.9);
    break;
  case Shape::Round: {
    parts.push_back(ellipse({0, 0}, 0.95f, 0.95f, m.iron));
    parts.push_back(ellipse({0, 0}, 0.8f, 0.8f, m.paint));
    parts.back().gloss = 0.55f;
    int emblem = rng.below(3);
    if (emblem == 0) {
      parts.push_back(box({0, 0}, 0.1f, 0.62f, 0.02f, m.gold));
      parts.push_back(box({0, 0}, 0.62f, 0.1f, 0.02f, m.gold));
    } else if (emblem == 1) {
      parts.push_back(polygon({0, 0}, {{0, -0.6f}, {0.42f, 0}, {0, 0.6f}, {-0.42f, 0}}, m.paint2));
    }
    parts.push_back(ellipse({0, 0}, 0.2f, 0.2f, m.steel));
    for (int i = 0; i < 8; ++i) {
      float a = float(i) * 0.785398f + 0.39f;
      parts.push_back(
          ellipse({0.875f * std::cos(a), 0.875f * std::sin(a)}, 0.045f, 0.045f, m.steel));
    }
    s.angle = rng.range(-0.15, 0.15);
    break;
  }
  case Shape::Bottle: {
    Rgb glass = mix(m.glass_tint, Rgb{200, 214, 226}, 0.5f);
    float r = 0.62f;
    parts.push_back(ellipse({0, 0.3f}, r, r, glass));
    parts.push_back(box({0, -0.4f}, 0.15f, 0.22f, 0.02f, glass));
    Part liquid = ellipse({0, 0.3f}, r - 0.04f, r - 0.04f, m.paint);
    liquid.clip_top = rng.range(0.0, 0.25);
    liquid.outline = false;
    liquid.gloss = 0.6f;
    parts.push_back(liquid);
    parts.push_back(box({0, -0.64f}, 0.22f, 0.055f, 0.03f, glass));
    parts.push_back(box({0, -0.79f}, 0.12f, 0.1f, 0.025f, m.cork));
    parts.back().gloss = 0.4f;
    Part bubble = ellipse({-0.28f, 0.1f}, 0.07f, 0.07f, k_white);
    bubble.outline = false;
    parts.push_back(bubble);
    s.angle = rng.range(-0.14, 0.14);
    break;
  }
  case Shape::Cluster: {
    parts.push_back(ellipse({0, 0.62f}, 0.78f, 0.26f, m.iron));
    parts.back().gloss = 0.35f;
    std::vector<V2> crystal{
        {-0.17f, 0.42f}, {0.17f, 0.42f}, {0.17f, -0.42f}, {0, -0.68f}, {-0.17f, -0.42f}};
    parts.push_back(polygon({-0.4f, 0.22f}, crystal, m.paint * 0.9f, -0.45f, 0.72f));
    parts.push_back(polygon({0.42f, 0.26f}, crystal, mix(m.paint, m.paint2, 0.3f), 0.5f, 0.64f));
    parts.push_back(polygon({0.02f, -0.02f}, crystal, m.paint, rng.range(-0.1, 0.1), 1.0f));
    s.angle = rng.range(-0.12, 0.12);
    break;
  }
  case Shape::Figure: {
    Rgb armour = rng.chance(0.5) ? m.steel : m.paint;
    parts.push_back(box({-0.14f, 0.7f}, 0.09f, 0.25f, 0.03f, m.iron));
    parts.push_back(box({0.14f, 0.7f}, 0.09f, 0.25f, 0.03f, m.iron));
    parts.push_back(capsule({-0.42f, 0.05f}, 0.08f, 0.26f, 0.3f, armour));
    parts.push_back(polygon(
        {0, 0.12f}, {{-0.32f, -0.36f}, {0.32f, -0.36f}, {0.26f, 0.4f}, {-0.26f, 0.4f}}, armour));
    parts.push_back(capsule({0.42f, 0.05f}, 0.08f, 0.26f, -0.3f, armour));
    parts.push_back(box({0.62f, -0.05f}, 0.035f, 0.55f, 0.02f, m.steel, 0.12f));
    parts.push_back(ellipse({0, -0.5f}, 0.2f, 0.22f, m.steel));
    Part visor = box({0, -0.49f}, 0.13f, 0.025f, 0.01f, Rgb{30, 26, 34});
    visor.outline = false;
    visor.gloss = 0;
    parts.push_back(visor);
    s.angle = rng.range(-0.06, 0.06);
    break;
  }
  }
  s.cs = std::cos(s.angle);
  s.sn = std::sin(s.angle);
  s.outline = rng.range(0.026, 0.036);
  float a = rng.range(0.35, 0.9) * rng.sign(); // light from above, left or right
  s.light_img = {std::sin(a), -std::cos(a)};
  s.measure();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Backdrops, textures and scenes.

// Blurs a field with three box passes of radius r (about a Gaussian of sigma r).
void blur(Field& f, int r) {
  if (r < 1)
    return;
  std::vector<float> tmp(std::max(f.w, f.h));
  for (int pass = 0; pass < 3; ++pass) {
    for (int y = 0; y < f.h; ++y) {
      float* row = &f.v[size_t(y) * f.w];
      double sum = 0;
      for (int k = -r; k <= r; ++k)
        sum += row[std::min(std::max(k, 0), f.w - 1)];
      for (int x = 0; x < f.w; ++x) {
        tmp[size_t(x)] = float(sum / (2 * r + 1));
        sum += row[std::min(x + r + 1, f.w - 1)] - row[std::max(x - r, 0)];
      }
      std::copy_n(tmp.begin(), f.w, row);
    }
    for (int x = 0; x < f.w; ++x) {
      double sum = 0;
      for (int k = -r; k <= r; ++k)
        sum += f.v[size_t(std::min(std::max(k, 0), f.h - 1)) * f.w + x];
      for (int y = 0; y < f.h; ++y) {
        tmp[size_t(y)] = float(sum / (2 * r + 1));
        sum += f.v[size_t(std::min(y + r + 1, f.h - 1)) * f.w + x] -
               f.v[size_t(std::max(y - r, 0)) * f.w + x];
      }
      for (int y = 0; y < f.h; ++y)
        f.v[size_t(y) * f.w + x] = tmp[size_t(y)];
    }
  }
}

// One subject centred on a near-uniform backdrop: the asked colour, a faint gradient of a few
// levels, sometimes a soft drop shadow; per-pixel noise comes at the end, over everything.
void paint_plain(Canvas& canvas, const Wanted& wanted, Subject& subject, Rng& rng) {
  const int w = canvas.w, h = canvas.h;
  const float side = float(canvas.short_side());
  float extent = side * rng.range(0.48, 0.68);
  float cx = float(w) * 0.5f + side * rng.range(-0.02, 0.02);
  float cy = float(h) * 0.5f + side * rng.range(-0.02, 0.02);
  subject.place(cx, cy, extent);

  Rgb back = wanted.colour;
  bool whiteish = back.r > 230 && back.g > 230 && back.b > 230;
  if (whiteish) { // models' "white" is rarely 255: a level of 240-248, faintly warm or cool
    float level = rng.range(240, 248), tint = rng.range(-2.5, 2.5);
    back = {level + tint, level + rng.range(-1, 1), level - tint};
  } else {
    back = back * rng.range(0.95, 1.03);
  }
  float ga = rng.range(0, 6.2832), span = rng.range(3, 7); // levels across the frame
  V2 gdir{std::cos(ga), std::sin(ga)};

  // The drop shadow: the subject's silhouette at a quarter of the resolution, blurred, offset
  // away from the light, darker by 15-25 % at its heart.
  bool shadow = rng.chance(0.5);
  float strength = rng.range(0.15, 0.25);
  const int q = 4;
  Field mask(std::max(2, w / q + 1), std::max(2, h / q + 1));
  V2 offset = subject.light_img * (-side * rng.range(0.02, 0.04));
  if (shadow) {
    int x0, y0, x1, y1;
    subject.pixel_box(w, h, x0, y0, x1, y1);
    for (int y = y0 / q; y <= std::min(mask.h - 1, y1 / q); ++y)
      for (int x = x0 / q; x <= std::min(mask.w - 1, x1 / q); ++x) {
        V2 g{(float(x * q) - subject.origin.x) / subject.scale,
             (float(y * q) - subject.origin.y) / subject.scale};
        float d = subject.union_sdf(subject.to_u(g)) * subject.scale / q;
        mask.v[size_t(y) * mask.w + x] = clamp01(0.5f - d);
      }
    blur(mask, std::max(1, int(side * rng.range(0.018, 0.03) / q)));
    // As dark at its heart as `strength`, however thin the subject.
    float peak = *std::max_element(mask.v.begin(), mask.v.end());
    if (peak > 0)
      for (float& v : mask.v)
        v /= peak;
  }

  bool checker = wanted.backdrop == Backdrop::Checker && rng.chance(0.6);
  int square = std::max(2, int(side / 32));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      V2 n{float(x) / float(w) - 0.5f, float(y) / float(h) - 0.5f};
      Rgb c = back + Rgb{1, 1, 1} * (span * dot(n, gdir));
      if (checker && ((x / square + y / square) & 1))
        c = c * 0.82f;
      if (shadow) {
        float s = mask.sample((float(x) - offset.x) / q, (float(y) - offset.y) / q);
        c = mix(c, c * 0.72f + Rgb{0, 2, 8}, s * strength / 0.28f);
      }
      canvas.at(x, y) = c;
    }
  subject.paint(canvas);
}

struct Palette {
  Rgb dark, mid, light;
  Rgb at(float t) const { // t in about [-1, 1]
    t = std::max(-1.0f, std::min(1.0f, t));
    return t < 0 ? mix(mid, dark, -t) : mix(mid, light, t);
  }
};

enum class Structure { Blades, Pebbles, Cracks };

// A texture as models paint one when asked for "seamless tileable": rich, but lit from one side
// and not periodic, so its opposite edges do not match.
void paint_texture(Canvas& canvas, const std::vector<std::string>& words, uint64_t key,
                   uint64_t prompt_hash) {
  Rng rng(key);
  const int w = canvas.w, h = canvas.h;
  const float side = float(canvas.short_side());
  Palette pal;
  Structure structure = Structure(prompt_hash % 3);
  auto kw = [&](std::initializer_list<std::string_view> list) {
    return has_word(words, list);
  };
  if (kw({"grass", "meadow", "lawn", "moss", "foliage", "leaves", "forest", "field", "hay",
          "straw"})) {
    pal = {{34, 62, 20}, {78, 124, 40}, {156, 192, 82}};
    structure = Structure::Blades;
  } else if (kw({"stone", "stones", "rock", "rocks", "cobble", "cobblestone", "cobblestones",
                 "gravel", "pebble", "pebbles", "wall", "pavement", "brick", "bricks"})) {
    pal = kw({"brick", "bricks"}) ? Palette{{88, 34, 24}, {158, 72, 50}, {204, 126, 94}}
                                  : Palette{{66, 66, 70}, {126, 122, 116}, {192, 188, 178}};
    structure = Structure::Pebbles;
  } else if (kw({"dirt", "mud", "earth", "soil", "ground", "clay"})) {
    pal = {{58, 40, 24}, {112, 80, 52}, {166, 128, 88}};
    structure = Structure::Cracks;
  } else if (kw({"sand", "desert", "beach", "dune"})) {
    pal = {{168, 138, 94}, {212, 186, 138}, {242, 224, 184}};
    structure = Structure::Cracks;
  } else if (kw({"wood", "wooden", "bark", "plank", "planks"})) {
    pal = {{68, 40, 20}, {130, 86, 48}, {188, 140, 88}};
  } else if (kw({"water", "sea", "ocean", "lake"})) {
    pal = {{18, 48, 90}, {40, 100, 160}, {124, 184, 222}};
  } else if (kw({"lava", "magma"})) {
    pal = {{40, 12, 6}, {170, 48, 12}, {255, 196, 64}};
    structure = Structure::Cracks;
  } else if (kw({"ice", "snow", "frost", "frozen"})) {
    pal = {{136, 166, 198}, {198, 220, 238}, {244, 248, 252}};
    structure = Structure::Cracks;
  } else if (kw({"metal", "steel", "iron"})) {
    pal = {{66, 72, 80}, {128, 136, 146}, {198, 204, 212}};
    structure = Structure::Cracks;
  } else {
    float hue = rng.range(0, 1), sat = rng.range(0.3, 0.6);
    pal = {hsv(hue, sat, 0.25f), hsv(hue + 0.03f, sat, 0.5f), hsv(hue + 0.06f, sat * 0.7f, 0.8f)};
  }
  float shift = rng.range(0.94, 1.06);
  pal = {pal.dark * shift, pal.mid * shift, pal.light * shift};

  // Light from one side: 20-30 % brighter on the lit side, at an angle from the hash.
  float la = float(rng.below(4)) * 1.5708f + rng.range(0.45, 1.12);
  V2 ldir{std::cos(la), std::sin(la)}; // the way the light falls
  float ramp = rng.range(0.2, 0.3);

  Field base = fbm(w, h, side * rng.range(0.22, 0.35), 6, rng.next());
  Field detail = fbm(w, h, side * 0.03, 3, rng.next(), structure == Structure::Blades ? 3.0 : 1.0);
  Worley cells{side / rng.range(7, 12), rng.next()};
  Worley cracks{side / rng.range(3.5, 6), rng.next()};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      float n = base.at(x, y) * 1.6f + detail.at(x, y) * 0.8f;
      Rgb c = pal.at(n);
      if (structure == Structure::Pebbles) {
        float wx = float(x) + base.at(x, y) * side * 0.04f,
              wy = float(y) + detail.at(x, y) * side * 0.02f;
        float f1 = 0, f2 = 0, fx = 0, fy = 0;
        uint64_t id = 0;
        cells.eval(wx, wy, f1, f2, id, fx, fy);
        float gap = float(cells.cell) * 0.07f;
        float edge = smoothstep(gap * 0.6f, gap * 1.4f, f2 - f1);
        float tone = float(id >> 40) / 16777216.0f * 1.2f - 0.5f;
        float dome = -(dot({wx - fx, wy - fy}, ldir) / float(cells.cell)) * 0.9f;
        Rgb stone = pal.at(tone + n * 0.35f + dome * 0.5f);
        c = mix(pal.dark * 0.7f, stone, edge);
      } else if (structure == Structure::Cracks) {
        float wx = float(x) + base.at(x, y) * side * 0.06f,
              wy = float(y) + detail.at(x, y) * side * 0.03f;
        float f1 = 0, f2 = 0, fx = 0, fy = 0;
        uint64_t id = 0;
        cracks.eval(wx, wy, f1, f2, id, fx, fy);
        float width = std::max(1.0f, side * 0.004f);
        float crack = 1 - smoothstep(width * 0.5f, width * 1.5f, f2 - f1);
        c = mix(c, pal.dark * 0.55f, crack * 0.85f);
      }
      canvas.at(x, y) = c;
    }

  if (structure == Structure::Blades) { // blades of grass, straw or fur, leaning one way
    int count = int(float(w) * float(h) / 260.0f);
    float lean = rng.range(-0.5, 0.5);
    for (int i = 0; i < count; ++i) {
      float bx = float(rng.uniform() * w), by = float(rng.uniform() * h);
      float len = side * rng.range(0.02, 0.05),
            width = std::max(0.8f, side * rng.range(0.0018, 0.0035));
      float a = lean + rng.range(-0.45, 0.45);
      V2 dir{std::sin(a), -std::cos(a)}, b0{bx, by}, b1 = b0 + dir * len;
      Rgb col = pal.at(rng.range(-0.6, 1.0) +
                       base.at(std::min(w - 1, int(bx)), std::min(h - 1, int(by))));
      int x0 = std::max(0, int(std::min(b0.x, b1.x) - width - 2)),
          x1 = std::min(w, int(std::max(b0.x, b1.x) + width + 2));
      int y0 = std::max(0, int(std::min(b0.y, b1.y) - width - 2)),
          y1 = std::min(h, int(std::max(b0.y, b1.y) + width + 2));
      for (int y = y0; y < y1; ++y)
        for (int x = x0; x < x1; ++x) {
          V2 p{float(x) + 0.5f, float(y) + 0.5f};
          float t = clamp01(dot(p - b0, dir) / len);
          float d = length(p - (b0 + dir * (t * len))) - width * (1 - 0.85f * t);
          float cover = clamp01(0.5f - d);
          if (cover > 0)
            canvas.at(x, y) = mix(canvas.at(x, y), col * (0.7f + 0.45f * t), cover);
        }
    }
  }

  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      V2 n{float(x) / float(w) - 0.5f, float(y) / float(h) - 0.5f};
      canvas.at(x, y) = canvas.at(x, y) * (1 - ramp * dot(n, ldir));
    }
}

// A busy scene: sky, sun, clouds, mountains, hills, ground, trees or towers, and the subject in
// the middle over them.
void paint_scene(Canvas& canvas, const std::vector<std::string>& words, Subject& subject,
                 Rng& rng) {
  const int w = canvas.w, h = canvas.h;
  const float side = float(canvas.short_side());
  auto kw = [&](std::initializer_list<std::string_view> list) {
    return has_word(words, list);
  };
  bool fire = kw({"burning", "fire", "flames", "flame", "inferno", "blaze"});
  int mood = kw({"dusk", "sunset", "dawn", "evening", "sunrise"}) || fire ? 1
             : kw({"night", "midnight", "moon", "moonlit", "dark"})       ? 2
             : rng.below(3) == 0                                          ? 1
                                                                          : 0;
  Rgb sky_top[] = {{64, 116, 198}, {58, 40, 92}, {10, 14, 36}};
  Rgb sky_low[] = {{178, 210, 236}, {242, 146, 74}, {44, 54, 96}};
  Rgb grounds[] = {{76, 118, 50}, {92, 70, 48}, {30, 42, 36}};
  Rgb top = sky_top[mood] * rng.range(0.9, 1.08), low = sky_low[mood] * rng.range(0.92, 1.04);
  Rgb ground = grounds[mood] * rng.range(0.85, 1.1);
  float horizon = float(h) * rng.range(0.56, 0.66);
  V2 sun{float(w) * rng.range(0.12, 0.88), horizon - float(h) * rng.range(0.12, 0.36)};
  float sun_r = side * rng.range(0.035, 0.06);
  Rgb sun_c = mood == 2 ? Rgb{232, 232, 214} : mood == 1 ? Rgb{255, 214, 120} : Rgb{255, 250, 226};

  Field clouds = fbm(w, h, side * 0.3, 5, rng.next(), 0.45);
  Field grain = fbm(w, h, side * 0.12, 6, rng.next());
  float ph[6];
  for (float& p : ph)
    p = rng.range(0, 6.2832);
  auto ridge = [&](float x, float f, int k) {
    return 0.5f + 0.3f * std::sin(x * f + ph[k]) + 0.2f * std::sin(x * f * 2.7f + ph[k + 1]);
  };
  Rgb far_c = mix(low, Rgb{70, 70, 104}, 0.55f), hill_c = mix(ground, low, 0.15f) * 0.8f;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      float fx = float(x) / side;
      Rgb c;
      float mountain = horizon - side * (0.06f + 0.16f * ridge(fx, 4.1f, 0));
      float hill = horizon - side * (0.01f + 0.05f * ridge(fx, 7.3f, 2));
      if (float(y) < mountain) {
        c = mix(top, low, std::pow(clamp01(float(y) / horizon), 1.4f));
        float sd = length(V2{float(x), float(y)} - sun) / sun_r;
        c = mix(c, sun_c,
                clamp01(1.5f * (1.2f - sd)) + 0.35f * std::exp(-sd * 0.4f) * (sd > 1 ? 1 : 0));
        float cl = smoothstep(0.05f, 0.4f, clouds.at(x, y) + 0.1f);
        c = mix(c, mix(low, Rgb{250, 246, 240}, mood == 2 ? 0.1f : 0.6f), cl * 0.75f);
      } else if (float(y) < hill) {
        c = far_c * (0.9f + 0.25f * grain.at(x, y));
      } else {
        float depth = clamp01((float(y) - hill) / (float(h) - hill + 1));
        c = mix(hill_c, ground, std::min(1.0f, depth * 3)) * (1.05f - 0.3f * depth) *
            (0.88f + 0.4f * grain.at(x, y));
      }
      canvas.at(x, y) = c;
    }

  // Things on the land: trees or, if the prompt builds, towers; glowing if something burns.
  bool towers =
      kw({"castle", "city", "town", "village", "fortress", "tower", "towers", "citadel", "ruins"});
  int count = 5 + rng.below(6);
  for (int i = 0; i < count; ++i) {
    float tx = float(w) * rng.range(0.02, 0.98);
    float ty =
        horizon + (float(h) - horizon) * rng.range(-0.05, 0.7) * (towers && i < 3 ? 0.1f : 1.0f);
    float size =
        side * (0.05f + 0.1f * (ty - horizon) / (float(h) - horizon + 1)) * rng.range(0.7, 1.3);
    bool tower = towers && i < 4;
    if (tower)
      size *= 2.2f;
    Rgb col = tower ? mix(far_c, Rgb{40, 36, 44}, 0.6f)
                    : mix(ground, Rgb{20, 60, 24}, 0.5f) * rng.range(0.7, 1.1);
    Rgb trunk{70, 48, 30};
    int x0 = std::max(0, int(tx - size)), x1 = std::min(w, int(tx + size) + 1);
    int y0 = std::max(0, int(ty - size * 2.2f)), y1 = std::min(h, int(ty) + 1);
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) {
        V2 p{float(x) + 0.5f - tx, float(y) + 0.5f - ty};
        if (tower) {
          float body = std::max(std::fabs(p.x) - size * 0.22f, -p.y - size * 2.0f);
          float merlon =
              std::fmod(std::fabs(p.x) + size * 0.05f, size * 0.14f) < size * 0.07f ? 0.0f : 1.0f;
          float top_edge = -p.y - size * (2.0f + 0.08f * (1 - merlon));
          float d = std::max(std::fabs(p.x) - size * 0.22f, top_edge);
          d = std::min(d, body);
          float cover = clamp01(0.5f - d);
          Rgb lit = col * (p.x < 0 ? 1.1f : 0.85f);
          canvas.at(x, y) = mix(canvas.at(x, y), lit, cover);
        } else {
          float dt = std::max(std::fabs(p.x) - size * 0.08f, std::max(p.y, -p.y - size));
          canvas.at(x, y) = mix(canvas.at(x, y), trunk, clamp01(0.5f - dt));
          V2 cc = p - V2{0, -size * 1.3f};
          float dc = length({cc.x, cc.y * 1.15f}) - size * 0.8f;
          float shade =
              1.05f -
              0.35f * clamp01((cc.x * subject.light_img.x * -1 + cc.y * 0.5f) / size + 0.5f);
          canvas.at(x, y) = mix(canvas.at(x, y), col * shade, clamp01(0.5f - dc));
        }
      }
  }
  if (fire) { // a glow over the land, and smoke
    V2 glow{float(w) * rng.range(0.25, 0.75), horizon - side * 0.1f};
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        float d = length(V2{float(x), float(y)} - glow) / (side * 0.35f);
        float k = std::exp(-d * d) * 0.6f;
        canvas.at(x, y) =
            mix(canvas.at(x, y), Rgb{255, 120, 30}, k * (0.6f + 0.4f * clouds.at(x, y)));
      }
  }

  float extent = side * rng.range(0.38, 0.52);
  float cx = float(w) * (0.5f + rng.range(-0.04, 0.04)), cy = float(h) * rng.range(0.5, 0.58);
  subject.place(cx, cy, extent);
  // A contact shadow on the ground under the subject.
  float foot = subject.origin.y + subject.hi.y * subject.scale;
  for (int y = std::max(0, int(foot - extent * 0.1f)); y < std::min(h, int(foot + extent * 0.1f));
       ++y)
    for (int x = std::max(0, int(cx - extent * 0.6f)); x < std::min(w, int(cx + extent * 0.6f));
         ++x) {
      float d =
          length(V2{(float(x) - cx) / (extent * 0.45f), (float(y) - foot) / (extent * 0.06f)});
      canvas.at(x, y) = canvas.at(x, y) * (1 - 0.4f * clamp01(1 - d));
    }
  subject.paint(canvas);
}

// Photographic grain and rounding: luminance noise (sigma about 2.2 levels) plus a little per
// channel, then 8 bits, alpha 255.
void finish(const Canvas& canvas, kiln::Image& image, uint64_t key, float sigma) {
  uint64_t state = mix64(key ^ 0xa0761d6478bd642full);
  for (int y = 0; y < canvas.h; ++y)
    for (int x = 0; x < canvas.w; ++x) {
      uint64_t r = mix64(state += 0x9e3779b97f4a7c15ull);
      auto u = [&](int k) {
        return float((r >> (k * 8)) & 0xff) * (1.0f / 255.0f);
      };
      // The sum of three uniforms is near enough Gaussian: sigma 0.5 per unit of range 0-1.
      float luma = (u(0) + u(1) + u(2) - 1.5f) * 2 * sigma;
      float chroma = 0.5f * sigma;
      const Rgb& c = canvas.px[size_t(y) * canvas.w + x];
      uint8_t* p = image.at(uint32_t(x), uint32_t(y));
      float v[3] = {c.r + luma + (u(3) + u(4) - 1) * 2.45f * chroma,
                    c.g + luma + (u(5) - 0.5f) * 3.46f * chroma,
                    c.b + luma + (u(6) + u(7) - 1) * 2.45f * chroma};
      for (int k = 0; k < 3; ++k)
        p[k] = uint8_t(std::min(255.0f, std::max(0.0f, v[k])) + 0.5f);
      p[3] = 255;
    }
}

void paint(kiln::Image& image, std::string_view prompt, unsigned long long seed) {
  auto words = words_of(prompt);
  std::string lowered(words.empty() ? "" : words[0]);
  for (size_t i = 1; i < words.size(); ++i)
    lowered += " " + words[i];
  uint64_t prompt_hash = hash_text(lowered);
  uint64_t key = mix64(prompt_hash ^ mix64(seed + 0x1234567ull));
  Canvas canvas(int(image.width), int(image.height));
  Wanted wanted = wanted_backdrop(words);
  Rng rng(key);
  float sigma = rng.range(2.0, 2.8);
  if (wanted.backdrop == Backdrop::None && wants_texture(words)) {
    paint_texture(canvas, words, rng.next(), prompt_hash);
  } else {
    Materials materials(rng, words);
    Subject subject = make_subject(shape_for(words, prompt_hash), rng, materials, words);
    if (wanted.backdrop != Backdrop::None)
      paint_plain(canvas, wanted, subject, rng);
    else
      paint_scene(canvas, words, subject, rng);
  }
  finish(canvas, image, key, sigma);
}

// PNG as the models' servers write it: 8-bit RGB, no alpha channel (what PIL saves for an RGB
// image). Faster to make than the host's RGBA PNG of a noisy image, too.
std::string encode_rgb_png(const kiln::Image& image) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    throw std::runtime_error("PNG encoding failed: out of memory");
  }
  std::vector<uint8_t> row(size_t(image.width) * 3);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error("PNG encoding failed");
  }
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep data, png_size_t size) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<char*>(data), size);
      },
      nullptr);
  png_set_compression_level(png, 1);
  png_set_IHDR(png, info, image.width, image.height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (uint32_t y = 0; y < image.height; ++y) {
    for (uint32_t x = 0; x < image.width; ++x)
      std::copy_n(image.at(x, y), 3, &row[size_t(x) * 3]);
    png_write_row(png, row.data());
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

} // namespace

int main(int argc, char** argv) {
  const char* usage = "usage: kiln-test-image <png|jpg|webp> <width> <height> <seed|black> <file> "
                      "[--prompt TEXT]\n";
  std::string prompt;
  if (argc == 8 && std::string(argv[6]) == "--prompt") {
    prompt = argv[7];
  } else if (argc == 7 && std::string(argv[6]).rfind("--prompt=", 0) == 0) {
    prompt = std::string(argv[6]).substr(9);
  } else if (argc != 6) {
    std::fputs(usage, stderr);
    return 2;
  }
  try {
    std::string format = argv[1];
    auto width = uint32_t(std::stoul(argv[2]));
    auto height = uint32_t(std::stoul(argv[3]));
    if (width == 0 || height == 0 || width > 16384 || height > 16384)
      throw std::runtime_error("width and height must be 1-16384");
    bool black = std::string(argv[4]) == "black";
    unsigned long long seed = black ? 0 : std::stoull(argv[4]);
    kiln::Image image(width, height);
    if (black) {
      for (uint32_t y = 0; y < height; ++y)
        for (uint32_t x = 0; x < width; ++x)
          image.at(x, y)[3] = 255;
    } else {
      paint(image, prompt, seed);
    }
    // Opaque RGB in every format: PNGs without an alpha channel, and libwebp leaves the alpha
    // plane out of a WebP whose pixels are all opaque.
    kiln::host::write_file_atomic(
        argv[5], format == "png" ? encode_rgb_png(image) : kiln::host::encode_image(image, format));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln-test-image: %s\n", e.what());
    return 1;
  }
  return 0;
}
