#include "outputs.hpp"

#include "image.hpp"
#include "state.hpp"

#include <algorithm>
#include <map>
#include <set>

namespace kiln::host {

Cache::Expect expected_in_cache(const PlannedAsset& p) {
  Cache::Expect e;
  e.format = p.spec.format;
  e.width = p.spec.width;
  e.height = p.spec.height;
  return e;
}

std::string OutputWriter::install(const PlannedAsset& p, std::string_view bytes, bool fallback) {
  Disk& disk = *m_ws.disk;
  auto stamp = disk.stat(p.output);
  bool same = false;
  if (stamp && stamp->size == bytes.size()) {
    auto existing = disk.read(p.output);
    same = existing && *existing == bytes;
  }
  if (!same) {
    refuse_links_below(m_ws.manifest.output_dir, p.output);
    if (stamp && p.save_edit)
      save_edit(p);
    else if (stamp)
      keep_recorded_art(p);
    disk.write(p.output, bytes);
  }
  std::string sha = sha256_hex(bytes);
  record(p, sha, fallback);
  return sha;
}

void OutputWriter::record(const PlannedAsset& p, const std::string& sha, bool fallback) {
  auto stamp = m_ws.disk->stat(p.output);
  if (!stamp)
    throw std::runtime_error("output '" + p.output.string() + "' vanished after writing");
  OutputRecord rec{p.spec.relative_output(),
                   p.fingerprint,
                   stamp->size,
                   stamp->mtime_ns,
                   p.fields,
                   fallback,
                   p.checks,
                   sha};
  std::lock_guard lock(m_state_mutex);
  m_ws.state.put(p.spec.name, std::move(rec));
}

// An artist's edit about to be replaced is kept in the cache first, and where is said.
void OutputWriter::save_edit(const PlannedAsset& p) {
  auto bytes = m_ws.disk->read(p.output);
  if (!bytes || bytes->empty())
    return;
  fs::path kept;
  try {
    kept = m_ws.cache.keep_edit(*bytes, p.spec.name, p.spec.format);
  } catch (const std::exception& e) {
    throw std::runtime_error("the file there is an edit by hand, and it cannot be saved before "
                             "it is replaced (" +
                             std::string(e.what()) + "): left as it is");
  }
  m_ws.log.warning(p.spec.name + ": your edit of " + p.output.string() + " is saved as " +
                   kept.string() + " before it is replaced (to get it back: cp '" + kept.string() +
                   "' '" + p.output.string() + "', then kiln adopt " + p.spec.name + ")");
}

// The file about to be replaced is the paid or adopted image kiln.lock records (a clone's
// committed art, replaced by CI's placeholder run, say) and the cache does not hold it: it is
// put there first, under the fingerprint it was made for, so going back costs nothing.
void OutputWriter::keep_recorded_art(const PlannedAsset& p) {
  auto locked = m_ws.lock ? m_ws.lock->find(p.spec.name) : std::nullopt;
  if (!locked || !(locked->paid || locked->adopted) || locked->fingerprint == p.fingerprint ||
      m_ws.cache.has_content(locked->sha256))
    return;
  auto bytes = m_ws.disk->read(p.output);
  if (!bytes || sha256_hex(*bytes) != locked->sha256)
    return;
  auto probe = probe_image(*bytes);
  if (!probe)
    return;
  try {
    m_ws.cache.put(locked->fingerprint, probe->format, *bytes);
  } catch (const std::exception& e) {
    throw std::runtime_error("the file there is the image kiln.lock records, and it cannot be "
                             "kept in the cache before it is replaced (" +
                             std::string(e.what()) + "): left as it is");
  }
}

void OutputWriter::lock(const PlannedAsset& p, const AssetOutcome& o, std::string sha,
                        const RemoteRecord* made_by) {
  Workspace& ws = m_ws;
  if (!ws.lock || o.fallback)
    return;
  auto old = ws.lock->find(p.spec.name);
  if (old && old->fingerprint == p.fingerprint && (sha.empty() || old->sha256 == sha))
    return;
  if (sha.empty())
    if (auto rec = ws.state.find(p.spec.name))
      if (auto full = ws.state.record(*rec); full && full->fingerprint == p.fingerprint)
        sha = full->sha256;
  if (sha.empty())
    sha = sha256_of_file(*ws.disk, p.output);
  if (sha.empty())
    return;
  const std::string& backend = o.backend.empty() ? p.request.backend : o.backend;
  const PluginInstance* instance = find_backend(ws, backend);
  LockEntry e;
  e.fingerprint = p.fingerprint;
  e.sha256 = sha;
  e.backend = backend + (instance ? "@" + instance->plugin().version : std::string());
  e.model = o.model.empty() ? p.request.model : o.model;
  e.seed = o.attempts.empty() ? p.request.seed : o.attempts.back().seed;
  e.cost_usd = o.cost_usd;
  e.paid = !backend_can(ws, backend, KILN_BACKEND_OFFLINE);
  if (made_by) { // a teammate's image: their provenance, so both kiln.locks say the same
    e.backend = made_by->backend;
    e.model = made_by->model;
    e.seed = made_by->seed;
    e.cost_usd = made_by->cost_usd;
  }
  ws.lock->set(p.spec.name, e);
}

std::optional<std::string> adopt_output(Workspace& ws, const PlannedAsset& p) {
  if (p.prepare_error)
    return p.prepare_error->message;
  std::error_code ec;
  auto status = fs::symlink_status(p.output, ec);
  if (fs::is_symlink(status))
    return p.output.string() + " is a symbolic link: adopt the file itself";
  if (!fs::is_regular_file(status))
    return "no file at " + p.output.string();
  auto bytes = ws.disk->read(p.output);
  if (!bytes)
    return "cannot read " + p.output.string();
  auto probe = probe_image(*bytes);
  if (!probe || !decode_image(*bytes, ws.manifest.max_decoded_pixels))
    return p.output.string() + " is not an image Kiln can read (PNG, JPEG or WebP)";
  if (probe->format != p.spec.format || probe->width != p.spec.width ||
      probe->height != p.spec.height)
    return p.output.string() + " is a " + std::to_string(probe->width) + "x" +
           std::to_string(probe->height) + " " + probe->format + "; the asset is declared as " +
           std::to_string(p.spec.width) + "x" + std::to_string(p.spec.height) + " " + p.spec.format;
  std::string sha = sha256_hex(*bytes);
  // In the cache as what this fingerprint made: a build tree without the file restores it.
  try {
    ws.cache.put(p.fingerprint, p.spec.format, *bytes);
  } catch (const std::exception& e) {
    ws.log.warning(p.spec.name + ": not kept in the cache (" + std::string(e.what()) +
                   "); kiln.lock and this build tree still know it");
  }
  OutputWriter(ws).record(p, sha);
  if (ws.lock) {
    LockEntry e;
    e.fingerprint = p.fingerprint;
    e.sha256 = sha;
    e.backend = "adopted";
    e.model = p.request.model;
    e.adopted = true;
    ws.lock->set(p.spec.name, e);
  }
  return std::nullopt;
}

std::vector<Undeclared> undeclared_outputs(Workspace& ws) {
  const Manifest& m = ws.manifest;
  std::vector<std::string_view> names;
  names.reserve(m.size());
  for (size_t i = 0; i < m.size(); ++i)
    names.push_back(m.name(i));
  std::vector<Undeclared> out;
  std::set<fs::path> seen;
  auto consider = [&](const std::string& name, const std::string& relative,
                      const std::vector<std::string>& recorded, const OutputRecord* old,
                      bool declared) {
    // Only a plain file below the output folder: a record (state, lock) naming anything else
    // is never acted on, whoever wrote it.
    fs::path rel = fs::path(relative).lexically_normal();
    if (rel.empty() || rel.is_absolute() || *rel.begin() == "..")
      return;
    fs::path output = m.output_dir / rel;
    if (!seen.insert(output).second)
      return;
    std::error_code ec;
    if (!fs::is_regular_file(fs::symlink_status(output, ec)))
      return;
    auto stamp = ws.disk->stat(output);
    if (!stamp)
      return;
    std::string sha = sha256_of_file(*ws.disk, output);
    bool kilns = std::find(recorded.begin(), recorded.end(), sha) != recorded.end() ||
                 (old && old->sha256.empty() && old->size == stamp->size &&
                  old->mtime_ns == stamp->mtime_ns);
    out.push_back({name, output, !kilns, declared});
  };
  std::map<std::string, std::string> locked; // name -> sha, of the undeclared
  if (ws.lock)
    for (auto& name : ws.lock->names_not_in(names))
      if (auto e = ws.lock->find(name))
        locked.emplace(name, e->sha256);
  for (auto& [name, rec] : ws.state.records_not_in(names)) {
    std::vector<std::string> recorded{rec.sha256};
    if (auto it = locked.find(name); it != locked.end())
      recorded.push_back(it->second);
    consider(name, rec.output, recorded, &rec, false);
  }
  for (auto& [name, sha] : locked)
    for (const char* format : {"png", "webp", "jpg"})
      consider(name, name + "." + format, {sha}, nullptr, false);
  // A declared asset whose file moved (its format changed): the old file is as stray.
  for (size_t i = 0; i < m.size(); ++i) {
    auto rec = ws.state.find(m.name(i));
    std::string now = m.relative_output(i);
    if (!rec || ws.state.same_output(*rec, now))
      continue;
    if (auto full = ws.state.record(*rec); full && full->output != now)
      consider(std::string(m.name(i)), full->output, {full->sha256}, &*full, true);
  }
  std::sort(out.begin(), out.end(),
            [](const Undeclared& a, const Undeclared& b) { return a.output < b.output; });
  return out;
}

std::string Undeclared::reason() const {
  std::string why = declared ? "its file is now another format" : "no longer declared";
  return why + (edited ? "; edited by hand: kept" : ": its file is removed");
}

size_t remove_undeclared(Workspace& ws, const std::vector<Undeclared>& list) {
  size_t removed = 0;
  const fs::path root = ws.manifest.output_dir;
  for (auto& u : list) {
    if (u.edited) {
      ws.log.warning("kept " + u.output.string() + ": " + u.name +
                     (u.declared ? " now writes another file" : " is no longer declared") +
                     ", but this one was edited by hand");
      continue;
    }
    // Never through a link planted between the output folder and the file: the file it
    // reaches is not Kiln's (the game's installed copy of the art, say).
    try {
      refuse_links_below(root, u.output, "or removes outputs");
    } catch (const std::runtime_error& e) {
      ws.log.warning("kept " + u.output.string() + ": " + e.what());
      continue;
    }
    std::error_code ec;
    if (!fs::remove(u.output, ec))
      continue;
    ++removed;
    ws.log.debug("removed " + u.output.string() + ": " + u.name +
                 (u.declared ? " now writes another file" : " is no longer declared"));
    // Folders it leaves empty go too, up to the output folder.
    for (fs::path dir = u.output.parent_path();
         dir != root && dir.string().size() > root.string().size(); dir = dir.parent_path())
      if (!fs::is_directory(fs::symlink_status(dir, ec)) || !fs::remove(dir, ec))
        break; // only a real, empty folder goes; never a link
  }
  return removed;
}

} // namespace kiln::host
