#include "engine.hpp"

#include "fatal.hpp"
#include "image.hpp"
#include "interrupt.hpp"
#include "plugin_guard.hpp"
#include "rate_limit.hpp"
#include "resilience.hpp"
#include "scheduler.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <fnmatch.h>
#include <fstream>
#include <map>
#include <mutex>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <set>
#include <thread>

namespace kiln::host {

std::string_view action_name(Action action) {
  switch (action) {
  case Action::UpToDate:
    return "up_to_date";
  case Action::Cached:
    return "cached";
  case Action::Generate:
    return "generate";
  case Action::Kept:
    return "kept";
  }
  return "generate";
}

namespace {

kiln_str ks(const std::string& s) {
  return {s.data(), s.size()};
}

std::vector<kiln_str> str_list(const std::vector<std::string>& list) {
  std::vector<kiln_str> out;
  for (auto& s : list)
    out.push_back(ks(s));
  return out;
}

// The plugin-facing view of an asset; points into the AssetSpec (and `model`, when given: the
// model a retry strategy switched to).
struct AssetView {
  std::vector<kiln_str> fallback_models, modifiers, postprocess;
  kiln_asset asset{};
  const kiln_asset* get() const { return &asset; }
};

AssetView asset_view(const AssetSpec& s, const std::string* model = nullptr) {
  AssetView v;
  v.fallback_models = str_list(s.fallback_models);
  v.modifiers = str_list(s.modifiers);
  v.postprocess = str_list(s.postprocess);
  kiln_asset& a = v.asset;
  a.struct_size = sizeof a;
  a.name = ks(s.name);
  a.type = ks(s.type);
  a.prompt = ks(s.prompt);
  a.negative = ks(s.negative);
  a.style = ks(s.style);
  a.backend = ks(s.backend);
  a.model = ks(s.model);
  a.format = ks(s.format);
  a.width = s.width;
  a.height = s.height;
  a.has_seed = s.seed.has_value();
  a.seed = s.seed.value_or(0);
  a.params_json = ks(s.params_json);
  if (model)
    a.model = ks(*model);
  a.fallback_models = v.fallback_models.data();
  a.fallback_model_count = v.fallback_models.size();
  a.modifiers = v.modifiers.data();
  a.modifier_count = v.modifiers.size();
  a.postprocess = v.postprocess.data();
  a.postprocess_count = v.postprocess.size();
  return v;
}

kiln_request request_view(const GenerationRequest& r, const kiln_asset* asset,
                          const std::string& fingerprint, const std::string& work_dir,
                          uint32_t attempt = 1, const std::string& resume_job_id = {},
                          bool lost_create = false) {
  kiln_request q{};
  q.struct_size = sizeof q;
  q.asset = asset;
  q.prompt = ks(r.prompt);
  q.negative_prompt = ks(r.negative_prompt);
  q.model = ks(r.model);
  q.width = r.width;
  q.height = r.height;
  q.format = ks(r.format);
  q.has_seed = r.seed.has_value();
  q.seed = r.seed.value_or(0);
  q.params_json = ks(r.params_json);
  q.fingerprint = ks(fingerprint);
  q.work_dir = ks(work_dir);
  q.resume_job_id = ks(resume_job_id);
  q.attempt = attempt;
  q.backend = ks(r.backend);
  q.lost_create = lost_create;
  return q;
}

bool selected(const std::string& name, const std::vector<std::string>& only) {
  if (only.empty())
    return true;
  for (auto& pattern : only)
    if (pattern == name || fnmatch(pattern.c_str(), name.c_str(), 0) == 0)
      return true;
  return false;
}

bool contains_nocase(std::string_view text, std::string_view part) {
  auto lower = [](char c) {
    return char(std::tolower(static_cast<unsigned char>(c)));
  };
  return std::search(text.begin(), text.end(), part.begin(), part.end(),
                     [&](char a, char b) { return lower(a) == lower(b); }) != text.end();
}

// Appends what the asset's postprocessors need the model to paint (their prompt hints: a plain
// backdrop to remove, say) to the prompt, unless it already says it: the model is asked for
// what the postprocessing expects, whatever the enhancers or a strategy made of the prompt.
std::optional<Fault> add_prompt_hints(Workspace& ws, const AssetSpec& spec,
                                      GenerationRequest& req) {
  if (spec.postprocess.empty())
    return std::nullopt;
  AssetView view = asset_view(spec, &req.model);
  for (auto& id : spec.postprocess) {
    const PluginInstance& inst = *ws.plugins.postprocessors.at(id);
    auto hint = inst.plugin().table_field(&kiln_postprocessor_functions::prompt_hint);
    if (!hint)
      continue;
    kiln_result r = ws.registry.make_result(id);
    if (hint(inst.handle(), view.get(), &r) != KILN_OK || r.failed()) {
      Fault f = r.failure();
      f.message = "postprocessor '" + id + "' gave no prompt hint: " + f.message;
      return f;
    }
    // Phrase by phrase (comma-separated), each once: a type whose style already says
    // "seamless tileable texture" is not told so twice.
    std::string_view rest = r.prompt ? std::string_view(*r.prompt) : std::string_view();
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      std::string_view phrase = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      size_t a = phrase.find_first_not_of(" \t"), b = phrase.find_last_not_of(" \t");
      if (a == std::string_view::npos)
        continue;
      phrase = phrase.substr(a, b - a + 1);
      if (!contains_nocase(req.prompt, phrase))
        req.prompt += (req.prompt.empty() ? "" : ", ") + std::string(phrase);
    }
  }
  return std::nullopt;
}

// Runs the asset's enhancers in order, for the request's model, then adds the postprocessors'
// prompt hints. Deterministic by the SDK's contract.
std::optional<Fault> enhance(Workspace& ws, const AssetSpec& spec, GenerationRequest& req) {
  AssetView view = asset_view(spec, &req.model);
  req.enhancers.clear();
  for (auto& id : spec.enhancers) {
    const PluginInstance& inst = *ws.plugins.enhancers.at(id);
    kiln_result r = ws.registry.make_result(id);
    PluginCall call(inst.plugin().path.string(), inst.plugin().id, "enhance");
    kiln_status st = inst.plugin().enhancer()->enhance(inst.handle(), view.get(), ks(req.prompt),
                                                       ks(req.negative_prompt), &r);
    if (st != KILN_OK || r.failed()) {
      Fault f = r.failure();
      f.message = plugin_failure("enhancer", id, "enhance", "failed", f.message);
      return f;
    }
    if (r.prompt)
      req.prompt = *r.prompt;
    if (r.negative_prompt)
      req.negative_prompt = *r.negative_prompt;
    req.enhancers.push_back(inst.plugin().id_version());
  }
  return add_prompt_hints(ws, spec, req);
}

// What the asset's output is checked by: validator ids, versions and manifest options.
std::string checks_of(const Workspace& ws, const AssetSpec& spec) {
  std::string text;
  for (auto& id : spec.validators)
    text += ws.plugins.validators.at(id)->signature();
  return sha256_hex(text);
}

// The running instance of backend `id`, or null.
const PluginInstance* find_backend(const Workspace& ws, const std::string& id) {
  auto it = ws.plugins.backends.find(id);
  return it == ws.plugins.backends.end() ? nullptr : it->second.get();
}

// Whether the running backend `id` declares `capability` (KILN_BACKEND_*); false if not running.
bool backend_can(const Workspace& ws, const std::string& id, uint32_t capability) {
  const PluginInstance* backend = find_backend(ws, id);
  return backend && (backend->plugin().backend()->capabilities & capability);
}

// The model's own images are cached as "<fingerprint>.source", beside the outputs' entries.
constexpr const char* k_source_format = "source";

// The cache key of the model's own image for `req`, before any postprocessing, when a paid
// backend makes it: that very request is never bought again, whether only the postprocessing
// changed, or its image failed a check and the asset is built again (it fails the same way, for
// free, and the chain moves on to what was not tried).
std::optional<std::string> source_key(const Workspace& ws, const GenerationRequest& req) {
  if (backend_can(ws, req.backend, KILN_BACKEND_OFFLINE))
    return std::nullopt;
  return source_fingerprint_of(req);
}

std::string sha256_of_file(const fs::path& path) {
  auto bytes = read_file(path);
  return bytes ? sha256_hex(*bytes) : std::string();
}

// What the file at an asset's output is, by its bytes (its stamps did not say): this
// fingerprint's output (kiln.lock or the state recorded these very bytes for it), another image
// Kiln made (a stale output: the state or the lock knew these bytes, or the cache holds them),
// or an artist's (bytes Kiln never made).
OnDisk judge_file(const Workspace& ws, const PlannedAsset& p, const std::optional<StateEntry>& rec,
                  bool current, const std::optional<LockEntry>& locked) {
  auto bytes = read_file(p.output);
  if (!bytes)
    return OnDisk::Missing;
  std::string sha = sha256_hex(*bytes);
  std::optional<OutputRecord> record = rec ? ws.state.record(*rec) : std::nullopt;
  if ((locked && locked->fingerprint == p.fingerprint && locked->sha256 == sha) ||
      (current && record && record->sha256 == sha))
    return OnDisk::Current;
  auto stamp = stat_file(p.output);
  bool old_record_stamps = record && record->sha256.empty() && stamp &&
                           stamp->size == record->size && stamp->mtime_ns == record->mtime_ns;
  if ((locked && locked->sha256 == sha) || (record && record->sha256 == sha) || old_record_stamps ||
      ws.cache.has_content(sha))
    return OnDisk::Stale;
  // Not an image of the declared size and format (empty, cut short, a Git LFS pointer of a
  // clone made without git-lfs): no artist's work to keep as the asset's art.
  auto probe = probe_image(*bytes);
  if (!probe || probe->format != p.spec.format || probe->width != p.spec.width ||
      probe->height != p.spec.height || !decode_image(*bytes, ws.manifest.max_decoded_pixels))
    return OnDisk::Broken;
  return OnDisk::Edited;
}

// What `req` is predicted to cost on its backend (0 when the backend does not say).
double predict_cost(Workspace& ws, const AssetSpec& spec, const GenerationRequest& req,
                    const std::string& fingerprint) {
  auto it = ws.plugins.backends.find(req.backend);
  if (it == ws.plugins.backends.end())
    return 0;
  const PluginInstance& backend = *it->second;
  auto estimate = backend.plugin().backend()->estimate_cost_usd;
  if (!estimate)
    return 0;
  AssetView view = asset_view(spec, &req.model);
  kiln_request q = request_view(req, view.get(), fingerprint, "");
  double usd = estimate(backend.handle(), &q);
  return usd > 0 ? usd : 0;
}

// The asset's request, fingerprint, output and checks: what planning an asset and working on
// it share. `checks_memo` spares hashing the same validator list again.
PlannedAsset prepare(Workspace& ws, size_t asset,
                     std::map<std::string, std::string>* checks_memo = nullptr) {
  PlannedAsset p;
  p.spec = ws.manifest.asset(asset);
  const AssetSpec& spec = p.spec;
  p.output = ws.manifest.output_dir / spec.relative_output();
  const PluginInstance& backend = *ws.plugins.backends.at(spec.backend);
  GenerationRequest& req = p.request;
  req.prompt = spec.prompt;
  // The asset's own negative prompt, with or without enhancers (style's append is idempotent).
  req.negative_prompt = spec.negative;
  req.backend = backend.plugin().id;
  req.backend_version = backend.plugin().version;
  req.backend_options = backend.shaping_options();
  req.model = spec.model;
  req.width = spec.width;
  req.height = spec.height;
  req.format = spec.format;
  req.seed = spec.seed;
  req.params_json = spec.params_json;
  for (auto& id : spec.postprocess)
    req.postprocess.push_back(ws.plugins.postprocessors.at(id)->shaping_signature());
  p.prepare_error = enhance(ws, spec, req);
  p.fields = fingerprint_fields(req);
  p.fingerprint = fingerprint_of(p.fields);
  if (checks_memo) {
    auto [known, fresh] = checks_memo->try_emplace(join(spec.validators, "\n"));
    if (fresh)
      known->second = checks_of(ws, spec);
    p.checks = known->second;
  } else {
    p.checks = checks_of(ws, spec);
  }
  return p;
}

} // namespace

