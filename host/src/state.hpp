// What Kiln remembers of an output folder between runs: the state file and its journal (which
// fingerprint each output was written from, jobs in flight, money spent), and the OutputLock
// that keeps it to one build at a time. The images are in the cache (cache.hpp).
#pragma once

#include "fingerprint.hpp"
#include "util.hpp"

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
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
  // SHA-256 of the file's bytes as written (empty in records of kilns before 0.2): a file whose
  // stamps moved but whose bytes did not (a clone, a touch) is still this record's.
  std::string sha256;
};

// What the state holds in memory for one output: enough to decide "up to date" with a stat;
// the rest of its record (the fingerprint fields, for saying what changed) stays on disk.
struct StateEntry {
  Digest fingerprint{};
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t output_hash = 0; // of OutputRecord::output
  uint32_t checks = 0;      // index into the state's distinct `checks` values
  bool fallback = false;
  uint8_t file = 0; // where the full record is: 0 the snapshot, 1 the journal
  uint32_t length = 0;
  uint64_t offset = 0;
};

// What Kiln remembers per output folder, in its state folder (state_dir_for(): never inside the
// output folder, which holds only art that can ship as it is):
// - `state.jsonl`, the snapshot: a header line, then one JSON record per output. Rewritten
//   atomically at the end of a run (save()).
// - `journal.jsonl`, append-only: each record is appended and fsync'd the moment its output is
//   written, so a killed run loses nothing it recorded; a torn last line (a crash mid-write) is
//   dropped when it is read.
// Memory is a StateEntry per output whatever the size of the records, so 10,000 outputs cost
// about a megabyte. Assets are found by a 64-bit hash of their name; two names that collide
// can at worst be planned as "changed" (the output path is compared too), never as up to date.
class StateFile {
public:
  explicit StateFile(fs::path state_dir);
  ~StateFile();
  StateFile(const StateFile&) = delete;
  StateFile& operator=(const StateFile&) = delete;

  // Reads the snapshot then the journal; missing ones are empty. A corrupt snapshot is reported
  // and treated as empty: the cache still holds every image, so nothing paid for is lost.
  // `owner`: this process holds the OutputLock and may repair the journal (cut a torn last
  // line); a reader (`kiln plan`) leaves the files as they are.
  std::optional<std::string> load(bool owner = true);
  // Writes the snapshot and empties the journal, but for the remote jobs still open and, when
  // `keep_spend` (an interrupted run), what was spent: the next run counts it against its budget.
  void save(bool keep_spend = false);
  bool dirty() const { return m_dirty; }

  // Remote jobs: what a killed run leaves for the next one, so that it re-attaches instead of
  // paying again. Each event is appended to the journal and fsync'd before the call returns.
  struct PendingJob {
    std::string job;          // the last job id reported for the request, if any
    bool lost_create = false; // a create began after it and its answer never arrived
  };
  // Before asking `backend` to make the request `fingerprint` (it may create a job).
  void creating(std::string_view name, const std::string& fingerprint, const std::string& backend);
  // The backend reported the job's id.
  void submitted(std::string_view name, const std::string& fingerprint, const std::string& backend,
                 const std::string& job);
  // The backend came back (success or failure): the job is no longer this run's to resume.
  void job_done(const std::string& fingerprint, const std::string& backend);
  // The backend came back with its cost: "downloaded" when it delivered an image, else "spent"
  // (a failed job may still be billed). False when that job's cost was already recorded (a
  // re-attached job of a killed run): not counted twice.
  bool spent(std::string_view name, const std::string& job, double usd, bool downloaded);
  std::optional<PendingJob> pending(const std::string& fingerprint,
                                    const std::string& backend) const;
  // Spent by earlier runs that did not finish (killed or interrupted), from the journal.
  double spent_before() const { return m_spent_before; }

  std::optional<StateEntry> find(std::string_view name) const;
  // Room for n outputs: the table is then not reallocated while a run records them, so the
  // workers' allocator arenas stay free of it.
  void reserve(size_t n);
  bool same_output(const StateEntry& entry, std::string_view output) const;
  const std::string& checks(const StateEntry& entry) const { return m_checks[entry.checks]; }
  // The whole record of `entry`, read from disk (nullopt if it cannot be read).
  std::optional<OutputRecord> record(const StateEntry& entry) const;

  // Records an output: appended to the journal and fsync'd before it returns. Thread-safe.
  void put(const std::string& name, const OutputRecord& record);
  // The records of assets not among `names` (no longer declared), read from disk.
  std::vector<std::pair<std::string, OutputRecord>>
  records_not_in(const std::vector<std::string_view>& names) const;
  // Forgets assets no longer declared.
  void retain(const std::vector<std::string_view>& names);
  size_t size() const { return m_count; }

