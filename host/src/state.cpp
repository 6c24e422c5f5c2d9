#include "state.hpp"

#include "fatal.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <tuple>
#include <unistd.h>
#include <unordered_set>
#include <utility>

namespace kiln::host {

namespace {

constexpr const char* k_state_header = "{\"kiln_state\":2}";

uint64_t name_hash(std::string_view name) {
  uint64_t h = std::hash<std::string_view>{}(name);
  return h ? h : 1; // 0 marks a free slot
}

// Calls f(line, offset, complete) for each line of the open file `fd`, reading it in blocks;
// `complete` is false for a last line without its line break (a torn write). Stops early when
// f returns false.
template <class F> void for_each_line(int fd, F&& f) {
  std::string buf;
  uint64_t buf_offset = 0; // file offset of buf[0]
  char block[1 << 16];
  size_t start = 0;
  for (;;) {
    ssize_t n = ::read(fd, block, sizeof block);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    buf.append(block, size_t(n));
    size_t eol;
    while ((eol = buf.find('\n', start)) != std::string::npos) {
      if (!f(std::string_view(buf).substr(start, eol - start), buf_offset + start, true))
        return;
      start = eol + 1;
    }
    buf.erase(0, start);
    buf_offset += start;
    start = 0;
  }
  if (!buf.empty())
    f(std::string_view(buf), buf_offset, false);
}

void json_str(rapidjson::Writer<rapidjson::StringBuffer>& w, const std::string& s) {
  w.String(s.c_str(), rapidjson::SizeType(s.size()));
}

std::string record_line(const std::string& name, const OutputRecord& r) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("t");
  w.String("written");
  w.Key("name");
  json_str(w, name);
  w.Key("output");
  json_str(w, r.output);
  w.Key("fingerprint");
  json_str(w, r.fingerprint);
  w.Key("size");
  w.Uint64(r.size);
  w.Key("mtime_ns");
  w.Int64(r.mtime_ns);
  w.Key("checks");
  json_str(w, r.checks);
  if (!r.sha256.empty()) {
    w.Key("sha256");
    json_str(w, r.sha256);
  }
  if (r.fallback) {
    w.Key("fallback");
    w.Bool(true);
  }
  w.Key("fields");
  w.StartArray();
  for (auto& [k, v] : r.fields) {
    w.StartArray();
    json_str(w, k);
    json_str(w, v);
    w.EndArray();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize()) + "\n";
}

struct Parsed {
  std::string name;
  OutputRecord record;
};

// A "written" record line; nullopt if it is not one or is malformed.
std::optional<Parsed> parse_record(std::string_view line) {
  rapidjson::Document v;
  v.Parse<rapidjson::kParseIterativeFlag>(line.data(), line.size());
  if (v.HasParseError() || !v.IsObject())
    return std::nullopt;
  auto str = [&](const char* key) -> const rapidjson::Value* {
    auto it = v.FindMember(key);
    return it != v.MemberEnd() && it->value.IsString() ? &it->value : nullptr;
  };
  if (auto t = str("t"); !t || std::string_view(t->GetString()) != "written")
    return std::nullopt;
  auto name = str("name"), output = str("output"), fp = str("fingerprint");
  auto size = v.FindMember("size"), mtime = v.FindMember("mtime_ns");
  if (!name || !output || !fp || size == v.MemberEnd() || !size->value.IsUint64() ||
      mtime == v.MemberEnd() || !mtime->value.IsInt64() || !digest_of_hex(fp->GetString()))
    return std::nullopt;
  Parsed p;
  p.name = name->GetString();
  p.record.output = output->GetString();
  p.record.fingerprint = fp->GetString();
  p.record.size = size->value.GetUint64();
  p.record.mtime_ns = mtime->value.GetInt64();
  if (auto c = str("checks"))
    p.record.checks = c->GetString();
  if (auto sha = str("sha256"); sha && digest_of_hex(sha->GetString()))
    p.record.sha256 = sha->GetString();
  auto fb = v.FindMember("fallback");
  p.record.fallback = fb != v.MemberEnd() && fb->value.IsBool() && fb->value.GetBool();
  if (auto f = v.FindMember("fields"); f != v.MemberEnd() && f->value.IsArray())
    for (auto& e : f->value.GetArray())
      if (e.IsArray() && e.Size() == 2 && e[0].IsString() && e[1].IsString())
        p.record.fields.emplace_back(e[0].GetString(), e[1].GetString());
  return p;
}

} // namespace

