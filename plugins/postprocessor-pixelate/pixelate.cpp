// The `pixelate` postprocessor: real pixel art at the asset's size. Models asked for "pixel art"
// paint soft, off-grid pseudo-pixels in hundreds of colours; this puts them on a grid. The
// output is exactly the asset's width x height, made of flat `pixel_size` x `pixel_size` blocks
// aligned on the top-left corner (a side that is not a multiple of pixel_size ends with a cut
// block), so the art's own resolution is the asset's size divided by pixel_size.
//
// Each block's colour is the area average of the source under it (the source cropped to the
// canvas's aspect first, as the host's fit does), in linear light and weighted by alpha so a
// transparent background does not darken the edges. Alpha becomes binary (at least 128: opaque,
// else transparent with a black colour) and the opaque blocks take at most `colors` colours,
// chosen by median cut and refined by a few k-means rounds (deterministic: no random start), or
// the colours of a `palette` file: a GIMP .gpl palette or one hex colour per line.
#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <kiln/kiln.hpp>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

using Rgb = std::array<uint8_t, 3>;

double to_linear(double v) {
  v /= 255;
  return v <= 0.04045 ? v / 12.92 : std::pow((v + 0.055) / 1.055, 2.4);
}

uint8_t to_srgb(double v) {
  v = std::clamp(v, 0.0, 1.0);
  v = v <= 0.0031308 ? v * 12.92 : 1.055 * std::pow(v, 1 / 2.4) - 0.055;
  return uint8_t(std::lround(v * 255));
}

// Squared distance, weighted as the eye weighs the channels ("redmean").
int64_t distance2(const Rgb& a, const Rgb& b) {
  int64_t rmean = (int64_t(a[0]) + b[0]) / 2;
  int64_t dr = int64_t(a[0]) - b[0], dg = int64_t(a[1]) - b[1], db = int64_t(a[2]) - b[2];
  return (((512 + rmean) * dr * dr) >> 8) + 4 * dg * dg + (((767 - rmean) * db * db) >> 8);
}

size_t nearest(const std::vector<Rgb>& palette, const Rgb& c) {
  size_t best = 0;
  int64_t best_d = INT64_MAX;
  for (size_t i = 0; i < palette.size(); ++i)
    if (int64_t d = distance2(palette[i], c); d < best_d) {
      best_d = d;
      best = i;
    }
  return best;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos)
    return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

bool is_hex6(const std::string& s) {
  return s.size() == 6 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c));
         });
}

