#include "engine.hpp"

#include "fatal.hpp"
#include "image.hpp"
#include "interrupt.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fnmatch.h>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
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
  }
  return "generate";
}

namespace {

kiln_str ks(const std::string& s) {
  return {s.data(), s.size()};
}

// The plugin-facing view of an asset; points into the AssetSpec.
kiln_asset asset_view(const AssetSpec& s) {
  kiln_asset a{};
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
  return a;
}

kiln_request request_view(const GenerationRequest& r, const kiln_asset* asset,
                          const std::string& fingerprint, const std::string& work_dir,
                          uint32_t attempt = 1, const std::string& resume_job_id = {}) {
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

// Runs the asset's enhancers in order. Deterministic by the SDK's contract.
std::optional<Fault> enhance(Workspace& ws, const AssetSpec& spec, GenerationRequest& req) {
  kiln_asset view = asset_view(spec);
  for (auto& id : spec.enhancers) {
    const PluginInstance& inst = *ws.plugins.enhancers.at(id);
    kiln_result r = ws.registry.make_result(id);
    kiln_status st = inst.plugin().enhancer()->enhance(inst.handle(), &view, ks(req.prompt),
                                                       ks(req.negative_prompt), &r);
    if (st != KILN_OK || r.failed()) {
      Fault f = r.failure();
      f.message = "enhancer '" + id + "' failed: " + f.message;
      return f;
    }
    if (r.prompt)
      req.prompt = *r.prompt;
    if (r.negative_prompt)
      req.negative_prompt = *r.negative_prompt;
    req.enhancers.push_back(inst.plugin().id_version());
  }
  return std::nullopt;
}

} // namespace

Plan make_plan(Workspace& ws, const PlanOptions& options) {
  for (auto& pattern : options.only) {
    bool any = false;
    std::vector<std::string> names;
    for (auto& a : ws.manifest.assets) {
      names.push_back(a.name);
      any = any || selected(a.name, {pattern});
    }
    if (!any) {
      std::string msg =
          "--only '" + pattern + "' matches no asset of " + ws.manifest.diagnostics.display_path();
      if (auto hint = did_you_mean(pattern, names))
        msg += " (did you mean '" + *hint + "'?)";
      throw Fatal(msg);
    }
  }

  Plan plan;
  std::map<std::string, size_t> generating; // fingerprint -> the asset that generates it
  for (auto& spec : ws.manifest.assets) {
    if (!selected(spec.name, options.only))
      continue;
    PlannedAsset p;
    p.spec = &spec;
    p.output = ws.manifest.output_dir / spec.relative_output();
    const PluginInstance& backend = *ws.plugins.backends.at(spec.backend);
    GenerationRequest& req = p.request;
    req.prompt = spec.prompt;
    // The asset's own negative prompt, with or without enhancers (style's append is idempotent).
    req.negative_prompt = spec.negative;
    req.backend = backend.plugin().id;
    req.backend_version = backend.plugin().version;
    req.model = spec.model;
    req.width = spec.width;
    req.height = spec.height;
    req.format = spec.format;
    req.seed = spec.seed;
    req.params_json = spec.params_json;
    p.prepare_error = enhance(ws, spec, req);
    p.fields = fingerprint_fields(req);
    p.fingerprint = fingerprint_of(p.fields);

    const OutputRecord* rec = ws.state.find(spec.name);
    auto stamp = stat_file(p.output);
    bool current = rec && rec->fingerprint == p.fingerprint;
    if (p.prepare_error) {
      p.reason = "cannot prepare the request";
    } else if (options.force) {
      p.reason = "forced";
    } else if (current && stamp && stamp->size == rec->size && stamp->mtime_ns == rec->mtime_ns &&
               rec->output == spec.relative_output()) {
      p.action = Action::UpToDate;
      p.reason = "up to date";
    } else if (current) {
      p.reason = stamp ? "output modified" : "output missing";
    } else if (rec) {
      auto changes = describe_changes(rec->fields, p.fields);
      p.reason = changes.empty() ? "fingerprint changed" : join(changes, ", ");
    } else {
      p.reason = stamp ? "untracked output" : "new";
    }

    if (p.action == Action::Generate && !options.force && !p.prepare_error &&
        ws.cache.contains(p.fingerprint, spec.format)) {
      p.action = Action::Cached;
      p.reason += "; in cache";
    }
    if (p.action == Action::Generate && !p.prepare_error) {
      auto [leader, first] = generating.emplace(p.fingerprint, plan.assets.size());
      if (!first) {
        p.action = Action::Cached;
        p.same_as = leader->second;
        p.reason += "; same image as " + plan.assets[leader->second].spec->name;
      }
    }
    if (p.action == Action::Generate && !p.prepare_error) {
      if (auto estimate = backend.plugin().backend()->estimate_cost_usd) {
        kiln_asset view = asset_view(spec);
        kiln_request q = request_view(req, &view, p.fingerprint, "");
        double usd = estimate(backend.handle(), &q);
        p.predicted_cost_usd = usd > 0 ? usd : 0;
      }
    }
    plan.predicted_cost_usd += p.predicted_cost_usd;
    plan.assets.push_back(std::move(p));
  }
  return plan;
}

namespace {

// Ninja-style lines: [done/total] counts the assets that need work, not the up-to-date ones.
class Progress {
public:
  Progress(size_t total, kiln_log_level verbosity) : m_total(total), m_verbosity(verbosity) {}

