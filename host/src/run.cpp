#include "run.hpp"

#include "cache.hpp"
#include "interrupt.hpp"

#include <thread>

namespace kiln::host {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The assets the progress line counts: those that may need work.
size_t work_of(const Plan& plan) {
  size_t work = 0;
  for (auto& e : plan.entries)
    work += (e.action != Action::UpToDate && e.action != Action::Kept) || e.prepare_failed;
  return work;
}

const Fault k_interrupted{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};

} // namespace

BuildSummary build(Workspace& ws, Plan& plan, const BuildOptions& options, OutcomeSink* sink) {
  return Run(ws, plan, options, sink).run();
}

Run::Run(Workspace& ws, Plan& plan, const BuildOptions& options, OutcomeSink* sink)
    : m_ws(ws), m_plan(plan), m_options(options), m_sink(sink),
      m_start(std::chrono::steady_clock::now()),
      m_progress(ws.log, work_of(plan), options.verbosity, options.progress), m_outputs(ws),
      m_admission(ws, options.jobs, options.budget_usd), m_limits(ws.manifest.retry_policy) {
  m_summary.total = plan.size();
  m_summary.predicted_cost_usd = plan.predicted_cost_usd;
  for (auto& e : plan.entries)
    if (e.same_as != PlanEntry::k_none)
      m_leaders.emplace(e.same_as, AssetOutcome{});
}

BuildSummary Run::run() {
  settle_known();
  generate_all();
  follow();
  return finish();
}

// An asset's outcome is counted, handed to the sink (the report) and dropped: memory follows
// the assets in flight, not the assets in the manifest.
void Run::emit(size_t index, AssetOutcome& o) {
  std::lock_guard lock(m_summary_mutex);
  m_summary.count(o);
  if (m_sink)
    m_sink->add(index, o);
  if (auto it = m_leaders.find(index); it != m_leaders.end())
    it->second = std::move(o);
}

AssetOutcome Run::outcome_of(const PlannedAsset& p) const {
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
}

// Asset i made again from its entry. When that fails (the manifest changed during the run), the
// asset fails and the others go on.
std::optional<PlannedAsset> Run::asset_or_fail(size_t i) {
  try {
    return m_plan.asset(m_ws, i);
  } catch (const std::exception& e) {
    AssetOutcome o;
    o.name = std::string(m_ws.manifest.name(m_plan.entries[i].asset));
    o.status = Status::Failed;
    o.error = Fault{KILN_ERROR_PERMANENT, e.what(), -1};
    m_progress.finished(Progress::Outcome::Failed, o.name + ": " + e.what());
    emit(i, o);
    return std::nullopt;
  }
}

void Run::settle_known() {
  for (size_t i = 0; i < m_plan.size(); ++i) {
    const PlanEntry& entry = m_plan.entries[i];
    if (entry.action == Action::Generate && !entry.prepare_failed)
      m_to_generate.push_back(i);
    else if (entry.action == Action::Cached && entry.same_as != PlanEntry::k_none)
      m_followers.push_back(i); // after its leader has generated the image
    else
      settle(i);
  }
}

// A change made here to what the asset needs goes into its entry: the asset is made again from
// the entry when its turn comes.
void Run::generate_instead(size_t i, std::string reason) {
  PlanEntry& entry = m_plan.entries[i];
  if (m_ws.locked) {
    // --locked buys nothing: the asset fails, and the run's exit code says why.
    AssetOutcome o;
    o.name = std::string(m_ws.manifest.name(entry.asset));
    o.status = Status::Failed;
    o.error = Fault{KILN_ERROR_PERMANENT, reason + ": it would need generating (--locked)", -1};
    m_progress.finished(Progress::Outcome::Failed, o.name + ": " + o.error->message);
    m_locked_refused.push_back(o.name);
    emit(i, o);
    return;
  }
  entry.action = Action::Generate;
  entry.reason = m_plan.reason_id(std::move(reason));
  m_to_generate.push_back(i);
}

