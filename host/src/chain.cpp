#include "chain.hpp"

#include "abi_view.hpp"
#include "interrupt.hpp"
#include "plugin_guard.hpp"
#include "request.hpp"

#include <algorithm>

namespace kiln::host {

namespace {

std::string breaker_key(const GenerationRequest& req) {
  return req.backend + " " + req.model;
}

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
  PluginCall call(backend->plugin().path.string(), backend->plugin().id, "paints");
  return paints(backend->handle(), &q);
}

// The properties every image of the asset gets from its postprocessors.
uint32_t made_by_postprocessors(const Workspace& ws, const AssetSpec& spec) {
  uint32_t bits = 0;
  for (auto& id : spec.postprocess)
    bits |= ws.plugins.postprocessors.at(id)->plugin().provides();
  return bits;
}

// The postprocessor that makes property `bit`: a built-in one first, then others, by id.
const Plugin* maker_of(const PluginRegistry& registry, uint32_t bit) {
  const Plugin* best = nullptr;
  for (const Plugin* p : registry.all())
    if (p->kind == KILN_KIND_POSTPROCESSOR && (p->provides() & bit)) {
      bool builtin = p->path.parent_path() == PluginRegistry::builtin_dir();
      bool best_builtin = best && best->path.parent_path() == PluginRegistry::builtin_dir();
      if (!best || (builtin && !best_builtin))
        best = p;
    }
  return best;
}

std::string quoted_list(const std::vector<std::string>& list) {
  std::string out;
  for (auto& id : list)
    out += (out.empty() ? "\"" : ", \"") + id + "\"";
  return out;
}

} // namespace

ChainLimits::ChainLimits(const RetryPolicy& policy)
    : breakers(policy.breaker_failures,
               std::chrono::duration_cast<Clock::duration>(
                   std::chrono::duration<double>(policy.breaker_cooldown_s))),
      budget(policy.budget_ratio, policy.budget_min) {}

Chain::Chain(Workspace& ws, ChainLimits& limits, Admission& admission, const PlannedAsset& p,
             AssetOutcome& out)
    : m_ws(ws), m_limits(limits), m_admission(admission), m_p(p),
      m_out(out), m_step{"initial", p.request, 0, false} {
  if (backend_can(ws, p.request.backend, KILN_BACKEND_CAN_RESUME))
    if (auto left = ws.state.pending(p.fingerprint, p.request.backend)) {
      m_resume = Resume{left->job, left->lost_create};
      ws.log.warning(
          p.spec.name + ": a killed run left " +
          (left->job.empty() ? std::string("a create without an answer") : "job " + left->job) +
          "; re-attaching before creating");
    }
  m_limits.budget.first_attempt();
}

std::optional<Fault> Chain::cooling(const GenerationRequest& req) {
  double left = m_limits.breakers.open_for(breaker_key(req));
  if (left <= 0)
    return std::nullopt;
  char why[160];
  std::snprintf(why, sizeof why, "%s is cooling down after failing repeatedly (%.0f s left)",
                req.model.empty() ? req.backend.c_str() : req.model.c_str(), left);
  return Fault{KILN_ERROR_RETRYABLE, why, -1};
}

void Chain::succeeded(const GenerationRequest& req) {
  m_limits.breakers.success(breaker_key(req));
}

void Chain::failed(const GenerationRequest& req, const Fault& fault, const AttemptRecord& rec) {
  // A throttled request (the server said when to come back) is not a failing model.
  if (rec.source == req.backend && fault.category == KILN_ERROR_RETRYABLE &&
      fault.retry_after_ms < 0 && m_limits.breakers.failure(breaker_key(req)))
    m_ws.log.warning(req.model + " on " + req.backend + " failed " +
                     std::to_string(m_ws.manifest.retry_policy.breaker_failures) +
                     " times in a row: cooling it down for every asset");
  if (fault.category == KILN_ERROR_NEEDS_PERSON)
    m_admission.stop_backend(
        req.backend,
        Fault{KILN_ERROR_NEEDS_PERSON,
              req.backend + " stopped creating: " + m_p.spec.name + " needs a person", -1});
}

