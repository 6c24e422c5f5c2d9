// kiln.lock: the committed record of what was made. Per asset, the fingerprint of the request
// it was made from, the SHA-256 of its file, and where it came from (backend and version, model,
// seed, cost). A fresh clone with the art and kiln.lock has everything it needs to know that
// nothing is to be made: an output whose bytes hash to the recorded digest, for the fingerprint
// the manifest gives today, is up to date, whatever its modification time.
//
// The file is TOML, one table per asset sorted by name, written by Kiln only: deterministic, and
// rewritten (atomically) only when its text changes, so a diff is one entry per changed asset.
// It is read a line at a time and written in pieces, and held as a compact index (about 120
// bytes an asset), so 10,000 assets cost about a megabyte and a quarter.
#pragma once

#include "fingerprint.hpp"
#include "util.hpp"

#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kiln::host {

struct LockEntry {
  std::string fingerprint; // hex
  std::string sha256;      // hex, of the output file's bytes
  std::string backend;     // "replicate@1.0.0"
  std::string model;
  std::optional<uint64_t> seed;
  double cost_usd = 0;
  bool paid = false;    // made by a backend that costs money (not an offline one)
  bool adopted = false; // an artist's file, recorded with `kiln adopt`
};

class Lockfile {
public:
  // kiln.lock beside a manifest named assets.toml; for any other name, the manifest's name
  // with ".lock" for its extension (ui.toml: ui.lock), so two manifests of one folder do not
  // share one.
  static fs::path path_for(const fs::path& manifest);

  explicit Lockfile(fs::path path);

  // Reads the file (a missing one is empty). A file Kiln did not write is refused with the line
  // that is wrong: nothing is overwritten that someone wrote by hand.
  void load();
  const fs::path& path() const { return m_path; }

  std::optional<LockEntry> find(std::string_view name) const;
  // Records what `name` is now. An offline backend's image (CI's placeholder run) never
  // replaces a paid entry, and a run with --backend never replaces an adopted one: that image
  // stays the asset's record. Any other new image (--force, a changed fingerprint) replaces an
  // adopted file's entry. Thread-safe.
  void set(std::string_view name, const LockEntry& entry);
  // This run's backend is forced for every asset (--backend): adopted entries stay.
  void set_backend_overridden(bool on) { m_backend_overridden = on; }
  // Forgets assets no longer declared.
  void retain(const std::vector<std::string_view>& names);
  // The names it records that are not among `names`.
  std::vector<std::string> names_not_in(const std::vector<std::string_view>& names) const;
  // Writes the file when its text changed; true when it did. Another run may have written it
  // since load() (a second build tree of the same manifest): under a lock shared by every
  // kiln of this user, the file is read again and only this run's changes (what it set, what
  // retain() dropped) are applied to it, so neither run's entries are lost.
  bool save();
  size_t size() const { return m_entries.size(); }
  // Room for `n` entries, so a run that records n assets never grows the arrays.
  void reserve(size_t n);

private:
  // About 120 bytes an asset (backend and model names are stored once).
  // About 110 bytes an asset with the index: names live in one arena, backend and model
  // names are stored once, and the index is an open-addressing table of entry numbers.
  struct Entry {
    uint32_t name_offset = 0, name_length = 0; // into m_names
    Digest fingerprint{};
    Digest sha256{};
    uint64_t seed = 0;
    double cost_usd = 0;
    uint32_t backend = 0, model = 0; // into m_strings
    bool has_seed = false;
    bool paid = false;
    bool adopted = false;
    bool touched = false; // set by this run
    bool mark = false;    // scratch for retain() and names_not_in()
  };
  std::string_view name_of(const Entry& e) const {
    return std::string_view(m_names).substr(e.name_offset, e.name_length);
  }
  // The entry named `name`, or nullptr.
  Entry* lookup(std::string_view name);
  const Entry* lookup(std::string_view name) const;
  void index_all(size_t room = 0); // the index anew, with room for `room` entries
  void clear();
  uint32_t intern(const std::string& s);
  void put(std::string_view name, const LockEntry& entry, bool touched);
  LockEntry entry_of(const Entry& e) const;
  bool replaces(const Entry& old, const LockEntry& entry) const;
  void retain_unlocked(const std::vector<std::string_view>& names);
  // Produces the file's text in pieces of about 64 KiB; false when `sink` said stop.
  template <class Sink> bool produce(Sink&& sink) const;
  void load_unguarded();

  fs::path m_path;
  std::vector<Entry> m_entries;       // in any order; sorted when written
  std::string m_names;                // every entry's name, one after another
  std::vector<uint32_t> m_slots;      // entry number + 1 by name hash (0: free), a power of 2
  std::vector<std::string> m_strings; // backend and model names
  std::unordered_map<std::string, uint32_t> m_string_ids;
  std::vector<std::string> m_dropped;  // names retain() removed, for save() to remove too
  std::optional<std::string> m_loaded; // SHA-256 of the file as load() found it
  bool m_changed = false;
  bool m_backend_overridden = false;
  mutable std::mutex m_mutex;
};

} // namespace kiln::host
