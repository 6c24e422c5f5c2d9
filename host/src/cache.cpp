// The local cache: its reads, which verify before anything is installed, its writes, never
// through a link planted in its folders, its leases and its sweeps (the layout is in cache.hpp).
// It borrows the state's file helpers (stat_file, refuse_links_below); the state knows nothing
// of the cache.
#include "cache.hpp"

#include "fingerprint.hpp"
#include "image.hpp"
#include "interrupt.hpp"
#include "state.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kiln::host {

fs::path Cache::default_dir() {
  if (const char* d = std::getenv("KILN_CACHE_DIR"); d && *d)
    return fs::absolute(d);
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d)
    return fs::path(d) / "kiln";
  if (const char* h = std::getenv("HOME"); h && *h)
    return fs::path(h) / ".cache" / "kiln";
  return fs::temp_directory_path() / "kiln-cache";
}

fs::path Cache::entry_path(const std::string& key, const std::string& kind) const {
  return m_dir / "ac" / key.substr(0, 2) / (key + "." + kind);
}

fs::path Cache::legacy_path(const std::string& key, const std::string& kind) const {
  return m_dir / "v1" / key.substr(0, 2) / (key + "." + kind);
}

fs::path Cache::content_path(const std::string& sha) const {
  return m_dir / "cas" / sha.substr(0, 2) / sha;
}

bool Cache::contains(const std::string& key, const std::string& kind) const {
  return stat_file(entry_path(key, kind)) || stat_file(legacy_path(key, kind));
}

bool Cache::has_content(const std::string& sha) const {
  return stat_file(content_path(sha)).has_value();
}

namespace {

// The cache's own folders (cas/ab, ac/cd, edits, leases/ef) are never followed through a link
// planted there: the cache folder itself may be a link (to a bigger disk), nothing below it.
void refuse_links_in_cache(const fs::path& cache_dir, const fs::path& file) {
  refuse_links_below(cache_dir, file, "its cache", "the cache folder");
}

} // namespace

// Removes a file of the cache, never through a link planted in its folders.
void Cache::remove_file(const fs::path& file) const {
  try {
    refuse_links_in_cache(m_dir, file);
  } catch (const std::runtime_error&) {
    return;
  }
  std::error_code ec;
  fs::remove(file, ec);
}

void Cache::reject(const fs::path& entry, const std::string& why, std::string* out_why) {
  remove_file(entry);
  ++m_rejected;
  if (out_why)
    *out_why = why;
}

namespace {

struct EntryInfo {
  std::string sha256, format;
  uint64_t size = 0;
  uint32_t width = 0, height = 0;
};

std::optional<EntryInfo> parse_entry(const std::string& text) {
  EntryInfo e;
  char sha[65] = {}, format[8] = {};
  unsigned long long size = 0;
  unsigned w = 0, h = 0;
  if (std::sscanf(text.c_str(), "%64s %llu %7s %ux%u", sha, &size, format, &w, &h) != 5 ||
      !digest_of_hex(sha))
    return std::nullopt;
  e.sha256 = sha;
  e.size = size;
  e.format = format;
  e.width = w;
  e.height = h;
  return e;
}

// Why `bytes` are not what is expected of them, or nullopt.
std::optional<std::string> mismatch(std::string_view bytes, const EntryInfo& declared,
                                    const Cache::Expect& expect) {
  auto probe = probe_image(bytes);
  if (!probe)
    return std::string("not an image Kiln reads");
  auto size = [](uint32_t w, uint32_t h) {
    return std::to_string(w) + "x" + std::to_string(h);
  };
  if (!declared.format.empty() &&
      (probe->format != declared.format || probe->width != declared.width ||
       probe->height != declared.height))
    return "holds a " + probe->format + " of " + size(probe->width, probe->height) +
           ", its entry says " + declared.format + " of " + size(declared.width, declared.height);
  if (!expect.format.empty() && probe->format != expect.format)
    return "is a " + probe->format + ", the asset wants " + expect.format;
  if (expect.width && (probe->width != expect.width || probe->height != expect.height))
    return "is " + size(probe->width, probe->height) + ", the asset is " +
           size(expect.width, expect.height);
  return std::nullopt;
}

} // namespace

std::optional<std::string> Cache::get_content(const std::string& sha256,
                                              const Expect& expect) const {
  if (!digest_of_hex(sha256))
    return std::nullopt;
  auto bytes = read_file(content_path(sha256));
  if (!bytes || sha256_hex(*bytes) != sha256 || mismatch(*bytes, EntryInfo{}, expect))
    return std::nullopt;
  ::utimensat(AT_FDCWD, content_path(sha256).c_str(), nullptr, AT_SYMLINK_NOFOLLOW); // used now
  return bytes;
}