StateFile::StateFile(fs::path state_dir)
    : m_dir(std::move(state_dir)), m_path(m_dir / "state.jsonl"),
      m_journal_path(m_dir / "journal.jsonl") {}

fs::path state_root() {
  if (const char* d = std::getenv("KILN_STATE_DIR"); d && *d)
    return fs::absolute(d);
  if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x)
    return fs::path(x) / "kiln";
  if (const char* h = std::getenv("HOME"); h && *h)
    return fs::path(h) / ".local" / "state" / "kiln";
  return fs::temp_directory_path() / "kiln-state";
}

fs::path state_dir_for(const fs::path& output_dir) {
  fs::path root = state_root();
  fs::path out = fs::absolute(output_dir).lexically_normal();
  std::string name = out.filename().string();
  if (name.empty())
    name = "root";
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      c = '_';
  return root / (name.substr(0, 48) + "-" + sha256_hex(out.string()).substr(0, 12));
}

bool migrate_old_state(const fs::path& output_dir, const fs::path& state_dir) {
  fs::path old = output_dir / ".kiln";
  std::error_code ec;
  // Only a real folder: a link planted there is not followed (nor removed through).
  if (!fs::is_directory(fs::symlink_status(old, ec)))
    return false;
  fs::create_directories(state_dir, ec);
  for (const char* name : {"state.jsonl", "journal.jsonl"}) {
    fs::path from = old / name, to = state_dir / name;
    if (!fs::is_regular_file(fs::symlink_status(from, ec)) || fs::exists(to, ec))
      continue;
    fs::rename(from, to, ec);
    if (ec) { // another file system: copy, then remove
      fs::copy_file(from, to, ec);
      if (!ec)
        fs::remove(from, ec);
    }
  }
  fs::remove_all(old, ec);
  return true;
}

StateFile::~StateFile() {
  for (int fd : {m_fd[0], m_fd[1], m_append})
    if (fd >= 0)
      ::close(fd);
}

const StateEntry* StateFile::slot(uint64_t hash) const {
  if (m_keys.empty())
    return nullptr;
  size_t mask = m_keys.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    if (m_keys[i] == hash)
      return &m_values[i];
    if (m_keys[i] == 0)
      return nullptr;
  }
}

StateEntry* StateFile::slot(uint64_t hash) {
  return const_cast<StateEntry*>(std::as_const(*this).slot(hash));
}

void StateFile::rehash(size_t capacity) {
  std::vector<uint64_t> keys(capacity, 0);
  std::vector<StateEntry> values(capacity);
  std::swap(keys, m_keys);
  std::swap(values, m_values);
  m_count = 0;
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i])
      set(keys[i], values[i]);
}

void StateFile::clear_entries() {
  m_keys.clear();
  m_values.clear();
  m_count = 0;
}

void StateFile::set(uint64_t hash, const StateEntry& entry) {
  if ((m_count + 1) * 10 > m_keys.size() * 7) // at most 70 % full
    rehash(std::max<size_t>(64, m_keys.size() * 2));
  size_t mask = m_keys.size() - 1;
  size_t i = hash & mask;
  while (m_keys[i] != 0 && m_keys[i] != hash)
    i = (i + 1) & mask;
  m_count += m_keys[i] == 0;
  m_keys[i] = hash;
  m_values[i] = entry;
}

