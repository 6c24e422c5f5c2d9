// One attempt at an asset: the backend's image (or the model's image from the cache) made
// game-ready, i.e. postprocessed, fitted to the asset's size, encoded, and judged by the
// validators on exactly the bytes that will be written. Admission (money, pacing, the job slot)
// comes before it (admission.hpp); what to do after a failure is the chain's (chain.hpp).
#pragma once

#include "outcome.hpp"
#include "plan.hpp"
#include "scheduler.hpp"

#include <string>

namespace kiln::host {

// A private scratch folder, removed with this object.
struct WorkDir {
  fs::path path;
  explicit WorkDir(fs::path p);
  ~WorkDir();
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
};

// The encoded output an attempt made.
struct Generated {
  std::string bytes;
};

// What an attempt re-attaches to instead of creating: a job of an earlier attempt or run.
struct Resume {
  std::string job;
  bool lost_create = false; // a killed run began a create whose answer never arrived
};

// One attempt at `req` (the planned request or a strategy's): the model's image for it from
// the cache when an earlier run bought it (free), else the backend's, journaled so a killed run
// re-attaches; then made game-ready. A failure comes back with its category, and
// `record.source` says who failed: the backend, a postprocessor, a validator, or "kiln".
// `slot` is the backend's job slot, held by the caller and given back here as soon as the
// backend has delivered an image; a failed job keeps it until the caller has recorded what the
// failure means for the others (a stopped backend, a cooling model).
Result<Generated> attempt_image(Workspace& ws, const PlannedAsset& p, const GenerationRequest& req,
                                const std::string& fingerprint, uint32_t attempt,
                                const Resume& resume, AttemptRecord& record, SlotLease& slot);

// Runs the asset's validators on `bytes` (an encoded file of the asset's format), fully decoded
// first. The first rejection is returned, and `source` names its validator; the validators after
// it add what else the image lacks. `work` is a scratch folder for the copy validators may open
// by path.
std::optional<Fault> run_validators(Workspace& ws, const AssetSpec& spec, const std::string& bytes,
                                    const fs::path& work, std::string& source);

} // namespace kiln::host