// One asset that needs no backend, unless what is found says otherwise (a bad cache entry, an
// output the changed validators reject): then it joins the assets to generate.
void Run::settle(size_t i) {
  auto made = asset_or_fail(i);
  if (!made)
    return;
  PlannedAsset& p = *made;
  AssetOutcome o = outcome_of(p);
  if (p.prepare_error) {
    o.status = Status::Failed;
    o.error = p.prepare_error;
    m_progress.finished(Progress::Outcome::Failed, o.name + ": " + p.prepare_error->message);
  } else if (p.action == Action::Kept) {
    // An artist's file: left as it is, said, and not a failure.
    o.status = Status::Kept;
    m_ws.log.warning(o.name + ": " + p.reason);
  } else if (p.action == Action::UpToDate && p.recheck) {
    if (!recheck(p, o))
      return;
  } else if (p.action == Action::UpToDate) {
    o.status = Status::UpToDate;
    if (m_options.verbosity <= KILN_LOG_DEBUG)
      m_progress.note("up to date " + o.name);
    m_outputs.lock(p, o, {});
    share_output(p, o);
  } else if (p.action == Action::Remote ? !install_remote(p, o) : !install_cached(p, o)) {
    return;
  }
  emit(i, o);
}

// Known by its bytes only (a clone), or checked by other validators than now: checked again
// (free), its stamps recorded afresh, and made again only if it no longer passes. False: it is
// generated instead.
bool Run::recheck(PlannedAsset& p, AssetOutcome& o) {
  std::string sha;
  std::optional<Fault> rejected;
  auto bytes = m_ws.disk->read(p.output);
  if (bytes) {
    sha = sha256_hex(*bytes);
    rejected = judge(p, *bytes);
  } else {
    rejected = Fault{KILN_ERROR_PERMANENT, "cannot read it", -1};
  }
  if (rejected) {
    // Made again, not taken from the cache: the cache holds these same rejected bytes.
    m_ws.log.warning(o.name + ": the output no longer passes: " + rejected->message);
    m_progress.add_work(1);
    generate_instead(p.index, "rejected by the changed validators");
    return false;
  }
  // Art known by its bytes only (a clone with committed art): the output folder may be the
  // only copy of a paid image, and `ninja clean` removes byproducts. Kept in the cache too, so
  // a deleted output is restored, never paid for again.
  if (p.refresh && !m_ws.cache.has_content(sha))
    try {
      m_ws.cache.put(p.fingerprint, p.spec.format, *bytes);
    } catch (const std::exception& e) {
      m_ws.log.debug(o.name + ": not kept in the cache: " + e.what());
    }
  m_outputs.record(p, sha);
  o.status = Status::UpToDate;
  if (!p.refresh)
    o.reason = p.reason = "up to date; passes the changed validators";
  if (m_options.verbosity <= KILN_LOG_DEBUG)
    m_progress.note("up to date " + o.name + " (checked again)");
  m_outputs.lock(p, o, sha);
  return true;
}

// The asset's validators on `bytes` (free): an image from a cache was judged, if ever, by the
// validators of whoever made it, which may not be this asset's now.
std::optional<Fault> Run::judge(const PlannedAsset& p, const std::string& bytes) {
  std::string source;
  WorkDir scratch(m_ws.state.dir() / "work" / ("check-" + p.fingerprint));
  return run_validators(m_ws, p.spec, bytes, scratch.path, source);
}

