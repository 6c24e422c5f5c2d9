// The local content-addressed cache: every image ever made, by fingerprint, verified before
// anything is installed from it, and the leases that keep two build trees sharing it from paying
// twice for one image.
#pragma once

#include "util.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace kiln::host {

// What a cache read must find, beyond bytes matching their digest.
struct CacheExpect {
  std::string format;  // "png", "jpg", "webp"; empty: any of them
  uint32_t width = 0;  // 0: any
  uint32_t height = 0; // 0: any
  std::string sha256;  // recorded elsewhere (kiln.lock, the state); empty: not known
};

// The local cache, content-addressed as a remote one is (bazel-remote's layout):
//   <dir>/cas/<sha[0:2]>/<sha>        the bytes, by their SHA-256, never changed once written;
//   <dir>/ac/<key[0:2]>/<key>.<kind>  "<sha256> <size> <format> <width>x<height>": what a
//                                     fingerprint made (kind: the output's format, or
//                                     "source" for a model's own image).
// Every read is verified before anything is installed from it: the bytes against their
// digest, their format and size against the entry (and the asset), and, when the caller knows
// it, the digest against the one recorded in kiln.lock or the state. A bad entry is a miss: it
// is removed and counted (rejected()), never installed. Entries of the first layout
// (<dir>/v1/<fp[0:2]>/<fp>.<format>) are read, checked by decoding, and moved over.
class Cache {
public:
  explicit Cache(fs::path dir) : m_dir(std::move(dir)) {}
  // KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln.
  static fs::path default_dir();

  using Expect = CacheExpect;

  bool contains(const std::string& key, const std::string& kind) const;
  // The verified bytes of `key`'s entry, or nullopt (missing, or bad: then removed and
  // counted, with `why` set when given).
  std::optional<std::string> get(const std::string& key, const std::string& kind,
                                 const Expect& expect = {}, std::string* why = nullptr);
  // The verified bytes with digest `sha256` from the content store (whatever entry points at
  // them), or nullopt.
  std::optional<std::string> get_content(const std::string& sha256, const Expect& expect) const;
  // Stores `bytes` as what `key` made. Throws std::runtime_error when it cannot be written.
  void put(const std::string& key, const std::string& kind, std::string_view bytes);
  // Whether bytes with this digest were ever stored: Kiln made them.
  bool has_content(const std::string& sha256) const;
  // Keeps an artist's edit about to be replaced, as <dir>/edits/<name>-<sha[0:12]>.<format>
  // (the name's slashes as "__"): outside the content store, so it never counts as something
  // Kiln made. Its path.
  fs::path keep_edit(std::string_view bytes, const std::string& name, const std::string& format);
  fs::path content_path(const std::string& sha256) const;
  // Entries found bad and removed since this object was made.
  uint32_t rejected() const { return m_rejected.load(); }

  // Held while a process makes what `key` stands for: another process (a second build tree on
  // the same cache) that wants the same key waits, then finds it in the cache instead of
  // paying for it again. Released when destroyed (or by the kernel, however the holder ends).
  class Lease {
  public:
    Lease() = default;
    explicit Lease(int fd) : m_fd(fd) {}
    Lease(Lease&& other) noexcept : m_fd(std::exchange(other.m_fd, -1)) {}
    Lease& operator=(Lease&& other) noexcept;
    ~Lease();
    bool held() const { return m_fd >= 0; }

  private:
    int m_fd = -1;
  };
  // Takes the lease of `key`, waiting (and calling `on_wait` once) while another process holds
  // it. A lease that cannot be had (a read-only cache) is not held, and nothing waits for it.
  // Nullopt when the run is interrupted while waiting.
  std::optional<Lease> lease(const std::string& key, const std::function<void()>& on_wait);
  const fs::path& dir() const { return m_dir; }
  // Whether `key`'s image is known to be in the remote cache `remote` (RemoteCache::id()):
  // uploaded or downloaded by this cache. A mark, <dir>/remote/<remote>/<key>, not a promise:
  // what is not marked is uploaded (after a HEAD) by the next build that can.
  bool in_remote(const std::string& remote, const std::string& key) const;
  void mark_in_remote(const std::string& remote, const std::string& key);
  // At most once a day (a stamp file says when): removes temp files that killed runs left in
  // the cache, older than an hour (a live writer's are younger). How many.
  size_t sweep_stale_temp_files();

private:
  void remove_file(const fs::path& file) const;
  fs::path entry_path(const std::string& key, const std::string& kind) const;
  fs::path legacy_path(const std::string& key, const std::string& kind) const;
  void reject(const fs::path& entry, const std::string& why, std::string* out_why);

  fs::path m_dir;
  std::atomic<uint32_t> m_rejected{0};
};

} // namespace kiln::host