void StateFile::reserve(size_t n) {
  std::lock_guard lock(m_mutex);
  size_t capacity = 64;
  while (capacity * 7 < n * 10)
    capacity *= 2;
  if (capacity > m_keys.size())
    rehash(capacity);
}

uint32_t StateFile::intern_checks(const std::string& checks) {
  for (size_t i = 0; i < m_checks.size(); ++i)
    if (m_checks[i] == checks)
      return uint32_t(i);
  m_checks.push_back(checks);
  return uint32_t(m_checks.size() - 1);
}

void StateFile::index(const std::string& name, const OutputRecord& record, uint8_t file,
                      uint64_t offset, uint32_t length) {
  StateEntry e;
  e.fingerprint = digest_of_hex(record.fingerprint).value_or(Digest{});
  e.size = record.size;
  e.mtime_ns = record.mtime_ns;
  e.output_hash = name_hash(record.output);
  e.checks = intern_checks(record.checks);
  e.fallback = record.fallback;
  e.file = file;
  e.offset = offset;
  e.length = length;
  set(name_hash(name), e);
  // The output is written: no job of that request is left to re-attach to.
  std::string prefix = record.fingerprint + '\n';
  for (auto it = m_pending.lower_bound(prefix);
       it != m_pending.end() && it->first.compare(0, prefix.size(), prefix) == 0;)
    it = m_pending.erase(it);
}

void StateFile::add(std::string_view line, uint8_t file, uint64_t offset) {
  auto p = parse_record(line);
  if (!p)
    throw std::runtime_error("malformed record");
  index(p->name, p->record, file, offset, uint32_t(line.size()));
}