// The asset's image from the cache, installed. The bytes kiln.lock records for this very request
// come first, when the cache holds them: a cache entry pointing elsewhere (another run's image
// of the same request, or a tampered one) does not replace the recorded art. False: the entry
// is bad, and the asset is generated instead.
bool Run::install_cached(PlannedAsset& p, AssetOutcome& o) {
  std::string why;
  std::optional<std::string> bytes;
  if (auto locked = m_ws.lock ? m_ws.lock->find(p.spec.name) : std::nullopt;
      locked && locked->fingerprint == p.fingerprint)
    bytes = m_ws.cache.get_content(locked->sha256, expected_in_cache(p));
  if (bytes)
    try {
      m_ws.cache.put(p.fingerprint, p.spec.format, *bytes); // the entry points at them again
    } catch (const std::exception&) {
    }
  else
    bytes = m_ws.cache.get(p.fingerprint, p.spec.format, expected_in_cache(p), &why);
  if (!bytes || structural_problem(*bytes)) {
    m_ws.log.warning("the cache entry of " + o.name + " is bad (" +
                     (why.empty() ? std::string("truncated") : why) +
                     "): removed, not installed; making the image again");
    generate_instead(p.index, p.reason + " (bad cache entry)");
    return false;
  }
  if (auto rejected = judge(p, *bytes)) {
    m_ws.log.warning(o.name + ": the cached image does not pass: " + rejected->message +
                     "; not installed");
    generate_instead(p.index, p.reason + " (the cached image does not pass the validators)");
    return false;
  }
  try {
    std::string sha = m_outputs.install(p, *bytes);
    o.status = Status::Cached;
    o.origin = Origin::Cached;
    o.saved_usd = p.saved_usd;
    m_progress.finished(Progress::Outcome::Cached, "cached " + o.name + " (" + p.reason + ")");
    m_outputs.lock(p, o, sha);
    share(p, o, *bytes);
  } catch (const std::exception& e) {
    o.status = Status::Failed;
    o.error = Fault{KILN_ERROR_PERMANENT, e.what(), -1};
    m_progress.finished(Progress::Outcome::Failed, o.name + ": " + e.what());
  }
  return true;
}

// The asset's image from the team's remote cache: verified (its digest, format and size, and
// the bytes kiln.lock records for this very request), kept in the local cache, installed.
// False: it cannot be had or is bad, and the asset is generated instead.
bool Run::install_remote(PlannedAsset& p, AssetOutcome& o) {
  CacheExpect expect = expected_in_cache(p);
  if (auto locked = m_ws.lock ? m_ws.lock->find(p.spec.name) : std::nullopt;
      locked && locked->fingerprint == p.fingerprint)
    expect.sha256 = locked->sha256;
  std::string why = "the remote cache no longer has it";
  std::optional<std::string> bytes;
  auto record = m_ws.remote->find(p.fingerprint);
  // The bytes kiln.lock names for this request come first, whatever the record says now.
  std::string want = !expect.sha256.empty() ? expect.sha256 : record ? record->sha256 : "";
  if (!want.empty())
    bytes = m_ws.remote->fetch(p.fingerprint, want, expect, &why);
  if (record && record->sha256 != want)
    record.reset(); // its provenance is of another image
  if (auto rejected = bytes ? judge(p, *bytes) : std::nullopt) {
    why = "its image does not pass: " + rejected->message;
    bytes.reset();
  }
  if (!bytes) {
    m_ws.log.warning(o.name + ": not from the remote cache: " + why);
    generate_instead(p.index, p.reason + " (" + why + ")");
    return false;
  }
  try {
    m_ws.cache.put(p.fingerprint, p.spec.format, *bytes);
  } catch (const std::exception& e) {
    m_ws.log.warning(o.name + ": cannot keep the remote cache's image locally: " + e.what());
  }
  m_ws.cache.mark_in_remote(m_ws.remote->id(), p.fingerprint);
  try {
    std::string sha = m_outputs.install(p, *bytes);
    o.status = Status::Cached;
    o.origin = Origin::Remote;
    o.saved_usd = p.saved_usd;
    m_progress.finished(Progress::Outcome::Cached, "remote " + o.name + " (" + p.reason + ")");
    m_outputs.lock(p, o, sha, record ? &*record : nullptr);
  } catch (const std::exception& e) {
    o.status = Status::Failed;
    o.error = Fault{KILN_ERROR_PERMANENT, e.what(), -1};
    m_progress.finished(Progress::Outcome::Failed, o.name + ": " + e.what());
  }
  return true;
}

