// The `not-blank` validator: rejects single-colour and nearly uniform images, such as the black
// frames safety filters return and fully transparent images.
#include <cmath>
#include <cstdio>
#include <kiln/kiln.hpp>
#include <string>

namespace {

class NotBlank : public kiln::Validator {
public:
  explicit NotBlank(const kiln::Context& context)
      : m_min_stddev(context.options().get_float("min_stddev")) {
    if (m_min_stddev < 0)
      throw kiln::Error("min_stddev must be zero or more");
  }

  static kiln::OptionSchema options() {
    return {{"min_stddev", "smallest standard deviation of luminance (0-255) an image must show",
             KILN_OPTION_FLOAT, "3.0"}};
  }

  kiln::Verdict validate(const kiln::Asset&, const kiln::ImageFile& file) override {
    if (!file.image)
      return kiln::Verdict::reject("cannot check: " + std::string(file.decode_error));
    const uint32_t w = file.image->width, h = file.image->height;
    // A grid of at most ~256k samples: enough to tell blank from not on any size.
    const uint32_t step = std::max<uint32_t>(1, uint32_t(std::sqrt(double(w) * h / 262144.0)));
    double sum = 0, sum_sq = 0, alpha_sum = 0;
    size_t n = 0;
    for (uint32_t y = 0; y < h; y += step)
      for (uint32_t x = 0; x < w; x += step) {
        const uint8_t* p = file.pixel(x, y);
        double a = p[3] / 255.0;
        // Transparent pixels count as mid-grey: a shape on a clear background is not blank.
        double luma = (0.2126 * p[0] + 0.7152 * p[1] + 0.0722 * p[2]) * a + 128 * (1 - a);
        sum += luma;
        sum_sq += luma * luma;
        alpha_sum += p[3];
        ++n;
      }
    if (alpha_sum == 0)
      return kiln::Verdict::reject("image is fully transparent");
    double mean = sum / n;
    double stddev = std::sqrt(std::max(0.0, sum_sq / n - mean * mean));
    if (stddev < m_min_stddev) {
      char buf[160];
      std::snprintf(buf, sizeof buf,
                    "image is blank: luminance varies by %.2f (stddev), below %.2f; mean %.0f",
                    stddev, m_min_stddev, mean);
      return kiln::Verdict::reject(buf);
    }
    return kiln::Verdict::accept();
  }

private:
  double m_min_stddev;
};

} // namespace

KILN_PLUGIN(NotBlank, "not-blank", "1.0.0",
            "Rejects single-colour or nearly uniform images (e.g. black safety-filter frames)")