  void done(bool is_error, const std::string& text, Log& log) {
    std::lock_guard lock(m_mutex);
    ++m_done;
    if (is_error) {
      log.error(text);
      return;
    }
    if (m_verbosity > KILN_LOG_INFO)
      return;
    std::printf("[%zu/%zu] %s\n", m_done, m_total, log.redact(text).c_str());
    std::fflush(stdout);
  }

  // Not counted: up-to-date assets under -v.
  void note(const std::string& text) {
    std::lock_guard lock(m_mutex);
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
  }

private:
  std::mutex m_mutex;
  size_t m_done = 0;
  size_t m_total;
  kiln_log_level m_verbosity;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Writes `bytes` to the output unless the file already holds exactly them (its mtime must not
// move: the build integration relies on it), then records it in the state.
void install_output(Workspace& ws, std::mutex& state_mutex, const PlannedAsset& p,
                    std::string_view bytes) {
  auto stamp = stat_file(p.output);
  bool same = false;
  if (stamp && stamp->size == bytes.size()) {
    auto existing = read_file(p.output);
    same = existing && *existing == bytes;
  }
  if (!same) {
    write_file_atomic(p.output, bytes);
    stamp = stat_file(p.output);
  }
  if (!stamp)
    throw std::runtime_error("output '" + p.output.string() + "' vanished after writing");
  OutputRecord rec{p.spec->relative_output(), p.fingerprint, stamp->size, stamp->mtime_ns,
                   p.fields};
  std::lock_guard lock(state_mutex);
  ws.state.put(p.spec->name, std::move(rec));
}

struct Generated {
  std::string bytes;
  double cost_usd = 0;
};

// One attempt: backend → decode/convert → encode → validators. Retries and the strategy chain
// come later (issue 5); a failure is returned with its category.
Result<Generated> generate_once(Workspace& ws, const PlannedAsset& p, AssetOutcome& out,
                                uint32_t attempt) {
  const AssetSpec& spec = *p.spec;
  const PluginInstance& backend = *ws.plugins.backends.at(spec.backend);
  fs::path work = StateFile::kiln_dir(ws.manifest.output_dir) / "work" / p.fingerprint;
  std::error_code ec;
  fs::create_directories(work, ec);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code e;
      fs::remove_all(dir, e);
    }
  } cleanup{work};

  kiln_asset view = asset_view(spec);
  std::string work_str = work.string();
  // A retry re-attaches to the previous attempt's remote job when the backend can: its result
  // may be paid for already (the backend creates a new job when that one cannot deliver).
  std::string resume = backend.plugin().backend()->capabilities & KILN_BACKEND_CAN_RESUME
                           ? out.remote_id
                           : std::string();
  kiln_request q = request_view(p.request, &view, p.fingerprint, work_str, attempt, resume);
  kiln_result r = ws.registry.make_result(backend.plugin().id);
  ++out.attempts;
  kiln_status st = backend.plugin().backend()->generate(backend.handle(), &q, &r);
  Generated g;
  g.cost_usd = r.cost_usd.value_or(0);
  out.cost_usd += g.cost_usd;
  if (!r.remote_id.empty())
    out.remote_id = r.remote_id;
  if (st != KILN_OK || r.failed()) {
    Fault f = r.failure();
    if (f.category == KILN_ERROR_NONE)
      f = {KILN_ERROR_PERMANENT, "backend failed without saying why", -1};
    f.message = ws.log.redact(f.message);
    return f;
  }