// A paid image the team's remote cache may lack (made here, or made before the remote was
// reachable): uploaded, CAS entry then record, and marked so later builds do not ask again.
// A remote that fails costs only the sharing: it is counted, and the next build tries again.
void Run::share(const PlannedAsset& p, const AssetOutcome& o, std::string_view bytes) {
  RemoteCache* remote = m_ws.remote;
  const std::string& backend = o.backend.empty() ? p.request.backend : o.backend;
  if (!remote || remote->read_only() || o.fallback || !paid_backend(m_ws, backend) ||
      m_ws.cache.in_remote(remote->id(), p.fingerprint))
    return;
  RemoteRecord r;
  r.sha256 = sha256_hex(bytes);
  r.size = bytes.size();
  r.format = p.spec.format;
  r.width = p.spec.width;
  r.height = p.spec.height;
  const PluginInstance* instance = find_backend(m_ws, backend);
  r.backend = backend + (instance ? "@" + instance->plugin().version : std::string());
  r.model = o.model.empty() ? p.request.model : o.model;
  r.seed = o.attempts.empty() ? p.request.seed : o.attempts.back().seed;
  r.cost_usd = o.cost_usd;
  if (auto locked = m_ws.lock ? m_ws.lock->find(p.spec.name) : std::nullopt;
      locked && locked->fingerprint == p.fingerprint && locked->sha256 == r.sha256) {
    r.cost_usd = locked->cost_usd;
    r.seed = locked->seed;
  }
  if (remote->store(p.fingerprint, bytes, r))
    m_ws.cache.mark_in_remote(remote->id(), p.fingerprint);
}

// An up-to-date output the remote cache may lack: its bytes shared.
void Run::share_output(const PlannedAsset& p, const AssetOutcome& o) {
  RemoteCache* remote = m_ws.remote;
  if (!remote || remote->read_only() || !paid_backend(m_ws, p.request.backend) ||
      m_ws.cache.in_remote(remote->id(), p.fingerprint))
    return;
  if (auto bytes = m_ws.disk->read(p.output))
    share(p, o, *bytes);
}

void Run::generate_all() {
  Scheduler& queue = m_admission.scheduler();
  for (size_t i : m_to_generate) {
    const auto& [backend, model] = m_plan.groups[m_plan.entries[i].group];
    queue.add(i, backend, model);
  }
  if (m_to_generate.empty())
    return;
  // Every backend's slots busy with remote jobs, and as many threads again as there are cores
  // for the CPU stages (decode, convert, validate, write) of the images already downloaded.
  size_t threads =
      std::min(m_to_generate.size(),
               queue.slots_in_use() + std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t)
    pool.emplace_back([this] { work(); });
  work();
  for (auto& t : pool)
    t.join();
}

// One worker: assets from the queue, start to end, until none is left.
void Run::work() {
  Scheduler& queue = m_admission.scheduler();
  while (auto job = queue.next()) {
    struct Done {
      Scheduler& queue;
      Scheduler::Job job;
      ~Done() { queue.done(job); }
    } done{queue, *job};
    // The slot taken for the first attempt goes to it, or back when the asset never gets that
    // far (it cannot be read again, its request no longer matches the plan).
    SlotLease first_slot(queue, m_plan.groups[m_plan.entries[job->index].group].first,
                         job->holds_slot);
    auto made = asset_or_fail(job->index);
    if (!made)
      continue;
    AssetOutcome o = outcome_of(*made);
    auto t0 = std::chrono::steady_clock::now();
    m_progress.started(o.name);
    generate_one(*made, o, first_slot, t0);
    emit(job->index, o);
  }
}

// One asset of the queue, start to end: its outcome is filled in `o`.
void Run::generate_one(PlannedAsset& p, AssetOutcome& o, SlotLease& first_slot, TimePoint t0) {
  auto fail = [&](Fault f) {
    o.status = Status::Failed;
    o.error = std::move(f);
    m_progress.finished(Progress::Outcome::Failed, o.name + ": " + o.error->message, o.cost_usd,
                        true);
  };
  if (p.prepare_error)
    return fail(*p.prepare_error);
  try {
    auto g = make(p, o, first_slot.hand_over());
    if (!g && o.attempts.empty()) {
      o.status = Status::Skipped;
      o.error = g.error();
      o.error->message = "not started: " + g.error().message;
      m_progress.finished(Progress::Outcome::Skipped,
                          "skipped " + o.name + " (" + g.error().message + ")", 0, true);
    } else if (!g) {
      fail(g.error());
    } else {
      write_generated(p, o, *g, t0);
    }
  } catch (const std::exception& e) {
    fail(Fault{KILN_ERROR_PERMANENT, m_ws.log.redact(e.what()), -1});
  }
}

