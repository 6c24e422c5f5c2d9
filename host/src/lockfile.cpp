#include "lockfile.hpp"

#include "fatal.hpp"
#include "manifest.hpp"
#include "state.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <memory>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_set>
#include <utility>

namespace kiln::host {

namespace {

constexpr const char* k_header =
    "# kiln.lock: what `kiln build` made, so that a clone of this project builds nothing that is\n"
    "# already made. Commit it (and, if you like, the art). Written by Kiln only: `kiln adopt "
    "NAME`\n"
    "# records a file an artist edited as the asset's own.\n"
    "version = 1\n";

// An exclusive flock for the time a kiln.lock is read or written, on a file of the
// state root named after the kiln.lock's path (never beside it: nothing is added to the
// project). Not had (a read-only state root): the write goes on unguarded.
class SaveGuard {
public:
  explicit SaveGuard(const fs::path& lock_path) {
    fs::path dir = state_root() / "locks";
    std::error_code ec;
    fs::create_directories(dir, ec);
    std::error_code real;
    fs::path where = fs::weakly_canonical(fs::absolute(lock_path), real);
    std::string key =
        sha256_hex((real ? fs::absolute(lock_path).lexically_normal() : where).string());
    // Never through a link planted there (the folder or the file).
    if (fs::is_symlink(fs::symlink_status(dir, ec)))
      return;
    m_fd = ::open((dir / (key.substr(0, 24) + ".lock")).c_str(),
                  O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
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

// SHA-256 of a file's bytes, read in pieces; nullopt when it cannot be read (missing).
std::optional<std::string> file_digest(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return std::nullopt;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return std::nullopt;
  std::vector<char> buf(1 << 16);
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    if (in.gcount() > 0)
      EVP_DigestUpdate(ctx.get(), buf.data(), size_t(in.gcount()));
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(ctx.get(), out, &length) != 1)
    return std::nullopt;
  return std::string(reinterpret_cast<char*>(out), length);
}

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

namespace {

uint64_t name_hash(std::string_view name) {
  uint64_t h = 1469598103934665603ull; // FNV-1a
  for (unsigned char c : name)
    h = (h ^ c) * 1099511628211ull;
  return h;
}

} // namespace

const Lockfile::Entry* Lockfile::lookup(std::string_view name) const {
  if (m_slots.empty())
    return nullptr;
  size_t mask = m_slots.size() - 1;
  for (size_t i = name_hash(name) & mask;; i = (i + 1) & mask) {
    uint32_t slot = m_slots[i];
    if (slot == 0)
      return nullptr;
    const Entry& e = m_entries[slot - 1];
    if (name_of(e) == name)
      return &e;
  }
}

Lockfile::Entry* Lockfile::lookup(std::string_view name) {
  return const_cast<Entry*>(std::as_const(*this).lookup(name));
}

void Lockfile::index_all(size_t room) {
  size_t capacity = 16;
  while (capacity < std::max(room, m_entries.size()) * 2)
    capacity *= 2;
  m_slots.assign(capacity, 0);
  size_t mask = capacity - 1;
  for (uint32_t n = 0; n < m_entries.size(); ++n) {
    size_t i = name_hash(name_of(m_entries[n])) & mask;
    while (m_slots[i] != 0)
      i = (i + 1) & mask;
    m_slots[i] = n + 1;
  }
}

void Lockfile::clear() {
  m_entries.clear();
  m_names.clear();
  m_slots.clear();
}

void Lockfile::reserve(size_t n) {
  std::lock_guard lock(m_mutex);
  m_entries.reserve(n);
  m_names.reserve(n * 16);
  if (m_slots.size() < n * 2)
    index_all(n);
}

void Lockfile::put(std::string_view name, const LockEntry& e, bool touched) {
  Entry entry;
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
  if (Entry* old = lookup(name)) {
    entry.name_offset = old->name_offset;
    entry.name_length = old->name_length;
    entry.touched = touched || old->touched;
    if (old->fingerprint != entry.fingerprint || old->sha256 != entry.sha256 ||
        old->seed != entry.seed || old->has_seed != entry.has_seed ||
        old->cost_usd != entry.cost_usd || old->backend != entry.backend ||
        old->model != entry.model || old->paid != entry.paid || old->adopted != entry.adopted) {
      *old = entry;
      m_changed = true;
    } else {
      old->touched = entry.touched;
    }
    return;
  }
  entry.name_offset = uint32_t(m_names.size());
  entry.name_length = uint32_t(name.size());
  m_names += name;
  m_entries.push_back(entry);
  m_changed = true;
  if (m_entries.size() * 2 > m_slots.size()) {
    index_all();
  } else {
    size_t mask = m_slots.size() - 1;
    size_t i = name_hash(name) & mask;
    while (m_slots[i] != 0)
      i = (i + 1) & mask;
    m_slots[i] = uint32_t(m_entries.size());
  }
}

// CI's placeholder build does not replace the art that was paid for, or an artist's.
bool Lockfile::replaces(const Entry& old, const LockEntry& entry) const {
  if (old.paid && !entry.paid && !entry.adopted)
    return false; // an offline image never replaces paid art
  if (old.adopted && !entry.adopted && m_backend_overridden)
    return false; // nor does a --backend run (CI's) replace an artist's
  return true;
}

void Lockfile::load() {
  std::lock_guard lock(m_mutex);
  SaveGuard guard(m_path); // never half of another run's write
  load_unguarded();
}

namespace {

// The line of kiln.lock being read, to say where it is wrong.
struct LockLine {
  const fs::path& path;
  uint32_t number = 0;

  // Refuses the file: `path:number: why`.
  [[noreturn]] void fail(const std::string& why) const {
    throw Fatal(path.string() + ":" + std::to_string(number) + ": " + why +
                " (kiln.lock is written by kiln build only; delete it to start a new one)");
  }
};

// The name of an `[assets."NAME"]` line `t`, which must be an asset name.
std::string table_name(std::string_view t, const LockLine& at) {
  auto n = unquoted(t.substr(8, t.size() - 9));
  if (!n || n->empty())
    at.fail("an asset's table is not [assets.\"NAME\"]");
  if (auto why = asset_name_problem(*n))
    at.fail("the entry " + toml_string(*n) + " is no asset name: it " + *why);
  return *n;
}

// One `key = value` line of an asset's table, read into `entry`.
void read_field(LockEntry& entry, std::string_view key, std::string_view value,
                const LockLine& at) {
  auto text = [&]() -> std::string {
    auto s = unquoted(value);
    if (!s)
      at.fail(std::string(key) + " must be a string");
    return *s;
  };
  auto digest = [&] {
    std::string s = text();
    if (!digest_of_hex(s))
      at.fail(std::string(key) + " must be 64 hex digits");
    return s;
  };
  auto flag = [&] {
    if (value != "true" && value != "false")
      at.fail(std::string(key) + " must be true or false");
    return value == "true";
  };
  if (key == "fingerprint") {
    entry.fingerprint = digest();
  } else if (key == "sha256") {
    entry.sha256 = digest();
  } else if (key == "backend") {
    entry.backend = text();
  } else if (key == "model") {
    entry.model = text();
  } else if (key == "seed") {
    uint64_t seed = 0;
    auto r = std::from_chars(value.data(), value.data() + value.size(), seed);
    if (r.ptr != value.data() + value.size())
      at.fail("seed must be a whole number");
    entry.seed = seed;
  } else if (key == "cost_usd") {
    double usd = 0;
    auto r = std::from_chars(value.data(), value.data() + value.size(), usd);
    if (r.ptr != value.data() + value.size() || !(usd >= 0))
      at.fail("cost_usd must be a number");
    entry.cost_usd = usd;
  } else if (key == "paid") {
    entry.paid = flag();
  } else if (key == "adopted") {
    entry.adopted = flag();
  } else {
    at.fail("unknown key '" + std::string(key) + "'");
  }
}

} // namespace

void Lockfile::load_unguarded() {
  clear();
  m_changed = false;
  // A FIFO or a device in its place would hang the build or feed it anything.
  if (struct stat st{}; ::stat(m_path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw Fatal("'" + m_path.string() +
                "' is not a regular file: kiln.lock is a text file Kiln writes (remove it)");
  m_loaded = file_digest(m_path);
  std::ifstream in(m_path, std::ios::binary);
  if (!in)
    return;
  std::string line, name;
  std::optional<LockEntry> current;
  LockLine at{m_path}, entry_at{m_path};
  auto finish = [&] {
    if (!current)
      return;
    if (current->fingerprint.empty() || current->sha256.empty())
      entry_at.fail("the entry of '" + name + "' has no fingerprint or sha256");
    put(name, *current, false);
    current.reset();
  };
  bool versioned = false;
  while (std::getline(in, line)) {
    ++at.number;
    std::string_view t = trim(line);
    if (t.empty() || t.front() == '#')
      continue;
    if (t.rfind("[assets.", 0) == 0 && t.back() == ']') {
      finish();
      name = table_name(t, at);
      if (lookup(name))
        at.fail("'" + name + "' has two entries");
      current.emplace();
      entry_at.number = at.number;
      continue;
    }
    if (t.rfind("<<<<<<<", 0) == 0 || t.rfind(">>>>>>>", 0) == 0 || t == "=======")
      at.fail("a merge conflict: keep either side (e.g. git checkout --theirs kiln.lock) and "
              "build; every output is checked by its bytes and the entries made again");
    size_t eq = t.find('=');
    if (eq == std::string_view::npos)
      at.fail("not a line Kiln writes");
    std::string_view key = trim(t.substr(0, eq)), value = trim(t.substr(eq + 1));
    if (current) {
      read_field(*current, key, value, at);
      continue;
    }
    if (key != "version")
      at.fail("unknown key '" + std::string(key) + "'");
    if (value != "1")
      at.fail("version " + std::string(value) + " is written by a newer kiln");
    versioned = true;
  }
  finish();
  if (!versioned && !m_entries.empty())
    at.fail("no version line");
  m_changed = false;
}

std::optional<LockEntry> Lockfile::find(std::string_view name) const {
  std::lock_guard lock(m_mutex);
  const Entry* e = lookup(name);
  if (!e)
    return std::nullopt;
  return entry_of(*e);
}

void Lockfile::set(std::string_view name, const LockEntry& entry) {
  std::lock_guard lock(m_mutex);
  if (const Entry* old = lookup(name); old && !replaces(*old, entry))
    return;
  put(name, entry, true);
}

void Lockfile::retain(const std::vector<std::string_view>& names) {
  std::lock_guard lock(m_mutex);
  retain_unlocked(names);
}

void Lockfile::retain_unlocked(const std::vector<std::string_view>& names) {
  for (auto& e : m_entries)
    e.mark = false;
  size_t marked = 0;
  for (auto n : names)
    if (Entry* e = lookup(n); e && !e->mark) {
      e->mark = true;
      ++marked;
    }
  if (marked == m_entries.size())
    return;
  // Compacted in place: entries and their names are in the same order, so each moves left.
  size_t kept = 0, name_end = 0;
  for (auto& e : m_entries) {
    if (!e.mark) {
      m_dropped.emplace_back(name_of(e));
      continue;
    }
    Entry moved = e;
    std::memmove(m_names.data() + name_end, m_names.data() + e.name_offset, e.name_length);
    moved.name_offset = uint32_t(name_end);
    name_end += e.name_length;
    m_entries[kept++] = moved;
  }
  m_entries.resize(kept);
  m_names.resize(name_end);
  m_changed = true;
  index_all();
}

std::vector<std::string> Lockfile::names_not_in(const std::vector<std::string_view>& names) const {
  std::lock_guard lock(m_mutex);
  std::vector<bool> known(m_entries.size());
  for (auto n : names)
    if (const Entry* e = lookup(n))
      known[size_t(e - m_entries.data())] = true;
  std::vector<std::string> out;
  for (size_t i = 0; i < m_entries.size(); ++i)
    if (!known[i])
      out.emplace_back(name_of(m_entries[i]));
  return out;
}

template <class Sink> bool Lockfile::produce(Sink&& sink) const {
  std::vector<const Entry*> order;
  order.reserve(m_entries.size());
  for (auto& e : m_entries)
    order.push_back(&e);
  std::sort(order.begin(), order.end(),
            [&](const Entry* a, const Entry* b) { return name_of(*a) < name_of(*b); });
  std::string buf = k_header;
  for (const Entry* e : order) {
    buf += "\n[assets." + toml_string(name_of(*e)) + "]\n";
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

bool Lockfile::save() {
  std::lock_guard lock(m_mutex);
  if (!m_changed)
    return false;
  SaveGuard guard(m_path);
  // Another run (a second build tree) wrote the file since this one read it: its entries are
  // read again, and only this run's changes go on top of them.
  bool merge = file_digest(m_path) != m_loaded;
  Lockfile now(m_path);
  if (merge)
    try {
      now.load_unguarded();
    } catch (const Fatal&) {
      merge = false; // broken since this run read it: this run's whole record replaces it
    }
  if (merge) {
    for (const Entry& mine : m_entries) {
      if (!mine.touched)
        continue;
      LockEntry e = entry_of(mine);
      const Entry* theirs = now.lookup(name_of(mine));
      if (!theirs || replaces(*theirs, e))
        now.put(name_of(mine), e, true);
    }
    if (!m_dropped.empty()) {
      std::unordered_set<std::string_view> dropped(m_dropped.begin(), m_dropped.end());
      std::vector<std::string_view> keep;
      for (auto& e : now.m_entries)
        if (!dropped.count(now.name_of(e)))
          keep.push_back(now.name_of(e));
      std::vector<std::string> owned(keep.begin(), keep.end());
      now.retain_unlocked(std::vector<std::string_view>(owned.begin(), owned.end()));
    }
    m_entries = std::move(now.m_entries);
    m_names = std::move(now.m_names);
    m_slots = std::move(now.m_slots);
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
  m_loaded = file_digest(m_path);
  return !same;
}

} // namespace kiln::host
