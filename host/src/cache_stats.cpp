#include "cache_stats.hpp"

#include "state.hpp"
#include "util.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <fcntl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/file.h>
#include <unistd.h>
#include <vector>

namespace kiln::host {

namespace {

// The counts' fields, by name, for reading and writing them alike.
template <class F> void each_count(CacheStats& s, F&& f) {
  f("builds", s.builds);
  f("local_hits", s.local_hits);
  f("local_misses", s.local_misses);
  f("remote_hits", s.remote_hits);
  f("remote_misses", s.remote_misses);
  f("remote_errors", s.remote_errors);
  f("remote_timeouts", s.remote_timeouts);
  f("remote_corrupt", s.remote_corrupt);
  f("remote_uploads", s.remote_uploads);
  f("bytes_down", s.bytes_down);
  f("bytes_up", s.bytes_up);
}

fs::path stats_path(const fs::path& dir) {
  return dir / "stats.json";
}

CacheStats parse_stats(const std::string& text) {
  CacheStats s;
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
  if (d.HasParseError() || !d.IsObject())
    return s;
  each_count(s, [&](const char* key, uint64_t& out) {
    if (auto it = d.FindMember(key); it != d.MemberEnd() && it->value.IsUint64())
      out = it->value.GetUint64();
  });
  if (auto it = d.FindMember("saved_usd"); it != d.MemberEnd() && it->value.IsNumber())
    s.saved_usd = it->value.GetDouble();
  return s;
}

std::string stats_json(CacheStats s) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  each_count(s, [&](const char* key, uint64_t& v) {
    w.Key(key);
    w.Uint64(v);
  });
  w.Key("saved_usd");
  w.Double(s.saved_usd);
  w.EndObject();
  return std::string(buf.GetString()) + "\n";
}

// Holds <dir>/stats.lock while the counts are read and written back: two builds sharing the
// cache never lose each other's counts.
class StatsLock {
public:
  explicit StatsLock(const fs::path& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    m_fd = ::open((dir / "stats.lock").c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (m_fd >= 0)
      while (::flock(m_fd, LOCK_EX) != 0 && errno == EINTR) {
      }
  }
  ~StatsLock() {
    if (m_fd >= 0)
      ::close(m_fd);
  }
  StatsLock(const StatsLock&) = delete;
  StatsLock& operator=(const StatsLock&) = delete;
  bool held() const { return m_fd >= 0; }

private:
  int m_fd = -1;
};

// Every content file of the store with its size and last use.
struct Content {
  fs::path path;
  uint64_t bytes;
  fs::file_time_type used;
};
std::vector<Content> contents(const fs::path& dir) {
  std::vector<Content> out;
  std::error_code ec;
  for (auto& shard : fs::directory_iterator(dir / "cas", ec)) {
    if (!shard.is_directory(ec) || shard.is_symlink(ec))
      continue;
    for (auto& f : fs::directory_iterator(shard.path(), ec))
      if (f.is_regular_file(ec) && !f.is_symlink(ec) && f.path().filename().string().size() == 64)
        out.push_back({f.path(), f.file_size(ec), f.last_write_time(ec)});
  }
  return out;
}

// Removes the records (ac/) that point at content no longer in the store.
void remove_dangling_records(const fs::path& dir) {
  std::error_code ec;
  for (auto& shard : fs::directory_iterator(dir / "ac", ec)) {
    if (!shard.is_directory(ec) || shard.is_symlink(ec))
      continue;
    for (auto& f : fs::directory_iterator(shard.path(), ec)) {
      if (!f.is_regular_file(ec) || f.is_symlink(ec))
        continue;
      if (is_output_temp_name(f.path().filename().string()))
        continue; // a writer's, about to be renamed
      auto text = read_file(f.path());
      std::string sha = text ? text->substr(0, text->find(' ')) : "";
      if (sha.size() != 64 || !fs::exists(dir / "cas" / sha.substr(0, 2) / sha, ec))
        fs::remove(f.path(), ec);
    }
  }
}

} // namespace

CacheStats stats_of(const BuildSummary& s) {
  CacheStats c;
  c.builds = 1;
  c.remote_hits = s.remote_counts.hits;
  c.local_hits = uint64_t(std::max(0, s.cached - s.remote));
  c.local_misses = uint64_t(s.generated + s.remote);
  c.remote_misses = s.remote_counts.misses;
  c.remote_errors = s.remote_counts.errors;
  c.remote_timeouts = s.remote_counts.timeouts;
  c.remote_corrupt = s.remote_counts.corrupt;
  c.remote_uploads = s.remote_counts.uploads;
  c.bytes_down = s.remote_counts.bytes_down;
  c.bytes_up = s.remote_counts.bytes_up;
  c.saved_usd = s.saved_usd;
  return c;
}

CacheStats read_cache_stats(const fs::path& dir) {
  auto text = read_file(stats_path(dir));
  return text ? parse_stats(*text) : CacheStats{};
}

void add_cache_stats(const fs::path& dir, const CacheStats& run) {
  StatsLock lock(dir);
  if (!lock.held())
    throw std::runtime_error("cannot lock " + (dir / "stats.lock").string());
  CacheStats s = read_cache_stats(dir);
  CacheStats add = run;
  each_count(s, [&](const char* key, uint64_t& v) {
    each_count(add, [&](const char* other, uint64_t& more) {
      if (std::string_view(key) == other)
        v += more;
    });
  });
  s.saved_usd += run.saved_usd;
  write_file_atomic(stats_path(dir), stats_json(s));
}

CacheUse::CacheUse(const fs::path& dir, bool exclusive, const std::function<void()>& on_wait) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  m_fd = ::open((dir / "gc.lock").c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (m_fd < 0)
    return; // a read-only cache: nothing can remove anything from it either
  int mode = exclusive ? LOCK_EX : LOCK_SH;
  if (::flock(m_fd, mode | LOCK_NB) == 0)
    return;
  if (on_wait)
    on_wait();
  while (::flock(m_fd, mode) != 0 && errno == EINTR) {
  }
}

CacheUse::~CacheUse() {
  if (m_fd >= 0)
    ::close(m_fd);
}

void zero_cache_stats(const fs::path& dir) {
  StatsLock lock(dir);
  write_file_atomic(stats_path(dir), stats_json(CacheStats{}));
}

CacheSize cache_size(const fs::path& dir) {
  CacheSize size;
  for (auto& c : contents(dir)) {
    ++size.entries;
    size.bytes += c.bytes;
  }
  return size;
}

GcResult gc_cache(const fs::path& dir, uint64_t max_bytes, const std::set<std::string>& keep) {
  GcResult r;
  auto all = contents(dir);
  for (auto& c : all) {
    ++r.before.entries;
    r.before.bytes += c.bytes;
  }
  std::sort(all.begin(), all.end(),
            [](const Content& a, const Content& b) { return a.used < b.used; });
  uint64_t bytes = r.before.bytes;
  std::error_code ec;
  for (auto& c : all) {
    if (bytes <= max_bytes)
      break;
    if (keep.count(c.path.filename().string())) {
      ++r.kept_locked;
      continue;
    }
    if (fs::remove(c.path, ec)) {
      bytes -= c.bytes;
      ++r.removed;
    }
  }
  remove_dangling_records(dir);
  r.after = cache_size(dir);
  return r;
}

std::optional<uint64_t> parse_size(std::string_view text) {
  std::string t(text);
  char* end = nullptr;
  double n = std::strtod(t.c_str(), &end);
  if (end == t.c_str() || !(n >= 0) || !std::isfinite(n))
    return std::nullopt;
  std::string unit(end);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b'))
    unit.pop_back();
  static const std::pair<const char*, double> k_units[] = {
      {"", 1},           {"K", 1e3},           {"M", 1e6},
      {"G", 1e9},        {"T", 1e12},          {"Ki", 1024},
      {"Mi", 1048576.0}, {"Gi", 1073741824.0}, {"Ti", 1099511627776.0}};
  for (auto [name, factor] : k_units)
    if (unit == name || (unit.size() == 1 && std::tolower(unit[0]) == std::tolower(name[0]) &&
                         name[1] == '\0' && *name))
      return n * factor >= 18446744073709551615.0 ? UINT64_MAX : uint64_t(n * factor);
  return std::nullopt;
}

std::string format_size(uint64_t bytes) {
  char text[32];
  if (bytes < 1000)
    std::snprintf(text, sizeof text, "%llu B", static_cast<unsigned long long>(bytes));
  else if (bytes < 1000000)
    std::snprintf(text, sizeof text, "%.1f kB", double(bytes) / 1e3);
  else if (bytes < 1000000000)
    std::snprintf(text, sizeof text, "%.1f MB", double(bytes) / 1e6);
  else
    std::snprintf(text, sizeof text, "%.2f GB", double(bytes) / 1e9);
  return text;
}

} // namespace kiln::host
