// The `tileable` validator, for textures: placed side by side, the image must show no seam. The
// seam is the mean colour difference between the left and right edges (and top and bottom);
// it is compared with the image's own texture, the mean difference between neighbouring
// columns (and rows) inside it. A busy texture may differ more at the seam than a smooth one.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <kiln/kiln.hpp>
#include <string>

namespace {

double pixel_difference(const uint8_t* a, const uint8_t* b) {
  return (std::abs(a[0] - b[0]) + std::abs(a[1] - b[1]) + std::abs(a[2] - b[2])) / 3.0;
}

class Tileable : public kiln::Validator {
public:
  explicit Tileable(const kiln::Context& context)
      : m_ratio(context.options().get_float("max_seam_ratio")),
        m_floor(context.options().get_float("min_seam_difference")) {
    if (m_ratio < 1)
      throw kiln::Error("max_seam_ratio must be at least 1");
  }

  static kiln::OptionSchema options() {
    return {
        {"max_seam_ratio", "largest seam difference as a multiple of the image's own",
         KILN_OPTION_FLOAT, "2.0"},
        {"min_seam_difference", "a seam differing less than this (0-255) always passes",
         KILN_OPTION_FLOAT, "6.0"},
    };
  }

  kiln::Verdict validate(const kiln::Asset&, const kiln::ImageFile& file) override {
    if (!file.image)
      return kiln::Verdict::reject("cannot check: " + std::string(file.decode_error));
    const uint32_t w = file.image->width, h = file.image->height;
    if (w < 4 || h < 4)
      return kiln::Verdict::accept();
    // Edges: column 0 against column w-1, row 0 against row h-1. Inside: every neighbouring
    // pair of a few sampled columns and rows.
    double seam_x = 0, seam_y = 0, inner_x = 0, inner_y = 0;
    for (uint32_t y = 0; y < h; ++y)
      seam_x += pixel_difference(file.pixel(0, y), file.pixel(w - 1, y));
    for (uint32_t x = 0; x < w; ++x)
      seam_y += pixel_difference(file.pixel(x, 0), file.pixel(x, h - 1));
    seam_x /= h;
    seam_y /= w;
    size_t nx = 0, ny = 0;
    const uint32_t step_x = std::max(1u, w / 16), step_y = std::max(1u, h / 16);
    for (uint32_t x = 1; x + 1 < w; x += step_x)
      for (uint32_t y = 0; y < h; ++y, ++nx)
        inner_x += pixel_difference(file.pixel(x, y), file.pixel(x + 1, y));
    for (uint32_t y = 1; y + 1 < h; y += step_y)
      for (uint32_t x = 0; x < w; ++x, ++ny)
        inner_y += pixel_difference(file.pixel(x, y), file.pixel(x, y + 1));
    inner_x /= double(std::max<size_t>(nx, 1));
    inner_y /= double(std::max<size_t>(ny, 1));
    struct Axis {
      double seam, inner;
      const char* name;
    };
    for (const Axis& a :
         {Axis{seam_x, inner_x, "left/right"}, Axis{seam_y, inner_y, "top/bottom"}}) {
      const double seam = a.seam, inner = a.inner;
      const char* axis = a.name;
      double limit = std::max(m_floor, m_ratio * inner);
      if (seam > limit) {
        char buf[200];
        std::snprintf(buf, sizeof buf,
                      "not tileable: the %s seam differs by %.1f, above %.1f (%.1f x the "
                      "image's own %.1f)",
                      axis, seam, limit, m_ratio, inner);
        return kiln::Verdict::lacks(KILN_PROPERTY_TILEABLE, buf);
      }
    }
    return kiln::Verdict::accept();
  }

private:
  double m_ratio, m_floor;
};

} // namespace

KILN_PLUGIN(Tileable, "tileable", "1.0.0",
            "Rejects textures whose opposite edges do not meet without a seam")
