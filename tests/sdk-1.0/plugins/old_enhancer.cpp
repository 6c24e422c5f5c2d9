// An ABI 1.0 enhancer: appends a word, so the test can see it ran.
#include <kiln/kiln.hpp>

namespace {

class OldWord : public kiln::Enhancer {
public:
  explicit OldWord(const kiln::Context& context) : m_word(context.options().get_string("word")) {}
  static kiln::OptionSchema options() {
    return {{"word", "appended to the prompt", KILN_OPTION_STRING, "from-an-old-enhancer"}};
  }
  kiln::Prompt enhance(const kiln::Asset&, kiln::Prompt current) override {
    current.positive += ", " + m_word;
    return current;
  }

private:
  std::string m_word;
};

} // namespace

KILN_PLUGIN(OldWord, "old-word", "1.0.0", "Appends a word (built against the ABI 1.0 SDK)")
