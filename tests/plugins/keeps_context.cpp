// A validator that keeps its Context and logs from validate(), as plugin authors do: the
// message must reach the host, tagged with the plugin's id, and nothing may read freed memory
// (the sanitized suite runs this under ASan). Reading an option after the constructor is an
// error that says so.
#include <kiln/kiln.hpp>

namespace {

class KeepsContext : public kiln::Validator {
public:
  explicit KeepsContext(const kiln::Context& context)
      : m_context(context), m_word(context.options().get_string("word")) {}
  static kiln::OptionSchema options() {
    return {{"word", "said when validating", KILN_OPTION_STRING, "checking"}};
  }
  kiln::Verdict validate(const kiln::Asset& asset, const kiln::ImageFile&) override {
    m_context.log(KILN_LOG_INFO, m_word + " " + std::string(asset.name) + " from validate()");
    if (asset.name == "late")
      (void)m_context.options().get_string("word");
    return kiln::Verdict::accept();
  }

private:
  const kiln::Context& m_context;
  std::string m_word;
};

} // namespace

KILN_PLUGIN(KeepsContext, "keeps-context", "1.0.0", "Logs through a kept Context (test fixture)")