Rgb parse_hex6(const std::string& s) {
  unsigned long v = std::stoul(s, nullptr, 16);
  return {uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
}

// A GIMP palette ("GIMP Palette", then "R G B name" lines) or a list of hex colours, one a line
// ("#rrggbb" or "rrggbb"); '#' followed by anything but hex digits, and ';', start a comment
// ("#fff" and "#rrggbbaa" are refused rather than skipped). Throws naming the file and line,
// not the line's text: the path may name any file (a mistake, or a manifest from a stranger's
// pull request pointing at a secret), whose content must not reach a build log.
constexpr size_t k_max_palette = 4096;

std::vector<Rgb> load_palette(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw kiln::Error("cannot read palette file '" + path + "'");
  std::vector<Rgb> colours;
  std::string line;
  bool gimp = false;
  for (int number = 1; std::getline(in, line); ++number) {
    auto fail = [&](const std::string& why) {
      return kiln::Error(path + ":" + std::to_string(number) + ": " + why +
                         " (not a palette line)");
    };
    if (colours.size() > k_max_palette)
      throw kiln::Error(path + ": more than " + std::to_string(k_max_palette) +
                        " colours is no palette");
    std::string t = trim(line);
    if (number == 1 && t.rfind("\xEF\xBB\xBF", 0) == 0) // a UTF-8 byte order mark
      t = trim(t.substr(3));
    if (t.empty() || t[0] == ';')
      continue;
    if (colours.empty() && !gimp && t == "GIMP Palette") {
      gimp = true;
      continue;
    }
    if (t[0] == '#') {
      std::string word = t.substr(1, t.find_first_of(" \t") - 1);
      if (!gimp && is_hex6(word)) {
        colours.push_back(parse_hex6(word));
        continue;
      }
      const bool hex = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
        return std::isxdigit(static_cast<unsigned char>(c));
      });
      if (!gimp && hex && (word.size() == 3 || word.size() == 8)) // #rgb, #rrggbbaa
        throw fail("expected six hex digits \"#rrggbb\"");
      continue; // a comment
    }
    if (gimp) {
      if (t.rfind("Name:", 0) == 0 || t.rfind("Columns:", 0) == 0)
        continue;
      std::istringstream fields(t);
      int rgb[3];
      if (!(fields >> rgb[0] >> rgb[1] >> rgb[2]))
        throw fail("expected \"R G B [name]\"");
      for (int v : rgb)
        if (v < 0 || v > 255)
          throw fail("a channel is outside 0-255");
      colours.push_back({uint8_t(rgb[0]), uint8_t(rgb[1]), uint8_t(rgb[2])});
      continue;
    }
    std::string word = t.substr(0, t.find_first_of(" \t"));
    if (!is_hex6(word))
      throw fail("expected a colour \"#rrggbb\" or \"rrggbb\"");
    colours.push_back(parse_hex6(word));
  }
  if (colours.empty())
    throw kiln::Error(path + ": the palette has no colours");
  return colours;
}

// The distinct colours of the opaque blocks, each with how many blocks have it.
struct Histogram {
  std::vector<Rgb> colours; // sorted
  std::vector<double> counts;
};

// A box of median cut: a range of the histogram's colours and their spread.
struct Box {
  size_t begin, end;
  int channel = 0, range = 0;
  double weight = 0;
};

void measure(Box& box, const Histogram& h) {
  std::array<int, 3> lo{255, 255, 255}, hi{0, 0, 0};
  box.weight = 0;
  for (size_t i = box.begin; i < box.end; ++i) {
    box.weight += h.counts[i];
    for (int c = 0; c < 3; ++c) {
      lo[size_t(c)] = std::min<int>(lo[size_t(c)], h.colours[i][size_t(c)]);
      hi[size_t(c)] = std::max<int>(hi[size_t(c)], h.colours[i][size_t(c)]);
    }
  }
  box.range = -1;
  for (int c = 0; c < 3; ++c)
    if (hi[size_t(c)] - lo[size_t(c)] > box.range) {
      box.range = hi[size_t(c)] - lo[size_t(c)];
      box.channel = c;
    }
}

