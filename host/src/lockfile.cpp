#include "lockfile.hpp"

#include "fatal.hpp"
#include "manifest.hpp"
#include "state.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kiln::host {

namespace {

constexpr const char* k_header =
    "# kiln.lock: what `kiln build` made, so that a clone of this project builds nothing that is\n"
    "# already made. Commit it (and, if you like, the art). Written by Kiln only: `kiln adopt "
    "NAME`\n"
    "# records a file an artist edited as the asset's own.\n"
    "version = 1\n";

std::string toml_string(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

// The value of a TOML basic string as toml_string() writes it; nullopt for anything else.
std::optional<std::string> unquoted(std::string_view v) {
  if (v.size() < 2 || v.front() != '"' || v.back() != '"')
    return std::nullopt;
  std::string out;
  for (size_t i = 1; i + 1 < v.size(); ++i) {
    char c = v[i];
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i + 1 >= v.size())
      return std::nullopt;
    if (v[i] == '"' || v[i] == '\\') {
      out += v[i];
    } else if (v[i] == 'u' && i + 4 < v.size()) {
      unsigned code = 0;
      auto r = std::from_chars(v.data() + i + 1, v.data() + i + 5, code, 16);
      if (r.ptr != v.data() + i + 5 || code >= 0x80)
        return std::nullopt;
      out += char(code);
      i += 4;
    } else {
      return std::nullopt;
    }
  }
  return out;
}

std::string_view trim(std::string_view s) {
  size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
  return a == std::string_view::npos ? std::string_view() : s.substr(a, b - a + 1);
}

} // namespace

fs::path Lockfile::path_for(const fs::path& manifest) {
  if (manifest.filename() == "assets.toml")
    return manifest.parent_path() / "kiln.lock";
  fs::path p = manifest;
  return p.replace_extension(".lock");
}

Lockfile::Lockfile(fs::path path) : m_path(std::move(path)) {}

uint32_t Lockfile::intern(const std::string& s) {
  auto [it, fresh] = m_string_ids.try_emplace(s, uint32_t(m_strings.size()));
  if (fresh)
    m_strings.push_back(s);
  return it->second;
}

LockEntry Lockfile::entry_of(const Entry& e) const {
  LockEntry out;
  out.fingerprint = hex_of(e.fingerprint);
  out.sha256 = hex_of(e.sha256);
  out.backend = m_strings[e.backend];
  out.model = m_strings[e.model];
  if (e.has_seed)
    out.seed = e.seed;
  out.cost_usd = e.cost_usd;
  out.paid = e.paid;
  out.adopted = e.adopted;
  return out;
}

void Lockfile::put(std::string_view name, const LockEntry& e, bool touched) {
  Entry entry;
  entry.name = std::string(name);
  entry.fingerprint = digest_of_hex(e.fingerprint).value_or(Digest{});
  entry.sha256 = digest_of_hex(e.sha256).value_or(Digest{});
  entry.seed = e.seed.value_or(0);
  entry.has_seed = e.seed.has_value();
  entry.cost_usd = e.cost_usd;
  entry.backend = intern(e.backend);
  entry.model = intern(e.model);
  entry.paid = e.paid;
  entry.adopted = e.adopted;
  entry.touched = touched;
  auto [it, fresh] = m_index.try_emplace(entry.name, uint32_t(m_entries.size()));
  if (fresh) {
    m_entries.push_back(std::move(entry));
    m_changed = true;
    return;
  }
  Entry& old = m_entries[it->second];
  entry.touched = touched || old.touched;
  if (old.fingerprint != entry.fingerprint || old.sha256 != entry.sha256 ||
      old.seed != entry.seed || old.has_seed != entry.has_seed || old.cost_usd != entry.cost_usd ||
      old.backend != entry.backend || old.model != entry.model || old.paid != entry.paid ||
      old.adopted != entry.adopted) {
    old = std::move(entry);
    m_changed = true;
  }
}

// CI's placeholder build does not replace the art that was paid for, or an artist's.
bool Lockfile::replaces(bool old_kept, const LockEntry& entry) {
  return !old_kept || entry.paid || entry.adopted;
}