  Image image;
  if (r.image) {
    image = std::move(*r.image);
  } else if (!r.image_file.empty()) {
    auto bytes = read_file(r.image_file);
    if (!bytes)
      return Fault{KILN_ERROR_RETRYABLE,
                   "backend's image file '" + r.image_file + "' cannot be read", -1};
    auto decoded = decode_image(*bytes);
    if (!decoded)
      return Fault{KILN_ERROR_RETRYABLE,
                   "backend returned an unreadable image: " + decoded.error().message, -1};
    image = std::move(*decoded);
  } else {
    return Fault{KILN_ERROR_PERMANENT, "backend reported success but gave no image", -1};
  }
  g.bytes = encode_image(fit_image(image, spec.width, spec.height), spec.format);

  // Validators judge exactly the bytes that will be written, fully decoded again.
  auto decoded = decode_image(g.bytes);
  std::string work_file = (work / ("candidate." + spec.format)).string();
  kiln_image img_view{};
  kiln_image_file file{};
  file.struct_size = sizeof file;
  file.path = ks(work_file);
  file.bytes = reinterpret_cast<const uint8_t*>(g.bytes.data());
  file.size = g.bytes.size();
  std::string detected(detect_format(g.bytes));
  file.detected_format = ks(detected);
  std::string decode_error;
  if (decoded) {
    img_view = {decoded->width, decoded->height, size_t(decoded->width) * 4, decoded->rgba.data()};
    file.image = &img_view;
  } else {
    decode_error = decoded.error().message;
  }
  file.decode_error = ks(decode_error);
  if (!spec.validators.empty()) {
    // A scratch copy so validators can open the file by path; the bytes they judge are in memory.
    std::ofstream(work_file, std::ios::binary)
        .write(g.bytes.data(), std::streamsize(g.bytes.size()));
  }
  for (auto& id : spec.validators) {
    const PluginInstance& v = *ws.plugins.validators.at(id);
    kiln_result vr = ws.registry.make_result(id);
    kiln_status vs = v.plugin().validator()->validate(v.handle(), &view, &file, &vr);
    if (vs != KILN_OK || vr.failed())
      return Fault{KILN_ERROR_VALIDATION,
                   "validator '" + id + "' rejected the image: " +
                       (vr.message.empty() ? std::string("no reason given") : vr.message),
                   -1};
  }
  return g;
}

// Attempts allowed per asset for retryable failures (issue 5 makes the policy configurable).
constexpr uint32_t k_max_attempts = 4;
// A server asking for a longer wait than this fails the asset instead of stalling the build.
constexpr int64_t k_max_retry_after_ms = 5 * 60 * 1000;

// How long to wait before attempt `attempt + 1`: the server's hint when it gave one (plus up to
// 10% so that parallel workers do not return in lockstep), else exponential backoff from 1 s
// with jitter.
int64_t retry_delay_ms(const Fault& fault, uint32_t attempt, std::mt19937& rng) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  if (fault.retry_after_ms >= 0)
    return fault.retry_after_ms + int64_t(double(fault.retry_after_ms) * 0.1 * unit(rng));
  double base_ms = 1000.0 * double(1u << std::min(attempt - 1, 6u));
  return int64_t(base_ms * (0.5 + 0.5 * unit(rng)));
}

// generate_once, again while the failure is retryable and attempts remain. `stopped` gives the
// reason when the run stopped creating: a retry is a new paid request, so it stops too.
template <class Stopped>
Result<Generated> generate_with_retries(Workspace& ws, const PlannedAsset& p, AssetOutcome& out,
                                        Stopped&& stopped) {
  std::mt19937 rng(std::random_device{}());
  for (uint32_t attempt = 1;; ++attempt) {
    auto g = generate_once(ws, p, out, attempt);
    if (g || g.error().category != KILN_ERROR_RETRYABLE)
      return g;
    Fault f = g.error();
    if (attempt >= k_max_attempts) {
      f.message += " (gave up after " + std::to_string(attempt) + " attempts)";
      return f;
    }
    if (f.retry_after_ms > k_max_retry_after_ms) {
      f.message += " (the server asks to wait " + std::to_string(f.retry_after_ms / 1000) +
                   " s; not waiting that long)";
      return f;
    }
    int64_t delay = retry_delay_ms(f, attempt, rng);
    char line[96];
    std::snprintf(line, sizeof line, " (attempt %u of %u); retrying in %.1f s", attempt,
                  k_max_attempts, double(delay) / 1000.0);
    ws.log.warning(p.spec->name + ": " + f.message + line);
    if (!sleep_unless_interrupted(uint32_t(delay)))
      return Fault{KILN_ERROR_INTERRUPTED, "interrupted while waiting to retry: " + f.message, -1};
    if (auto why = stopped()) {
      why->message = f.message + "; not retried: " + why->message;
      return *why;
    }
  }
}

} // namespace

