// The `simplify-prompt` retry strategy: after a content-policy refusal, or after repeated
// validation failures, asks for the subject alone.
//
// The rule (deterministic, documented in the README): start from the asset's prompt as written
// in the manifest, so every enhancer's style, modifiers and quality boosters are gone; keep its
// first clause (up to the first ',', ';', ':', '.', '(' or " - "); keep at most `max_words`
// words. The negative prompt is kept. Proposed once per asset, and only when it changes the
// prompt.
#include <kiln/kiln.hpp>
#include <sstream>
#include <string>

namespace {

std::string simplify(std::string_view prompt, size_t max_words) {
  size_t cut = prompt.find_first_of(",;:.(");
  if (size_t dash = prompt.find(" - "); dash < cut)
    cut = dash;
  std::string_view clause = prompt.substr(0, cut);
  std::istringstream words{std::string(clause)};
  std::string word, out;
  for (size_t n = 0; n < max_words && words >> word; ++n)
    out += (out.empty() ? "" : " ") + word;
  return out;
}

class SimplifyPrompt : public kiln::RetryStrategy {
public:
  explicit SimplifyPrompt(const kiln::Context& context)
      : m_after_validation(context.options().get_int("after_validation_failures")),
        m_max_words(context.options().get_int("max_words")) {
    if (m_max_words < 1)
      throw kiln::Error("max_words must be at least 1");
  }

  static kiln::OptionSchema options() {
    return {
        {"after_validation_failures",
         "validation failures in a row before simplifying (content refusals: at once)",
         KILN_OPTION_INT, "2"},
        {"max_words", "most words kept of the subject", KILN_OPTION_INT, "12"},
    };
  }

  std::optional<kiln::Proposal> propose(const kiln::Failure& failure) override {
    bool refused = failure.category == KILN_ERROR_CONTENT_POLICY;
    bool rejected = failure.category == KILN_ERROR_VALIDATION &&
                    failure.category_streak >= uint64_t(m_after_validation);
    if ((!refused && !rejected) || failure.proposals > 0)
      return std::nullopt;
    std::string subject = simplify(failure.request.asset.prompt, size_t(m_max_words));
    if (subject.empty() || subject == failure.request.prompt)
      return std::nullopt;
    kiln::Proposal p;
    p.prompt = subject;
    return p;
  }

private:
  int64_t m_after_validation, m_max_words;
};

} // namespace

KILN_PLUGIN(SimplifyPrompt, "simplify-prompt", "1.0.0",
            "Retries a refused or repeatedly rejected image with the prompt's subject alone")
