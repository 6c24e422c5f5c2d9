#include "workspace.hpp"

#include "util.hpp"

namespace kiln::host {

std::optional<std::string> Disk::read(const fs::path& path) {
  return read_file(path);
}

std::optional<FileStamp> Disk::stat(const fs::path& path) {
  return stat_file(path);
}

void Disk::write(const fs::path& path, std::string_view bytes) {
  write_file_atomic(path, bytes);
}

Disk& Disk::real() {
  static Disk disk;
  return disk;
}

const PluginInstance* find_backend(const Workspace& ws, const std::string& id) {
  auto it = ws.plugins.backends.find(id);
  return it == ws.plugins.backends.end() ? nullptr : it->second.get();
}

bool backend_can(const Workspace& ws, const std::string& id, uint32_t capability) {
  const PluginInstance* backend = find_backend(ws, id);
  return backend && (backend->plugin().backend()->capabilities & capability);
}

bool paid_backend(const Workspace& ws, const std::string& backend) {
  return find_backend(ws, backend) && !backend_can(ws, backend, KILN_BACKEND_OFFLINE);
}

std::optional<std::string> source_key(const Workspace& ws, const GenerationRequest& req) {
  if (backend_can(ws, req.backend, KILN_BACKEND_OFFLINE))
    return std::nullopt;
  return source_fingerprint_of(req);
}

std::string sha256_of_file(Disk& disk, const fs::path& path) {
  auto bytes = disk.read(path);
  return bytes ? sha256_hex(*bytes) : std::string();
}

} // namespace kiln::host
