// The `fallback` retry strategy, the chain's last resort: the offline placeholder backend's
// image for the same prompt and size, flagged as a stand-in. The report and `kiln plan` mark
// it, the next build tries the asset again, and the run fails unless [project] allow_fallback
// is true, so nobody ships a placeholder unknowingly.
#include <kiln/kiln.hpp>
#include <string>

namespace {

class Fallback : public kiln::RetryStrategy {
public:
  explicit Fallback(const kiln::Context& context)
      : m_backend(context.options().get_string("backend")) {}

  static kiln::OptionSchema options() {
    return {{"backend", "the offline backend that draws the stand-in", KILN_OPTION_STRING,
             "placeholder"}};
  }

  std::optional<kiln::Proposal> propose(const kiln::Failure& failure) override {
    if (failure.proposals > 0 || failure.request.backend == m_backend)
      return std::nullopt;
    kiln::Proposal p;
    p.backend = m_backend;
    p.fallback = true;
    return p;
  }

private:
  std::string m_backend;
};

} // namespace

KILN_PLUGIN(Fallback, "fallback", "1.0.0",
            "Last resort: a placeholder image, flagged so that it is never shipped unknowingly")
