// What a run says of each asset and of the whole: the attempts made, the outcome, the counts.
// The same records feed the progress line, the summary and the JSON report (report.hpp).
#pragma once

#include "remote_cache.hpp"
#include "result.hpp"
#include "util.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::host {

// One try at an asset, as the report lists it.
struct AttemptRecord {
  std::string strategy; // "initial", or the retry strategy that proposed this request
  std::string backend;
  std::string model;
  std::string prompt;
  std::optional<uint64_t> seed;
  double waited_s = 0; // the delay the strategy asked for before this attempt
  std::string remote_id;
  double cost_usd = 0;
  // The model's image came from the cache (an earlier run made this very request, only the
  // postprocessing changed): no backend call, nothing paid.
  bool from_cache = false;
  std::optional<Fault> error; // none: this attempt made the asset
  std::string source;         // who failed: the backend, a validator, a postprocessor, "kiln"
  // After a failure, what the chain decided: "retry" or "stop", and why (which strategy
  // proposed what, which were passed over and why: a new seed cannot add transparency...).
  std::string decision;
  std::string decision_reason;
};

// Skipped: never started (the budget, a stopped backend, an interrupted run).
enum class Status { Generated, Cached, UpToDate, Failed, Skipped, Kept };
// The report's word: "generated", "cached", "up_to_date", "failed", "skipped", "kept".
std::string_view status_name(Status status);

// Where the image an asset's file holds came from in this run: the backend, the local cache,
// the team's remote cache; None when nothing was written (up to date, kept, failed).
enum class Origin { None, Generated, Cached, Remote };
// The report's word: null (None), "generated", "cached", "remote".
std::string_view origin_name(Origin origin);

struct AssetOutcome {
  std::string name;
  Status status = Status::Failed;
  Origin origin = Origin::None;
  double saved_usd = 0; // what a cache hit spared (the backend's estimate)
  std::string reason;
  fs::path output;
  std::string fingerprint;
  std::string backend;
  std::string model;
  std::vector<AttemptRecord> attempts;
  bool fallback = false; // the output is a stand-in from the fallback strategy
  std::string remote_id; // the backend's job id of the last attempt (a Replicate prediction id)
  double cost_usd = 0;
  double predicted_cost_usd = 0;
  std::string final_prompt;
  std::string final_negative_prompt;
  std::optional<Fault> error;
  // What would fix a failure no new image can fix, e.g. `add postprocess = ["remove-background"]
  // to [types.icon]`.
  std::string hint;
};

struct BuildSummary {
  size_t total = 0; // assets in the plan
  int generated = 0, cached = 0, up_to_date = 0, failed = 0, skipped = 0;
  int kept = 0;       // artists' edits left as they are
  size_t removed = 0; // old outputs removed: of assets no longer declared, or of another format
  std::vector<std::string> fallback_names; // generated assets whose image is a fallback stand-in
  bool needs_a_person = false; // an asset needs a person (credit, billing): new work stopped
  // "backend: asset: why" for each asset that made its backend stop creating
  std::vector<std::string> stopped;
  bool interrupted = false;
  // The budget: assets it could not cover (not started or not retried), and how much more
  // they need beyond it.
  uint32_t over_budget = 0;
  double budget_needed_usd = 0;
  double spent_before_usd = 0; // by killed runs before this one (from the journal)
  uint32_t cache_rejected = 0; // bad cache entries found, removed and not installed
  int remote = 0;              // assets whose image came from the remote cache
  double saved_usd = 0;        // what cache hits (local and remote) spared
  RemoteCounts remote_counts;  // the remote cache's hits, misses, errors... (none: zeros)
  // Assets --locked refused: they would need generating (kiln.lock lacks them as declared).
  std::vector<std::string> locked_refused;
  double cost_usd = 0;
  double predicted_cost_usd = 0;
  double duration_s = 0;

  int fallbacks() const { return int(fallback_names.size()); }
  void count(const AssetOutcome& outcome);
};

// Where each asset's outcome goes once it is final. build() keeps no outcome after handing it
// over; calls come from worker threads, one at a time.
class OutcomeSink {
public:
  virtual ~OutcomeSink() = default;
  virtual void add(size_t index, const AssetOutcome& outcome) = 0; // index: in the plan
};

} // namespace kiln::host