// At most `count` colours for the histogram: median cut, then a few k-means rounds.
std::vector<Rgb> median_cut(Histogram h, size_t count) {
  std::vector<Box> boxes{{0, h.colours.size()}};
  measure(boxes[0], h);
  while (boxes.size() < count) {
    // Split the box whose colours spread widest, weighted by how many blocks it covers.
    size_t pick = boxes.size();
    double best = 0;
    for (size_t i = 0; i < boxes.size(); ++i) {
      double score = boxes[i].range * std::sqrt(boxes[i].weight);
      if (boxes[i].range > 0 && score > best) {
        best = score;
        pick = i;
      }
    }
    if (pick == boxes.size())
      break;
    const Box box = boxes[pick];
    const size_t c = size_t(box.channel);
    std::vector<size_t> order(box.end - box.begin);
    for (size_t i = 0; i < order.size(); ++i)
      order[i] = box.begin + i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const Rgb &x = h.colours[a], &y = h.colours[b];
      return x[c] != y[c] ? x[c] < y[c] : x < y;
    });
    Histogram sorted;
    for (size_t i : order) {
      sorted.colours.push_back(h.colours[i]);
      sorted.counts.push_back(h.counts[i]);
    }
    std::copy(sorted.colours.begin(), sorted.colours.end(),
              h.colours.begin() + std::ptrdiff_t(box.begin));
    std::copy(sorted.counts.begin(), sorted.counts.end(),
              h.counts.begin() + std::ptrdiff_t(box.begin));
    // The weighted median, moved to a change of the channel's value (range > 0: there is one).
    size_t mid = box.begin + 1;
    for (double seen = h.counts[box.begin]; mid + 1 < box.end && seen < box.weight / 2; ++mid)
      seen += h.counts[mid];
    while (mid < box.end && h.colours[mid - 1][c] == h.colours[mid][c])
      ++mid;
    if (mid == box.end)
      while (h.colours[mid - 1][c] == h.colours[box.end - 1][c])
        --mid;
    Box a{box.begin, mid}, b{mid, box.end};
    measure(a, h);
    measure(b, h);
    boxes[pick] = a;
    boxes.push_back(b);
  }
  std::vector<Rgb> palette;
  std::vector<std::array<double, 4>> acc;
  auto settle = [&](std::vector<std::array<double, 4>>& sums) {
    palette.clear();
    for (auto& s : sums)
      if (s[3] > 0)
        palette.push_back({uint8_t(std::lround(s[0] / s[3])), uint8_t(std::lround(s[1] / s[3])),
                           uint8_t(std::lround(s[2] / s[3]))});
  };
  for (const Box& box : boxes) {
    std::array<double, 4> s{0, 0, 0, 0};
    for (size_t i = box.begin; i < box.end; ++i) {
      for (size_t c = 0; c < 3; ++c)
        s[c] += h.colours[i][c] * h.counts[i];
      s[3] += h.counts[i];
    }
    acc.push_back(s);
  }
  settle(acc);
  // K-means rounds from the median cut: each colour moves to the mean of the blocks nearest it.
  for (int round = 0; round < 4; ++round) {
    acc.assign(palette.size(), {0, 0, 0, 0});
    for (size_t i = 0; i < h.colours.size(); ++i) {
      auto& s = acc[nearest(palette, h.colours[i])];
      for (size_t c = 0; c < 3; ++c)
        s[c] += h.colours[i][c] * h.counts[i];
      s[3] += h.counts[i];
    }
    settle(acc);
  }
  return palette;
}

class Pixelate : public kiln::Postprocessor {
public:
  static constexpr uint32_t k_provides = KILN_PROPERTY_PALETTE;

  explicit Pixelate(const kiln::Context& context)
      : m_pixel_size(context.options().get_int("pixel_size")),
        m_colors(context.options().get_int("colors")),
        m_hint(context.options().get_string("prompt_hint")) {
    if (m_pixel_size < 1 || m_pixel_size > 4096)
      throw kiln::Error("pixel_size must be 1 to 4096");
    if (m_colors < 2 || m_colors > 256)
      throw kiln::Error("colors must be 2 to 256");
    std::string palette = context.options().get_path("palette");
    if (!palette.empty())
      m_palette = load_palette(palette);
  }

  static kiln::OptionSchema options() {
    return {
        {"pixel_size", "side of one art pixel, in output pixels (1: the asset's size is the art's)",
         KILN_OPTION_INT, "4"},
        {"colors", "most colours in the image (2-256), ignored with a palette", KILN_OPTION_INT,
         "16"},
        {"palette", "a GIMP .gpl palette or a list of hex colours to use instead", KILN_OPTION_PATH,
         ""},
        {"prompt_hint", "appended to the prompt (\"\" for none)", KILN_OPTION_STRING, "pixel art"},
    };
  }

