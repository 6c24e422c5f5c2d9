// An ABI 1.0 backend: a dark disc centred on an opaque near-white backdrop (what a model asked
// for "a plain white background" paints), its shade from the seed. Its function table ends
// before `paints`, so the host must treat what it paints as unknown.
#include <cmath>
#include <kiln/kiln.hpp>

namespace {

class OldDisc : public kiln::Backend {
public:
  explicit OldDisc(const kiln::Context& context)
      : m_cost(context.options().get_float("cost_usd")) {}
  static kiln::OptionSchema options() {
    return {{"cost_usd", "what each image costs", KILN_OPTION_FLOAT, "0"}};
  }
  void generate(const kiln::Request& request, kiln::BackendResult& result) override {
    kiln::Image image(request.width, request.height);
    uint8_t shade = uint8_t(40 + request.seed.value_or(0) % 100);
    double cx = request.width / 2.0, cy = request.height / 2.0;
    double r = 0.3 * std::fmin(request.width, request.height);
    for (uint32_t y = 0; y < request.height; ++y)
      for (uint32_t x = 0; x < request.width; ++x) {
        uint8_t* p = image.at(x, y);
        bool inside = std::hypot(x + 0.5 - cx, y + 0.5 - cy) < r;
        p[0] = inside ? shade : 245;
        p[1] = inside ? uint8_t(shade / 2) : 245;
        p[2] = inside ? uint8_t(255 - shade) : 245;
        p[3] = 255;
      }
    result.set_image(image);
    result.set_cost_usd(m_cost);
  }
  double estimate_cost_usd(const kiln::Request&) override { return m_cost; }

private:
  double m_cost;
};

} // namespace

KILN_PLUGIN(OldDisc, "old-disc", "1.0.0", "A disc on white (built against the ABI 1.0 SDK)")