bool Chain::retry(Fault& fault, AttemptRecord& rec, uint32_t attempt) {
  const GenerationRequest req = m_step.request;
  rec.error = fault;
  ++m_counters.same_request_failures;
  m_counters.category_streak =
      fault.category == m_counters.last_category ? m_counters.category_streak + 1 : 1;
  m_counters.last_category = fault.category;
  // What the model cannot paint and the asset does not make: said even when the chain goes on
  // to a stand-in, which is no fix.
  if (m_out.hint.empty())
    if (auto lacking = unfixable(req, fault))
      m_out.hint = fix_hint(lacking->missing);
  auto stop = [&](std::string why) {
    rec.decision = "stop";
    rec.decision_reason = std::move(why);
    return false;
  };
  if (download_again(fault, rec, req))
    return true;
  if (auto why = must_stop(fault, attempt))
    return stop(*why);
  std::vector<std::string> passed;
  auto next = next_step(req, fault, rec.source, attempt, passed);
  if (!next)
    return stop(no_step(fault, req, passed));
  if (take(std::move(*next), rec, fault, attempt, passed))
    return true;
  fault = Fault{KILN_ERROR_INTERRUPTED, "interrupted while waiting to retry: " + fault.message, -1};
  return false;
}

// A job that delivered a file Kiln cannot use is downloaded again once, for free (the backend
// re-attaches to it). After that an unsupported one (a GIF, an HTML page, a decompression bomb)
// fails for good: a new prediction of the same request would deliver the same kind of file. A
// corrupt one goes to the strategies, which may buy a new prediction. True: download again.
bool Chain::download_again(Fault& fault, AttemptRecord& rec, const GenerationRequest& req) {
  if (fault.download.empty())
    return false;
  bool can_resume = backend_can(m_ws, req.backend, KILN_BACKEND_CAN_RESUME);
  if (!m_downloaded_again && can_resume && !rec.remote_id.empty()) {
    m_downloaded_again = true;
    rec.decision = "retry";
    rec.decision_reason = "downloading job " + rec.remote_id + " again (free)";
    m_ws.log.warning(m_p.spec.name + ": " + fault.message + "; downloading it again");
    m_resume = Resume{rec.remote_id};
    m_step = Step{"download-again", req, 0, m_step.fallback};
    return true;
  }
  if (fault.download == "unsupported") {
    fault.category = KILN_ERROR_PERMANENT;
    fault.message = "unsupported image: " + fault.message +
                    (m_downloaded_again ? " (twice; not bought again)" : "");
  }
  return false;
}

// Why the chain stops whatever the strategies would say, if it does.
std::optional<std::string> Chain::must_stop(Fault& fault, uint32_t attempt) {
  if (!fault.download.empty() && fault.download == "unsupported")
    return "an unsupported image: a new prediction would not do better";
  if (fault.category == KILN_ERROR_NEEDS_PERSON)
    return "a person must act; no strategy can help";
  if (fault.category == KILN_ERROR_INTERRUPTED)
    return "the run was interrupted";
  uint32_t max = m_ws.manifest.retry_policy.max_attempts;
  if (attempt >= max) {
    fault.message += " (gave up after " + std::to_string(attempt) + " attempts)";
    return "[retry_policy] max_attempts (" + std::to_string(max) + ") reached";
  }
  return std::nullopt;
}

// Asks the asset's strategies, in chain order, for the next request after `fault`; `passed`
// collects why each one that did not give a usable proposal did not.
std::optional<Step> Chain::next_step(const GenerationRequest& current, const Fault& fault,
                                     const std::string& source, uint32_t attempt,
                                     std::vector<std::string>& passed) {
  AssetView view = asset_view(m_p.spec, &current.model);
  kiln_request q = request_view(current, view.get(), m_p.fingerprint, "", attempt);
  for (auto& id : m_p.spec.retry) {
    const PluginInstance& inst = *m_ws.plugins.strategies.at(id);
    kiln_failure f{};
    f.struct_size = sizeof f;
    f.request = &q;
    f.category = fault.category;
    f.message = ks(fault.message);
    f.attempt = attempt;
    f.retry_after_ms = fault.retry_after_ms;
    f.same_request_failures = m_counters.same_request_failures;
    f.category_streak = m_counters.category_streak;
    f.proposals = m_counters.proposals[id];
    f.source = ks(source);
    kiln_result r = m_ws.registry.make_result(id);
    PluginCall call(inst.plugin().path.string(), inst.plugin().id, "propose");
    kiln_status st = inst.plugin().strategy()->propose(inst.handle(), &f, &r);
    if (st != KILN_OK || r.failed()) {
      if (r.failed()) // a strategy that could have helped says why it did not
        passed.push_back(is_plugin_bug(r.message)
                             ? plugin_failure("retry strategy", id, "propose", "", r.message)
                             : id + ": " + r.message);
      continue;
    }
    if (auto step = proposal(id, r, current, fault, passed)) {
      ++m_counters.proposals[id];
      return step;
    }
  }
  return std::nullopt;
}

