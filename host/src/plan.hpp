// Planning: what each asset needs (up to date, from the cache, generated, or an artist's file
// kept), decided from the manifest, the record (state, kiln.lock, cache) and the output folder,
// with no backend call. `kiln plan` prints it; `kiln build` runs it (run.hpp).
#pragma once

#include "fingerprint.hpp"
#include "workspace.hpp"

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace kiln::host {

// What the file at an asset's output is, judged by its bytes.
// Broken: not a readable image of the declared size and format.
enum class OnDisk { Missing, Current, Stale, Edited, Broken };

// Kept: the output is an artist's edit (its bytes match nothing Kiln made for it) and is left
// as it is. Remote: the team's remote cache has its image (the local one has not).
enum class Action { UpToDate, Cached, Generate, Kept, Remote };
// "up_to_date", "cached", "generate", "kept", "remote"
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
  // What generating it would cost, when a cache spares that (the money a hit saves).
  double saved_usd = 0;
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
  float saved_usd = 0;
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

// Applies enhancers, fingerprints and decides per asset. Makes no backend calls. Throws Fatal
// (exit 2) when an --only pattern matches no asset.
Plan make_plan(Workspace& ws, const PlanOptions& options);

} // namespace kiln::host
