// Running a plan: every planned asset made to exist. The run settles what needs no backend
// first (up to date, checked again, from the cache, kept), then generates the rest on a pool of
// workers (each asset: admission, attempt, chain, write), then gives assets that make the same
// image as another its bytes. Outcomes go to an OutcomeSink (the report) as they are final.
#pragma once

#include "admission.hpp"
#include "chain.hpp"
#include "outputs.hpp"
#include "progress.hpp"

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

namespace kiln::host {

struct BuildOptions {
  unsigned jobs = 0; // jobs in flight per backend; 0: its `concurrency`, else its default
  std::optional<double> budget_usd;         // none: no limit
  kiln_log_level verbosity = KILN_LOG_INFO; // DEBUG = -v, ERROR = -q
  Progress::Mode progress = Progress::Mode::Lines;
};

// Makes every planned asset exist: writes outputs atomically and only when their bytes change,
// fills the cache, records the state. Each outcome goes to `sink` (if any) as it is final.
BuildSummary build(Workspace& ws, Plan& plan, const BuildOptions& options,
                   OutcomeSink* sink = nullptr);

// One run of a plan; build() makes one and calls run().
class Run {
public:
  Run(Workspace& ws, Plan& plan, const BuildOptions& options, OutcomeSink* sink);
  BuildSummary run();

private:
  using TimePoint = std::chrono::steady_clock::time_point;

  // Phase 1: assets that need no backend, and which assets generate or follow a leader.
  void settle_known();
  void settle(size_t i);
  bool recheck(PlannedAsset& p, AssetOutcome& o);
  bool install_cached(PlannedAsset& p, AssetOutcome& o);
  bool install_remote(PlannedAsset& p, AssetOutcome& o);
  std::optional<Fault> judge(const PlannedAsset& p, const std::string& bytes);
  void generate_instead(size_t i, std::string reason);
  void share(const PlannedAsset& p, const AssetOutcome& o, std::string_view bytes);
  void share_output(const PlannedAsset& p, const AssetOutcome& o);
  // Phase 2: the assets to generate, on a pool of workers.
  void generate_all();
  void work();
  void generate_one(PlannedAsset& p, AssetOutcome& o, SlotLease& first_slot, TimePoint t0);
  void write_generated(const PlannedAsset& p, AssetOutcome& o, const Generated& g, TimePoint t0);
  Result<Generated> make(const PlannedAsset& p, AssetOutcome& out, bool slot_held);
  std::optional<Result<Generated>> attempt(Chain& chain, const PlannedAsset& p, AssetOutcome& out,
                                           uint32_t attempt, bool slot_held, Fault& fault);
  // Phase 3: assets that take a leader's image.
  void follow();
  void follow(size_t i);
  BuildSummary finish();

  std::optional<PlannedAsset> asset_or_fail(size_t i);
  AssetOutcome outcome_of(const PlannedAsset& p) const;
  void emit(size_t index, AssetOutcome& o);

  Workspace& m_ws;
  Plan& m_plan;
  const BuildOptions& m_options;
  OutcomeSink* m_sink;
  TimePoint m_start;
  BuildSummary m_summary;
  std::mutex m_summary_mutex;
  // Only the leaders of assets that take their image keep their outcome for the run.
  std::map<size_t, AssetOutcome> m_leaders;
  Progress m_progress;
  OutputWriter m_outputs;
  Admission m_admission;
  ChainLimits m_limits;
  std::vector<size_t> m_to_generate, m_followers;
  std::vector<std::string> m_locked_refused; // --locked: assets found to need generating
};

} // namespace kiln::host