// Strategy `id`'s proposal `r` as the next step, unless it is passed over (said in `passed`): for
// a backend that is not running, a model that is cooling down, a request whose image cannot
// pass, or a paid retry the run's retry budget cannot pay for.
std::optional<Step> Chain::proposal(const std::string& id, const kiln_result& r,
                                    const GenerationRequest& current, const Fault& fault,
                                    std::vector<std::string>& passed) {
  const AssetSpec& spec = m_p.spec;
  Step step{id, current, std::max<int64_t>(0, r.retry_after_ms), r.fallback};
  GenerationRequest& next = step.request;
  if (r.backend && *r.backend != next.backend) {
    next.backend = *r.backend;
    const PluginInstance* backend = find_backend(m_ws, next.backend);
    if (!backend) {
      passed.push_back(id + ": backend '" + next.backend + "' is not running");
      return std::nullopt;
    }
    next.backend_version = backend->plugin().version;
    next.backend_options = backend->shaping_options();
  }
  next.model = r.model.value_or(next.model);
  next.seed = r.seed ? r.seed : next.seed;
  next.params_json = r.params_json.value_or(next.params_json);
  next.prompt = r.prompt.value_or(next.prompt);
  next.negative_prompt = r.negative_prompt.value_or(next.negative_prompt);
  // A rewritten prompt still asks for what the postprocessors need (a plain backdrop...).
  if (r.prompt)
    if (auto bad = add_prompt_hints(m_ws, spec, next)) {
      passed.push_back(id + ": " + bad->message);
      return std::nullopt;
    }
  // A new model gets the enhancers' prompts for its own family (boosters, whether it takes a
  // negative prompt), except what a strategy has rewritten: a simplified prompt stays.
  if (next.model != current.model) {
    GenerationRequest enhanced = next;
    enhanced.prompt = spec.prompt;
    enhanced.negative_prompt = spec.negative;
    if (auto bad = enhance(m_ws, spec, enhanced)) {
      passed.push_back(id + ": " + bad->message);
      return std::nullopt;
    }
    if (!r.prompt && current.prompt == m_p.request.prompt)
      next.prompt = enhanced.prompt;
    if (!r.negative_prompt)
      next.negative_prompt = enhanced.negative_prompt;
    next.enhancers = enhanced.enhancers;
  }
  // Money only for a request whose image can pass: a new seed cannot add transparency.
  if (auto no_use = unfixable(next, fault)) {
    passed.push_back(id + ": no use: " + no_use->why);
    return std::nullopt;
  }
  if (double left = m_limits.breakers.open_for(breaker_key(next)); left > 0) {
    char why[160];
    std::snprintf(why, sizeof why, "%s: %s is cooling down (%.0f s left)", id.c_str(),
                  next.model.empty() ? next.backend.c_str() : next.model.c_str(), left);
    passed.push_back(why);
    return std::nullopt;
  }
  if (!backend_can(m_ws, next.backend, KILN_BACKEND_OFFLINE) && !m_limits.budget.try_retry()) {
    passed.push_back(id + ": the run's retry budget is spent (" +
                     std::to_string(m_limits.budget.retries()) + " retries for " +
                     std::to_string(m_limits.budget.assets()) + " assets; see [retry_policy])");
    return std::nullopt;
  }
  return step;
}

