// The `trim` postprocessor, for icons and sprites: crops the image to its subject (the bounding
// box of the pixels more opaque than `alpha_threshold`) and centres it on a transparent canvas of
// the asset's size, scaled to fit inside the canvas less `margin` percent of each side, aspect
// kept. Models place subjects anywhere and at any size; after this every icon of a set fills its
// frame the same way. It runs after a background remover: an image without any transparent
// pixel has nothing to trim and is returned as it is. The output is already the asset's size,
// so the host's final fit does not move the subject again.
#include <algorithm>
#include <cmath>
#include <kiln/kiln.hpp>
#include <string>

namespace {

class Trim : public kiln::Postprocessor {
public:
  explicit Trim(const kiln::Context& context)
      : m_host(context.host()), m_margin_percent(context.options().get_float("margin")),
        m_threshold(context.options().get_int("alpha_threshold")),
        m_hint(context.options().get_string("prompt_hint")) {
    if (m_margin_percent < 0 || m_margin_percent >= 50)
      throw kiln::Error("margin must be at least 0 and below 50 (percent of each side)");
    if (m_threshold < 0 || m_threshold > 254)
      throw kiln::Error("alpha_threshold must be 0 to 254");
  }

  static kiln::OptionSchema options() {
    return {
        {"margin", "empty space left on each side, in percent of the canvas side",
         KILN_OPTION_FLOAT, "8"},
        {"alpha_threshold", "pixels more opaque than this (0-254) belong to the subject",
         KILN_OPTION_INT, "16"},
        {"prompt_hint", "appended to the prompt (\"\" for none)", KILN_OPTION_STRING, ""},
    };
  }

  kiln::Image process(const kiln::Asset& asset, kiln::Image image) override {
    const uint32_t w = image.width, h = image.height;
    uint32_t x0 = w, y0 = h, x1 = 0, y1 = 0; // the subject's box, [x0, x1) x [y0, y1)
    bool any_transparent = false;
    for (uint32_t y = 0; y < h; ++y)
      for (uint32_t x = 0; x < w; ++x) {
        uint8_t a = image.at(x, y)[3];
        any_transparent |= a < 255;
        if (a > m_threshold) {
          x0 = std::min(x0, x);
          y0 = std::min(y0, y);
          x1 = std::max(x1, x + 1);
          y1 = std::max(y1, y + 1);
        }
      }
    if (!any_transparent)
      return image;
    if (x0 >= x1)
      throw kiln::Error("nothing to trim: the image is empty (no pixel is more opaque than "
                        "alpha_threshold " +
                            std::to_string(m_threshold) + ")",
                        KILN_ERROR_VALIDATION);

    const uint32_t canvas_w = asset.width ? asset.width : w;
    const uint32_t canvas_h = asset.height ? asset.height : h;
    const double inner_w = canvas_w * (1 - m_margin_percent / 50);
    const double inner_h = canvas_h * (1 - m_margin_percent / 50);
    const uint32_t box_w = x1 - x0, box_h = y1 - y0;
    const double scale = std::min(inner_w / box_w, inner_h / box_h);
    const uint32_t out_w = std::clamp<uint32_t>(uint32_t(std::lround(box_w * scale)), 1, canvas_w);
    const uint32_t out_h = std::clamp<uint32_t>(uint32_t(std::lround(box_h * scale)), 1, canvas_h);

    kiln::Image subject(box_w, box_h);
    for (uint32_t y = 0; y < box_h; ++y)
      std::copy_n(image.at(x0, y0 + y), size_t(box_w) * 4, subject.at(0, y));
    kiln::Image scaled = kiln::scale(m_host, subject, out_w, out_h);

    kiln::Image canvas(canvas_w, canvas_h); // transparent black
    const uint32_t left = (canvas_w - out_w) / 2, top = (canvas_h - out_h) / 2;
    for (uint32_t y = 0; y < out_h; ++y)
      std::copy_n(scaled.at(0, y), size_t(out_w) * 4, canvas.at(left, top + y));
    return canvas;
  }

  std::string prompt_hint(const kiln::Asset&) override { return m_hint; }

private:
  const kiln_host_api* m_host;
  double m_margin_percent;
  int64_t m_threshold;
  std::string m_hint;
};

} // namespace

KILN_PLUGIN(Trim, "trim", "1.0.0",
            "Crops icons and sprites to their subject and centres it on the canvas with a margin")
