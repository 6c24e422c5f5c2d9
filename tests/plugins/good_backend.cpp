// A minimal, well-formed backend written with the C++ adapter: a solid image whose colour is the
// request's seed. Used to test loading, option checks and the backend path end to end.
#include <kiln/kiln.hpp>

namespace {

class Solid : public kiln::Backend {
public:
  explicit Solid(const kiln::Context& context) : m_cost(context.options().get_float("cost_usd")) {}
  static kiln::OptionSchema options() {
    return {{"cost_usd", "what each image costs", KILN_OPTION_FLOAT, "0.5"},
            {"label", "a required option", KILN_OPTION_STRING, nullptr}};
  }
  void generate(const kiln::Request& request, kiln::BackendResult& result) override {
    kiln::Image image(request.width, request.height);
    uint8_t v = uint8_t(request.seed.value_or(0));
    for (size_t i = 0; i < image.rgba.size(); i += 4) {
      image.rgba[i] = v;
      image.rgba[i + 1] = v;
      image.rgba[i + 2] = v;
      image.rgba[i + 3] = 255;
    }
    result.set_image(image);
    result.set_cost_usd(m_cost);
  }
  double estimate_cost_usd(const kiln::Request&) override { return m_cost; }

private:
  double m_cost;
};

} // namespace

KILN_PLUGIN(Solid, "solid", "1.0.0", "Solid grey images (test fixture)")