// A generated image kept: the cache first, so that once it holds the image a crash loses
// nothing that was paid for (a fallback stand-in is not the image asked for, so it is never
// cached; a cache that cannot be written costs that safety, not the image), then the output,
// kiln.lock and the progress line.
void Run::write_generated(const PlannedAsset& p, AssetOutcome& o, const Generated& g,
                          TimePoint t0) {
  if (!o.fallback) {
    try {
      m_ws.cache.put(p.fingerprint, p.spec.format, g.bytes);
    } catch (const std::exception& e) {
      m_ws.log.warning(o.name + ": cannot keep the image in the cache (" + e.what() +
                       "); writing the output anyway");
    }
  }
  std::string sha = m_outputs.install(p, g.bytes, o.fallback);
  o.status = Status::Generated;
  o.origin = Origin::Generated;
  m_outputs.lock(p, o, sha);
  share(p, o, g.bytes);
  char timing[64];
  std::snprintf(timing, sizeof timing, "%.2f s", seconds_since(t0));
  std::string how =
      o.backend + (o.attempts.back().from_cache ? " image from the cache" : std::string()) +
      (o.cost_usd > 0 ? ", " + format_usd(o.cost_usd) : std::string()) + ", " + timing;
  if (o.attempts.size() > 1)
    how += ", " + std::to_string(o.attempts.size()) + " attempts";
  if (o.fallback) {
    const AttemptRecord& last_failed = o.attempts[o.attempts.size() - 2];
    m_ws.log.warning(o.name + ": wrote a fallback stand-in; the last real attempt failed: " +
                     last_failed.error->message + (o.hint.empty() ? "" : " (" + o.hint + ")"));
    m_progress.finished(Progress::Outcome::Generated, "fallback " + o.name + " (" + how + ")",
                        o.cost_usd, true);
  } else {
    m_progress.finished(Progress::Outcome::Generated,
                        "generated " + o.name + " (" + p.reason + "; " + how + ")", o.cost_usd,
                        true);
  }
}

// Makes one asset: the planned request, then whatever its chain decides after each failure,
// until an attempt succeeds or the chain stops. Every attempt goes into `out.attempts`; none
// when the asset never started. `slot_held`: the scheduler took a job slot of the asset's
// backend for its first attempt.
Result<Generated> Run::make(const PlannedAsset& p, AssetOutcome& out, bool slot_held) {
  Chain chain(m_ws, m_limits, m_admission, p, out);
  for (uint32_t attempt = 1;; ++attempt) {
    const Step& step = chain.step();
    AttemptRecord& rec = out.attempts.emplace_back();
    rec.strategy = step.strategy;
    rec.backend = step.request.backend;
    rec.model = step.request.model;
    rec.prompt = step.request.prompt;
    rec.seed = step.request.seed;
    rec.waited_s = double(step.delay_ms) / 1000.0;
    Fault fault;
    if (auto done = this->attempt(chain, p, out, attempt, slot_held && attempt == 1, fault))
      return std::move(*done);
    if (!chain.retry(fault, out.attempts.back(), attempt))
      return fault;
  }
}

