// Where a retry is decided: after every failed attempt, one place says what happens next.
// In order: a job whose file could not be used is downloaded again once (free); a person must
// act, the run was interrupted, or `max_attempts` is reached: stop; else the asset's retry
// strategies (plugins) are asked in chain order, and a proposal is passed over when it cannot
// change the verdict (a new seed cannot add transparency), when its model is cooling down (the
// circuit breaker), when its backend is not running, or when the run's retry budget is spent.
// No proposal left: stop, saying what would fix the asset. Whether an attempt may start at all
// (money, pacing, job slots) is admission.hpp's.
#pragma once

#include "admission.hpp"
#include "attempt.hpp"
#include "resilience.hpp"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kiln::host {

// What every asset's chain shares in a run: a circuit breaker per model and the retry budget.
struct ChainLimits {
  CircuitBreakers breakers;
  RetryBudget budget;
  explicit ChainLimits(const RetryPolicy& policy);
};

// What an attempt asks for: the planned request, or what a strategy proposed.
struct Step {
  std::string strategy; // "initial", "download-again", or the strategy's id
  GenerationRequest request;
  int64_t delay_ms = 0;
  bool fallback = false; // the image will be a stand-in
};

// One asset's walk along its retry chain. Not shared between threads.
class Chain {
public:
  Chain(Workspace& ws, ChainLimits& limits, Admission& admission, const PlannedAsset& p,
        AssetOutcome& out);

  // What the next attempt asks for, and the remote job it re-attaches to (first: the one a
  // killed run left, for a backend that can resume).
  const Step& step() const { return m_step; }
  const Resume& resume() const { return m_resume; }

  // Before an attempt sends anything: why not, when its model is cooling down.
  std::optional<Fault> cooling(const GenerationRequest& req);
  // The attempt succeeded; its model's breaker closes.
  void succeeded(const GenerationRequest& req);
  // The attempt failed, while its backend slot is still held: the failure counts against the
  // model's breaker, and one that needs a person stops the backend before any asset waiting
  // for the slot starts a job.
  void failed(const GenerationRequest& req, const Fault& fault, const AttemptRecord& rec);

  // After attempt `attempt` failed with `fault` (its slot given back): true when the chain
  // goes on (step() and resume() say with what, after the strategy's delay), false when it
  // stops, with `fault` made the asset's final error. `rec` gets the decision and its reason.
  bool retry(Fault& fault, AttemptRecord& rec, uint32_t attempt);

private:
  struct Counters { // what the strategies decide from (kiln_failure)
    uint32_t same_request_failures = 0;
    uint32_t category_streak = 0;
    uint32_t last_category = KILN_ERROR_NONE;
    std::map<std::string, uint32_t> proposals;
  };
  struct Unfixable {
    uint32_t missing = 0; // what no image of the request can have
    std::string why;
  };

  bool download_again(Fault& fault, AttemptRecord& rec, const GenerationRequest& req);
  std::optional<std::string> must_stop(Fault& fault, uint32_t attempt);
  std::optional<Step> next_step(const GenerationRequest& current, const Fault& fault,
                                const std::string& source, uint32_t attempt,
                                std::vector<std::string>& passed);
  std::optional<Step> proposal(const std::string& id, const kiln_result& r,
                               const GenerationRequest& current, const Fault& fault,
                               std::vector<std::string>& passed);
  std::string no_step(Fault& fault, const GenerationRequest& req,
                      const std::vector<std::string>& passed);
  bool take(Step next, AttemptRecord& rec, const Fault& fault, uint32_t attempt,
            const std::vector<std::string>& passed);
  std::optional<Unfixable> unfixable(const GenerationRequest& req, const Fault& fault) const;
  std::string fix_hint(uint32_t missing) const;

  Workspace& m_ws;
  ChainLimits& m_limits;
  Admission& m_admission;
  const PlannedAsset& m_p;
  AssetOutcome& m_out;
  Step m_step;
  Resume m_resume;
  Counters m_counters;
  bool m_downloaded_again = false; // this request's job was downloaded a second time
};

} // namespace kiln::host