std::optional<std::string> StateFile::load(bool owner) {
  std::lock_guard lock(m_mutex);
  clear_entries();
  m_checks.clear();
  m_pending.clear();
  m_spent_jobs.clear();
  m_spend_lines.clear();
  m_spent_before = 0;
  m_dirty = false;
  for (int* fd : {&m_fd[0], &m_fd[1], &m_append})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
  std::optional<std::string> warning;

  m_fd[0] = ::open(m_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (m_fd[0] >= 0) {
    bool first = true;
    std::string why;
    for_each_line(m_fd[0], [&](std::string_view line, uint64_t offset, bool complete) {
      if (first) {
        first = false;
        if (line != k_state_header)
          why = "has another version";
        return why.empty();
      }
      try {
        if (!complete)
          throw std::runtime_error("torn");
        add(line, 0, offset);
        return true;
      } catch (const std::exception&) {
        why = "is not valid";
        return false;
      }
    });
    if (!why.empty()) {
      clear_entries();
      m_dirty = true; // written anew at the end of the run
      warning = "state file '" + m_path.string() + "' " + why +
                "; rebuilding it (images come back from the cache)";
    }
  }

  m_fd[1] = ::open(m_journal_path.c_str(), (owner ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW);
  m_journal_size = 0;
  if (m_fd[1] >= 0) {
    uint64_t good_end = 0;
    for_each_line(m_fd[1], [&](std::string_view line, uint64_t offset, bool complete) {
      if (!complete)
        return false; // torn by a crash mid-append: dropped below
      try {
        add(line, 1, offset);
      } catch (const std::exception&) {
        replay(line); // a remote job's event, or damaged
      }
      good_end = offset + line.size() + 1;
      m_dirty = true;
      return true;
    });
    struct stat st;
    // A reader may see a record half-appended by the build that holds the lock: not torn.
    if (owner && ::fstat(m_fd[1], &st) == 0 && uint64_t(st.st_size) > good_end)
      if (::ftruncate(m_fd[1], off_t(good_end)) != 0)
        warning = "cannot drop the torn end of '" + m_journal_path.string() + "'";
    m_journal_size = good_end;
  }
  return warning;
}

void StateFile::open_journal_for_append() {
  if (m_append >= 0)
    return;
  std::error_code ec;
  fs::create_directories(m_journal_path.parent_path(), ec);
  m_append =
      ::open(m_journal_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (m_append < 0)
    throw std::runtime_error("cannot open '" + m_journal_path.string() +
                             "': " + std::strerror(errno));
  if (m_fd[1] < 0)
    m_fd[1] = ::open(m_journal_path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
}

void StateFile::append(const std::string& line) {
  open_journal_for_append();
  if (!write_fully(m_append, line) || ::fdatasync(m_append) != 0)
    throw std::runtime_error("cannot write '" + m_journal_path.string() +
                             "': " + std::strerror(errno));
  m_journal_size += line.size();
  m_dirty = true;
}

namespace {

std::string event_line(const char* type, std::string_view name,
                       std::initializer_list<std::pair<const char*, std::string>> fields,
                       std::optional<double> usd = std::nullopt) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("t");
  w.String(type);
  w.Key("name");
  w.String(name.data(), rapidjson::SizeType(name.size()));
  for (auto& [key, value] : fields) {
    w.Key(key);
    json_str(w, value);
  }
  if (usd) {
    w.Key("usd");
    w.Double(*usd);
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize()) + "\n";
}

} // namespace

void StateFile::replay(std::string_view line) {
  rapidjson::Document v;
  v.Parse<rapidjson::kParseIterativeFlag>(line.data(), line.size());
  if (v.HasParseError() || !v.IsObject())
    return;
  auto str = [&](const char* key) -> std::string {
    auto it = v.FindMember(key);
    return it != v.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
  };
  std::string type = str("t"), fp = str("fingerprint"), backend = str("backend"), job = str("job");
  if (type == "creating" && !fp.empty()) {
    m_pending[fp + '\n' + backend].lost_create = true;
  } else if (type == "submitted" && !fp.empty() && !job.empty()) {
    // A provider's job id is a short token; one with a '/', a space or a control character
    // (a damaged or planted line) is not handed to a backend to put in a URL: forgotten, so
    // the asset is made afresh rather than fetched from somewhere else.
    const bool plausible = job.size() <= 128 && std::all_of(job.begin(), job.end(), [](char c) {
                             return std::isalnum(static_cast<unsigned char>(c)) || c == '-' ||
                                    c == '_' || c == '.' || c == ':';
                           });
    if (plausible)
      m_pending[fp + '\n' + backend] = PendingJob{job, false};
  } else if (type == "downloaded" || type == "spent") {
    auto usd = v.FindMember("usd");
    // One image's cost: finite, not negative (it would raise the budget), and below what no
    // image costs. A damaged or planted value outside that is not counted.
    constexpr double k_most_one_job_costs_usd = 1000;
    double value = usd != v.MemberEnd() && usd->value.IsNumber() ? usd->value.GetDouble() : -1;
    if (std::isfinite(value) && value >= 0 && value <= k_most_one_job_costs_usd &&
        m_spent_jobs.insert(job).second) {
      m_spent_before += value;
      m_spend_lines.emplace_back(line);
    }
  }
}

void StateFile::creating(std::string_view name, const std::string& fingerprint,
                         const std::string& backend) {
  std::lock_guard lock(m_mutex);
  append(event_line("creating", name, {{"fingerprint", fingerprint}, {"backend", backend}}));
  m_pending[fingerprint + '\n' + backend].lost_create = true;
}

void StateFile::submitted(std::string_view name, const std::string& fingerprint,
                          const std::string& backend, const std::string& job) {
  std::lock_guard lock(m_mutex);
  PendingJob& p = m_pending[fingerprint + '\n' + backend];
  if (p.job == job && !p.lost_create)
    return; // a re-attach reports the id it was given
  append(event_line("submitted", name,
                    {{"fingerprint", fingerprint}, {"backend", backend}, {"job", job}}));
  p = PendingJob{job, false};
}

void StateFile::job_done(const std::string& fingerprint, const std::string& backend) {
  std::lock_guard lock(m_mutex);
  m_pending.erase(fingerprint + '\n' + backend);
}

bool StateFile::spent(std::string_view name, const std::string& job, double usd, bool downloaded) {
  std::lock_guard lock(m_mutex);
  if (!job.empty() && !m_spent_jobs.insert(job).second)
    return false;
  std::string line = event_line(downloaded ? "downloaded" : "spent", name, {{"job", job}}, usd);
  append(line);
  line.pop_back();
  m_spend_lines.push_back(std::move(line));
  return true;
}

std::optional<StateFile::PendingJob> StateFile::pending(const std::string& fingerprint,
                                                        const std::string& backend) const {
  std::lock_guard lock(m_mutex);
  auto it = m_pending.find(fingerprint + '\n' + backend);
  if (it == m_pending.end())
    return std::nullopt;
  return it->second;
}

void StateFile::put(const std::string& name, const OutputRecord& record) {
  std::string line = record_line(name, record);
  std::lock_guard lock(m_mutex);
  uint64_t offset = m_journal_size;
  append(line);
  index(name, record, 1, offset, uint32_t(line.size() - 1)); // without its line break
}

std::optional<StateEntry> StateFile::find(std::string_view name) const {
  std::lock_guard lock(m_mutex);
  if (const StateEntry* e = slot(name_hash(name)))
    return *e;
  return std::nullopt;
}

bool StateFile::same_output(const StateEntry& entry, std::string_view output) const {
  return entry.output_hash == name_hash(output);
}

std::optional<std::string> StateFile::read_line(uint8_t file, uint64_t offset,
                                                uint32_t length) const {
  return pread_exact(m_fd[file], offset, length);
}

std::optional<OutputRecord> StateFile::record(const StateEntry& entry) const {
  auto line = read_line(entry.file, entry.offset, entry.length);
  if (!line)
    return std::nullopt;
  auto p = parse_record(*line);
  if (!p)
    return std::nullopt;
  return std::move(p->record);
}

std::vector<std::pair<std::string, OutputRecord>>
StateFile::records_not_in(const std::vector<std::string_view>& names) const {
  std::lock_guard lock(m_mutex);
  std::unordered_set<uint64_t> keep;
  keep.reserve(names.size());
  for (auto& n : names)
    keep.insert(name_hash(n));
  std::vector<std::pair<std::string, OutputRecord>> out;
  for (size_t i = 0; i < m_keys.size(); ++i)
    if (m_keys[i] && !keep.count(m_keys[i]))
      if (auto line = read_line(m_values[i].file, m_values[i].offset, m_values[i].length))
        if (auto p = parse_record(*line))
          out.emplace_back(std::move(p->name), std::move(p->record));
  return out;
}

void StateFile::retain(const std::vector<std::string_view>& names) {
  std::lock_guard lock(m_mutex);
  std::unordered_set<uint64_t> keep;
  keep.reserve(names.size());
  for (auto& n : names)
    keep.insert(name_hash(n));
  size_t before = m_count;
  std::vector<uint64_t> keys;
  std::vector<StateEntry> values;
  std::swap(keys, m_keys);
  std::swap(values, m_values);
  m_count = 0;
  m_keys.assign(keys.size(), 0);
  m_values.assign(values.size(), StateEntry{});
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i] && keep.count(keys[i]))
      set(keys[i], values[i]);
  m_dirty = m_dirty || m_count != before;
}

void StateFile::save(bool keep_spend) {
  std::lock_guard lock(m_mutex);
  // Records are copied line by line from where they are (the old snapshot or the journal), in
  // file order, through a small buffer: a state of any size is rewritten in constant memory.
  std::vector<StateEntry*> order;
  order.reserve(m_count);
  for (size_t i = 0; i < m_keys.size(); ++i)
    if (m_keys[i])
      order.push_back(&m_values[i]);
  std::sort(order.begin(), order.end(), [](const StateEntry* a, const StateEntry* b) {
    return std::tie(a->file, a->offset) < std::tie(b->file, b->offset);
  });
  std::vector<uint64_t> offsets;
  offsets.reserve(order.size());
  AtomicFile out(m_path);
  std::string buf = std::string(k_state_header) + "\n";
  uint64_t written = 0;
  for (StateEntry* e : order) {
    auto line = read_line(e->file, e->offset, e->length);
    if (!line)
      throw std::runtime_error("cannot read back '" + (e->file ? m_journal_path : m_path).string() +
                               "'");
    offsets.push_back(written + buf.size());
    buf += *line;
    buf += '\n';
    if (buf.size() > (1 << 16)) {
      out.write(buf);
      written += buf.size();
      buf.clear();
    }
  }
  out.write(buf);
  out.commit();
  // The snapshot holds everything now; only then is the journal emptied (a crash in between
  // replays the journal over the new snapshot, which changes nothing).
  if (m_fd[0] >= 0)
    ::close(m_fd[0]);
  m_fd[0] = ::open(m_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  for (size_t i = 0; i < order.size(); ++i) {
    order[i]->file = 0;
    order[i]->offset = offsets[i];
  }
  // What the journal must still say: the jobs still open and, for an interrupted run, what
  // was spent. Written whole, then swapped in.
  std::string rest;
  for (auto& [key, p] : m_pending) {
    size_t nl = key.find('\n');
    std::string fp = key.substr(0, nl), backend = key.substr(nl + 1);
    if (!p.job.empty())
      rest +=
          event_line("submitted", "", {{"fingerprint", fp}, {"backend", backend}, {"job", p.job}});
    if (p.lost_create)
      rest += event_line("creating", "", {{"fingerprint", fp}, {"backend", backend}});
  }
  if (keep_spend)
    for (auto& line : m_spend_lines)
      rest += line + "\n";
  else
    m_spend_lines.clear();
  if (rest.empty() && m_fd[1] >= 0 && m_journal_size > 0) {
    if (::ftruncate(m_fd[1], 0) == 0)
      ::fsync(m_fd[1]);
  } else if (!rest.empty()) {
    write_file_atomic(m_journal_path, rest);
    for (int* fd : {&m_fd[1], &m_append})
      if (*fd >= 0) {
        ::close(*fd);
        *fd = -1;
      }
    m_fd[1] = ::open(m_journal_path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  }
  m_journal_size = rest.size();
  m_dirty = false;
}

void refuse_links_in_state(const fs::path& state_dir) {
  for (const char* name : {"lock", "state.jsonl", "journal.jsonl", "owner", "work"}) {
    fs::path p = state_dir / name;
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0)
      continue; // not there: made as a real file
    if (S_ISLNK(st.st_mode))
      throw Fatal("'" + p.string() + "' is a symbolic link: Kiln does not write through links " +
                  "in its state folder (remove it; Kiln makes the file anew)");
    // A hard link shares its bytes with a file elsewhere, which emptying the journal in place
    // would empty too.
    if (S_ISREG(st.st_mode) && st.st_nlink > 1)
      throw Fatal("'" + p.string() + "' has another hard link: Kiln does not write files of " +
                  "its state folder that other names share (remove it; Kiln makes it anew)");
    // A FIFO or a device there would hang the build or feed it anything.
    if (!S_ISREG(st.st_mode) && std::string(name) != "work")
      throw Fatal("'" + p.string() + "' is not a regular file: Kiln keeps only regular files " +
                  "in its state folder (remove it; Kiln makes it anew)");
  }
}

void refuse_links_below(const fs::path& root, const fs::path& file, std::string_view what,
                        std::string_view root_name) {
  fs::path rel = file.parent_path().lexically_relative(root);
  if (rel.empty() || rel == ".")
    return;
  fs::path at = root;
  std::error_code ec;
  for (const auto& part : rel) {
    at /= part;
    auto st = fs::symlink_status(at, ec);
    if (fs::is_symlink(st))
      throw std::runtime_error("'" + at.string() + "' is a symbolic link: Kiln writes " +
                               std::string(what) + " only into real folders below " +
                               std::string(root_name) + " (remove the link)");
    if (!fs::exists(st))
      return; // made as a real folder
  }
}

OutputLock::OutputLock(const fs::path& state_dir, const fs::path& output_dir, bool wait,
                       const std::function<void(const std::string&)>& on_wait) {
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (ec) // not "no such file" from the open below: say why the folder is not there
    throw Fatal("cannot create the state folder '" + state_dir.string() + "': " + ec.message() +
                " (give Kiln a writable one with --state-dir or KILN_STATE_DIR)");
  fs::path path = state_dir / "lock";
  refuse_links_in_state(state_dir);
  m_fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (m_fd < 0)
    throw Fatal("cannot open '" + path.string() + "': " + std::strerror(errno));
  if (::flock(m_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK)
      throw Fatal("cannot lock '" + path.string() + "': " + std::strerror(errno));
    char buf[32];
    ssize_t n = ::pread(m_fd, buf, sizeof buf, 0);
    std::string holder(buf, size_t(std::max<ssize_t>(n, 0)));
    if (auto nl = holder.find('\n'); nl != std::string::npos)
      holder.resize(nl);
    std::string who = "another kiln build" + (holder.empty() ? "" : " (pid " + holder + ")") +
                      " is writing " + output_dir.string();
    if (!wait)
      throw Fatal(who + "; not waiting (--no-wait)", k_exit_busy);
    on_wait(who + "; waiting for it to finish");
    while (::flock(m_fd, LOCK_EX) != 0)
      if (errno != EINTR)
        throw Fatal("cannot lock '" + path.string() + "': " + std::strerror(errno));
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(m_fd, 0) == 0 && ::pwrite(m_fd, pid.data(), pid.size(), 0) < 0) {
    // Only a hint for the message of a build that waits.
  }
}

OutputLock::~OutputLock() {
  if (m_fd >= 0)
    ::close(m_fd); // releases the flock
}

bool is_output_temp_name(std::string_view name) {
  // <file>.<png|jpg|webp>.kiln-tmp.<16 hex digits>, as AtomicFile names it, and a report's
  // spool, <report>.kiln-tmp.spool: nobody else's.
  constexpr std::string_view spool = ".kiln-tmp.spool";
  if (name.size() > spool.size() && name.substr(name.size() - spool.size()) == spool)
    return true;
  constexpr std::string_view marker = ".kiln-tmp.";
  if (name.size() < marker.size() + 16)
    return false;
  std::string_view digits = name.substr(name.size() - 16);
  if (!std::all_of(digits.begin(), digits.end(),
                   [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }))
    return false;
  std::string_view rest = name.substr(0, name.size() - 16);
  if (rest.size() < marker.size() || rest.substr(rest.size() - marker.size()) != marker)
    return false;
  rest.remove_suffix(marker.size());
  for (std::string_view ext : {".png", ".jpg", ".webp"})
    if (rest.size() > ext.size() && rest.substr(rest.size() - ext.size()) == ext)
      return true;
  return false;
}

size_t remove_leftovers(const fs::path& output_dir, const fs::path& state_dir) {
  size_t removed = 0;
  std::error_code ec;
  fs::path work = state_dir / "work";
  if (fs::exists(work, ec))
    removed += size_t(fs::remove_all(work, ec));
  for (auto it = fs::recursive_directory_iterator(output_dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec) && is_output_temp_name(it->path().filename().string()) &&
        fs::remove(it->path(), ec))
      ++removed;
  }
  return removed;
}

std::optional<FileStamp> stat_file(const fs::path& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    return std::nullopt;
  return FileStamp{uint64_t(st.st_size),
                   int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

} // namespace kiln::host
