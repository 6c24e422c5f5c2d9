// The `negative` enhancer: builds the negative prompt from the asset's `negative` and a common
// list. Models that take no negative prompt (flux: `without_negative`) get none at all, so the
// words neither reach the positive prompt nor change the fingerprint of an image they cannot
// shape.
#include <algorithm>
#include <kiln/kiln.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace {

// Comma-separated terms, trimmed.
std::vector<std::string> terms(std::string_view text) {
  std::vector<std::string> out;
  std::stringstream in{std::string(text)};
  std::string term;
  while (std::getline(in, term, ',')) {
    size_t a = term.find_first_not_of(" \t"), b = term.find_last_not_of(" \t");
    if (a != std::string::npos)
      out.push_back(term.substr(a, b - a + 1));
  }
  return out;
}

class Negative : public kiln::Enhancer {
public:
  explicit Negative(const kiln::Context& context)
      : m_common(context.options().get_string("common")),
        m_without(context.options().get_list("without_negative")) {}

  static kiln::OptionSchema options() {
    return {
        {"common", "negative terms every asset gets, after its own", KILN_OPTION_STRING,
         "blurry, low quality, jpeg artifacts, watermark, signature"},
        {"without_negative", "models (or parts of their names) that take no negative prompt",
         KILN_OPTION_STRING_LIST, "flux"},
    };
  }

  kiln::Prompt enhance(const kiln::Asset& asset, kiln::Prompt current) override {
    for (auto& part : m_without)
      if (!part.empty() && asset.model.find(part) != std::string_view::npos) {
        current.negative.clear();
        return current;
      }
    // The current negative (the asset's own, or an earlier enhancer's) first, then the common
    // terms, each term once.
    std::vector<std::string> out;
    for (auto* text : {&current.negative, &m_common})
      for (auto& t : terms(*text))
        if (std::find(out.begin(), out.end(), t) == out.end())
          out.push_back(t);
    current.negative.clear();
    for (auto& t : out)
      current.negative += (current.negative.empty() ? "" : ", ") + t;
    return current;
  }

private:
  std::string m_common;
  std::vector<std::string> m_without;
};

} // namespace

KILN_PLUGIN(Negative, "negative", "1.0.0",
            "Builds the negative prompt; models without one get none")
