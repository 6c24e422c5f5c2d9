#include "plan.hpp"

#include "fatal.hpp"
#include "image.hpp"
#include "request.hpp"

#include <algorithm>
#include <atomic>
#include <fnmatch.h>
#include <map>
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
  case Action::Remote:
    return "remote";
  }
  return "generate";
}

namespace {

bool selected(const std::string& name, const std::vector<std::string>& only) {
  if (only.empty())
    return true;
  for (auto& pattern : only)
    if (pattern == name || fnmatch(pattern.c_str(), name.c_str(), 0) == 0)
      return true;
  return false;
}

// Every --only pattern must match some asset: a typo would otherwise build nothing, silently.
void check_only_patterns(const Manifest& m, const std::vector<std::string>& only) {
  for (auto& pattern : only) {
    bool any = false;
    for (size_t i = 0; i < m.size(); ++i)
      any = any || selected(std::string(m.name(i)), {pattern});
    if (any)
      continue;
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

// What the record and the output folder say of one asset.
struct Seen {
  std::optional<StateEntry> rec;   // the state's entry
  std::optional<LockEntry> locked; // kiln.lock's
  std::optional<FileStamp> stamp;  // the output's
  bool current = false;            // the state's entry is for this fingerprint
  bool unchanged = false;          // ... and the file has the stamps it recorded
  OnDisk on_disk = OnDisk::Missing;
};

// What the file at an asset's output is, by its bytes (its stamps did not say): this
// fingerprint's output (kiln.lock or the state recorded these very bytes for it), another image
// Kiln made (a stale output: the state or the lock knew these bytes, or the cache holds them),
// or an artist's (bytes Kiln never made).
OnDisk judge_file(const Workspace& ws, const PlannedAsset& p, const Seen& seen) {
  auto bytes = ws.disk->read(p.output);
  if (!bytes)
    return OnDisk::Missing;
  std::string sha = sha256_hex(*bytes);
  std::optional<OutputRecord> record = seen.rec ? ws.state.record(*seen.rec) : std::nullopt;
  const auto& locked = seen.locked;
  if ((locked && locked->fingerprint == p.fingerprint && locked->sha256 == sha) ||
      (seen.current && record && record->sha256 == sha))
    return OnDisk::Current;
  auto stamp = ws.disk->stat(p.output);
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

Seen look(Workspace& ws, const PlannedAsset& p, bool force) {
  Seen s;
  s.rec = ws.state.find(p.spec.name);
  s.stamp = ws.disk->stat(p.output);
  s.current = s.rec && s.rec->fingerprint == digest_of_hex(p.fingerprint).value();
  s.unchanged = s.current && s.stamp && s.stamp->size == s.rec->size &&
                s.stamp->mtime_ns == s.rec->mtime_ns &&
                ws.state.same_output(*s.rec, p.spec.relative_output());
  s.locked = ws.lock ? ws.lock->find(p.spec.name) : std::nullopt;
  // When the stamps do not say, the bytes do: the file is this fingerprint's output (a
  // clone, a touch), another image Kiln made (stale), or an artist's.
  if (s.stamp && (!s.unchanged || force))
    s.on_disk = judge_file(ws, p, s);
  return s;
}

// What changed since the recorded request, in words: "prompt, seed".
std::string changes_since(Workspace& ws, const PlannedAsset& p, const Seen& seen) {
  if (seen.rec)
    if (auto before = ws.state.record(*seen.rec)) {
      auto list = describe_changes(before->fields, p.fields);
      return list.empty() ? std::string("fingerprint changed") : join(list, ", ");
    }
  return std::string("fingerprint changed");
}

// The asset's action and the reason for it, from what is seen of it.
void decide(Workspace& ws, PlannedAsset& p, const Seen& seen, bool force) {
  const std::string& name = p.spec.name;
  OnDisk on_disk = seen.on_disk;
  const auto& locked = seen.locked;
  bool known = seen.rec || locked;
  bool same_request = seen.current || (locked && locked->fingerprint == p.fingerprint);
  p.fallback_on_disk = seen.unchanged && seen.rec->fallback;
  if (p.prepare_error) {
    p.reason = "cannot prepare the request";
  } else if (force) {
    p.reason = "forced";
    // An edit, adopted or not, is saved before it is replaced.
    p.save_edit = on_disk == OnDisk::Edited || on_disk == OnDisk::Broken ||
                  (on_disk == OnDisk::Current && locked && locked->adopted);
  } else if (p.fallback_on_disk) {
    p.reason = "the output is a fallback stand-in";
  } else if (seen.unchanged || on_disk == OnDisk::Current) {
    p.action = Action::UpToDate;
    p.refresh = !seen.unchanged; // the bytes are right, the recorded stamps are not
    p.recheck = !seen.unchanged || ws.state.checks(*seen.rec) != p.checks;
    p.reason = seen.unchanged
                   ? (p.recheck ? "up to date; validators changed, checking again" : "up to date")
                   : "up to date by content";
  } else if (on_disk == OnDisk::Edited && (same_request || !known)) {
    p.action = Action::Kept;
    p.reason = known ? "edited by hand: kept (`kiln adopt " + name +
                           "` records it; `kiln build --force --only " + name +
                           "` replaces it, saving it first)"
                     : "a file kiln did not make: kept (`kiln adopt " + name +
                           "` records it as the asset's)";
  } else if (on_disk == OnDisk::Edited) {
    p.reason = changes_since(ws, p, seen) + "; the file there was edited by hand: saved first";
    p.save_edit = true;
  } else if (on_disk == OnDisk::Broken) {
    // Kept aside all the same (a half-saved edit is still someone's work), then replaced.
    p.reason = "output is not a readable " + std::to_string(p.spec.width) + "x" +
               std::to_string(p.spec.height) + " " + p.spec.format + " image";
    p.save_edit = true;
  } else if (same_request) {
    p.reason = seen.stamp ? "output modified" : "output missing";
  } else {
    p.reason = known ? changes_since(ws, p, seen) : seen.stamp ? "untracked output" : "new";
  }
}

// An asset the remote cache may hold: asked after every asset is planned, many at once (one
// round trip each, so a fresh clone of a big project does not wait for them one by one).
struct RemoteQuestion {
  size_t entry = 0; // in Plan::entries
  std::string fingerprint, format;
  uint32_t width = 0, height = 0;
  std::string locked_sha;   // the bytes kiln.lock names for this very request, if any
  std::string miss_reason;  // what the reason says when the remote has it not
  double predicted_usd = 0; // what generating it would cost: saved when it has it
  bool yes = false;
};

// Whether the remote cache would give the asset an image: the bytes kiln.lock names for this
// very request when it does (whatever record a later upload left), else what its record points
// at, of the asset's declared format and size.
bool remote_has(RemoteCache& remote, const RemoteQuestion& q) {
  auto record = remote.find(q.fingerprint);
  if (!q.locked_sha.empty())
    return (record && record->sha256 == q.locked_sha) || remote.has_content(q.locked_sha);
  return record && record->format == q.format && record->width == q.width &&
         record->height == q.height;
}

// Asks the remote cache every question, up to 8 at once, then settles each asset's entry.
void answer_remote(Workspace& ws, Plan& plan, std::vector<RemoteQuestion>& questions) {
  std::atomic<size_t> next{0};
  auto ask = [&] {
    for (size_t i; (i = next++) < questions.size();)
      questions[i].yes = remote_has(*ws.remote, questions[i]);
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < std::min<size_t>(8, questions.size()); ++t)
    pool.emplace_back(ask);
  ask();
  for (auto& t : pool)
    t.join();
  for (auto& q : questions) {
    PlanEntry& e = plan.entries[q.entry];
    std::string reason = plan.reasons[e.reason];
    if (q.yes) {
      e.action = Action::Remote;
      e.saved_usd = float(q.predicted_usd);
      e.predicted_cost_usd = 0;
      reason += "; in the remote cache";
    } else {
      reason += q.miss_reason;
    }
    e.reason = plan.reason_id(std::move(reason));
  }
}

// An asset to generate may cost nothing: its image is in the cache (or, asked later, in the
// remote cache: then `question` is filled and true returned), or the model's image is and only
// the postprocessing is done again. Else its cost is predicted, and a killed run's job said.
bool price(Workspace& ws, PlannedAsset& p, bool force, RemoteQuestion& question) {
  if (p.action != Action::Generate || p.prepare_error)
    return false;
  double predicted = predict_cost(ws, p.spec, p.request, p.fingerprint);
  if (!force && ws.cache.contains(p.fingerprint, p.spec.format)) {
    p.action = Action::Cached;
    p.reason += "; in cache";
    p.saved_usd = predicted;
    return false;
  }
  std::string miss_reason;
  auto source = force ? std::nullopt : source_key(ws, p.request);
  if (source && ws.cache.contains(*source, k_source_format)) {
    miss_reason = p.spec.postprocess.empty()
                      ? "; the model's image is in the cache, made from it again"
                      : "; the model's image is in the cache, only the postprocessing is done "
                        "again";
  } else {
    p.predicted_cost_usd = predicted;
    if (auto left = ws.state.pending(p.fingerprint, p.request.backend))
      miss_reason = left->job.empty() ? "; a killed run may have created its job: looked for first"
                                      : "; re-attaches to " + left->job + ", left by a killed run";
  }
  // Only paid images are shared.
  if (!force && ws.remote && paid_backend(ws, p.request.backend)) {
    question.fingerprint = p.fingerprint;
    question.format = p.spec.format;
    question.width = p.spec.width;
    question.height = p.spec.height;
    if (auto locked = ws.lock ? ws.lock->find(p.spec.name) : std::nullopt;
        locked && locked->fingerprint == p.fingerprint)
      question.locked_sha = locked->sha256;
    question.miss_reason = std::move(miss_reason);
    question.predicted_usd = predicted;
    return true;
  }
  p.reason += miss_reason;
  return false;
}

using GroupIds = std::map<std::pair<std::string, std::string>, uint16_t>;

// The asset reduced to its PlanEntry.
void add_entry(Plan& plan, GroupIds& group_ids, size_t asset, PlannedAsset& p) {
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
  e.saved_usd = float(p.saved_usd);
  e.fingerprint = digest_of_hex(p.fingerprint).value();
  e.reason = plan.reason_id(std::move(p.reason));
}

// Assets that make the same image (same fingerprint): the first generates it, the others take
// its bytes instead of paying again.
void share_same_images(Plan& plan, const Manifest& m) {
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
    e.saved_usd = float(e.predicted_cost_usd);
    e.predicted_cost_usd = 0;
    e.reason = plan.reason_id(plan.reasons[e.reason] + "; same image as " +
                              std::string(m.name(plan.entries[e.same_as].asset)));
  }
}

} // namespace

Plan make_plan(Workspace& ws, const PlanOptions& options) {
  const Manifest& m = ws.manifest;
  check_only_patterns(m, options.only);
  // Each asset is prepared, decided and reduced to its PlanEntry before the next: planning
  // holds one asset's request at a time.
  Plan plan;
  plan.force = options.force;
  plan.entries.reserve(options.only.empty() ? m.size() : 0);
  std::map<std::string, std::string> checks_memo; // validator ids -> checks_of()
  GroupIds group_ids;
  std::vector<RemoteQuestion> questions;
  for (size_t asset = 0; asset < m.size(); ++asset) {
    if (!options.only.empty() && !selected(std::string(m.name(asset)), options.only))
      continue;
    PlannedAsset p = prepare(ws, asset, &checks_memo);
    decide(ws, p, look(ws, p, options.force), options.force);
    RemoteQuestion question;
    bool ask = price(ws, p, options.force, question);
    add_entry(plan, group_ids, asset, p);
    if (ask) {
      question.entry = plan.entries.size() - 1;
      questions.push_back(std::move(question));
    }
  }
  answer_remote(ws, plan, questions);
  share_same_images(plan, m);
  for (auto& e : plan.entries)
    plan.predicted_cost_usd += e.predicted_cost_usd;
  return plan;
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
  p.saved_usd = e.saved_usd;
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
                    "its enhancers (" + join(p.spec.enhancers, ", ") +
                        ") gave another request than when the run was planned (an enhancer "
                        "must give the same prompt for the same asset: one of these does not)",
                    -1};
  return p;
}

} // namespace kiln::host