  const fs::path& path() const { return m_path; }
  const fs::path& journal_path() const { return m_journal_path; }
  // The state folder: these files, the build lock, scratch folders.
  const fs::path& dir() const { return m_dir; }

private:
  void add(std::string_view line, uint8_t file, uint64_t offset);
  // Indexes the record of `name` found at `offset` of `file` (0 the snapshot, 1 the journal).
  void index(const std::string& name, const OutputRecord& record, uint8_t file, uint64_t offset,
             uint32_t length);
  void clear_entries();
  std::optional<std::string> read_line(uint8_t file, uint64_t offset, uint32_t length) const;
  uint32_t intern_checks(const std::string& checks);
  void open_journal_for_append();

  void append(const std::string& line);
  void replay(std::string_view line);

  fs::path m_dir, m_path, m_journal_path;
  std::map<std::string, PendingJob> m_pending; // by fingerprint + '\n' + backend
  std::set<std::string> m_spent_jobs;          // jobs whose cost the journal holds
  std::vector<std::string> m_spend_lines;      // those records, kept by save(keep_spend)
  double m_spent_before = 0;
  // An open-addressing table by name hash (0 marks a free slot): two flat arrays, no node
  // per output.
  StateEntry* slot(uint64_t hash);
  const StateEntry* slot(uint64_t hash) const;
  void set(uint64_t hash, const StateEntry& entry);
  void rehash(size_t capacity);
  std::vector<uint64_t> m_keys;
  std::vector<StateEntry> m_values;
  size_t m_count = 0;
  std::vector<std::string> m_checks;
  int m_fd[2] = {-1, -1}; // read: snapshot, journal
  int m_append = -1;      // the journal, for appending
  uint64_t m_journal_size = 0;
  bool m_dirty = false;
  mutable std::mutex m_mutex;
};

// The state folder of an output folder: `KILN_STATE_DIR`, else `$XDG_STATE_HOME/kiln`, else
// `~/.local/state/kiln`, then a folder named after the output folder's last part and a digest
// of its absolute path ("generated-3f1c2a9b0d4e"), so every output folder has its own and none
// is inside one.
fs::path state_dir_for(const fs::path& output_dir);
// Where every state folder goes: `KILN_STATE_DIR`, else `$XDG_STATE_HOME/kiln`, else
// `~/.local/state/kiln`.
fs::path state_root();

// Moves the state of a kiln before 0.2 (in <output_dir>/.kiln/) to `state_dir`, so nothing is
// made again, and removes that folder from among the art. True when there was one.
bool migrate_old_state(const fs::path& output_dir, const fs::path& state_dir);

// One build at a time per output folder: an exclusive flock on <state_dir>/lock, which the
// kernel releases when the holder ends, however it ends (kill -9 included).
class OutputLock {
public:
  // Takes the lock. When another build holds it: `on_wait` is called with a message naming
  // the holder's pid and the lock is waited for, or, with `wait` false, Fatal(k_exit_busy).
  OutputLock(const fs::path& state_dir, const fs::path& output_dir, bool wait,
             const std::function<void(const std::string&)>& on_wait);
  ~OutputLock();
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

private:
  int m_fd = -1;
};

// Removes what killed runs left in the output folder: temp files of atomic writes (their names
// hold ".kiln-tmp.") and scratch folders of the state folder. Call it holding the OutputLock.
// Returns how many.
size_t remove_leftovers(const fs::path& output_dir, const fs::path& state_dir);
// Fatal (exit 2) when a file Kiln keeps in a state folder is a symbolic link.
void refuse_links_in_state(const fs::path& state_dir);
// Throws std::runtime_error when a folder between `root` and `file` is a symbolic link: an
// output (or a cache file) is never written outside the output folder (the cache) through one.
// `what` and `root_name` word the message: "outputs", "the output folder".
void refuse_links_below(const fs::path& root, const fs::path& file,
                        std::string_view what = "outputs",
                        std::string_view root_name = "the output folder");

// Whether a file name is one of an output's temp files as AtomicFile makes them
// ("sword.png.kiln-tmp.00c0ffee00c0ffee"): the only files remove_leftovers() deletes.
bool is_output_temp_name(std::string_view name);

// Size and modification time of a file, or nullopt when it does not exist.
struct FileStamp {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};
std::optional<FileStamp> stat_file(const fs::path& path);

} // namespace kiln::host