void Lockfile::load() {
  std::lock_guard lock(m_mutex);
  m_entries.clear();
  m_index.clear();
  m_changed = false;
  m_loaded.reset();
  std::ifstream in(m_path, std::ios::binary);
  if (!in)
    return;
  std::string line, name;
  std::optional<LockEntry> current;
  uint32_t number = 0, entry_line = 0;
  auto fail = [&](const std::string& why) {
    throw Fatal(m_path.string() + ":" + std::to_string(number) + ": " + why +
                " (kiln.lock is written by kiln build only; delete it to start a new one)");
  };
  auto finish = [&] {
    if (!current)
      return;
    if (current->fingerprint.empty() || current->sha256.empty()) {
      number = entry_line;
      fail("the entry of '" + name + "' has no fingerprint or sha256");
    }
    put(name, *current, false);
    current.reset();
  };
  bool versioned = false;
  while (std::getline(in, line)) {
    ++number;
    std::string_view t = trim(line);
    if (t.empty() || t.front() == '#')
      continue;
    if (t.rfind("[assets.", 0) == 0 && t.back() == ']') {
      finish();
      auto n = unquoted(t.substr(8, t.size() - 9));
      if (!n || n->empty())
        fail("an asset's table is not [assets.\"NAME\"]");
      if (auto why = asset_name_problem(*n))
        fail("the entry " + toml_string(*n) + " is no asset name: it " + *why);
      if (m_index.count(*n))
        fail("'" + *n + "' has two entries");
      name = *n;
      current.emplace();
      entry_line = number;
      continue;
    }
    if (t.rfind("<<<<<<<", 0) == 0 || t.rfind(">>>>>>>", 0) == 0 || t == "=======")
      fail("a merge conflict: keep either side (e.g. git checkout --theirs kiln.lock) and "
           "build; every output is checked by its bytes and the entries made again");
    size_t eq = t.find('=');
    if (eq == std::string_view::npos)
      fail("not a line Kiln writes");
    std::string_view key = trim(t.substr(0, eq)), value = trim(t.substr(eq + 1));
    if (!current) {
      if (key != "version")
        fail("unknown key '" + std::string(key) + "'");
      if (value != "1")
        fail("version " + std::string(value) + " is written by a newer kiln");
      versioned = true;
      continue;
    }
    auto text = [&]() -> std::string {
      auto s = unquoted(value);
      if (!s)
        fail(std::string(key) + " must be a string");
      return *s;
    };
    auto digest = [&] {
      std::string s = text();
      if (!digest_of_hex(s))
        fail(std::string(key) + " must be 64 hex digits");
      return s;
    };
    auto flag = [&] {
      if (value != "true" && value != "false")
        fail(std::string(key) + " must be true or false");
      return value == "true";
    };
    if (key == "fingerprint") {
      current->fingerprint = digest();
    } else if (key == "sha256") {
      current->sha256 = digest();
    } else if (key == "backend") {
      current->backend = text();
    } else if (key == "model") {
      current->model = text();
    } else if (key == "seed") {
      uint64_t seed = 0;
      auto r = std::from_chars(value.data(), value.data() + value.size(), seed);
      if (r.ptr != value.data() + value.size())
        fail("seed must be a whole number");
      current->seed = seed;
    } else if (key == "cost_usd") {
      double usd = 0;
      auto r = std::from_chars(value.data(), value.data() + value.size(), usd);
      if (r.ptr != value.data() + value.size() || !(usd >= 0))
        fail("cost_usd must be a number");
      current->cost_usd = usd;
    } else if (key == "paid") {
      current->paid = flag();
    } else if (key == "adopted") {
      current->adopted = flag();
    } else {
      fail("unknown key '" + std::string(key) + "'");
    }
  }
  finish();
  if (!versioned && !m_entries.empty())
    fail("no version line");
  m_changed = false;
  m_loaded = disk_stamp();
}

std::optional<LockEntry> Lockfile::find(std::string_view name) const {
  std::lock_guard lock(m_mutex);
  auto it = m_index.find(std::string(name));
  if (it == m_index.end())
    return std::nullopt;
  return entry_of(m_entries[it->second]);
}

void Lockfile::set(std::string_view name, const LockEntry& entry) {
  std::lock_guard lock(m_mutex);
  if (auto it = m_index.find(std::string(name)); it != m_index.end()) {
    const Entry& old = m_entries[it->second];
    if (!replaces(old.paid || old.adopted, entry))
      return;
  }
  put(name, entry, true);
}

void Lockfile::retain(const std::vector<std::string_view>& names) {
  std::lock_guard lock(m_mutex);
  retain_unlocked(names);
}

void Lockfile::retain_unlocked(const std::vector<std::string_view>& names) {
  std::unordered_map<std::string_view, bool> keep;
  keep.reserve(names.size());
  for (auto n : names)
    keep.emplace(n, true);
  std::vector<Entry> kept;
  for (auto& e : m_entries)
    if (keep.count(e.name))
      kept.push_back(std::move(e));
    else
      m_dropped.push_back(std::move(e.name));
  if (kept.size() != m_entries.size())
    m_changed = true;
  m_entries = std::move(kept);
  m_index.clear();
  for (uint32_t i = 0; i < m_entries.size(); ++i)
    m_index.emplace(m_entries[i].name, i);
}

std::vector<std::string> Lockfile::names_not_in(const std::vector<std::string_view>& names) const {
  std::lock_guard lock(m_mutex);
  std::unordered_map<std::string_view, bool> known;
  known.reserve(names.size());
  for (auto n : names)
    known.emplace(n, true);
  std::vector<std::string> out;
  for (auto& e : m_entries)
    if (!known.count(e.name))
      out.push_back(e.name);
  return out;
}

