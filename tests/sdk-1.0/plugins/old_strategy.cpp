// An ABI 1.0 retry strategy: after any failure, one retry with seed 99.
#include <kiln/kiln.hpp>

namespace {

class OldSeed : public kiln::RetryStrategy {
public:
  explicit OldSeed(const kiln::Context&) {}
  std::optional<kiln::Proposal> propose(const kiln::Failure& failure) override {
    if (failure.proposals > 0)
      return std::nullopt;
    kiln::Proposal p;
    p.seed = 99;
    return p;
  }
};

} // namespace

KILN_PLUGIN(OldSeed, "old-seed", "1.0.0",
            "Retries once with seed 99 (built against the ABI 1.0 SDK)")
