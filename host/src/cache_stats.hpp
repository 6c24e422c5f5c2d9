// The local cache's bookkeeping across runs, as ccache keeps it: what builds found in the local
// and remote caches, what the remote cost in errors, and the money hits saved
// (<cache>/stats.json, added to by every build under a lock; `kiln cache stats`), and its
// garbage collection: least recently used content first, never what kiln.lock names unless
// asked (`kiln cache gc --max-size`).
#pragma once

#include "outcome.hpp"

#include <cstdint>
#include <functional>
#include <set>
#include <string>

namespace kiln::host {

struct CacheStats {
  uint64_t builds = 0;
  uint64_t local_hits = 0, local_misses = 0;
  uint64_t remote_hits = 0, remote_misses = 0, remote_errors = 0, remote_timeouts = 0;
  uint64_t remote_corrupt = 0, remote_uploads = 0;
  uint64_t bytes_down = 0, bytes_up = 0;
  double saved_usd = 0;
};

// One build's counts.
CacheStats stats_of(const BuildSummary& summary);
// The counts so far (zeros when none were kept).
CacheStats read_cache_stats(const fs::path& cache_dir);
// Adds `run` to the counts so far. A cache that cannot be written keeps no counts (said at -v).
void add_cache_stats(const fs::path& cache_dir, const CacheStats& run);
// Held while a command uses the cache (shared) or collects its garbage (exclusive): gc never
// removes what a running build is reading or writing. <cache>/gc.lock, released however the
// holder ends. `on_wait` is called once when it must wait.
class CacheUse {
public:
  CacheUse(const fs::path& cache_dir, bool exclusive, const std::function<void()>& on_wait = {});
  ~CacheUse();
  CacheUse(const CacheUse&) = delete;
  CacheUse& operator=(const CacheUse&) = delete;

private:
  int m_fd = -1;
};

// Sets every count to zero.
void zero_cache_stats(const fs::path& cache_dir);

// What the content store holds: entries and bytes.
struct CacheSize {
  uint64_t entries = 0, bytes = 0;
};
CacheSize cache_size(const fs::path& cache_dir);

struct GcResult {
  CacheSize before, after;
  uint64_t removed = 0;
  uint64_t kept_locked = 0; // over the limit, but named by kiln.lock: kept
};
// Removes content, least recently used first (a read refreshes an entry's time), until the
// store holds at most `max_bytes`, except content whose SHA-256 is in `keep`; then the records
// that pointed at what was removed.
GcResult gc_cache(const fs::path& cache_dir, uint64_t max_bytes, const std::set<std::string>& keep);

// "500M", "2G", "1.5GiB", "100000": bytes (K, M, G, T are powers of 1000; Ki, Mi, Gi, Ti of
// 1024, with or without a trailing B). Nullopt when it is no size.
std::optional<uint64_t> parse_size(std::string_view text);
// Bytes for people: "1.2 MB".
std::string format_size(uint64_t bytes);

} // namespace kiln::host
