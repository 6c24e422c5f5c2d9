// The `quality` enhancer: appends quality boosters chosen by the model's family. Diffusion
// models of the SDXL line answer to tag-like boosters; flux follows plain descriptions and is
// given a short one; anything else gets `other`.
#include <kiln/kiln.hpp>
#include <string>

namespace {

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

class Quality : public kiln::Enhancer {
public:
  explicit Quality(const kiln::Context& context)
      : m_flux(context.options().get_string("flux")), m_sdxl(context.options().get_string("sdxl")),
        m_other(context.options().get_string("other")) {}

  static kiln::OptionSchema options() {
    return {
        {"flux", "boosters for flux models", KILN_OPTION_STRING, "highly detailed, sharp focus"},
        {"sdxl", "boosters for SDXL and Stable Diffusion models", KILN_OPTION_STRING,
         "masterpiece, best quality, highly detailed, sharp focus"},
        {"other", "boosters for any other model", KILN_OPTION_STRING, "high quality, detailed"},
    };
  }

  kiln::Prompt enhance(const kiln::Asset& asset, kiln::Prompt current) override {
    const std::string& boosters =
        contains(asset.model, "flux")                                                ? m_flux
        : contains(asset.model, "sdxl") || contains(asset.model, "stable-diffusion") ? m_sdxl
                                                                                     : m_other;
    if (!boosters.empty() && !contains(current.positive, boosters))
      current.positive += (current.positive.empty() ? "" : ", ") + boosters;
    return current;
  }

private:
  std::string m_flux, m_sdxl, m_other;
};

} // namespace

KILN_PLUGIN(Quality, "quality", "1.0.0", "Appends quality boosters suited to the model's family")