BuildSummary build(Workspace& ws, Plan& plan, const BuildOptions& options) {
  auto start = std::chrono::steady_clock::now();
  BuildSummary summary;
  summary.predicted_cost_usd = plan.predicted_cost_usd;
  summary.assets.resize(plan.assets.size());
  std::mutex state_mutex;
  size_t work = 0;
  for (auto& p : plan.assets)
    work += p.action != Action::UpToDate || p.prepare_error;
  Progress progress(work, options.verbosity);

  std::vector<size_t> to_generate, followers;
  for (size_t i = 0; i < plan.assets.size(); ++i) {
    PlannedAsset& p = plan.assets[i];
    AssetOutcome& o = summary.assets[i];
    o.name = p.spec->name;
    o.reason = p.reason;
    o.output = p.output;
    o.fingerprint = p.fingerprint;
    o.backend = p.spec->backend;
    o.model = p.spec->model;
    o.predicted_cost_usd = p.predicted_cost_usd;
    o.final_prompt = p.request.prompt;
    o.final_negative_prompt = p.request.negative_prompt;
    if (p.prepare_error) {
      o.status = "failed";
      o.error = p.prepare_error;
      progress.done(true, o.name + ": " + p.prepare_error->message, ws.log);
    } else if (p.action == Action::UpToDate) {
      o.status = "up_to_date";
      if (options.verbosity <= KILN_LOG_DEBUG)
        progress.note("up to date " + o.name);
    } else if (p.action == Action::Cached && p.same_as) {
      followers.push_back(i); // after its leader has generated the image
    } else if (p.action == Action::Cached) {
      auto bytes = ws.cache.get(p.fingerprint, p.spec->format);
      if (!bytes || structural_problem(*bytes)) {
        ws.log.warning("cache entry for " + o.name + " is unreadable or damaged; generating");
        p.action = Action::Generate;
        p.reason += " (cache entry damaged)";
        o.reason = p.reason;
        to_generate.push_back(i);
        continue;
      }
      try {
        install_output(ws, state_mutex, p, *bytes);
        o.status = "cached";
        progress.done(false, "cached " + o.name + " (" + p.reason + ")", ws.log);
      } catch (const std::exception& e) {
        o.status = "failed";
        o.error = Fault{KILN_ERROR_PERMANENT, e.what(), -1};
        progress.done(true, o.name + ": " + e.what(), ws.log);
      }
    } else {
      to_generate.push_back(i);
    }
  }

  // Set once an asset needs a person (no credit, billing) or the run is interrupted: nothing new
  // starts, what is in flight finishes.
  std::atomic<bool> stop_creating{false};
  std::mutex stop_mutex;
  std::string stop_reason;
  Fault stop_fault;
  auto stop = [&](const Fault& why, const std::string& text) {
    std::lock_guard lock(stop_mutex);
    if (!stop_creating.exchange(true)) {
      stop_fault = why;
      stop_reason = text;
    }
  };
  auto stopped = [&]() -> std::optional<Fault> {
    if (interrupted() && !stop_creating)
      stop({KILN_ERROR_INTERRUPTED, "interrupted", -1}, "the run was interrupted");
    if (!stop_creating)
      return std::nullopt;
    std::lock_guard lock(stop_mutex);
    return Fault{stop_fault.category, stop_reason, -1};
  };

  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t k = next++; k < to_generate.size(); k = next++) {
      PlannedAsset& p = plan.assets[to_generate[k]];
      AssetOutcome& o = summary.assets[to_generate[k]];
      auto t0 = std::chrono::steady_clock::now();
      auto fail = [&](Fault f) {
        o.status = "failed";
        o.error = std::move(f);
        progress.done(true, o.name + ": " + o.error->message, ws.log);
      };
      if (auto why = stopped()) {
        o.status = "skipped";
        o.error = *why;
        o.error->message = "not started: " + why->message;
        progress.done(false, "skipped " + o.name + " (" + why->message + ")", ws.log);
        continue;
      }
      try {
        auto g = generate_with_retries(ws, p, o, stopped);
        if (!g) {
          if (g.error().category == KILN_ERROR_NEEDS_PERSON)
            stop(g.error(), o.name + " needs a person: " + g.error().message);
          fail(g.error());
          continue;
        }
        // The cache first: once it holds the image, a crash loses nothing that was paid for.
        ws.cache.put(p.fingerprint, p.spec->format, g->bytes);
        install_output(ws, state_mutex, p, g->bytes);
        o.status = "generated";
        char timing[64];
        std::snprintf(timing, sizeof timing, "%.2f s", seconds_since(t0));
        progress.done(false,
                      "generated " + o.name + " (" + p.reason + "; " + o.backend +
                          (o.cost_usd > 0 ? ", " + format_usd(o.cost_usd) : std::string()) + ", " +
                          timing + ")",
                      ws.log);
      } catch (const std::exception& e) {
        fail(Fault{KILN_ERROR_PERMANENT, ws.log.redact(e.what()), -1});
      }
    }
  };
  unsigned threads = std::max(1u, std::min<unsigned>(options.jobs, unsigned(to_generate.size())));
  if (!to_generate.empty()) {
    std::vector<std::thread> pool;
    for (unsigned t = 1; t < threads; ++t)
      pool.emplace_back(worker);
    worker();
    for (auto& t : pool)
      t.join();
  }

  for (size_t i : followers) {
    const PlannedAsset& p = plan.assets[i];
    AssetOutcome& o = summary.assets[i];
    const AssetOutcome& leader = summary.assets[*p.same_as];
    try {
      if (leader.status != "generated") {
        o.error = leader.error.value_or(Fault{});
        o.error->message =
            "makes the same image as " + leader.name + ", which failed: " + o.error->message;
      } else if (auto bytes = ws.cache.get(p.fingerprint, p.spec->format)) {
        install_output(ws, state_mutex, p, *bytes);
        o.status = "cached";
        progress.done(false, "cached " + o.name + " (" + p.reason + ")", ws.log);
        continue;
      } else {
        o.error = Fault{KILN_ERROR_PERMANENT,
                        "the cache entry " + leader.name + " just wrote cannot be read", -1};
      }
    } catch (const std::exception& e) {
      o.error = Fault{KILN_ERROR_PERMANENT, e.what(), -1};
    }
    o.status = "failed";
    progress.done(true, o.name + ": " + o.error->message, ws.log);
  }

  for (auto& o : summary.assets) {
    summary.cost_usd += o.cost_usd;
    if (o.status == "generated")
      ++summary.generated;
    else if (o.status == "cached")
      ++summary.cached;
    else if (o.status == "up_to_date")
      ++summary.up_to_date;
    else if (o.status == "skipped")
      ++summary.skipped;
    else
      ++summary.failed;
    if (o.error && o.error->category == KILN_ERROR_NEEDS_PERSON)
      summary.needs_a_person = true;
    if (o.error && o.error->category == KILN_ERROR_INTERRUPTED)
      summary.interrupted = true;
  }
  if (ws.state.dirty())
    ws.state.save();
  summary.duration_s = seconds_since(start);
  return summary;
}

