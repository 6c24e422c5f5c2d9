// Planning and building: what each asset needs (up to date, cached, generate) and making it so.
#pragma once

#include "fingerprint.hpp"
#include "lockfile.hpp"
#include "log.hpp"
#include "manifest.hpp"
#include "plugins.hpp"
#include "progress.hpp"
#include "state.hpp"

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace kiln::host {

struct Workspace;

// What the file at an asset's output is, judged by its bytes.
// Broken: not a readable image of the declared size and format.
enum class OnDisk { Missing, Current, Stale, Edited, Broken };

// Kept: the output is an artist's edit (its bytes match nothing Kiln made for it) and is left
// as it is.
enum class Action { UpToDate, Cached, Generate, Kept };
// "up_to_date", "cached", "generate", "kept"
std::string_view action_name(Action action);

// One asset with everything a run needs to work on it. Made when the asset's turn comes
// (Plan::asset()) and dropped when it is done: only the PlanEntry is kept for every asset.
struct PlannedAsset {
  size_t index = 0; // in the plan
  AssetSpec spec;
  GenerationRequest request;
  FingerprintFields fields;
  std::string fingerprint;
  fs::path output; // absolute
  Action action = Action::Generate;
  std::string reason;
  double predicted_cost_usd = 0;
  std::optional<Fault> prepare_error; // an enhancer failed: the asset cannot be planned
  // A hash of the asset's validators and their options (OutputRecord::checks).
  std::string checks;
  // Up to date, but checked by other validators than now: the output is validated again.
  bool recheck = false;
  // The file on disk is a fallback stand-in from an earlier run: it is made again.
  bool fallback_on_disk = false;
  // --force: the model is asked again even for a request whose image is in the cache.
  bool force = false;
  // Up to date by its bytes: the state's stamps are refreshed, nothing is written.
  bool refresh = false;
  // The file there is an artist's edit about to be replaced: it is saved in the cache first.
  bool save_edit = false;
  // Another asset of this run makes the same image (same fingerprint): this one takes its bytes
  // instead of paying again. Index into the plan.
  std::optional<size_t> same_as;
};

// What the plan keeps for every asset for the whole run: a few dozen bytes, so a manifest of
// 10,000 assets plans in about a megabyte.
struct PlanEntry {
  static constexpr uint32_t k_none = UINT32_MAX;
  uint32_t asset = 0; // index in the manifest
  uint32_t same_as = k_none;
  uint16_t group = 0; // index into Plan::groups: its backend and model
  Action action = Action::Generate;
  bool prepare_failed = false;
  bool recheck = false;
  bool fallback_on_disk = false;
  bool refresh = false;
  bool save_edit = false;
  double predicted_cost_usd = 0;
  uint32_t reason = 0; // index into Plan::reasons: most assets share a few
  Digest fingerprint{};
};

class Plan {
public:
  std::vector<PlanEntry> entries;
  std::vector<std::pair<std::string, std::string>> groups; // backend id, model
  std::vector<std::string> reasons;                        // "new", "prompt changed"...
  double predicted_cost_usd = 0;
  bool force = false; // --force

  uint32_t reason_id(std::string reason); // an index into reasons, added if new

  size_t size() const { return entries.size(); }
  // Entry i with its request made again (enhancers run again: they must be deterministic, as
  // the fingerprint already requires). An asset whose request no longer matches its planned
  // fingerprint gets a prepare_error.
  PlannedAsset asset(Workspace& ws, size_t i) const;

private:
  std::unordered_map<std::string, uint32_t> m_reason_ids;
};

struct PlanOptions {
  bool force = false;
  std::vector<std::string> only; // names or globs; empty = all
};

// Everything a run works with, created once in the CLI.
struct Workspace {
  Manifest& manifest;
  PluginRegistry& registry;
  PluginSet& plugins;
  Log& log;
  StateFile& state;
  Cache& cache;
  Lockfile* lock = nullptr; // kiln.lock; none: the run records nothing there
};

// An output of an asset no longer declared: removed by the next full build when Kiln wrote it
// and nobody edited it since, kept (and named) when somebody did.
struct Undeclared {
  std::string name;
  fs::path output; // absolute
  bool edited = false;
  bool declared = false; // the asset is declared, but writes another file now (its format)
  // "no longer declared: its file is removed", "...; edited by hand: kept"
  std::string reason() const;
};
// Every output the state or kiln.lock records for an asset the manifest no longer declares,
// and every old file of a declared asset whose output moved (another format), when the file
// is still there: only plain files below the output folder.
std::vector<Undeclared> undeclared_outputs(Workspace& ws);
// Removes the unedited ones (and folders they leave empty, up to the output folder). How many.
size_t remove_undeclared(Workspace& ws, const std::vector<Undeclared>& list);

// `kiln adopt`: the file at the asset's output (an artist's edit) becomes its art for its
// fingerprint: recorded in kiln.lock (adopted = true), in the state and in the cache, so the
// next build finds it up to date and a clone keeps it. The reason it cannot, else nullopt: no
// file, a link, not a readable image, or not the declared size and format.
std::optional<std::string> adopt_output(Workspace& ws, const PlannedAsset& p);

// Applies enhancers, fingerprints and decides per asset. Makes no backend calls. Throws Fatal
// (exit 2) when an --only pattern matches no asset.
Plan make_plan(Workspace& ws, const PlanOptions& options);

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

struct AssetOutcome {
  std::string name;
  std::string status; // generated | cached | up_to_date | failed | skipped (never started)
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

// The JSON report (`--report`): a pinned format, extended never renamed. Written as the run
// goes: each asset's entry is appended to a spool file beside the report when it is final, and
// finish() writes the report atomically with the entries in manifest order, so a run of any
// size keeps no outcome in memory.
class ReportWriter : public OutcomeSink {
public:
  explicit ReportWriter(fs::path path);
  ~ReportWriter() override; // removes the spool
  ReportWriter(const ReportWriter&) = delete;
  ReportWriter& operator=(const ReportWriter&) = delete;

  void add(size_t index, const AssetOutcome& outcome) override;
  void finish(const BuildSummary& summary);

private:
  fs::path m_path;
  fs::path m_spool;
  std::FILE* m_file = nullptr;
  std::vector<std::pair<uint64_t, uint32_t>> m_entries; // by plan index: spool offset, length
};

} // namespace kiln::host
