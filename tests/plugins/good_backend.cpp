// A minimal, well-formed backend written with the C++ adapter: a solid image whose colour is the
// request's seed, or, with `fetch_url`, whatever that URL serves, downloaded through the host's
// HTTP service. Used to test loading, option checks and the backend path end to end.
#include <kiln/kiln.hpp>

namespace {

class Solid : public kiln::Backend {
public:
  explicit Solid(const kiln::Context& context)
      : m_cost(context.options().get_float("cost_usd")),
        m_fetch_url(context.options().get_string("fetch_url")) {
    if (auto secret = context.options().get_string("secret"); !secret.empty())
      context.add_secret(secret);
  }
  static kiln::OptionSchema options() {
    return {{"cost_usd", "what each image costs", KILN_OPTION_FLOAT, "0.5"},
            {"label", "a required option", KILN_OPTION_STRING, nullptr},
            {"fetch_url", "download the image from here instead", KILN_OPTION_STRING, ""},
            {"secret", "a value the host must redact", KILN_OPTION_STRING, ""}};
  }
  void generate(const kiln::Request& request, kiln::BackendResult& result) override {
    result.set_cost_usd(m_cost);
    if (!m_fetch_url.empty()) {
      kiln::HttpRequest get;
      get.url = m_fetch_url;
      get.output_path = std::string(request.work_dir) + "/download";
      get.read_headers = {"content-type"};
      kiln::HttpResponse r = result.http().send(get);
      if (r.status == 0)
        throw kiln::Error(r.error, r.error_category);
      if (r.status != 200 || r.header("content-type") != "image/png")
        throw kiln::Error("unexpected answer " + std::to_string(r.status));
      result.set_image_file(get.output_path);
      return;
    }
    kiln::Image image(request.width, request.height);
    uint8_t v = uint8_t(request.seed.value_or(0));
    for (size_t i = 0; i < image.rgba.size(); i += 4) {
      image.rgba[i] = v;
      image.rgba[i + 1] = v;
      image.rgba[i + 2] = v;
      image.rgba[i + 3] = 255;
    }
    result.set_image(image);
  }
  double estimate_cost_usd(const kiln::Request&) override { return m_cost; }

private:
  double m_cost;
  std::string m_fetch_url;
};

} // namespace

KILN_PLUGIN(Solid, "solid", "1.0.0", "Solid grey images (test fixture)")