std::string report_json(const BuildSummary& s) {
  rapidjson::StringBuffer buf;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buf);
  w.SetIndent(' ', 2);
  auto str = [&](const std::string& v) {
    w.String(v.c_str(), rapidjson::SizeType(v.size()));
  };
  w.StartObject();
  w.Key("summary");
  w.StartObject();
  w.Key("total");
  w.Uint64(s.assets.size());
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
  w.Key("cost_usd");
  w.Double(s.cost_usd);
  w.Key("predicted_cost_usd");
  w.Double(s.predicted_cost_usd);
  w.Key("duration_s");
  w.Double(s.duration_s);
  w.EndObject();
  w.Key("assets");
  w.StartArray();
  for (auto& a : s.assets) {
    w.StartObject();
    w.Key("name");
    str(a.name);
    w.Key("status");
    str(a.status);
    w.Key("reason");
    str(a.reason);
    w.Key("output");
    str(a.output.string());
    w.Key("fingerprint");
    str(a.fingerprint);
    w.Key("backend");
    str(a.backend);
    w.Key("model");
    str(a.model);
    w.Key("attempts");
    w.Int(a.attempts);
    w.Key("remote_id");
    str(a.remote_id);
    w.Key("cost_usd");
    w.Double(a.cost_usd);
    w.Key("predicted_cost_usd");
    w.Double(a.predicted_cost_usd);
    w.Key("prompt");
    str(a.final_prompt);
    w.Key("negative_prompt");
    str(a.final_negative_prompt);
    w.Key("error");
    if (a.error)
      str(a.error->message);
    else
      w.Null();
    w.Key("error_category");
    if (a.error) {
      w.String(category_name(a.error->category));
    } else {
      w.Null();
    }
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize()) + "\n";
}

} // namespace kiln::host
