// What a run works with: the manifest, the plugins, the record (state, cache, kiln.lock), the
// log, and the output folder through a Disk. Created once per command by the CLI; a test makes
// one over a temp folder, with a Disk of its own to see or fail the engine's writes.
#pragma once

#include "cache.hpp"
#include "lockfile.hpp"
#include "log.hpp"
#include "manifest.hpp"
#include "plugins.hpp"
#include "remote_cache.hpp"
#include "state.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace kiln::host {

// The output folder's files as the engine reads and writes them: the seam where a test counts
// writes or makes the disk fill up. Everything else Kiln writes (state, cache, kiln.lock) has
// its own atomic code and stays on the real disk.
class Disk {
public:
  virtual ~Disk() = default;
  // The bytes of a file; nullopt when it cannot be read.
  virtual std::optional<std::string> read(const fs::path& path);
  // Size and modification time; nullopt when there is no file.
  virtual std::optional<FileStamp> stat(const fs::path& path);
  // Replaces the file atomically (temp, fsync, rename). Throws std::runtime_error naming it.
  virtual void write(const fs::path& path, std::string_view bytes);

  // The disk itself.
  static Disk& real();
};

struct Workspace {
  Manifest& manifest;
  PluginRegistry& registry;
  PluginSet& plugins;
  Log& log;
  StateFile& state;
  Cache& cache;
  Lockfile* lock = nullptr; // kiln.lock; none: the run records nothing there
  Disk* disk = &Disk::real();
  RemoteCache* remote = nullptr; // the team's cache behind `cache`; none: local only
  bool locked = false;           // --locked: nothing may be generated that kiln.lock lacks
};

// The running instance of backend `id`, or null.
const PluginInstance* find_backend(const Workspace& ws, const std::string& id);
// Whether the running backend `id` declares `capability` (KILN_BACKEND_*); false if not running.
bool backend_can(const Workspace& ws, const std::string& id, uint32_t capability);

// The model's own images are cached as "<fingerprint>.source", beside the outputs' entries.
inline constexpr const char* k_source_format = "source";
// The cache key of the model's own image for `req`, before any postprocessing, when a paid
// backend makes it: that very request is never bought again, whether only the postprocessing
// changed, or its image failed a check and the asset is built again (it fails the same way, for
// free, and the chain moves on to what was not tried).
std::optional<std::string> source_key(const Workspace& ws, const GenerationRequest& req);

// Whether `backend` is a paid one (not KILN_BACKEND_OFFLINE): its images are worth sharing.
bool paid_backend(const Workspace& ws, const std::string& backend);

// The SHA-256 of a file's bytes, "" when it cannot be read.
std::string sha256_of_file(Disk& disk, const fs::path& path);

} // namespace kiln::host