// No strategy proposed a usable step: the asset's final error, and the decision's reason. When
// no model of the chain paints what the image lacks and no postprocessor makes it, the asset
// fails now, saying what would fix it, instead of after buying every retry.
std::string Chain::no_step(Fault& fault, const GenerationRequest& req,
                           const std::vector<std::string>& passed) {
  std::string why = passed.empty() ? "no strategy of the asset's retry chain acts on a " +
                                         std::string(category_name(fault.category)) + " failure"
                                   : join(passed, "; ");
  if (auto lacking = unfixable(req, fault)) {
    fault.category = KILN_ERROR_PERMANENT;
    fault.message += "; no new image can pass: " + lacking->why;
    if (!m_out.hint.empty())
      fault.message += ": " + m_out.hint;
    return "not retried: no new image can pass: " + lacking->why +
           (passed.empty() ? std::string() : " (" + why + ")");
  }
  if (!passed.empty())
    fault.message += " (" + why + ")";
  return why;
}

// Goes on with `next`: said in the record and the log, after the delay it asked for. A retry of
// the same request on the same backend re-attaches to the remote job when the job itself failed
// (its result may be paid for already); after a bad image, a new job. False: interrupted while
// waiting.
bool Chain::take(Step next, AttemptRecord& rec, const Fault& fault, uint32_t attempt,
                 const std::vector<std::string>& passed) {
  const GenerationRequest& req = m_step.request;
  rec.decision = "retry";
  rec.decision_reason = (passed.empty() ? std::string() : join(passed, "; ") + "; ") +
                        next.strategy + ": " + describe_change(req, next);
  bool same = fingerprint_fields(next.request) == fingerprint_fields(req);
  bool can_resume = backend_can(m_ws, req.backend, KILN_BACKEND_CAN_RESUME);
  m_resume =
      Resume{same && can_resume && rec.source == req.backend ? rec.remote_id : std::string()};
  if (!same) {
    m_counters.same_request_failures = 0;
    m_downloaded_again = false;
  }
  m_ws.log.warning(m_p.spec.name + ": " + fault.message + " (attempt " + std::to_string(attempt) +
                   "); " + next.strategy + ": " + describe_change(req, next));
  int64_t delay = next.delay_ms;
  m_step = std::move(next);
  return delay <= 0 || sleep_unless_interrupted(uint32_t(delay));
}

// Why no image `req` can make passes the validator that rejected `fault`'s image: it lacks a
// property (transparency...) that the request's model never paints and that no postprocessor
// of the asset makes. Nullopt when a new image may pass.
std::optional<Chain::Unfixable> Chain::unfixable(const GenerationRequest& req,
                                                 const Fault& fault) const {
  uint32_t missing = fault.missing & ~made_by_postprocessors(m_ws, m_p.spec);
  if (!missing)
    return std::nullopt;
  missing &= ~painted_by(m_ws, m_p.spec, req);
  if (!missing)
    return std::nullopt;
  std::string painter = req.model.empty() ? "backend " + req.backend : req.model;
  return Unfixable{missing, painter + " never paints " + property_names(missing) +
                                " and no postprocessor of the asset makes it"};
}

// What would make the missing properties: the postprocessor to add, and where.
std::string Chain::fix_hint(uint32_t missing) const {
  const AssetSpec& spec = m_p.spec;
  std::vector<std::string> ids;
  for (uint32_t bit = 1; bit && bit <= missing; bit <<= 1)
    if (missing & bit)
      if (const Plugin* maker = maker_of(m_ws.registry, bit))
        if (std::find(ids.begin(), ids.end(), maker->id) == ids.end())
          ids.push_back(maker->id);
  if (ids.empty())
    return {};
  // The makers first: a background goes before trim and pixelate look for the subject.
  std::vector<std::string> chain = ids;
  for (auto& id : spec.postprocess)
    if (std::find(chain.begin(), chain.end(), id) == chain.end())
      chain.push_back(id);
  if (spec.postprocess.empty())
    return "add postprocess = [" + quoted_list(chain) + "] to [types." + spec.type + "]";
  std::string where;
  if (auto it = spec.field_locs.find("postprocess"); it != spec.field_locs.end() && it->second.line)
    where = " (" + m_ws.manifest.diagnostics.display_path() + ":" +
            std::to_string(it->second.line) + ")";
  return "make it postprocess = [" + quoted_list(chain) + "]" + where;
}

} // namespace kiln::host
