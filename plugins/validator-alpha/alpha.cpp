// The `alpha` validator, for icons and sprites: a real transparent background. The border of
// the image (its outer `border_percent`) must be transparent, and something must be opaque.
// A JPEG has no alpha channel and is rejected; so is an opaque image with a white background.
#include <algorithm>
#include <cstdio>
#include <kiln/kiln.hpp>
#include <string>

namespace {

class Alpha : public kiln::Validator {
public:
  explicit Alpha(const kiln::Context& context)
      : m_max_alpha(context.options().get_int("max_background_alpha")),
        m_min_clear(context.options().get_float("min_clear_border")),
        m_border(context.options().get_float("border_percent")),
        m_min_opaque(context.options().get_float("min_opaque")) {}

  static kiln::OptionSchema options() {
    return {
        {"max_background_alpha", "alpha (0-255) at or below which a pixel counts as clear",
         KILN_OPTION_INT, "16"},
        {"min_clear_border", "share of border pixels that must be clear (0-1)", KILN_OPTION_FLOAT,
         "0.95"},
        {"border_percent", "width of the border checked, in percent of each side",
         KILN_OPTION_FLOAT, "3"},
        {"min_opaque", "share of all pixels that must be opaque (alpha 255 - the clear limit)",
         KILN_OPTION_FLOAT, "0.02"},
    };
  }

  kiln::Verdict validate(const kiln::Asset& asset, const kiln::ImageFile& file) override {
    if (asset.format == "jpg") // no image can pass: permanent, not worth a new attempt
      throw kiln::Error("jpg has no alpha channel: use format = \"png\" or \"webp\"");
    if (!file.image)
      return kiln::Verdict::reject("cannot check: " + std::string(file.decode_error));
    const uint32_t w = file.image->width, h = file.image->height;
    const uint32_t bx = std::max(1u, uint32_t(w * m_border / 100)),
                   by = std::max(1u, uint32_t(h * m_border / 100));
    size_t border = 0, clear = 0, opaque = 0;
    for (uint32_t y = 0; y < h; ++y)
      for (uint32_t x = 0; x < w; ++x) {
        uint8_t a = file.pixel(x, y)[3];
        opaque += a >= 255 - m_max_alpha;
        if (x < bx || y < by || x >= w - bx || y >= h - by) {
          ++border;
          clear += a <= m_max_alpha;
        }
      }
    char buf[160];
    double clear_share = double(clear) / double(border);
    if (clear_share < m_min_clear) {
      std::snprintf(buf, sizeof buf,
                    "no transparent background: %.0f%% of the border is clear, %.0f%% needed",
                    clear_share * 100, m_min_clear * 100);
      // Lacking transparency: only a model that paints it or a postprocessor can fix that.
      return kiln::Verdict::lacks(KILN_PROPERTY_ALPHA, buf);
    }
    double opaque_share = double(opaque) / (double(w) * h);
    if (opaque_share < m_min_opaque) {
      std::snprintf(buf, sizeof buf, "nearly empty: %.1f%% of the image is opaque, %.1f%% needed",
                    opaque_share * 100, m_min_opaque * 100);
      return kiln::Verdict::reject(buf);
    }
    return kiln::Verdict::accept();
  }

private:
  int64_t m_max_alpha;
  double m_min_clear, m_border, m_min_opaque;
};

} // namespace

KILN_PLUGIN(Alpha, "alpha", "1.0.0", "Rejects icons and sprites without a transparent background")
