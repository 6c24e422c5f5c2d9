// What Kiln remembers between runs: the state file (which fingerprint each output was written
// from) and the local content-addressed cache (every image ever made, by fingerprint).
#pragma once

#include "fingerprint.hpp"
#include "util.hpp"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kiln::host {

struct OutputRecord {
  std::string output; // relative to the output folder, e.g. "icons/sword.png"
  std::string fingerprint;
  uint64_t size = 0;    // bytes, as written
  int64_t mtime_ns = 0; // as written: a changed file is noticed with a stat, no hashing
  FingerprintFields fields;
  // The file is a stand-in from the fallback strategy, not the image asked for: the next build
  // tries the asset again.
  bool fallback = false;
  // A hash of the validators (ids, versions, options) the file passed: when they change, the
  // file is checked again (free) before it counts as up to date.
  std::string checks;
};

// <output_dir>/.kiln/state.json, written atomically and only when something changed.
class StateFile {
public:
  explicit StateFile(fs::path output_dir);

  // Reads the file; a missing one is empty. A corrupt one is reported and treated as empty:
  // the cache still holds every image, so nothing paid for is lost.
  std::optional<std::string> load();
  void save();
  bool dirty() const { return m_dirty; }

  const OutputRecord* find(const std::string& name) const;
  void put(const std::string& name, OutputRecord record);
  // Forgets assets no longer declared (their files stay: Kiln never deletes outputs).
  void retain(const std::vector<std::string>& names);

  const fs::path& path() const { return m_path; }
  static fs::path kiln_dir(const fs::path& output_dir) { return output_dir / ".kiln"; }

private:
  fs::path m_path;
  std::map<std::string, OutputRecord> m_records;
  bool m_dirty = false;
};

// Size and modification time of a file, or nullopt when it does not exist.
struct FileStamp {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};
std::optional<FileStamp> stat_file(const fs::path& path);

// The local cache: <dir>/v1/<fp[0:2]>/<fp>.<format>, written atomically.
class Cache {
public:
  explicit Cache(fs::path dir) : m_dir(std::move(dir)) {}
  // KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln.
  static fs::path default_dir();

  fs::path path_for(const std::string& fingerprint, const std::string& format) const;
  bool contains(const std::string& fingerprint, const std::string& format) const;
  std::optional<std::string> get(const std::string& fingerprint, const std::string& format) const;
  void put(const std::string& fingerprint, const std::string& format, std::string_view bytes);
  const fs::path& dir() const { return m_dir; }

private:
  fs::path m_dir;
};

} // namespace kiln::host