std::optional<std::string> Cache::get(const std::string& key, const std::string& kind,
                                      const Expect& expect, std::string* why) {
  fs::path entry = entry_path(key, kind);
  if (auto text = read_file(entry)) {
    auto info = parse_entry(*text);
    if (!info) {
      reject(entry, "its entry is not one Kiln wrote", why);
      return std::nullopt;
    }
    auto bytes = read_file(content_path(info->sha256));
    if (!bytes) {
      reject(entry, "its content is missing", why);
      return std::nullopt;
    }
    std::string actual = sha256_hex(*bytes);
    if (actual != info->sha256) {
      remove_file(content_path(info->sha256)); // damaged or replaced: useless to anyone
      reject(entry, "its bytes do not match their digest", why);
      return std::nullopt;
    }
    if (!expect.sha256.empty() && actual != expect.sha256) {
      reject(entry, "its bytes are not the ones recorded for it", why);
      return std::nullopt;
    }
    if (auto wrong = mismatch(*bytes, *info, expect)) {
      reject(entry, "it " + *wrong, why);
      return std::nullopt;
    }
    // Used now: `kiln cache gc` removes the least recently used content first.
    ::utimensat(AT_FDCWD, content_path(info->sha256).c_str(), nullptr, AT_SYMLINK_NOFOLLOW);
    return bytes;
  }
  // The first layout: no digest to check, so the bytes are checked for what they must be.
  fs::path legacy = legacy_path(key, kind);
  auto bytes = read_file(legacy);
  if (!bytes)
    return std::nullopt;
  if (auto wrong = mismatch(*bytes, EntryInfo{}, expect)) {
    reject(legacy, "it " + *wrong, why);
    return std::nullopt;
  }
  if (!expect.sha256.empty() && sha256_hex(*bytes) != expect.sha256) {
    reject(legacy, "its bytes are not the ones recorded for it", why);
    return std::nullopt;
  }
  try {
    put(key, kind, *bytes);
    remove_file(legacy);
  } catch (const std::exception&) {
    // Read-only: it stays where it was.
  }
  return bytes;
}

void Cache::put(const std::string& key, const std::string& kind, std::string_view bytes) {
  std::string sha = sha256_hex(bytes);
  fs::path content = content_path(sha);
  refuse_links_in_cache(m_dir, content);
  refuse_links_in_cache(m_dir, entry_path(key, kind));
  if (!stat_file(content))
    write_file_atomic(content, bytes);
  auto probe = probe_image(bytes);
  std::string text = sha + " " + std::to_string(bytes.size()) + " " +
                     (probe ? probe->format + " " + std::to_string(probe->width) + "x" +
                                  std::to_string(probe->height)
                            : std::string("? 0x0")) +
                     "\n";
  write_file_atomic(entry_path(key, kind), text);
}

Cache::Lease& Cache::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (m_fd >= 0)
      ::close(m_fd);
    m_fd = std::exchange(other.m_fd, -1);
  }
  return *this;
}

Cache::Lease::~Lease() {
  if (m_fd >= 0)
    ::close(m_fd); // releases the flock
}

std::optional<Cache::Lease> Cache::lease(const std::string& key,
                                         const std::function<void()>& on_wait) {
  fs::path path = m_dir / "leases" / key.substr(0, 2) / (key + ".lock");
  try {
    refuse_links_in_cache(m_dir, path);
  } catch (const std::runtime_error&) {
    return Lease(); // unleased, as on a read-only cache: the run goes on
  }
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0)
    return Lease();
  bool waited = false;
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      ::close(fd);
      return Lease();
    }
    if (!waited) {
      waited = true;
      on_wait();
    }
    if (!sleep_unless_interrupted(100)) {
      ::close(fd);
      return std::nullopt;
    }
  }
  return Lease(fd);
}

bool Cache::in_remote(const std::string& remote, const std::string& key) const {
  std::error_code ec;
  return fs::exists(m_dir / "remote" / remote / key, ec);
}

void Cache::mark_in_remote(const std::string& remote, const std::string& key) {
  fs::path mark = m_dir / "remote" / remote / key;
  try {
    refuse_links_in_cache(m_dir, mark);
    touch_file(mark);
  } catch (const std::exception&) {
    // A read-only cache: the next build asks the remote again (a HEAD), nothing worse.
  }
}

size_t Cache::sweep_stale_temp_files() {
  std::error_code ec;
  fs::path stamp = m_dir / "last-sweep";
  auto now = fs::file_time_type::clock::now();
  auto last = fs::last_write_time(stamp, ec);
  if (!ec && now - last < std::chrono::hours(24))
    return 0;
  try {
    touch_file(stamp);
  } catch (const std::exception&) {
    return 0; // a read-only cache: nothing to sweep either
  }
  size_t removed = 0;
  for (const char* sub : {"cas", "ac", "edits", "leases"})
    for (auto it = fs::is_symlink(fs::symlink_status(m_dir / sub, ec))
                       ? fs::recursive_directory_iterator() // planted: not followed
                       : fs::recursive_directory_iterator(m_dir / sub, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      std::string name = it->path().filename().string();
      size_t marker = name.rfind(".kiln-tmp.");
      if (marker == std::string::npos || name.size() - marker != 10 + 16 ||
          !it->is_regular_file(ec))
        continue;
      auto age = now - fs::last_write_time(it->path(), ec);
      if (!ec && age > std::chrono::hours(1) && fs::remove(it->path(), ec))
        ++removed;
    }
  return removed;
}

fs::path Cache::keep_edit(std::string_view bytes, const std::string& name,
                          const std::string& format) {
  std::string file;
  for (char c : name)
    file += c == '/' ? std::string("__") : std::string(1, c);
  fs::path kept = m_dir / "edits" / (file + "-" + sha256_hex(bytes).substr(0, 12) + "." + format);
  refuse_links_in_cache(m_dir, kept);
  if (!stat_file(kept))
    write_file_atomic(kept, bytes);
  return kept;
}

} // namespace kiln::host
