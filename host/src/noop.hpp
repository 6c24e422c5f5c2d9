// The fast answer to "is there anything to do?" for repeated builds, the way Ninja answers it
// from its log: after a fully successful run Kiln records the size and modification time of
// every input that can change a plan (the manifest, the state file, the plugin libraries, kiln
// itself) and of every output. The next run with the same arguments stats those files and, when
// none moved, is done without parsing the manifest, loading plugins or hashing anything.
#pragma once

#include "state.hpp"
#include "util.hpp"

#include <optional>
#include <string>
#include <vector>

namespace kiln::host {

// What a recorded run is keyed by: the same manifest with the same arguments.
struct NoopKey {
  fs::path manifest;      // absolute
  std::string output_dir; // --output-dir, absolute or empty
  std::string backend;    // --backend or empty
  std::string state;      // --state-dir, else the state root the environment gives
};

// Where the record for `key` lives: under the cache folder, never beside the sources.
fs::path noop_record_path(const NoopKey& key);

// The number of assets when every recorded file is exactly as recorded; nullopt otherwise (a
// missing or unreadable record included).
std::optional<size_t> noop_check(const NoopKey& key);

// Records a fully successful run: the inputs are stat'ed here, the outputs come with the stamps
// the run already holds (the state's), one at a time and in any order (a folder change starts a
// new "d" line), so a run of any size keeps no list of them. Failures to write are ignored: the
// record is only a shortcut.
class NoopRecorder {
public:
  NoopRecorder(NoopKey key, const std::vector<fs::path>& inputs);
  void output(const fs::path& path, const FileStamp& stamp);
  void commit();

private:
  NoopKey m_key;
  std::string m_text;
  fs::path m_folder;
  bool m_ok = true;
};

// Forgets the record (a run that did not end cleanly).
void noop_forget(const NoopKey& key);

} // namespace kiln::host