  kiln::Image process(const kiln::Asset& asset, kiln::Image image) override {
    const uint32_t out_w = asset.width ? asset.width : image.width;
    const uint32_t out_h = asset.height ? asset.height : image.height;
    const uint32_t size = uint32_t(m_pixel_size);
    const uint32_t grid_w = (out_w + size - 1) / size, grid_h = (out_h + size - 1) / size;

    // The art at its own resolution: one sample per block, alpha binary.
    std::vector<std::array<uint8_t, 4>> art = average(image, grid_w, grid_h);
    std::map<Rgb, double> counts;
    for (auto& px : art)
      if (px[3])
        counts[{px[0], px[1], px[2]}] += 1;
    std::vector<Rgb> palette = m_palette;
    if (palette.empty()) {
      Histogram h;
      for (auto& [colour, n] : counts) {
        h.colours.push_back(colour);
        h.counts.push_back(n);
      }
      palette = h.colours.size() <= size_t(m_colors) ? h.colours
                                                     : median_cut(std::move(h), size_t(m_colors));
    }
    // Every distinct colour is matched once.
    std::map<Rgb, Rgb> mapped;
    for (auto& entry : counts)
      mapped[entry.first] = palette[nearest(palette, entry.first)];
    for (auto& px : art)
      if (px[3]) {
        const Rgb& c = mapped[{px[0], px[1], px[2]}];
        px = {c[0], c[1], c[2], 255};
      }

    kiln::Image out(out_w, out_h);
    for (uint32_t y = 0; y < out_h; ++y)
      for (uint32_t x = 0; x < out_w; ++x)
        std::copy_n(art[size_t(y / size) * grid_w + x / size].data(), 4, out.at(x, y));
    return out;
  }

  std::string prompt_hint(const kiln::Asset&) override { return m_hint; }

private:
  // The source's area average under each cell of a grid_w x grid_h grid laid over the source
  // cropped to the grid's aspect, in linear light, colours weighted by alpha.
  static std::vector<std::array<uint8_t, 4>> average(const kiln::Image& image, uint32_t grid_w,
                                                     uint32_t grid_h) {
    const double scale = std::max(double(grid_w) / image.width, double(grid_h) / image.height);
    const double crop_w = grid_w / scale, crop_h = grid_h / scale;
    const double left = (image.width - crop_w) / 2, top = (image.height - crop_h) / 2;
    const double cell_w = crop_w / grid_w, cell_h = crop_h / grid_h;
    std::array<double, 256> linear;
    for (int v = 0; v < 256; ++v)
      linear[size_t(v)] = to_linear(v);

    std::vector<std::array<uint8_t, 4>> art(size_t(grid_w) * grid_h);
    for (uint32_t gy = 0; gy < grid_h; ++gy)
      for (uint32_t gx = 0; gx < grid_w; ++gx) {
        const double x0 = left + gx * cell_w, x1 = x0 + cell_w;
        const double y0 = top + gy * cell_h, y1 = y0 + cell_h;
        double sum[3] = {0, 0, 0}, alpha = 0, area = 0;
        for (uint32_t y = uint32_t(y0); y < image.height && y < y1; ++y) {
          const double wy = std::min(y1, y + 1.0) - std::max(y0, double(y));
          for (uint32_t x = uint32_t(x0); x < image.width && x < x1; ++x) {
            const double w = wy * (std::min(x1, x + 1.0) - std::max(x0, double(x)));
            if (w <= 0)
              continue;
            const uint8_t* p = image.at(x, y);
            const double a = w * p[3];
            for (int c = 0; c < 3; ++c)
              sum[c] += a * linear[p[c]];
            alpha += a;
            area += w;
          }
        }
        auto& px = art[size_t(gy) * grid_w + gx];
        if (area <= 0 || alpha / area < 127.5) {
          px = {0, 0, 0, 0};
          continue;
        }
        px = {to_srgb(sum[0] / alpha), to_srgb(sum[1] / alpha), to_srgb(sum[2] / alpha), 255};
      }
    return art;
  }

  int64_t m_pixel_size, m_colors;
  std::string m_hint;
  std::vector<Rgb> m_palette;
};

} // namespace

KILN_PLUGIN(Pixelate, "pixelate", "1.0.0",
            "Turns the image into pixel art: flat square blocks in a small palette")