Plan make_plan(Workspace& ws, const PlanOptions& options) {
  const Manifest& m = ws.manifest;
  for (auto& pattern : options.only) {
    bool any = false;
    for (size_t i = 0; i < m.size(); ++i)
      any = any || selected(std::string(m.name(i)), {pattern});
    if (!any) {
      std::string msg =
          "--only '" + pattern + "' matches no asset of " + m.diagnostics.display_path();
      std::vector<std::string> names;
      for (size_t i = 0; i < m.size(); ++i)
        names.push_back(std::string(m.name(i)));
      if (auto hint = did_you_mean(pattern, names))
        msg += " (did you mean '" + *hint + "'?)";
      throw Fatal(msg);
    }
  }

  // Each asset is prepared, decided and reduced to its PlanEntry before the next: planning
  // holds one asset's request at a time.
  Plan plan;
  plan.force = options.force;
  plan.entries.reserve(options.only.empty() ? m.size() : 0);
  std::map<std::string, std::string> checks_memo; // validator ids -> checks_of()
  std::map<std::pair<std::string, std::string>, uint16_t> group_ids;
  for (size_t asset = 0; asset < m.size(); ++asset) {
    if (!options.only.empty() && !selected(std::string(m.name(asset)), options.only))
      continue;
    PlannedAsset p = prepare(ws, asset, &checks_memo);
    const AssetSpec& spec = p.spec;
    auto rec = ws.state.find(spec.name);
    auto digest = digest_of_hex(p.fingerprint).value();
    auto stamp = stat_file(p.output);
    bool current = rec && rec->fingerprint == digest;
    bool unchanged = current && stamp && stamp->size == rec->size &&
                     stamp->mtime_ns == rec->mtime_ns &&
                     ws.state.same_output(*rec, spec.relative_output());
    p.fallback_on_disk = unchanged && rec->fallback;
    // When the stamps do not say, the bytes do: the file is this fingerprint's output (a
    // clone, a touch), another image Kiln made (stale), or an artist's.
    std::optional<LockEntry> locked = ws.lock ? ws.lock->find(spec.name) : std::nullopt;
    OnDisk on_disk = OnDisk::Missing;
    if (stamp && (!unchanged || options.force))
      on_disk = judge_file(ws, p, rec, current, locked);
    auto changes = [&] {
      if (rec)
        if (auto before = ws.state.record(*rec)) {
          auto list = describe_changes(before->fields, p.fields);
          return list.empty() ? std::string("fingerprint changed") : join(list, ", ");
        }
      return std::string("fingerprint changed");
    };
    bool known = rec || locked;
    bool same_request = current || (locked && locked->fingerprint == p.fingerprint);
    if (p.prepare_error) {
      p.reason = "cannot prepare the request";
    } else if (options.force) {
      p.reason = "forced";
      // An edit, adopted or not, is saved before it is replaced.
      p.save_edit = on_disk == OnDisk::Edited || on_disk == OnDisk::Broken ||
                    (on_disk == OnDisk::Current && locked && locked->adopted);
    } else if (p.fallback_on_disk) {
      p.reason = "the output is a fallback stand-in";
    } else if (unchanged || on_disk == OnDisk::Current) {
      p.action = Action::UpToDate;
      p.refresh = !unchanged; // the bytes are right, the recorded stamps are not
      p.recheck = !unchanged || ws.state.checks(*rec) != p.checks;
      p.reason = unchanged
                     ? (p.recheck ? "up to date; validators changed, checking again" : "up to date")
                     : "up to date by content";
    } else if (on_disk == OnDisk::Edited && (same_request || !known)) {
      p.action = Action::Kept;
      p.reason = known ? "edited by hand: kept (`kiln adopt " + spec.name +
                             "` records it; `kiln build --force --only " + spec.name +
                             "` replaces it, saving it first)"
                       : "a file kiln did not make: kept (`kiln adopt " + spec.name +
                             "` records it as the asset's)";
    } else if (on_disk == OnDisk::Edited) {
      p.reason = changes() + "; the file there was edited by hand: saved first";
      p.save_edit = true;
    } else if (on_disk == OnDisk::Broken) {
      // Kept aside all the same (a half-saved edit is still someone's work), then replaced.
      p.reason = "output is not a readable " + std::to_string(p.spec.width) + "x" +
                 std::to_string(p.spec.height) + " " + p.spec.format + " image";
      p.save_edit = true;
    } else if (same_request) {
      p.reason = stamp ? "output modified" : "output missing";
    } else if (known) {
      p.reason = changes();
    } else {
      p.reason = stamp ? "untracked output" : "new";
    }

    if (p.action == Action::Generate && !options.force && !p.prepare_error &&
        ws.cache.contains(p.fingerprint, spec.format)) {
      p.action = Action::Cached;
      p.reason += "; in cache";
    }
    auto source = options.force ? std::nullopt : source_key(ws, p.request);
    if (p.action == Action::Generate && !p.prepare_error && source &&
        ws.cache.contains(*source, k_source_format)) {
      p.reason += spec.postprocess.empty()
                      ? "; the model's image is in the cache, made from it again"
                      : "; the model's image is in the cache, only the postprocessing is done "
                        "again";
    } else if (p.action == Action::Generate && !p.prepare_error) {
      p.predicted_cost_usd = predict_cost(ws, spec, p.request, p.fingerprint);
      if (auto left = ws.state.pending(p.fingerprint, p.request.backend))
        p.reason += left->job.empty() ? "; a killed run may have created its job: looked for first"
                                      : "; re-attaches to " + left->job + ", left by a killed run";
    }
    auto [group, fresh] =
        group_ids.try_emplace({p.request.backend, p.request.model}, uint16_t(plan.groups.size()));
    if (fresh) {
      if (plan.groups.size() == UINT16_MAX)
        throw Fatal("more than 65535 backend and model pairs in one run");
      plan.groups.push_back(group->first);
    }
    PlanEntry& e = plan.entries.emplace_back();
    e.asset = uint32_t(asset);
    e.group = group->second;
    e.action = p.action;
    e.prepare_failed = p.prepare_error.has_value();
    e.recheck = p.recheck;
    e.fallback_on_disk = p.fallback_on_disk;
    e.refresh = p.refresh;
    e.save_edit = p.save_edit;
    e.predicted_cost_usd = p.predicted_cost_usd;
    e.fingerprint = digest;
    e.reason = plan.reason_id(std::move(p.reason));
  }

  // Assets that make the same image (same fingerprint): the first generates it, the others
  // take its bytes instead of paying again.
  std::vector<uint32_t> generating;
  for (size_t i = 0; i < plan.entries.size(); ++i)
    if (plan.entries[i].action == Action::Generate && !plan.entries[i].prepare_failed)
      generating.push_back(uint32_t(i));
  std::stable_sort(generating.begin(), generating.end(), [&](uint32_t a, uint32_t b) {
    return plan.entries[a].fingerprint < plan.entries[b].fingerprint;
  });
  for (size_t k = 1; k < generating.size(); ++k) {
    PlanEntry& e = plan.entries[generating[k]];
    PlanEntry& before = plan.entries[generating[k - 1]];
    if (e.fingerprint != before.fingerprint)
      continue;
    e.same_as = before.same_as == PlanEntry::k_none ? generating[k - 1] : before.same_as;
    e.action = Action::Cached;
    e.predicted_cost_usd = 0;
    e.reason = plan.reason_id(plan.reasons[e.reason] + "; same image as " +
                              std::string(m.name(plan.entries[e.same_as].asset)));
  }
  for (auto& e : plan.entries)
    plan.predicted_cost_usd += e.predicted_cost_usd;
  return plan;
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
    auto stamp = stat_file(output);
    if (!stamp)
      return;
    std::string sha = sha256_of_file(output);
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

uint32_t Plan::reason_id(std::string reason) {
  auto [it, fresh] = m_reason_ids.try_emplace(std::move(reason), uint32_t(reasons.size()));
  if (fresh)
    reasons.push_back(it->first);
  return it->second;
}

PlannedAsset Plan::asset(Workspace& ws, size_t i) const {
  const PlanEntry& e = entries.at(i);
  PlannedAsset p = prepare(ws, e.asset);
  p.index = i;
  p.action = e.action;
  p.reason = reasons.at(e.reason);
  p.predicted_cost_usd = e.predicted_cost_usd;
  p.recheck = e.recheck;
  p.fallback_on_disk = e.fallback_on_disk;
  p.refresh = e.refresh;
  p.save_edit = e.save_edit;
  p.force = force;
  if (e.same_as != PlanEntry::k_none)
    p.same_as = e.same_as;
  if (!p.prepare_error && (e.prepare_failed || digest_of_hex(p.fingerprint) != e.fingerprint))
    p.prepare_error =
        ws.manifest.changed_on_disk()
            ? Fault{KILN_ERROR_PERMANENT,
                    ws.manifest.diagnostics.display_path() +
                        " changed during the run, and this asset with it: run kiln again",
                    -1}
            : Fault{KILN_ERROR_PERMANENT,
                    "its enhancers gave another request than when the run was planned "
                    "(an enhancer must give the same prompt for the same asset)",
                    -1};
  return p;
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// What the asset's entry in the cache must hold: its format and size.
Cache::Expect expected_in_cache(const PlannedAsset& p) {
  Cache::Expect e;
  e.format = p.spec.format;
  e.width = p.spec.width;
  e.height = p.spec.height;
  return e;
}

// The file about to be replaced is the paid or adopted image kiln.lock records (a clone's
// committed art, replaced by CI's placeholder run, say) and the cache does not hold it: it is
// put there first, under the fingerprint it was made for, so going back costs nothing.
void keep_recorded_art(Workspace& ws, const PlannedAsset& p) {
  auto locked = ws.lock ? ws.lock->find(p.spec.name) : std::nullopt;
  if (!locked || !(locked->paid || locked->adopted) || locked->fingerprint == p.fingerprint ||
      ws.cache.has_content(locked->sha256))
    return;
  auto bytes = read_file(p.output);
  if (!bytes || sha256_hex(*bytes) != locked->sha256)
    return;
  auto probe = probe_image(*bytes);
  if (!probe)
    return;
  try {
    ws.cache.put(locked->fingerprint, probe->format, *bytes);
  } catch (const std::exception& e) {
    throw std::runtime_error("the file there is the image kiln.lock records, and it cannot be "
                             "kept in the cache before it is replaced (" +
                             std::string(e.what()) + "): left as it is");
  }
}

// Writes `bytes` to the output unless the file already holds exactly them (its mtime must not
// move: the build integration relies on it), then records it in the state.
// Records in the state that the output holds the bytes with digest `sha`, with its stamps as
// they are now.
void record_output(Workspace& ws, std::mutex& state_mutex, const PlannedAsset& p,
                   const std::string& sha, bool fallback = false) {
  auto stamp = stat_file(p.output);
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
  std::lock_guard lock(state_mutex);
  ws.state.put(p.spec.name, std::move(rec));
}

// An artist's edit about to be replaced is kept in the cache first, and where is said.
void save_edit(Workspace& ws, const PlannedAsset& p) {
  auto bytes = read_file(p.output);
  if (!bytes || bytes->empty())
    return;
  fs::path kept;
  try {
    kept = ws.cache.keep_edit(*bytes, p.spec.name, p.spec.format);
  } catch (const std::exception& e) {
    throw std::runtime_error("the file there is an edit by hand, and it cannot be saved before "
                             "it is replaced (" +
                             std::string(e.what()) + "): left as it is");
  }
  ws.log.warning(p.spec.name + ": your edit of " + p.output.string() + " is saved as " +
                 kept.string() + " before it is replaced (to get it back: cp '" + kept.string() +
                 "' '" + p.output.string() + "', then kiln adopt " + p.spec.name + ")");
}

// Writes `bytes` to the output unless the file already holds exactly them (its mtime must not
// move: the build integration relies on it), then records it in the state. Their digest.
std::string install_output(Workspace& ws, std::mutex& state_mutex, const PlannedAsset& p,
                           std::string_view bytes, bool fallback = false) {
  auto stamp = stat_file(p.output);
  bool same = false;
  if (stamp && stamp->size == bytes.size()) {
    auto existing = read_file(p.output);
    same = existing && *existing == bytes;
  }
  if (!same) {
    refuse_links_below(ws.manifest.output_dir, p.output);
    if (stamp && p.save_edit)
      save_edit(ws, p);
    else if (stamp)
      keep_recorded_art(ws, p);
    write_file_atomic(p.output, bytes);
  }
  std::string sha = sha256_hex(bytes);
  record_output(ws, state_mutex, p, sha, fallback);
  return sha;
}

} // namespace

std::optional<std::string> adopt_output(Workspace& ws, const PlannedAsset& p) {
  if (p.prepare_error)
    return p.prepare_error->message;
  std::error_code ec;
  auto status = fs::symlink_status(p.output, ec);
  if (fs::is_symlink(status))
    return p.output.string() + " is a symbolic link: adopt the file itself";
  if (!fs::is_regular_file(status))
    return "no file at " + p.output.string();
  auto bytes = read_file(p.output);
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
  std::mutex state_mutex;
  record_output(ws, state_mutex, p, sha);
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

namespace {

// Runs the asset's validators on `bytes` (an encoded file of the asset's format), fully decoded
// first. The first rejection is returned, and `source` names its validator. `work` is a scratch
// folder for the copy validators may open by path.
std::optional<Fault> run_validators(Workspace& ws, const AssetSpec& spec, const std::string& bytes,
                                    const fs::path& work, std::string& source) {
  if (spec.validators.empty())
    return std::nullopt;
  auto decoded = decode_image(bytes, ws.manifest.max_decoded_pixels);
  std::string work_file = (work / ("candidate." + spec.format)).string();
  kiln_image img_view{};
  kiln_image_file file{};
  file.struct_size = sizeof file;
  file.path = ks(work_file);
  file.bytes = reinterpret_cast<const uint8_t*>(bytes.data());
  file.size = bytes.size();
  std::string detected(detect_format(bytes));
  file.detected_format = ks(detected);
  std::string decode_error;
  if (decoded) {
    img_view = {decoded->width, decoded->height, size_t(decoded->width) * 4, decoded->rgba.data()};
    file.image = &img_view;
  } else {
    decode_error = decoded.error().message;
  }
  file.decode_error = ks(decode_error);
  // A scratch copy so validators can open the file by path; the bytes they judge are in memory.
  std::ofstream(work_file, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  AssetView asset = asset_view(spec); // validators judge against the asset as declared
  std::optional<Fault> rejected;
  for (auto& id : spec.validators) {
    const PluginInstance& v = *ws.plugins.validators.at(id);
    kiln_result vr = ws.registry.make_result(id);
    PluginCall call(v.plugin().path.string(), v.plugin().id, "validate");
    kiln_status vs = v.plugin().validator()->validate(v.handle(), asset.get(), &file, &vr);
    if (vs != KILN_OK || vr.failed()) {
      // The first rejection is the one reported; the validators after it still say what else
      // the image lacks, so a fix names every missing property at once.
      if (rejected) {
        rejected->missing |= vr.missing_property;
        continue;
      }
      source = id;
      // A validator may say no image can pass (a setting contradicts the asset): permanent,
      // so the chain does not pay for new images that would be rejected the same way.
      rejected =
          Fault{vr.category == KILN_ERROR_PERMANENT ? KILN_ERROR_PERMANENT : KILN_ERROR_VALIDATION,
                plugin_failure("validator", id, "validate", "rejected the image", vr.message), -1,
                vr.missing_property};
    }
  }
  return rejected;
}

// A private scratch folder, removed with this object.
struct WorkDir {
  fs::path path;
  explicit WorkDir(fs::path p) : path(std::move(p)) {
    std::error_code ec;
    fs::create_directories(path, ec);
  }
  ~WorkDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
};

struct Generated {
  std::string bytes;
};

// Runs the asset's postprocessors in order on the decoded image, each on what the one before
// made. A failure names its postprocessor in `source`: a validation failure (this image cannot
// be processed, another might) stays one; anything else is permanent, since a postprocessor
// has no transient failures.
std::optional<Fault> postprocess(Workspace& ws, const AssetSpec& spec, const GenerationRequest& req,
                                 Image& image, std::string& source) {
  if (spec.postprocess.empty())
    return std::nullopt;
  AssetView view = asset_view(spec, &req.model);
  for (auto& id : spec.postprocess) {
    // Ctrl-C is seen between postprocessors: the model's image is in the cache already.
    if (interrupted())
      return Fault{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};
    const PluginInstance& inst = *ws.plugins.postprocessors.at(id);
    source = id;
    kiln_image raw = image.raw();
    kiln_result r = ws.registry.make_result(id);
    PluginCall call(inst.plugin().path.string(), inst.plugin().id, "process");
    kiln_status st = inst.plugin().postprocessor()->process(inst.handle(), view.get(), &raw, &r);
    if (st != KILN_OK || r.failed()) {
      Fault f = r.failure();
      if (f.category != KILN_ERROR_VALIDATION)
        f.category = KILN_ERROR_PERMANENT;
      f.message =
          plugin_failure("postprocessor", id, "process", "failed", ws.log.redact(r.message));
      return f;
    }
    if (r.image) {
      // A postprocessor has no business growing the image past the asset and what it was
      // given (a runaway one would take the machine's memory at every retry).
      uint64_t bound =
          4 * std::max(uint64_t(image.width) * image.height, uint64_t(spec.width) * spec.height);
      if (uint64_t(r.image->width) * r.image->height > bound)
        return Fault{KILN_ERROR_PERMANENT,
                     "postprocessor '" + id + "' returned a " + std::to_string(r.image->width) +
                         "x" + std::to_string(r.image->height) + " image from a " +
                         std::to_string(image.width) + "x" + std::to_string(image.height) +
                         " one for a " + std::to_string(spec.width) + "x" +
                         std::to_string(spec.height) + " asset: more than four times the larger",
                     -1};
      image = std::move(*r.image);
    }
  }
  return std::nullopt;
}

// One attempt: backend → decode/convert → encode → validators. A failure comes back with its
// category, and `record.source` says who failed.
// `slot` is the backend's job slot, held by the caller and given back here as soon as the
// backend has delivered an image.
// What an attempt re-attaches to instead of creating: a job of an earlier attempt or run.
struct Resume {
  std::string job;
  bool lost_create = false; // a killed run began a create whose answer never arrived
};

// The model's image made game-ready: postprocessors, then fitted to the asset's size, encoded,
// and judged by the validators on exactly the bytes that will be written.
Result<Generated> finish_image(Workspace& ws, const AssetSpec& spec, const GenerationRequest& req,
                               Image image, const fs::path& work, AttemptRecord& record) {
  if (auto failed = postprocess(ws, spec, req, image, record.source))
    return *failed;
  record.source = "kiln";
  if (interrupted())
    return Fault{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};
  Generated g;
  if (image.width != spec.width || image.height != spec.height)
    ws.log.debug(spec.name + ": the image is " + std::to_string(image.width) + "x" +
                 std::to_string(image.height) + "; scaled to cover " + std::to_string(spec.width) +
                 "x" + std::to_string(spec.height) + " and cropped evenly");
  g.bytes = encode_image(fit_image(image, spec.width, spec.height), spec.format);
  if (auto rejected = run_validators(ws, spec, g.bytes, work, record.source))
    return *rejected;
  return g;
}

Result<Generated> generate_once(Workspace& ws, const PlannedAsset& p, const GenerationRequest& req,
                                const std::string& fingerprint, uint32_t attempt,
                                const Resume& resume, AttemptRecord& record, SlotLease& slot) {
  const AssetSpec& spec = p.spec;
  // The model made this very request's image before (only the postprocessing changed, or it
  // failed a check in an earlier run): it is made again from the image in the cache, for free.
  // --force asks the model again.
  auto source = source_key(ws, req);
  auto from_cache = [&]() -> std::optional<Result<Generated>> {
    auto bytes = ws.cache.get(*source, k_source_format);
    if (!bytes)
      return std::nullopt;
    auto decoded = decode_image(*bytes, ws.manifest.max_decoded_pixels);
    if (!decoded) {
      ws.log.warning(spec.name + ": the model's image in the cache is damaged (" +
                     decoded.error().message + "); asking the backend again");
      return std::nullopt;
    }
    slot.release();
    record.from_cache = true;
    record.source = "kiln";
    WorkDir scratch(ws.state.dir() / "work" / fingerprint);
    return finish_image(ws, spec, req, std::move(*decoded), scratch.path, record);
  };
  if (source && !p.force)
    if (auto done = from_cache())
      return std::move(*done);
  // One process at a time pays for a request: a second build tree sharing the cache waits
  // here, then takes the first one's image.
  std::optional<Cache::Lease> lease;
  if (source && !p.force) {
    lease = ws.cache.lease(*source, [&] {
      ws.log.warning(spec.name + ": another kiln is making the same image; waiting for it");
    });
    if (!lease)
      return Fault{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};
    if (auto done = from_cache())
      return std::move(*done);
  }
  record.source = req.backend;
  const PluginInstance* found = find_backend(ws, req.backend);
  if (!found)
    return Fault{KILN_ERROR_PERMANENT,
                 "backend '" + req.backend +
                     "' is not started in this run (a strategy may switch to a backend that an "
                     "asset names, or to an offline one)",
                 -1};
  const PluginInstance& backend = *found;
  WorkDir scratch(ws.state.dir() / "work" / fingerprint);
  const fs::path& work = scratch.path;

  AssetView view = asset_view(spec, &req.model);
  std::string work_str = work.string();
  kiln_request q =
      request_view(req, view.get(), fingerprint, work_str, attempt, resume.job, resume.lost_create);
  kiln_result r = ws.registry.make_result(backend.plugin().id);
  // A paid backend's job is journaled before it may be created and the moment its id is known,
  // so a run killed at any point leaves its successor enough to re-attach instead of paying
  // again.
  bool remote = !backend_can(ws, req.backend, KILN_BACKEND_OFFLINE);
  if (remote) {
    ws.state.creating(spec.name, fingerprint, req.backend);
    r.on_remote_id = [&](const std::string& id) {
      ws.state.submitted(spec.name, fingerprint, req.backend, id);
    };
  }
  PluginCall call(backend.plugin().path.string(), backend.plugin().id, "generate");
  kiln_status st = backend.plugin().backend()->generate(backend.handle(), &q, &r);
  record.cost_usd = r.cost_usd.value_or(0);
  record.remote_id = r.remote_id;
  if (remote) {
    ws.state.job_done(fingerprint, req.backend);
    bool delivered = st == KILN_OK && !r.failed();
    if ((delivered || record.cost_usd > 0) &&
        !ws.state.spent(spec.name, record.remote_id, record.cost_usd, delivered)) {
      ws.log.debug(spec.name + ": job " + record.remote_id +
                   " was paid for by an earlier run; not counted again");
      record.cost_usd = 0;
    }
  }
  if (st != KILN_OK || r.failed()) {
    Fault f = r.failure();
    if (f.category == KILN_ERROR_NONE)
      f = {KILN_ERROR_PERMANENT, "backend failed without saying why", -1};
    f.message = ws.log.redact(f.message);
    if (is_plugin_bug(f.message)) // a backend's own errors read well alone; its bugs are named
      f.message = plugin_failure("backend", req.backend, "generate", "failed", f.message);
    return f;
  }

  // From here on the backend delivered: a failure is the image's, not the job's, and the
  // backend's slot is free for the next job. (A failed job keeps it until the caller has
  // recorded what the failure means for the others: a stopped backend, a cooling model.)
  slot.release();
  record.source = "kiln";
  Image image;
  if (r.image) {
    image = std::move(*r.image);
  } else if (!r.image_file.empty()) {
    auto bytes = read_file(r.image_file);
    if (!bytes)
      return Fault{KILN_ERROR_RETRYABLE,
                   "backend's image file '" + r.image_file + "' cannot be read", -1, 0, "corrupt"};
    auto decoded = decode_image(*bytes, ws.manifest.max_decoded_pixels);
    if (!decoded) {
      const Fault& why = decoded.error();
      return Fault{KILN_ERROR_RETRYABLE,
                   (why.download == "unsupported" ? "backend returned an unsupported image: "
                                                  : "backend returned a corrupt image: ") +
                       why.message,
                   -1, 0, why.download.empty() ? "corrupt" : why.download};
    }
    image = std::move(*decoded);
    // The model's image as delivered, before any postprocessing: a change to the
    // postprocessing alone then costs nothing. A cache that cannot be written costs only
    // that saving.
    if (source) {
      try {
        ws.cache.put(*source, k_source_format, *bytes);
      } catch (const std::exception& e) {
        ws.log.warning(spec.name + ": cannot keep the model's image in the cache: " + e.what());
      }
    }
  } else {
    return Fault{KILN_ERROR_PERMANENT, "backend reported success but gave no image", -1};
  }
  return finish_image(ws, spec, req, std::move(image), work, record);
}

// What the run shares between assets while they walk their chains.
struct RunGuards {
  MoneyBudget money;
  CircuitBreakers breakers;
  RetryBudget budget;
  // Backends that stopped taking new work (a person must act), with the reason.
  std::mutex stop_mutex;
  std::map<std::string, Fault> stopped_backends;

  // The pace of new jobs per backend, shared by every worker.
  std::map<std::string, std::unique_ptr<RateLimiter>, std::less<>> limiters;
  // Per backend, the longest wait hint honoured (max_retry_after_s), in milliseconds.
  std::map<std::string, int64_t, std::less<>> max_wait_ms;
  // Which asset starts next, and the jobs each backend may have in flight at once.
  Scheduler scheduler;

  RunGuards(const Workspace& ws, unsigned jobs, std::optional<double> budget_usd)
      : money(budget_usd, ws.state.spent_before()),
        breakers(ws.manifest.retry_policy.breaker_failures,
                 std::chrono::duration_cast<Clock::duration>(
                     std::chrono::duration<double>(ws.manifest.retry_policy.breaker_cooldown_s))),
        budget(ws.manifest.retry_policy.budget_ratio, ws.manifest.retry_policy.budget_min) {
    for (auto& [id, backend] : ws.plugins.backends) {
      BackendPacing pacing;
      if (auto it = ws.manifest.backend_pacing.find(id); it != ws.manifest.backend_pacing.end())
        pacing = it->second;
      limiters.emplace(id, std::make_unique<RateLimiter>(pacing.requests_per_second, pacing.burst));
      max_wait_ms.emplace(id, int64_t(pacing.max_retry_after_s * 1000));
      unsigned concurrency = jobs ? jobs : pacing.concurrency;
      if (!concurrency)
        concurrency = backend_can(ws, id, KILN_BACKEND_OFFLINE)
                          ? std::max(1u, std::thread::hardware_concurrency())
                          : k_default_remote_concurrency;
      scheduler.set_limit(id, concurrency);
    }
  }

  // A remote backend's jobs in flight when neither -j nor `concurrency` says: enough to keep a
  // provider's queue busy at a few seconds a job, few enough not to trip its limits at once.
  static constexpr unsigned k_default_remote_concurrency = 8;

  RateLimiter* limiter(const std::string& backend) {
    auto it = limiters.find(backend);
    return it == limiters.end() ? nullptr : it->second.get();
  }

  void stop_backend(const std::string& backend, const Fault& why) {
    std::lock_guard lock(stop_mutex);
    stopped_backends.emplace(backend, why);
  }
  // Why no new attempt may start on `backend`, if so.
  std::optional<Fault> stopped(const std::string& backend) {
    if (interrupted())
      return Fault{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};
    std::lock_guard lock(stop_mutex);
    auto it = stopped_backends.find(backend);
    if (it == stopped_backends.end())
      return std::nullopt;
    return it->second;
  }
};

std::string breaker_key(const GenerationRequest& req) {
  return req.backend + " " + req.model;
}

// What a strategy proposed for the next attempt.
struct Step {
  std::string strategy;
  GenerationRequest request;
  int64_t delay_ms = 0;
  bool fallback = false;
};

// Counters the strategies decide from (kiln_failure).
struct ChainCounters {
  uint32_t same_request_failures = 0;
  uint32_t category_streak = 0;
  uint32_t last_category = KILN_ERROR_NONE;
  std::map<std::string, uint32_t> proposals;

  void failed(const Fault& f) {
    ++same_request_failures;
    category_streak = f.category == last_category ? category_streak + 1 : 1;
    last_category = f.category;
  }
};

std::string describe_change(const GenerationRequest& from, const Step& to) {
  const GenerationRequest& r = to.request;
  std::vector<std::string> parts;
  if (r.backend != from.backend)
    parts.push_back("backend " + r.backend);
  if (r.model != from.model)
    parts.push_back("model " + r.model);
  if (r.prompt != from.prompt)
    parts.push_back("prompt \"" + r.prompt + "\"");
  if (r.negative_prompt != from.negative_prompt)
    parts.push_back("negative prompt \"" + r.negative_prompt + "\"");
  if (r.seed != from.seed)
    parts.push_back("seed " + (r.seed ? std::to_string(*r.seed) : std::string("none")));
  if (r.params_json != from.params_json)
    parts.push_back("params " + r.params_json);
  std::string text = parts.empty() ? "retrying" : "retrying with " + join(parts, ", ");
  if (to.delay_ms > 0) {
    char wait[48];
    std::snprintf(wait, sizeof wait, " in %.1f s", double(to.delay_ms) / 1000.0);
    text += wait;
  }
  return text;
}

std::string property_names(uint32_t bits) {
  std::vector<std::string> names;
  if (bits & KILN_PROPERTY_ALPHA)
    names.push_back("transparency");
  if (bits & KILN_PROPERTY_TILEABLE)
    names.push_back("seamless edges");
  if (bits & KILN_PROPERTY_PALETTE)
    names.push_back("a limited palette");
  if (bits & ~uint32_t(KILN_PROPERTY_ALPHA | KILN_PROPERTY_TILEABLE | KILN_PROPERTY_PALETTE))
    names.push_back("a property this kiln does not know");
  return join(names, " or ");
}

// The kiln_image_property bits the model of `req` paints by itself, as its backend says; any
// when the backend does not say (ABI 1.0) or is not running.
uint32_t painted_by(const Workspace& ws, const AssetSpec& spec, const GenerationRequest& req) {
  const PluginInstance* backend = find_backend(ws, req.backend);
  auto paints = backend ? backend->plugin().table_field(&kiln_backend_functions::paints) : nullptr;
  if (!paints)
    return KILN_PROPERTIES_ANY;
  AssetView view = asset_view(spec, &req.model);
  kiln_request q = request_view(req, view.get(), "", "");
  return paints(backend->handle(), &q);
}

// The properties every image of the asset gets from its postprocessors.
uint32_t made_by_postprocessors(const Workspace& ws, const AssetSpec& spec) {
  uint32_t bits = 0;
  for (auto& id : spec.postprocess)
    bits |= ws.plugins.postprocessors.at(id)->plugin().provides();
  return bits;
}

struct Unfixable {
  uint32_t missing = 0; // what no image of the request can have
  std::string why;
};

// Why no image `req` can make passes the validator that rejected `fault`'s image: it lacks a
// property (transparency...) that the request's model never paints and that no postprocessor of
// the asset makes. Nullopt when a new image may pass.
std::optional<Unfixable> unfixable(const Workspace& ws, const AssetSpec& spec,
                                   const GenerationRequest& req, const Fault& fault) {
  uint32_t missing = fault.missing & ~made_by_postprocessors(ws, spec);
  if (!missing)
    return std::nullopt;
  missing &= ~painted_by(ws, spec, req);
  if (!missing)
    return std::nullopt;
  std::string painter = req.model.empty() ? "backend " + req.backend : req.model;
  return Unfixable{missing, painter + " never paints " + property_names(missing) +
                                " and no postprocessor of the asset makes it"};
}

// What would make the missing properties: the postprocessor to add, and where.
std::string fix_hint(const Workspace& ws, const AssetSpec& spec, uint32_t missing) {
  std::vector<std::string> ids;
  for (uint32_t bit = 1; bit && bit <= missing; bit <<= 1) {
    if (!(missing & bit))
      continue;
    // Built-in postprocessors first, then others, by id.
    const Plugin* best = nullptr;
    for (const Plugin* p : ws.registry.all())
      if (p->kind == KILN_KIND_POSTPROCESSOR && (p->provides() & bit)) {
        bool builtin = p->path.parent_path() == PluginRegistry::builtin_dir();
        bool best_builtin = best && best->path.parent_path() == PluginRegistry::builtin_dir();
        if (!best || (builtin && !best_builtin))
          best = p;
      }
    if (!best)
      continue;
    if (std::find(ids.begin(), ids.end(), best->id) == ids.end())
      ids.push_back(best->id);
  }
  if (ids.empty())
    return {};
  // The makers first: a background goes before trim and pixelate look for the subject.
  std::vector<std::string> chain = ids;
  for (auto& id : spec.postprocess)
    if (std::find(chain.begin(), chain.end(), id) == chain.end())
      chain.push_back(id);
  auto quoted = [](const std::vector<std::string>& list) {
    std::string out;
    for (auto& id : list)
      out += (out.empty() ? "\"" : ", \"") + id + "\"";
    return out;
  };
  if (spec.postprocess.empty())
    return "add postprocess = [" + quoted(chain) + "] to [types." + spec.type + "]";
  std::string where;
  if (auto it = spec.field_locs.find("postprocess"); it != spec.field_locs.end() && it->second.line)
    where =
        " (" + ws.manifest.diagnostics.display_path() + ":" + std::to_string(it->second.line) + ")";
  return "make it postprocess = [" + quoted(chain) + "]" + where;
}

// Asks the asset's strategies, in chain order, for the next request after `fault`. A proposal
// for a model that is cooling down, for a backend that is not running, or that the run's retry
// budget cannot pay for is passed over, and the next strategy is asked. `passed` collects why.
std::optional<Step> next_step(Workspace& ws, RunGuards& guards, const PlannedAsset& p,
                              const GenerationRequest& current, const Fault& fault,
                              const std::string& source, uint32_t attempt, ChainCounters& counters,
                              std::vector<std::string>& passed) {
  const AssetSpec& spec = p.spec;
  AssetView view = asset_view(spec, &current.model);
  kiln_request q = request_view(current, view.get(), p.fingerprint, "", attempt);
  for (auto& id : spec.retry) {
    const PluginInstance& inst = *ws.plugins.strategies.at(id);
    kiln_failure f{};
    f.struct_size = sizeof f;
    f.request = &q;
    f.category = fault.category;
    f.message = ks(fault.message);
    f.attempt = attempt;
    f.retry_after_ms = fault.retry_after_ms;
    f.same_request_failures = counters.same_request_failures;
    f.category_streak = counters.category_streak;
    f.proposals = counters.proposals[id];
    f.source = ks(source);
    kiln_result r = ws.registry.make_result(id);
    PluginCall call(inst.plugin().path.string(), inst.plugin().id, "propose");
    kiln_status st = inst.plugin().strategy()->propose(inst.handle(), &f, &r);
    if (st != KILN_OK || r.failed()) {
      if (r.failed()) // a strategy that could have helped says why it did not
        passed.push_back(is_plugin_bug(r.message)
                             ? plugin_failure("retry strategy", id, "propose", "", r.message)
                             : id + ": " + r.message);
      continue;
    }
    Step step{id, current, std::max<int64_t>(0, r.retry_after_ms), r.fallback};
    GenerationRequest& next = step.request;
    if (r.backend && *r.backend != next.backend) {
      next.backend = *r.backend;
      const PluginInstance* backend = find_backend(ws, next.backend);
      if (!backend) {
        passed.push_back(id + ": backend '" + next.backend + "' is not running");
        continue;
      }
      next.backend_version = backend->plugin().version;
      next.backend_options = backend->shaping_options();
    }
    if (r.model)
      next.model = *r.model;
    if (r.seed)
      next.seed = *r.seed;
    if (r.params_json)
      next.params_json = *r.params_json;
    if (r.prompt)
      next.prompt = *r.prompt;
    if (r.negative_prompt)
      next.negative_prompt = *r.negative_prompt;
    // A rewritten prompt still asks for what the postprocessors need (a plain backdrop...).
    if (r.prompt)
      if (auto bad = add_prompt_hints(ws, spec, next)) {
        passed.push_back(id + ": " + bad->message);
        continue;
      }
    // A new model gets the enhancers' prompts for its own family (boosters, whether it takes
    // a negative prompt), except what a strategy has rewritten: a simplified prompt stays.
    if (next.model != current.model) {
      GenerationRequest enhanced = next;
      enhanced.prompt = spec.prompt;
      enhanced.negative_prompt = spec.negative;
      if (auto bad = enhance(ws, spec, enhanced)) {
        passed.push_back(id + ": " + bad->message);
        continue;
      }
      if (!r.prompt && current.prompt == p.request.prompt)
        next.prompt = enhanced.prompt;
      if (!r.negative_prompt)
        next.negative_prompt = enhanced.negative_prompt;
      next.enhancers = enhanced.enhancers;
    }
    // Money only for a request whose image can pass: a new seed cannot add transparency.
    if (auto no_use = unfixable(ws, spec, next, fault)) {
      passed.push_back(id + ": no use: " + no_use->why);
      continue;
    }
    if (double left = guards.breakers.open_for(breaker_key(next)); left > 0) {
      char why[160];
      std::snprintf(why, sizeof why, "%s: %s is cooling down (%.0f s left)", id.c_str(),
                    next.model.empty() ? next.backend.c_str() : next.model.c_str(), left);
      passed.push_back(why);
      continue;
    }
    if (!backend_can(ws, next.backend, KILN_BACKEND_OFFLINE) && !guards.budget.try_retry()) {
      passed.push_back(id + ": the run's retry budget is spent (" +
                       std::to_string(guards.budget.retries()) + " retries for " +
                       std::to_string(guards.budget.assets()) + " assets; see [retry_policy])");
      continue;
    }
    ++counters.proposals[id];
    return step;
  }
  return std::nullopt;
}

// Makes one asset: the planned request, then whatever its strategy chain proposes after each
// failure, until an attempt succeeds or nothing more can be tried. Every attempt goes into
// `out.attempts`.
// `slot_held`: the scheduler took a job slot of the asset's backend for its first attempt.
Result<Generated> generate_asset(Workspace& ws, RunGuards& guards, const PlannedAsset& p,
                                 AssetOutcome& out, bool slot_held) {
  const RetryPolicy& policy = ws.manifest.retry_policy;
  Step step{"initial", p.request, 0, false};
  ChainCounters counters;
  // The remote job a retry of the same request re-attaches to; first, one a killed run left.
  Resume resume;
  if (backend_can(ws, p.request.backend, KILN_BACKEND_CAN_RESUME))
    if (auto left = ws.state.pending(p.fingerprint, p.request.backend)) {
      resume = Resume{left->job, left->lost_create};
      ws.log.warning(
          p.spec.name + ": a killed run left " +
          (left->job.empty() ? std::string("a create without an answer") : "job " + left->job) +
          "; re-attaching before creating");
    }
  guards.budget.first_attempt();
  bool downloaded_again = false; // this request's job was downloaded a second time
  for (uint32_t attempt = 1;; ++attempt) {
    const GenerationRequest& req = step.request;
    AttemptRecord& rec = out.attempts.emplace_back();
    rec.strategy = step.strategy;
    rec.backend = req.backend;
    rec.model = req.model;
    rec.prompt = req.prompt;
    rec.seed = req.seed;
    rec.waited_s = double(step.delay_ms) / 1000.0;

    // An attempt refused before it sends anything: on the first, the asset was not started (the
    // caller reports it skipped); on a later one, it is not retried.
    auto refuse = [&](Fault why) -> Fault {
      if (attempt == 1) {
        out.attempts.pop_back();
        return why;
      }
      why.message = "not retried: " + why.message;
      rec.error = why;
      return why;
    };
    Fault fault;
    {
      // The job slot first: whatever happened while this asset waited for it (its backend
      // stopped, its model cooled down) is seen before it sends anything.
      SlotLease slot(guards.scheduler, req.backend, slot_held && attempt == 1);
      if (!slot.acquire()) {
        out.attempts.pop_back();
        return Fault{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};
      }
      if (auto why = guards.stopped(req.backend))
        return refuse(*why);
      if (double left = guards.breakers.open_for(breaker_key(req)); left > 0) {
        char why[160];
        std::snprintf(why, sizeof why, "%s is cooling down after failing repeatedly (%.0f s left)",
                      req.model.empty() ? req.backend.c_str() : req.model.c_str(), left);
        fault = Fault{KILN_ERROR_RETRYABLE, why, -1};
        rec.source = "kiln";
      } else {
        // The money first: an attempt the budget cannot cover sends nothing.
        std::string fingerprint = fingerprint_of(fingerprint_fields(req));
        // Nothing to pay when the model's image for this request is in the cache already.
        auto source = source_key(ws, req);
        bool free = source && !p.force && ws.cache.contains(*source, k_source_format);
        double reserved = free ? 0.0 : predict_cost(ws, p.spec, req, fingerprint);
        if (!guards.money.reserve(reserved, interrupted)) {
          char why[200];
          std::snprintf(why, sizeof why,
                        "the budget of %s cannot cover it (%s spent, %s needed for this asset)",
                        format_usd(*guards.money.limit()).c_str(),
                        format_usd(guards.money.spent()).c_str(), format_usd(reserved).c_str());
          rec.source = "kiln";
          return refuse(Fault{KILN_ERROR_PERMANENT, why, -1});
        }
        struct Settle {
          MoneyBudget& money;
          double reserved;
          const AttemptRecord& rec;
          ~Settle() { money.settle(reserved, rec.cost_usd); }
        } settle{guards.money, reserved, rec};
        RateLimiter* limiter = free ? nullptr : guards.limiter(req.backend);
        if (limiter) {
          auto wait = std::chrono::ceil<std::chrono::milliseconds>(limiter->reserve());
          if (wait.count() > 0 && !sleep_unless_interrupted(uint32_t(wait.count()))) {
            out.attempts.pop_back();
            return Fault{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};
          }
        }
        auto g = generate_once(ws, p, req, fingerprint, attempt, resume, rec, slot);
        if (limiter && g)
          limiter->succeeded();
        // A wait longer than the backend's max_retry_after_s: this asset fails now (nothing
        // is gained by buying another request), and the others are not held back by it.
        if (!g && rec.source == req.backend && g.error().category == KILN_ERROR_RETRYABLE) {
          auto cap = guards.max_wait_ms.find(req.backend);
          if (cap != guards.max_wait_ms.end() && g.error().retry_after_ms > cap->second) {
            Fault too_long = g.error();
            too_long.message += "; " + req.backend + " asks to wait " +
                                std::to_string((too_long.retry_after_ms + 999) / 1000) +
                                " s, more than its max_retry_after_s (" +
                                std::to_string(cap->second / 1000) +
                                "): not waiting, run again later";
            too_long.category = KILN_ERROR_PERMANENT;
            too_long.retry_after_ms = -1;
            if (limiter)
              limiter->throttled(-1); // the pace still slows; nothing waits for the hint
            g = too_long;
          }
        }
        // Throttled: the whole backend slows down, and waits for the server's hint.
        if (limiter && !g && rec.source == req.backend &&
            g.error().category == KILN_ERROR_RETRYABLE && g.error().retry_after_ms >= 0)
          limiter->throttled(g.error().retry_after_ms);
        out.cost_usd += rec.cost_usd;
        if (!rec.remote_id.empty())
          out.remote_id = rec.remote_id;
        if (g) {
          guards.breakers.success(breaker_key(req));
          out.fallback = step.fallback;
          out.backend = req.backend;
          out.model = req.model;
          out.final_prompt = req.prompt;
          out.final_negative_prompt = req.negative_prompt;
          return g;
        }
        fault = g.error();
        // A throttled request (the server said when to come back) is not a failing model.
        if (rec.source == req.backend && fault.category == KILN_ERROR_RETRYABLE &&
            fault.retry_after_ms < 0 && guards.breakers.failure(breaker_key(req)))
          ws.log.warning(req.model + " on " + req.backend + " failed " +
                         std::to_string(policy.breaker_failures) +
                         " times in a row: cooling it down for every asset");
        // Stopped while the slot is still held, so no asset waiting for it starts a job.
        if (fault.category == KILN_ERROR_NEEDS_PERSON)
          guards.stop_backend(
              req.backend,
              Fault{KILN_ERROR_NEEDS_PERSON,
                    req.backend + " stopped creating: " + p.spec.name + " needs a person", -1});
      }
    } // the slot is given back before any wait for a retry
    rec.error = fault;
    counters.failed(fault);
    // What the model cannot paint and the asset does not make: said even when the chain goes
    // on to a stand-in, which is no fix.
    if (out.hint.empty())
      if (auto lacking = unfixable(ws, p.spec, req, fault))
        out.hint = fix_hint(ws, p.spec, lacking->missing);
    auto stop = [&](std::string why) {
      rec.decision = "stop";
      rec.decision_reason = std::move(why);
      return fault;
    };

    // A job that delivered a file Kiln cannot use is downloaded again once, for free (the
    // backend re-attaches to it). After that an unsupported one (a GIF, an HTML page, a
    // decompression bomb) fails for good: a new prediction of the same request would deliver
    // the same kind of file. A corrupt one goes to the chain, which may buy a new prediction.
    if (!fault.download.empty()) {
      bool can_resume = backend_can(ws, req.backend, KILN_BACKEND_CAN_RESUME);
      if (!downloaded_again && can_resume && !rec.remote_id.empty()) {
        downloaded_again = true;
        rec.decision = "retry";
        rec.decision_reason = "downloading job " + rec.remote_id + " again (free)";
        ws.log.warning(p.spec.name + ": " + fault.message + "; downloading it again");
        resume = Resume{rec.remote_id};
        step = Step{"download-again", req, 0, step.fallback};
        continue;
      }
      if (fault.download == "unsupported") {
        fault.category = KILN_ERROR_PERMANENT;
        fault.message = "unsupported image: " + fault.message +
                        (downloaded_again ? " (twice; not bought again)" : "");
        return stop("an unsupported image: a new prediction would not do better");
      }
    }
    if (fault.category == KILN_ERROR_NEEDS_PERSON)
      return stop("a person must act; no strategy can help");
    if (fault.category == KILN_ERROR_INTERRUPTED)
      return stop("the run was interrupted");
    if (attempt >= policy.max_attempts) {
      fault.message += " (gave up after " + std::to_string(attempt) + " attempts)";
      return stop("[retry_policy] max_attempts (" + std::to_string(policy.max_attempts) +
                  ") reached");
    }
    std::vector<std::string> passed;
    auto next = next_step(ws, guards, p, req, fault, rec.source, attempt, counters, passed);
    if (!next) {
      std::string why = passed.empty() ? "no strategy of the asset's retry chain acts on a " +
                                             std::string(category_name(fault.category)) + " failure"
                                       : join(passed, "; ");
      // No model of the chain paints what the image lacks, and no postprocessor makes it: the
      // asset fails now, saying what would fix it, instead of after buying every retry.
      if (auto lacking = unfixable(ws, p.spec, req, fault)) {
        fault.category = KILN_ERROR_PERMANENT;
        fault.message += "; no new image can pass: " + lacking->why;
        if (!out.hint.empty())
          fault.message += ": " + out.hint;
        return stop("not retried: no new image can pass: " + lacking->why +
                    (passed.empty() ? std::string() : " (" + why + ")"));
      }
      if (!passed.empty())
        fault.message += " (" + why + ")";
      return stop(why);
    }
    rec.decision = "retry";
    rec.decision_reason = (passed.empty() ? std::string() : join(passed, "; ") + "; ") +
                          next->strategy + ": " + describe_change(req, *next);
    // A retry of the same request on the same backend re-attaches to the remote job when the
    // job itself failed: its result may be paid for already. After a bad image, a new job.
    bool same = fingerprint_fields(next->request) == fingerprint_fields(req);
    bool can_resume = backend_can(ws, req.backend, KILN_BACKEND_CAN_RESUME);
    resume =
        Resume{same && can_resume && rec.source == req.backend ? rec.remote_id : std::string()};
    if (!same) {
      counters.same_request_failures = 0;
      downloaded_again = false;
    }

    ws.log.warning(p.spec.name + ": " + fault.message + " (attempt " + std::to_string(attempt) +
                   "); " + next->strategy + ": " + describe_change(req, *next));
    if (next->delay_ms > 0 && !sleep_unless_interrupted(uint32_t(next->delay_ms)))
      return Fault{KILN_ERROR_INTERRUPTED, "interrupted while waiting to retry: " + fault.message,
                   -1};
    step = std::move(*next);
  }
}

} // namespace

void BuildSummary::count(const AssetOutcome& o) {
  if (o.status == "failed" && o.error && o.error->category == KILN_ERROR_NEEDS_PERSON &&
      !o.attempts.empty())
    stopped.push_back(o.attempts.back().backend + ": " + o.name + ": " + o.error->message);
  cost_usd += o.cost_usd;
  if (o.status == "generated")
    ++generated;
  else if (o.status == "cached")
    ++cached;
  else if (o.status == "up_to_date")
    ++up_to_date;
  else if (o.status == "skipped")
    ++skipped;
  else if (o.status == "kept")
    ++kept;
  else
    ++failed;
  if (o.fallback)
    fallback_names.push_back(o.name);
  if (o.error && o.error->category == KILN_ERROR_NEEDS_PERSON)
    needs_a_person = true;
  if (o.error && o.error->category == KILN_ERROR_INTERRUPTED)
    interrupted = true;
}

BuildSummary build(Workspace& ws, Plan& plan, const BuildOptions& options, OutcomeSink* sink) {
  auto start = std::chrono::steady_clock::now();
  BuildSummary summary;
  summary.total = plan.size();
  summary.predicted_cost_usd = plan.predicted_cost_usd;
  std::mutex state_mutex;

  // An asset's outcome is counted, handed to the sink (the report) and dropped: memory follows
  // the assets in flight, not the assets in the manifest. Only the leaders of assets that take
  // their image keep what those need.
  std::mutex summary_mutex;
  std::map<size_t, AssetOutcome> leaders;
  for (auto& e : plan.entries)
    if (e.same_as != PlanEntry::k_none)
      leaders.emplace(e.same_as, AssetOutcome{});
  auto emit = [&](size_t index, AssetOutcome& o) {
    std::lock_guard lock(summary_mutex);
    summary.count(o);
    if (sink)
      sink->add(index, o);
    if (auto it = leaders.find(index); it != leaders.end())
      it->second = std::move(o);
  };
  auto outcome_of = [&](const PlannedAsset& p) {
    AssetOutcome o;
    o.name = p.spec.name;
    o.reason = p.reason;
    o.output = p.output;
    o.fingerprint = p.fingerprint;
    o.backend = p.spec.backend;
    o.model = p.spec.model;
    o.predicted_cost_usd = p.predicted_cost_usd;
    o.final_prompt = p.request.prompt;
    o.final_negative_prompt = p.request.negative_prompt;
    return o;
  };
  // kiln.lock: what each asset's file is now, with where it came from, for a clone to find it
  // made. A stand-in is not the asset's art; an entry that says so already stays as it is
  // (with the cost it recorded). `sha` empty: the state's, else the file's.
  auto lock_it = [&](const PlannedAsset& p, const AssetOutcome& o, std::string sha) {
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
      sha = sha256_of_file(p.output);
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
    ws.lock->set(p.spec.name, e);
  };
  size_t work = 0;
  for (auto& e : plan.entries)
    work += (e.action != Action::UpToDate && e.action != Action::Kept) || e.prepare_failed;
  Progress progress(ws.log, work, options.verbosity, options.progress);
  using Outcome = Progress::Outcome;
  // Asset i made again from its entry. When that fails (the manifest changed during the run),
  // the asset fails and the others go on.
  auto asset_or_fail = [&](size_t i) -> std::optional<PlannedAsset> {
    try {
      return plan.asset(ws, i);
    } catch (const std::exception& e) {
      AssetOutcome o;
      o.name = std::string(ws.manifest.name(plan.entries[i].asset));
      o.status = "failed";
      o.error = Fault{KILN_ERROR_PERMANENT, e.what(), -1};
      progress.finished(Outcome::Failed, o.name + ": " + e.what());
      emit(i, o);
      return std::nullopt;
    }
  };

  std::vector<size_t> to_generate, followers;
  for (size_t i = 0; i < plan.size(); ++i) {
    PlanEntry& entry = plan.entries[i];
    if (entry.action == Action::Generate && !entry.prepare_failed) {
      to_generate.push_back(i);
      continue;
    }
    if (entry.action == Action::Cached && entry.same_as != PlanEntry::k_none) {
      followers.push_back(i); // after its leader has generated the image
      continue;
    }
    // A change made here to what the asset needs goes into its entry: the asset is made again
    // from the entry when its turn comes.
    auto generate_instead = [&](std::string reason) {
      entry.action = Action::Generate;
      entry.reason = plan.reason_id(std::move(reason));
      to_generate.push_back(i);
    };
    auto made = asset_or_fail(i);
    if (!made)
      continue;
    PlannedAsset& p = *made;
    AssetOutcome o = outcome_of(p);
    if (p.prepare_error) {
      o.status = "failed";
      o.error = p.prepare_error;
      progress.finished(Outcome::Failed, o.name + ": " + p.prepare_error->message);
    } else if (p.action == Action::Kept) {
      // An artist's file: left as it is, said, and not a failure.
      o.status = "kept";
      ws.log.warning(o.name + ": " + p.reason);
    } else if (p.action == Action::UpToDate && p.recheck) {
      // Known by its bytes only (a clone), or checked by other validators than now: checked
      // again (free), its stamps recorded afresh, and made again only if it no longer passes.
      std::string source;
      std::optional<Fault> rejected;
      std::string sha;
      auto bytes = read_file(p.output);
      if (bytes) {
        sha = sha256_hex(*bytes);
        WorkDir scratch(ws.state.dir() / "work" / ("check-" + p.fingerprint));
        rejected = run_validators(ws, p.spec, *bytes, scratch.path, source);
      } else {
        rejected = Fault{KILN_ERROR_PERMANENT, "cannot read it", -1};
      }
      if (!rejected) {
        // Art known by its bytes only (a clone with committed art): the output folder may be
        // the only copy of a paid image, and `ninja clean` removes byproducts. Kept in the
        // cache too, so a deleted output is restored, never paid for again.
        if (p.refresh && !ws.cache.has_content(sha))
          try {
            ws.cache.put(p.fingerprint, p.spec.format, *bytes);
          } catch (const std::exception& e) {
            ws.log.debug(o.name + ": not kept in the cache: " + e.what());
          }
        record_output(ws, state_mutex, p, sha);
        o.status = "up_to_date";
        if (!p.refresh)
          o.reason = p.reason = "up to date; passes the changed validators";
        if (options.verbosity <= KILN_LOG_DEBUG)
          progress.note("up to date " + o.name + " (checked again)");
        lock_it(p, o, sha);
        emit(i, o);
        continue;
      }
      // Made again, not taken from the cache: the cache holds these same rejected bytes.
      ws.log.warning(o.name + ": the output no longer passes: " + rejected->message);
      progress.add_work(1);
      generate_instead("rejected by the changed validators");
      continue;
    } else if (p.action == Action::UpToDate) {
      o.status = "up_to_date";
      if (options.verbosity <= KILN_LOG_DEBUG)
        progress.note("up to date " + o.name);
      lock_it(p, o, {});
    } else {
      std::string why;
      // The bytes kiln.lock records for this very request come first, when the cache holds
      // them: a cache entry pointing elsewhere (another run's image of the same request, or a
      // tampered one) does not replace the recorded art.
      std::optional<std::string> bytes;
      if (auto locked = ws.lock ? ws.lock->find(p.spec.name) : std::nullopt;
          locked && locked->fingerprint == p.fingerprint)
        bytes = ws.cache.get_content(locked->sha256, expected_in_cache(p));
      if (bytes)
        try {
          ws.cache.put(p.fingerprint, p.spec.format, *bytes); // the entry points at them again
        } catch (const std::exception&) {
        }
      else
        bytes = ws.cache.get(p.fingerprint, p.spec.format, expected_in_cache(p), &why);
      if (!bytes || structural_problem(*bytes)) {
        ws.log.warning("the cache entry of " + o.name + " is bad (" +
                       (why.empty() ? std::string("truncated") : why) +
                       "): removed, not installed; making the image again");
        generate_instead(p.reason + " (bad cache entry)");
        continue;
      }
      try {
        std::string sha = install_output(ws, state_mutex, p, *bytes);
        o.status = "cached";
        progress.finished(Outcome::Cached, "cached " + o.name + " (" + p.reason + ")");
        lock_it(p, o, sha);
      } catch (const std::exception& e) {
        o.status = "failed";
        o.error = Fault{KILN_ERROR_PERMANENT, e.what(), -1};
        progress.finished(Outcome::Failed, o.name + ": " + e.what());
      }
    }
    emit(i, o);
  }

  RunGuards guards(ws, options.jobs, options.budget_usd);
  Scheduler& queue = guards.scheduler;
  for (size_t i : to_generate)
    queue.add(i, plan.groups[plan.entries[i].group].first,
              plan.groups[plan.entries[i].group].second);
  // One asset of the queue, start to end: its outcome is filled in `o`.
  auto generate_one = [&](PlannedAsset& p, AssetOutcome& o, SlotLease& first_slot,
                          std::chrono::steady_clock::time_point t0) {
    auto fail = [&](Fault f) {
      o.status = "failed";
      o.error = std::move(f);
      progress.finished(Outcome::Failed, o.name + ": " + o.error->message, o.cost_usd, true);
    };
    if (p.prepare_error) {
      fail(*p.prepare_error);
      return;
    }
    try {
      auto g = generate_asset(ws, guards, p, o, first_slot.hand_over());
      if (!g && o.attempts.empty()) {
        o.status = "skipped";
        o.error = g.error();
        o.error->message = "not started: " + g.error().message;
        progress.finished(Outcome::Skipped, "skipped " + o.name + " (" + g.error().message + ")", 0,
                          true);
        return;
      }
      if (!g) {
        fail(g.error());
        return;
      }
      // The cache first: once it holds the image, a crash loses nothing that was paid for. A
      // fallback stand-in is not the image asked for, so it is never cached. A cache that
      // cannot be written (a full disk, a read-only home) costs that safety, not the image.
      if (!o.fallback) {
        try {
          ws.cache.put(p.fingerprint, p.spec.format, g->bytes);
        } catch (const std::exception& e) {
          ws.log.warning(o.name + ": cannot keep the image in the cache (" + e.what() +
                         "); writing the output anyway");
        }
      }
      std::string sha = install_output(ws, state_mutex, p, g->bytes, o.fallback);
      o.status = "generated";
      lock_it(p, o, sha);
      char timing[64];
      std::snprintf(timing, sizeof timing, "%.2f s", seconds_since(t0));
      std::string how =
          o.backend + (o.attempts.back().from_cache ? " image from the cache" : std::string()) +
          (o.cost_usd > 0 ? ", " + format_usd(o.cost_usd) : std::string()) + ", " + timing;
      if (o.attempts.size() > 1)
        how += ", " + std::to_string(o.attempts.size()) + " attempts";
      if (o.fallback) {
        const AttemptRecord& last_failed = o.attempts[o.attempts.size() - 2];
        ws.log.warning(o.name + ": wrote a fallback stand-in; the last real attempt failed: " +
                       last_failed.error->message + (o.hint.empty() ? "" : " (" + o.hint + ")"));
        progress.finished(Outcome::Generated, "fallback " + o.name + " (" + how + ")", o.cost_usd,
                          true);
      } else {
        progress.finished(Outcome::Generated,
                          "generated " + o.name + " (" + p.reason + "; " + how + ")", o.cost_usd,
                          true);
      }
    } catch (const std::exception& e) {
      fail(Fault{KILN_ERROR_PERMANENT, ws.log.redact(e.what()), -1});
    }
  };
  auto worker = [&] {
    while (auto job = queue.next()) {
      struct Done {
        Scheduler& queue;
        Scheduler::Job job;
        ~Done() { queue.done(job); }
      } done{queue, *job};
      // The slot taken for the first attempt goes to it, or back when the asset never gets
      // that far (it cannot be read again, its request no longer matches the plan).
      SlotLease first_slot(queue, plan.groups[plan.entries[job->index].group].first,
                           job->holds_slot);
      auto made = asset_or_fail(job->index);
      if (!made)
        continue;
      PlannedAsset& p = *made;
      AssetOutcome o = outcome_of(p);
      auto t0 = std::chrono::steady_clock::now();
      progress.started(o.name);
      generate_one(p, o, first_slot, t0);
      emit(job->index, o);
    }
  };
  // Every backend's slots busy with remote jobs, and as many threads again as there are cores
  // for the CPU stages (decode, convert, validate, write) of the images already downloaded.
  size_t threads = std::min(
      to_generate.size(), queue.slots_in_use() + std::max(1u, std::thread::hardware_concurrency()));
  if (!to_generate.empty()) {
    std::vector<std::thread> pool;
    for (size_t t = 1; t < threads; ++t)
      pool.emplace_back(worker);
    worker();
    for (auto& t : pool)
      t.join();
  }

  for (size_t i : followers) {
    auto made = asset_or_fail(i);
    if (!made)
      continue;
    PlannedAsset& p = *made;
    AssetOutcome o = outcome_of(p);
    const AssetOutcome& leader = leaders.at(*p.same_as);
    try {
      auto bytes = leader.fallback
                       ? read_file(leader.output)
                       : ws.cache.get(p.fingerprint, p.spec.format, expected_in_cache(p));
      if (leader.status != "generated") {
        o.error = leader.error.value_or(Fault{});
        o.error->message =
            "makes the same image as " + leader.name + ", which failed: " + o.error->message;
      } else if (bytes) {
        o.fallback = leader.fallback;
        std::string sha = install_output(ws, state_mutex, p, *bytes, o.fallback);
        o.status = "cached";
        lock_it(p, o, sha);
        progress.finished(Outcome::Cached, "cached " + o.name + " (" + p.reason + ")");
        emit(i, o);
        continue;
      } else {
        o.error = Fault{KILN_ERROR_PERMANENT,
                        "the cache entry " + leader.name + " just wrote cannot be read", -1};
      }
    } catch (const std::exception& e) {
      o.error = Fault{KILN_ERROR_PERMANENT, e.what(), -1};
    }
    o.status = "failed";
    progress.finished(Outcome::Failed, o.name + ": " + o.error->message);
    emit(i, o);
  }
  progress.close();

  std::error_code ec; // the scratch folders' parent, once empty (a folder in use is kept)
  fs::remove(ws.state.dir() / "work", ec);
  summary.cache_rejected = ws.cache.rejected();
  summary.over_budget = guards.money.refused();
  summary.budget_needed_usd = guards.money.needed();
  summary.spent_before_usd = ws.state.spent_before();
  // An interrupted run's spend stays in the journal: the run that finishes its work counts it.
  if (ws.state.dirty())
    ws.state.save(summary.interrupted);
  summary.duration_s = seconds_since(start);
  return summary;
}

namespace {

using JsonWriter = rapidjson::PrettyWriter<rapidjson::StringBuffer>;

void write_string(JsonWriter& w, const std::string& v) {
  w.String(v.c_str(), rapidjson::SizeType(v.size()));
}

// `json` with `pad` after every line break, to sit inside an enclosing object.
std::string indented(const char* json, const char* pad) {
  std::string out;
  for (const char* c = json; *c; ++c) {
    out += *c;
    if (*c == '\n')
      out += pad;
  }
  return out;
}

// One entry of the report's "assets", indented to sit in it.
std::string asset_json(const AssetOutcome& o) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.SetIndent(' ', 2);
  auto str = [&](const std::string& v) {
    write_string(w, v);
  };
  auto str_or_null = [&](const std::optional<Fault>& set, const std::string& v) {
    if (set)
      str(v);
    else
      w.Null();
  };
  w.StartObject();
  w.Key("name");
  str(o.name);
  w.Key("status");
  str(o.status);
  w.Key("reason");
  str(o.reason);
  w.Key("output");
  str(o.output.string());
  w.Key("fingerprint");
  str(o.fingerprint);
  w.Key("backend");
  str(o.backend);
  w.Key("model");
  str(o.model);
  w.Key("fallback");
  w.Bool(o.fallback);
  w.Key("attempts");
  w.StartArray();
  for (auto& t : o.attempts) {
    w.StartObject();
    w.Key("strategy");
    str(t.strategy);
    w.Key("backend");
    str(t.backend);
    w.Key("model");
    str(t.model);
    w.Key("prompt");
    str(t.prompt);
    w.Key("seed");
    if (t.seed)
      w.Uint64(*t.seed);
    else
      w.Null();
    w.Key("waited_s");
    w.Double(t.waited_s);
    w.Key("remote_id");
    str(t.remote_id);
    w.Key("cost_usd");
    w.Double(t.cost_usd);
    w.Key("from_cache");
    w.Bool(t.from_cache);
    w.Key("error_category");
    str_or_null(t.error, t.error ? category_name(t.error->category) : "");
    w.Key("error");
    str_or_null(t.error, t.error ? t.error->message : "");
    w.Key("source");
    str_or_null(t.error, t.source);
    w.Key("decision");
    if (t.decision.empty())
      w.Null();
    else
      str(t.decision);
    w.Key("decision_reason");
    if (t.decision.empty())
      w.Null();
    else
      str(t.decision_reason);
    w.EndObject();
  }
  w.EndArray();
  w.Key("remote_id");
  str(o.remote_id);
  w.Key("cost_usd");
  w.Double(o.cost_usd);
  w.Key("predicted_cost_usd");
  w.Double(o.predicted_cost_usd);
  w.Key("prompt");
  str(o.final_prompt);
  w.Key("negative_prompt");
  str(o.final_negative_prompt);
  w.Key("error");
  str_or_null(o.error, o.error ? o.error->message : "");
  w.Key("error_category");
  str_or_null(o.error, o.error ? category_name(o.error->category) : "");
  w.Key("hint");
  if (o.hint.empty())
    w.Null();
  else
    str(o.hint);
  w.EndObject();
  return "    " + indented(buf.GetString(), "    ");
}

// The report's "summary" object, indented to sit in it.
std::string summary_json(const BuildSummary& s) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.SetIndent(' ', 2);
  w.StartObject();
  w.Key("total");
  w.Uint64(s.total);
  w.Key("generated");
  w.Int(s.generated);
  w.Key("cached");
  w.Int(s.cached);
  w.Key("up_to_date");
  w.Int(s.up_to_date);
  w.Key("failed");
  w.Int(s.failed);
  w.Key("skipped");
  w.Int(s.skipped);
  w.Key("fallback");
  w.Int(s.fallbacks());
  w.Key("cost_usd");
  w.Double(s.cost_usd);
  w.Key("predicted_cost_usd");
  w.Double(s.predicted_cost_usd);
  w.Key("duration_s");
  w.Double(s.duration_s);
  w.Key("cache_rejected");
  w.Uint(s.cache_rejected);
  w.Key("kept");
  w.Int(s.kept);
  w.Key("removed");
  w.Uint64(s.removed);
  w.EndObject();
  return indented(buf.GetString(), "  ");
}

} // namespace

ReportWriter::ReportWriter(fs::path path) : m_path(std::move(path)) {
  // Named as the atomic writes' temp files are: a killed run's spool in the output folder is
  // removed by the next build, and one elsewhere is replaced by the next run's. Made anew, never
  // opened through a link planted in its place.
  m_spool = m_path;
  m_spool += ".kiln-tmp.spool";
  std::error_code ec;
  if (!m_path.parent_path().empty())
    fs::create_directories(m_path.parent_path(), ec);
  fs::remove(m_spool, ec); // a link is removed, not followed
  int fd = ::open(m_spool.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  m_file = fd < 0 ? nullptr : ::fdopen(fd, "w+b");
  if (!m_file)
    throw Fatal("cannot write the report's spool '" + m_spool.string() +
                "': " + std::strerror(errno));
}

ReportWriter::~ReportWriter() {
  if (m_file)
    std::fclose(m_file);
  std::error_code ec;
  fs::remove(m_spool, ec);
}

void ReportWriter::add(size_t index, const AssetOutcome& outcome) {
  std::string entry = asset_json(outcome);
  if (m_entries.size() <= index)
    m_entries.resize(index + 1, {0, 0});
  m_entries[index] = {uint64_t(std::ftell(m_file)), uint32_t(entry.size())};
  std::fwrite(entry.data(), 1, entry.size(), m_file);
}

void ReportWriter::finish(const BuildSummary& summary) {
  std::fflush(m_file);
  AtomicFile out(m_path);
  out.write("{\n  \"summary\": " + summary_json(summary) + ",\n  \"assets\": [");
  std::string entry;
  bool first = true;
  for (auto [offset, length] : m_entries) {
    if (length == 0)
      continue; // an asset with no outcome (none today)
    entry.resize(length);
    if (std::fseek(m_file, long(offset), SEEK_SET) != 0 ||
        std::fread(entry.data(), 1, length, m_file) != length)
      throw Fatal("cannot read back the report's spool '" + m_spool.string() + "'");
    out.write(first ? "\n" : ",\n");
    out.write(entry);
    first = false;
  }
  out.write(first ? "]\n}\n" : "\n  ]\n}\n");
  out.commit();
}

} // namespace kiln::host