template <class Sink> bool Lockfile::produce(Sink&& sink) const {
  std::vector<const Entry*> order;
  order.reserve(m_entries.size());
  for (auto& e : m_entries)
    order.push_back(&e);
  std::sort(order.begin(), order.end(),
            [](const Entry* a, const Entry* b) { return a->name < b->name; });
  std::string buf = k_header;
  for (const Entry* e : order) {
    buf += "\n[assets." + toml_string(e->name) + "]\n";
    buf += "fingerprint = \"" + hex_of(e->fingerprint) + "\"\n";
    buf += "sha256 = \"" + hex_of(e->sha256) + "\"\n";
    buf += "backend = " + toml_string(m_strings[e->backend]) + "\n";
    if (!m_strings[e->model].empty())
      buf += "model = " + toml_string(m_strings[e->model]) + "\n";
    if (e->has_seed)
      buf += "seed = " + std::to_string(e->seed) + "\n";
    char cost[64];
    auto r = std::to_chars(cost, cost + sizeof cost, e->cost_usd);
    std::string_view text(cost, size_t(r.ptr - cost));
    buf += "cost_usd = " + std::string(text) +
           (text.find_first_of(".eE") == std::string_view::npos ? ".0" : "") + "\n";
    if (e->paid)
      buf += "paid = true\n";
    if (e->adopted)
      buf += "adopted = true\n";
    if (buf.size() > (1 << 16)) {
      if (!sink(std::string_view(buf)))
        return false;
      buf.clear();
    }
  }
  return sink(std::string_view(buf));
}

std::optional<FileStampId> Lockfile::disk_stamp() const {
  struct stat st {};
  if (::stat(m_path.c_str(), &st) != 0)
    return std::nullopt;
  return FileStampId{uint64_t(st.st_size), uint64_t(st.st_ino),
                     int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

namespace {

// An exclusive flock for the time a kiln.lock is read again and written, on a file of the
// state root named after the kiln.lock's path (never beside it: nothing is added to the
// project). Not had (a read-only state root): the write goes on unguarded.
class SaveGuard {
public:
  explicit SaveGuard(const fs::path& lock_path) {
    fs::path dir = state_root() / "locks";
    std::error_code ec;
    fs::create_directories(dir, ec);
    std::string key = sha256_hex(fs::absolute(lock_path).lexically_normal().string());
    m_fd =
        ::open((dir / (key.substr(0, 24) + ".lock")).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    while (m_fd >= 0 && ::flock(m_fd, LOCK_EX) != 0 && errno == EINTR) {
    }
  }
  ~SaveGuard() {
    if (m_fd >= 0)
      ::close(m_fd);
  }
  SaveGuard(const SaveGuard&) = delete;
  SaveGuard& operator=(const SaveGuard&) = delete;

private:
  int m_fd = -1;
};

} // namespace

bool Lockfile::save() {
  std::lock_guard lock(m_mutex);
  if (!m_changed)
    return false;
  SaveGuard guard(m_path);
  // Another run (a second build tree) wrote the file since this one read it: its entries are
  // read again, and only this run's changes go on top of them.
  if (disk_stamp() != m_loaded) {
    Lockfile now(m_path);
    try {
      now.load();
    } catch (const Fatal&) {
      now.m_entries.clear(); // broken since this run read it: this run's record replaces it
      now.m_index.clear();
    }
    for (const Entry& mine : m_entries) {
      if (!mine.touched)
        continue;
      LockEntry e = entry_of(mine);
      auto it = now.m_index.find(mine.name);
      if (it == now.m_index.end() ||
          replaces(now.m_entries[it->second].paid || now.m_entries[it->second].adopted, e))
        now.put(mine.name, e, true);
    }
    if (!m_dropped.empty()) {
      std::unordered_map<std::string_view, bool> dropped;
      for (auto& name : m_dropped)
        dropped.emplace(name, true);
      std::vector<std::string_view> keep;
      for (auto& e : now.m_entries)
        if (!dropped.count(e.name))
          keep.push_back(e.name);
      now.retain_unlocked(keep);
    }
    m_entries = std::move(now.m_entries);
    m_index = std::move(now.m_index);
    m_strings = std::move(now.m_strings);
    m_string_ids = std::move(now.m_string_ids);
  }
  m_changed = false;
  m_dropped.clear();
  for (auto& e : m_entries)
    e.touched = false;
  // Compared with the file as it is, piece by piece, and written only if they differ, so an
  // unchanged record keeps its bytes and its modification time.
  bool same = false;
  {
    std::ifstream old(m_path, std::ios::binary);
    if (old) {
      std::string chunk;
      same = produce([&](std::string_view piece) {
        chunk.resize(piece.size());
        return old.read(chunk.data(), std::streamsize(piece.size())) && chunk == piece;
      });
      same = same && old.peek() == std::ifstream::traits_type::eof();
    }
  }
  if (!same) {
    AtomicFile out(m_path);
    produce([&](std::string_view piece) {
      out.write(piece);
      return true;
    });
    out.commit();
  }
  m_loaded = disk_stamp();
  return !same;
}

} // namespace kiln::host