// One attempt, from its job slot to its result: the image, a refusal (nothing was sent: on the
// first attempt the asset did not start and its record is dropped; on a later one it is not
// retried), or nullopt with `fault`, for the chain to decide on. The slot is given back before
// the chain waits for a retry.
std::optional<Result<Generated>> Run::attempt(Chain& chain, const PlannedAsset& p,
                                              AssetOutcome& out, uint32_t attempt, bool slot_held,
                                              Fault& fault) {
  const GenerationRequest req = chain.step().request;
  AttemptRecord& rec = out.attempts.back();
  auto drop = [&](Fault why) -> Result<Generated> {
    out.attempts.pop_back();
    return why;
  };
  auto refuse = [&](Fault why) -> Result<Generated> {
    if (attempt == 1)
      return drop(std::move(why));
    why.message = "not retried: " + why.message;
    rec.error = why;
    return why;
  };
  // The job slot first: whatever happened while this asset waited for it (its backend stopped,
  // its model cooled down) is seen before it sends anything.
  SlotLease slot(m_admission.scheduler(), req.backend, slot_held);
  if (!slot.acquire())
    return drop(k_interrupted);
  if (auto why = m_admission.stopped(req.backend))
    return refuse(*why);
  if (auto cooling = chain.cooling(req)) {
    fault = *cooling;
    rec.source = "kiln";
    return std::nullopt;
  }
  std::string fingerprint = fingerprint_of(fingerprint_fields(req));
  // Nothing to pay when the model's image for this request is in the cache already.
  auto source = source_key(m_ws, req);
  bool free = source && !p.force && m_ws.cache.contains(*source, k_source_format);
  auto ticket = m_admission.admit(m_ws, p, req, fingerprint, free, rec);
  if (!ticket && ticket.error().category == KILN_ERROR_INTERRUPTED)
    return drop(ticket.error());
  if (!ticket) {
    rec.source = "kiln";
    return refuse(ticket.error());
  }
  auto g = attempt_image(m_ws, p, req, fingerprint, attempt, chain.resume(), rec, slot);
  m_admission.paced(req, *ticket, g, rec);
  out.cost_usd += rec.cost_usd;
  if (!rec.remote_id.empty())
    out.remote_id = rec.remote_id;
  if (g) {
    chain.succeeded(req);
    out.fallback = chain.step().fallback;
    out.backend = req.backend;
    out.model = req.model;
    out.final_prompt = req.prompt;
    out.final_negative_prompt = req.negative_prompt;
    return g;
  }
  fault = g.error();
  chain.failed(req, fault, rec);
  return std::nullopt;
}

void Run::follow() {
  for (size_t i : m_followers)
    follow(i);
}

// An asset that makes the same image as its leader: the leader's bytes, from the cache (or its
// output, for a stand-in, which is never cached).
void Run::follow(size_t i) {
  auto made = asset_or_fail(i);
  if (!made)
    return;
  PlannedAsset& p = *made;
  AssetOutcome o = outcome_of(p);
  const AssetOutcome& leader = m_leaders.at(*p.same_as);
  try {
    auto bytes = leader.fallback
                     ? m_ws.disk->read(leader.output)
                     : m_ws.cache.get(p.fingerprint, p.spec.format, expected_in_cache(p));
    if (leader.status != Status::Generated) {
      o.error = leader.error.value_or(Fault{});
      o.error->message =
          "makes the same image as " + leader.name + ", which failed: " + o.error->message;
    } else if (bytes) {
      o.fallback = leader.fallback;
      std::string sha = m_outputs.install(p, *bytes, o.fallback);
      o.status = Status::Cached;
      o.origin = Origin::Cached;
      o.saved_usd = p.saved_usd;
      m_outputs.lock(p, o, sha);
      m_progress.finished(Progress::Outcome::Cached, "cached " + o.name + " (" + p.reason + ")");
      emit(i, o);
      return;
    } else {
      o.error = Fault{KILN_ERROR_PERMANENT,
                      "the cache entry " + leader.name + " just wrote cannot be read", -1};
    }
  } catch (const std::exception& e) {
    o.error = Fault{KILN_ERROR_PERMANENT, e.what(), -1};
  }
  o.status = Status::Failed;
  m_progress.finished(Progress::Outcome::Failed, o.name + ": " + o.error->message);
  emit(i, o);
}

BuildSummary Run::finish() {
  m_progress.close();
  std::error_code ec; // the scratch folders' parent, once empty (a folder in use is kept)
  fs::remove(m_ws.state.dir() / "work", ec);
  m_summary.cache_rejected = m_ws.cache.rejected();
  m_summary.over_budget = m_admission.money().refused();
  m_summary.budget_needed_usd = m_admission.money().needed();
  m_summary.spent_before_usd = m_ws.state.spent_before();
  if (m_ws.remote)
    m_summary.remote_counts = m_ws.remote->counts();
  m_summary.locked_refused = m_locked_refused;
  // An interrupted run's spend stays in the journal: the run that finishes its work counts it.
  if (m_ws.state.dirty())
    m_ws.state.save(m_summary.interrupted);
  m_summary.duration_s = seconds_since(m_start);
  return m_summary;
}

} // namespace kiln::host
