// Where an output is written: the only code that replaces, removes or adopts a file in the
// output folder, and records what it did (state, kiln.lock, cache). Writes are atomic, happen
// only when the bytes change (the build's downstream steps key on mtimes), never go through a
// link below the output folder, and never lose an artist's file or a paid image: either is put
// in the cache before it is replaced.
#pragma once

#include "cache.hpp"
#include "outcome.hpp"
#include "plan.hpp"

#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::host {

// What the asset's entry in the cache must hold: its format and size.
Cache::Expect expected_in_cache(const PlannedAsset& p);

// Writes outputs and records them; one per run, shared by its worker threads.
class OutputWriter {
public:
  explicit OutputWriter(Workspace& ws) : m_ws(ws) {}

  // Writes `bytes` to the output unless the file already holds exactly them (its mtime must not
  // move), saving an artist's edit or kiln.lock's recorded art first, then records it in the
  // state. Their digest. Throws std::runtime_error when the file cannot be written or what it
  // replaces cannot be kept.
  std::string install(const PlannedAsset& p, std::string_view bytes, bool fallback = false);
  // Records in the state that the output holds the bytes with digest `sha`, with its stamps as
  // they are now.
  void record(const PlannedAsset& p, const std::string& sha, bool fallback = false);
  // kiln.lock: what the asset's file is now, with where it came from, for a clone to find it
  // made. A stand-in is not the asset's art; an entry that says so already stays as it is (with
  // the cost it recorded). `sha` empty: the state's, else the file's. `made_by`: the image came
  // from the remote cache, and its record says who made it and what it cost.
  void lock(const PlannedAsset& p, const AssetOutcome& o, std::string sha,
            const RemoteRecord* made_by = nullptr);

private:
  void save_edit(const PlannedAsset& p);
  void keep_recorded_art(const PlannedAsset& p);

  Workspace& m_ws;
  std::mutex m_state_mutex;
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

} // namespace kiln::host
