#include "cli.hpp"

#include "cache.hpp"
#include "cache_stats.hpp"
#include "engine.hpp"
#include "fatal.hpp"
#include "interrupt.hpp"
#include "noop.hpp"
#include "plugin_guard.hpp"
#include "state.hpp"
#include "version.hpp"

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <rapidjson/filewritestream.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <sstream>
#include <unistd.h>

namespace po = boost::program_options;

namespace kiln::host {

namespace {

const char* k_overview = R"(kiln - bakes AI-generated game art into your build

Usage: kiln <command> [options]

Commands:
  build     make every asset of the manifest exist, regenerating only what changed
  plan      show what `build` would do for each asset, and what it would cost
  adopt     keep a file edited by hand as its asset's art (recorded in kiln.lock)
  outputs   print the absolute path of every output file (for build systems)
  plugins   list the plugins kiln can load
  cache     the local cache: hits, misses, remote errors, money saved (stats); its size (gc)

Run `kiln <command> --help` for a command's options and an example.

Options:
  -h, --help      this text
  --version       print kiln's version

Exit codes: 0 all assets present and valid; 1 some assets failed; 2 usage, manifest or
plugin error; 3 stopped by the budget; 4 a person must act (credit, billing), new work
stopped; 5 another build holds the output folder (--no-wait); 6 --locked and some asset
would need generating; 130 interrupted (Ctrl-C), remote jobs cancelled.
)";

struct Command {
  const char* name;
  const char* summary;
  const char* example;
};

struct CommonArgs {
  std::string manifest = "assets.toml";
  std::string output_dir;
  std::string state_dir;
  std::vector<std::string> only;
  std::string backend;
  bool help = false;
  bool quiet = false;
  bool verbose = false;
};

constexpr int k_not_given = std::numeric_limits<int>::min(); // an int option left out

po::options_description common_options(CommonArgs& a, bool with_selection) {
  po::options_description d("Options");
  d.add_options()("help,h", po::bool_switch(&a.help),
                  "this text")("manifest,m", po::value(&a.manifest)->value_name("FILE"),
                               "the manifest (default: ./assets.toml)")(
      "output-dir", po::value(&a.output_dir)->value_name("DIR"),
      "write outputs here instead of the manifest's output_dir (e.g. the build tree)")(
      "state-dir", po::value(&a.state_dir)->value_name("DIR"),
      "keep what Kiln knows of the output folder here (default: ~/.local/state/kiln/...)");
  if (with_selection)
    d.add_options()("only", po::value(&a.only)->value_name("NAME")->composing(),
                    "only this asset; repeatable; globs allowed ('icons/*')")(
        "backend", po::value(&a.backend)->value_name("NAME"),
        "use this backend for every asset, e.g. `placeholder` in CI")(
        "quiet,q", po::bool_switch(&a.quiet), "print errors only")(
        "verbose,v", po::bool_switch(&a.verbose), "print every asset and plugin messages");
  return d;
}

// Parses a command's arguments; prints help and returns false when --help was asked for.
bool parse(const Command& cmd, const po::options_description& desc, int argc, char** argv,
           const bool& help) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw Fatal(std::string("kiln ") + cmd.name + ": " + e.what() + "\nTry 'kiln " + cmd.name +
                " --help'.");
  }
  if (help) {
    std::cout << "kiln " << cmd.name << " - " << cmd.summary << "\n\n"
              << desc << "\nExample:\n"
              << cmd.example;
    return false;
  }
  return true;
}

// Manifest, plugins and state: everything a build or plan works with.
struct Session {
  Log log;
  Manifest manifest;
  PluginRegistry registry{log};
  PluginSet plugins;
  std::unique_ptr<OutputLock> lock; // released after the state is closed
  std::unique_ptr<StateFile> state;
  std::unique_ptr<Cache> cache;
  std::unique_ptr<RemoteCache> remote; // the team's cache behind `cache`, if any
  std::unique_ptr<Lockfile> lockfile;  // kiln.lock
  std::unique_ptr<CacheUse> cache_use; // `kiln cache gc` waits for this session to end

  Workspace workspace() {
    Workspace ws{manifest, registry, plugins, log, *state, *cache, lockfile.get()};
    ws.remote = remote.get();
    return ws;
  }
};

kiln_log_level verbosity(const CommonArgs& a) {
  return a.quiet ? KILN_LOG_ERROR : a.verbose ? KILN_LOG_DEBUG : KILN_LOG_INFO;
}

void load_plugins(PluginRegistry& registry, Manifest* manifest) {
  if (manifest) {
    for (size_t i = 0; i < manifest->plugin_paths.size(); ++i) {
      std::error_code ec;
      if (!fs::is_directory(manifest->plugin_paths[i], ec))
        manifest->diagnostics.error(manifest->plugin_path_locs[i],
                                    "plugin folder '" + manifest->plugin_paths[i].string() +
                                        "' does not exist");
    }
    manifest->diagnostics.throw_if_errors();
  }
  for (auto& dir : PluginRegistry::search_dirs(manifest))
    registry.load_directory(dir);
}

Manifest read_manifest(const CommonArgs& a) {
  if (a.manifest.empty())
    throw Fatal("-m needs a manifest file");
  Manifest m = load_manifest(a.manifest, a.manifest);
  if (!a.output_dir.empty()) {
    m.output_dir = fs::absolute(a.output_dir).lexically_normal();
    m.output_dir_loc = SourceLoc{}; // not the manifest's choice: no line of it to point at
  }
  return m;
}

// A Make-style dependency file for Ninja (CMake's DEPFILE): `target` depends on every file the
// run read that the build system cannot know at configure time.
void write_depfile(const fs::path& path, const std::string& target,
                   const std::vector<fs::path>& inputs) {
  auto escape = [](const std::string& p) {
    std::string out;
    for (char c : p) {
      if (c == ' ' || c == '#' || c == '\\')
        out += '\\';
      if (c == '$')
        out += '$';
      out += c;
    }
    return out;
  };
  std::string text = escape(target) + ":";
  for (auto& input : inputs)
    text += " \\\n  " + escape(input.string());
  write_file_atomic(path, text + "\n");
}

// One manifest per output folder: the state folder names the manifest whose art the folder
// holds. Another manifest that still exists and writes there is a mistake (each would
// overwrite and delete the other's art): exit 2, naming both. `record`: claims it (call it
// holding the lock); else only checks.
void claim_output_dir(Manifest& m, bool record) {
  // Kept where the output folder's default state folder is, whatever --state-dir says: two
  // build trees with state folders of their own still find each other.
  const fs::path state_dir = state_dir_for(m.output_dir);
  fs::path owner_file = state_dir / "owner";
  std::string me = m.path.string();
  auto owner = read_file(owner_file);
  std::string other = owner ? std::string(owner->substr(0, owner->find('\n'))) : std::string();
  std::error_code ec;
  if (!other.empty() && other != me && fs::is_regular_file(other, ec)) {
    std::string why = "the output folder " + m.output_dir.string() + " holds the art of " + other +
                      " (its record: " + state_dir.string() +
                      "); two manifests must not write into one folder: give this one another "
                      "output_dir";
    if (m.output_dir_loc.line) {
      m.diagnostics.error(m.output_dir_loc, why);
      m.diagnostics.throw_if_errors();
    }
    throw Fatal(m.diagnostics.display_path() + ": " + why);
  }
  if (record && other != me)
    write_file_atomic(owner_file, me + "\n");
}

// How a command holds the output folder: `build` takes its lock (waiting for another build, or
// not with --no-wait); `plan` only reads.
enum class LockMode { None, Wait, NoWait };

std::unique_ptr<Session> open_session(const CommonArgs& a, LockMode lock = LockMode::None) {
  auto s = std::make_unique<Session>();
  s->log.set_level(verbosity(a));
  s->manifest = read_manifest(a);
  load_plugins(s->registry, &s->manifest);
  if (!a.backend.empty()) {
    if (!s->registry.find(a.backend, KILN_KIND_BACKEND)) {
      std::string msg = "--backend '" + a.backend + "': unknown backend";
      auto ids = s->registry.ids(KILN_KIND_BACKEND);
      if (auto hint = did_you_mean(a.backend, ids))
        msg += " (did you mean '" + *hint + "'?)";
      else
        msg += " (available: " + join(ids, ", ") + ")";
      throw Fatal(msg);
    }
    s->manifest.override_backend(a.backend);
  }
  s->plugins = instantiate_manifest_plugins(s->registry, s->manifest);
  s->manifest.keep_text_on_disk(); // checked: from here on assets are read again one at a time
  const fs::path& out = s->manifest.output_dir;
  fs::path state_dir =
      a.state_dir.empty() ? state_dir_for(out) : fs::absolute(a.state_dir).lexically_normal();
  if (lock != LockMode::None) {
    s->lock = std::make_unique<OutputLock>(state_dir, out, lock == LockMode::Wait,
                                           [&](const std::string& why) { s->log.warning(why); });
    claim_output_dir(s->manifest, true);
    if (migrate_old_state(out, state_dir))
      s->log.warning("moved Kiln's state out of " + out.string() + " (to " + state_dir.string() +
                     "): the output folder now holds only art");
    // Holding the lock, whatever a killed run left half-written is garbage: its paid results
    // are in the cache and the journal.
    if (size_t n = remove_leftovers(out, state_dir))
      s->log.debug("removed " + std::to_string(n) + " leftovers of an interrupted run");
  } else {
    claim_output_dir(s->manifest, false);
    if (!fs::exists(state_dir / "state.jsonl") && fs::is_directory(out / ".kiln"))
      state_dir = out / ".kiln"; // read where a kiln before 0.2 left it; build moves it
  }
  s->state = std::make_unique<StateFile>(state_dir);
  if (auto warning = s->state->load(lock != LockMode::None))
    s->log.warning(*warning);
  s->cache = std::make_unique<Cache>(Cache::default_dir());
  s->cache_use = std::make_unique<CacheUse>(s->cache->dir(), false, [&] {
    s->log.warning("kiln cache gc is running on " + s->cache->dir().string() + "; waiting for it");
  });
  s->remote = RemoteCache::open(s->manifest.remote_cache, s->log, s->registry.http());
  s->lockfile = std::make_unique<Lockfile>(Lockfile::path_for(s->manifest.path));
  s->lockfile->load();
  s->lockfile->set_backend_overridden(!a.backend.empty());
  return s;
}

// What `kiln build` was asked: the common options and its own.
struct BuildArgs : CommonArgs {
  int jobs = k_not_given;
  std::string report, stamp, depfile;
  bool force = false, no_wait = false, locked = false;
  double budget = -1; // not given
};

// Reads and checks build's command line into `b`; false when --help was asked for.
bool parse_build_args(int argc, char** argv, BuildArgs& b) {
  static const Command cmd{
      "build", "make every asset exist, game-ready, regenerating only what changed",
      "  kiln build                          # every asset of ./assets.toml\n"
      "  kiln build -m game/assets.toml -j 8 --report kiln-report.json\n"
      "  kiln build --only 'icons/*' --force # regenerate the icons, even if up to date\n"
      "  kiln build --backend placeholder    # offline, free images (CI)\n"
      "  kiln build --locked                 # CI: only the art kiln.lock records, never pay\n"};
  std::string budget_text; // not given: empty
  po::options_description d = common_options(b, true);
  d.add_options()("jobs,j", po::value(&b.jobs)->value_name("N"),
                  "jobs in flight per backend (default: [backends.X] concurrency, else 8 for a "
                  "remote backend, the CPU count for an offline one)")(
      "report", po::value(&b.report)->value_name("FILE"), "write a JSON report of the run")(
      "force", po::bool_switch(&b.force), "regenerate even up-to-date and cached assets (costs)")(
      "stamp", po::value(&b.stamp)->value_name("FILE"),
      "touch FILE when every asset is present and valid (build systems)")(
      "depfile", po::value(&b.depfile)->value_name("FILE"),
      "write the files this run read (manifest, plugins) as a Makefile rule for --stamp's FILE")(
      "budget", po::value(&budget_text)->value_name("USD"),
      "spend at most USD on this build, counting what killed runs before it spent (overrides "
      "[project] budget_usd); assets it cannot cover are not started, exit 3")(
      "no-wait", po::bool_switch(&b.no_wait),
      "when another build is writing the same output folder, exit 5 instead of waiting for it")(
      "locked", po::bool_switch(&b.locked),
      "never pay (CI): every asset must come from the output folder, the local cache or the "
      "remote cache with the bytes kiln.lock names; else exit 6, listing what would need "
      "generating and its predicted cost");
  if (!parse(cmd, d, argc, argv, b.help))
    return false;
  if (b.jobs != k_not_given && b.jobs < 1)
    throw Fatal("kiln build: --jobs must be at least 1");
  if (!budget_text.empty()) {
    char* end = nullptr;
    b.budget = std::strtod(budget_text.c_str(), &end);
    if (*end || end == budget_text.c_str() || !std::isfinite(b.budget) || b.budget < 0)
      throw Fatal("kiln build: --budget must be a number of US dollars, zero or more (not '" +
                  budget_text + "')");
  }
  if (b.manifest.empty())
    throw Fatal("kiln build: -m needs a manifest file");
  if (!b.depfile.empty() && b.stamp.empty())
    throw Fatal("kiln build: --depfile needs --stamp (the rule's target)");
  return true;
}

// The stamp is the build system's: touched through no link, and its failure said plainly.
void touch_stamp(const std::string& stamp) {
  try {
    touch_file(stamp);
  } catch (const std::exception& e) {
    throw Fatal(std::string("kiln build: ") + e.what());
  }
}

// The no-op record is kept per these arguments: they decide which files a build reads.
NoopKey noop_key(const CommonArgs& a) {
  return NoopKey{
      fs::absolute(a.manifest).lexically_normal(),
      a.output_dir.empty() ? "" : fs::absolute(a.output_dir).lexically_normal().string(), a.backend,
      (a.state_dir.empty() ? state_root() : fs::absolute(a.state_dir).lexically_normal()).string()};
}

// Nothing moved since the last clean run with these arguments: says so and touches the stamp,
// without parsing. False when the run must go ahead.
bool nothing_moved(const BuildArgs& b, const NoopKey& key) {
  std::error_code ec;
  bool may_skip = b.only.empty() && !b.force && b.report.empty() && !b.verbose &&
                  (b.depfile.empty() || fs::exists(b.depfile, ec));
  if (!may_skip)
    return false;
  auto assets = noop_check(key);
  if (!assets)
    return false;
  if (!b.quiet)
    std::printf("kiln: no work to do (%zu asset%s up to date)\n", *assets, *assets == 1 ? "" : "s");
  if (!b.stamp.empty())
    touch_stamp(b.stamp);
  return true;
}

// What the phases of a build hand on to each other.
struct BuildRun {
  explicit BuildRun(Session& session) : s(session), ws(session.workspace()) {}

  Session& s;
  Workspace ws;
  Plan plan;
  std::vector<std::string_view> names; // every declared asset; only on a full build
  std::vector<Undeclared> undeclared;  // outputs of assets no longer declared; full build only
  std::optional<ReportWriter> report_writer;
  BuildOptions options;
  BuildSummary summary;
  bool lock_saved = true; // kiln.lock is written: the next run may take the no-op shortcut
};

// Plans the build and, on a full build, finds the outputs no longer declared and drops the
// state's records of assets that are gone.
void plan_build(const BuildArgs& b, BuildRun& run) {
  run.plan = make_plan(run.ws, PlanOptions{b.force, b.only});
  if (b.only.empty()) {
    run.names.reserve(run.s.manifest.size());
    for (size_t i = 0; i < run.s.manifest.size(); ++i)
      run.names.push_back(run.s.manifest.name(i));
    run.undeclared = undeclared_outputs(run.ws);
    // The record of an edited file of a removed asset stays, so later builds and plans still
    // name it (until someone deletes it); kiln.lock forgets the asset.
    std::vector<std::string_view> remembered = run.names;
    for (auto& u : run.undeclared)
      if (u.edited && !u.declared)
        remembered.push_back(u.name);
    run.s.state->retain(remembered);
  }
  run.s.state->reserve(run.s.state->size() + run.plan.size());
  run.s.lockfile->reserve(run.plan.size());
}

// --locked: the assets that would need generating or that kiln.lock does not record as
// declared, each with why and its predicted cost. Offline backends may make an asset only when
// kiln.lock says one made it.
std::vector<std::string> not_locked(BuildRun& run) {
  std::vector<std::string> out;
  const Plan& plan = run.plan;
  for (auto& e : plan.entries) {
    if (e.prepare_failed || e.action == Action::Kept)
      continue;
    std::string name(run.s.manifest.name(e.asset));
    auto locked = run.s.lockfile->find(name);
    bool same = locked && digest_of_hex(locked->fingerprint) == e.fingerprint;
    const std::string& backend = plan.groups[e.group].first;
    bool offline_ok = same && !locked->paid && !paid_backend(run.ws, backend);
    if (e.action == Action::Generate && !offline_ok)
      out.push_back(name + " (" + format_usd(e.predicted_cost_usd) + ", " + plan.reasons[e.reason] +
                    ")");
    else if (!same)
      out.push_back(name + " (kiln.lock does not record it as declared: " + plan.reasons[e.reason] +
                    ")");
  }
  return out;
}

// Makes the planned assets, with the budget, jobs and report the command line asks for.
void run_build(const BuildArgs& b, BuildRun& run) {
  install_interrupt_handlers();
  if (!b.report.empty())
    run.report_writer.emplace(b.report);
  run.options.jobs = b.jobs > 0 ? unsigned(b.jobs) : 0u;
  run.options.budget_usd =
      b.budget >= 0 ? std::optional<double>(b.budget) : run.s.manifest.budget_usd;
  run.options.verbosity = verbosity(b);
  run.options.progress = Progress::detect();
  run.summary =
      build(run.ws, run.plan, run.options, run.report_writer ? &*run.report_writer : nullptr);
  if (size_t swept = run.s.cache->sweep_stale_temp_files())
    run.s.log.debug("removed " + std::to_string(swept) +
                    " temp files of killed runs from the cache");
}

// The record of what was made, kept even when the run failed: what it made is made. Removes
// the outputs no longer declared, then writes kiln.lock and the report.
void record_build(const BuildArgs& b, BuildRun& run) {
  BuildSummary& summary = run.summary;
  summary.removed = remove_undeclared(run.ws, run.undeclared);
  for (auto& u : run.undeclared)
    summary.kept += u.edited; // named by remove_undeclared()
  if (b.only.empty())
    run.s.lockfile->retain(run.names);
  try {
    run.s.lockfile->save();
  } catch (const std::exception& e) {
    run.lock_saved = false; // no shortcut past the next run, which tries again
    run.s.log.warning(std::string("cannot write ") + run.s.lockfile->path().string() + ": " +
                      e.what());
  }
  if (run.report_writer)
    run.report_writer->finish(summary);
  try {
    add_cache_stats(run.s.cache->dir(), stats_of(summary));
  } catch (const std::exception& e) {
    run.s.log.debug(std::string("the cache's counts are not kept: ") + e.what());
  }
}

// The line that ends a build: what it did to how many assets, what it cost, how long it took.
void print_build_summary(const BuildSummary& summary) {
  char line[256];
  if (summary.generated + summary.cached + summary.failed + summary.skipped + summary.kept +
          int(summary.removed) ==
      0)
    std::snprintf(line, sizeof line, "kiln: no work to do (%zu asset%s up to date)", summary.total,
                  summary.total == 1 ? "" : "s");
  else
    std::snprintf(
        line, sizeof line,
        "kiln: %zu asset%s: %d generated, %d cached, %d up to date, %d failed%s%s; "
        "spent %s (predicted %s)%s in %.2f s",
        summary.total, summary.total == 1 ? "" : "s", summary.generated, summary.cached,
        summary.up_to_date, summary.failed,
        summary.skipped ? (", " + std::to_string(summary.skipped) + " not started").c_str() : "",
        summary.fallbacks() ? (", " + std::to_string(summary.fallbacks()) + " fallback").c_str()
                            : "",
        format_usd(summary.cost_usd).c_str(), format_usd(summary.predicted_cost_usd).c_str(),
        summary.spent_before_usd > 0
            ? ("; " + format_usd(summary.spent_before_usd) + " by the killed runs before it")
                  .c_str()
            : "",
        summary.duration_s);
  std::string text = line;
  if (summary.kept)
    text += "; " + std::to_string(summary.kept) + " edited by hand, kept";
  if (summary.removed)
    text += "; " + std::to_string(summary.removed) + " old output" +
            (summary.removed == 1 ? "" : "s") + " removed (no longer declared, or moved)";
  if (summary.cache_rejected)
    text += "; " + std::to_string(summary.cache_rejected) + " bad cache entr" +
            (summary.cache_rejected == 1 ? "y" : "ies") + " removed, not installed";
  if (summary.remote)
    text += "; " + std::to_string(summary.remote) + " from the remote cache";
  if (summary.saved_usd > 0)
    text += "; cache hits saved " + format_usd(summary.saved_usd);
  const RemoteCounts& r = summary.remote_counts;
  if (r.uploads)
    text += "; " + std::to_string(r.uploads) + " uploaded to the remote cache";
  if (r.errors || r.corrupt)
    text += "; remote cache: " + std::to_string(r.errors) + " error" + (r.errors == 1 ? "" : "s") +
            (r.timeouts ? " (" + std::to_string(r.timeouts) + " timeouts)" : std::string()) +
            (r.corrupt ? ", " + std::to_string(r.corrupt) + " bad entr" +
                             (r.corrupt == 1 ? "y" : "ies") + " not installed"
                       : std::string()) +
            ", worked locally";
  std::printf("%s\n", text.c_str());
}

// The exit code of a run that left some asset not as asked, with the errors that say why and
// what to do; k_exit_ok when every asset is made as asked.
int build_failure_exit_code(BuildRun& run) {
  const BuildSummary& summary = run.summary;
  Log& log = run.s.log;
  if (summary.interrupted)
    return k_exit_interrupted;
  if (summary.needs_a_person) {
    int kept = summary.generated + summary.cached + summary.up_to_date;
    for (auto& why : summary.stopped)
      log.error("stopped creating on " + why);
    log.error(std::to_string(summary.skipped) + " asset" + (summary.skipped == 1 ? "" : "s") +
              " not started; the " + std::to_string(kept) +
              " made are kept. Run again once a person has acted (credit, billing, token).");
    return k_exit_needs_person;
  }
  if (summary.over_budget > 0) {
    log.error(std::to_string(summary.over_budget) + " asset" +
              (summary.over_budget == 1 ? "" : "s") + " not made: the budget of " +
              format_usd(*run.options.budget_usd) + " is reached (" +
              format_usd(summary.spent_before_usd + summary.cost_usd) + " spent); the rest needs " +
              format_usd(summary.budget_needed_usd) +
              " more. Raise budget_usd in [project] or pass --budget; what was made is kept.");
    return k_exit_budget;
  }
  if (!summary.locked_refused.empty()) {
    log.error("--locked: " + join(summary.locked_refused, ", ") +
              " would need generating; nothing was paid for them");
    return k_exit_locked;
  }
  if (summary.failed + summary.skipped > 0)
    return k_exit_assets_failed;
  if (summary.fallbacks() > 0 && !run.s.manifest.allow_fallback) {
    std::vector<std::string> stand_ins = summary.fallback_names; // in the order they finished
    std::sort(stand_ins.begin(), stand_ins.end());
    log.error(std::to_string(stand_ins.size()) + " asset" +
              (stand_ins.size() == 1 ? " is" : "s are") +
              " a fallback stand-in, not the art asked for: " + join(stand_ins, ", ") +
              " (see the report's attempts; set allow_fallback = true in [project] to accept "
              "stand-ins)");
    return k_exit_assets_failed;
  }
  return k_exit_ok;
}

// --depfile: the manifest, and every plugin library and file the run's plugins read.
void write_build_depfile(const BuildArgs& b, const NoopKey& key, const Session& s) {
  std::vector<fs::path> inputs{key.manifest};
  for (auto* instance : s.plugins.all()) {
    inputs.push_back(instance->plugin().path);
    inputs.insert(inputs.end(), instance->files().begin(), instance->files().end());
  }
  try {
    write_depfile(b.depfile, b.stamp, inputs);
  } catch (const std::exception& e) {
    throw Fatal("kiln build: cannot write the depfile: " + std::string(e.what()));
  }
}

// Records a clean full run for the no-op shortcut: every file it read, and every output with
// the stamp the state holds for it.
void record_noop(const NoopKey& key, const Session& s) {
  std::error_code ec;
  std::vector<fs::path> inputs{key.manifest, s.state->path(), s.lockfile->path(),
                               fs::read_symlink("/proc/self/exe", ec)};
  for (auto* plugin : s.registry.all())
    inputs.push_back(plugin->path);
  for (auto* instance : s.plugins.all()) // a palette file, say
    inputs.insert(inputs.end(), instance->files().begin(), instance->files().end());
  // Every asset is in the state now, with the stamp its output was written or checked with.
  NoopRecorder record(key, inputs);
  const Manifest& m = s.manifest;
  bool all = true;
  for (size_t i = 0; i < m.size() && all; ++i) {
    auto rec = s.state->find(m.name(i));
    all = rec.has_value();
    if (rec)
      record.output(m.output_dir / m.relative_output(i), FileStamp{rec->size, rec->mtime_ns});
  }
  if (all)
    record.commit();
}

int cmd_build(int argc, char** argv) {
  BuildArgs b;
  if (!parse_build_args(argc, argv, b))
    return k_exit_ok;
  NoopKey key = noop_key(b);
  if (nothing_moved(b, key))
    return k_exit_ok;

  auto start = std::chrono::steady_clock::now();
  auto s = open_session(b, b.no_wait ? LockMode::NoWait : LockMode::Wait);
  BuildRun run(*s);
  run.ws.locked = b.locked;
  plan_build(b, run);
  std::error_code ec;
  if (b.locked && !fs::exists(s->lockfile->path(), ec)) {
    s->log.error("--locked: there is no kiln.lock at " +
                 escape_controls(s->lockfile->path().string()) + ", so every asset (" +
                 format_usd(run.plan.predicted_cost_usd) +
                 " predicted) would need generating. Nothing was generated.");
    return k_exit_locked;
  }
  if (b.locked)
    if (auto refused = not_locked(run); !refused.empty()) {
      s->log.error("--locked: " + std::to_string(refused.size()) + " asset" +
                   (refused.size() == 1 ? "" : "s") +
                   " would need generating: " + join(refused, "; ") +
                   ". Nothing was generated. Build without --locked and commit kiln.lock.");
      return k_exit_locked;
    }
  run_build(b, run);
  // The whole build: planning asks the remote cache, which may take its time.
  run.summary.duration_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  record_build(b, run);
  if (!b.quiet)
    print_build_summary(run.summary);
  noop_forget(key);
  if (int code = build_failure_exit_code(run); code != k_exit_ok)
    return code;
  if (!b.depfile.empty())
    write_build_depfile(b, key, *s);
  // A fallback stand-in is tried again by the next build: no shortcut past it, nor past a
  // remote cache that failed (what it lacks is uploaded by the next build).
  if (b.only.empty() && run.summary.fallbacks() == 0 && run.lock_saved &&
      run.summary.remote_counts.errors == 0)
    record_noop(key, *s);
  // Last, and only on success: a build system re-runs kiln until it succeeds.
  if (!b.stamp.empty())
    touch_stamp(b.stamp);
  return k_exit_ok;
}

// What `kiln plan` shows: the plan, the outputs of assets no longer declared, and the counts.
struct PlanView {
  Plan plan;
  // Outputs of assets no longer declared: a full build removes those Kiln wrote, keeps edits.
  std::vector<Undeclared> undeclared;
  int counts[5] = {0, 0, 0, 0, 0}; // by Action
  int unplannable = 0;
  int to_remove = 0;

  // Edited by hand and left as they are: of declared assets and of assets no longer declared.
  int kept() const { return counts[int(Action::Kept)] + int(undeclared.size()) - to_remove; }
};

using JsonWriter = rapidjson::PrettyWriter<rapidjson::FileWriteStream>;

// `v` as a JSON string, every byte of it (its length is given: a NUL does not end it).
void write_string(JsonWriter& w, const std::string& v) {
  w.String(v.c_str(), rapidjson::SizeType(v.size()));
}

// The "summary" object of `kiln plan --json`: how many assets get each action, and the cost.
void write_plan_summary(JsonWriter& w, const PlanView& v) {
  w.Key("summary");
  w.StartObject();
  w.Key("total");
  w.Uint64(v.plan.size());
  w.Key("generate");
  w.Int(v.counts[int(Action::Generate)]);
  w.Key("cached");
  w.Int(v.counts[int(Action::Cached)]);
  w.Key("up_to_date");
  w.Int(v.counts[int(Action::UpToDate)]);
  w.Key("remote");
  w.Int(v.counts[int(Action::Remote)]);
  w.Key("kept");
  w.Int(v.kept());
  w.Key("remove");
  w.Int(v.to_remove);
  w.Key("failed");
  w.Int(v.unplannable);
  w.Key("predicted_cost_usd");
  w.Double(v.plan.predicted_cost_usd);
  w.EndObject();
}

// One asset of `kiln plan --json`, with its final prompts and fingerprint.
void write_planned_asset(JsonWriter& w, const PlannedAsset& p) {
  w.StartObject();
  w.Key("name");
  write_string(w, p.spec.name);
  w.Key("action");
  write_string(w, p.prepare_error ? "failed" : std::string(action_name(p.action)));
  w.Key("reason");
  write_string(w, p.prepare_error ? p.prepare_error->message : p.reason);
  w.Key("output");
  write_string(w, p.output.string());
  w.Key("fingerprint");
  write_string(w, p.fingerprint);
  w.Key("backend");
  write_string(w, p.spec.backend);
  w.Key("model");
  write_string(w, p.spec.model);
  w.Key("width");
  w.Uint(p.spec.width);
  w.Key("height");
  w.Uint(p.spec.height);
  w.Key("format");
  write_string(w, p.spec.format);
  w.Key("prompt");
  write_string(w, p.request.prompt);
  w.Key("negative_prompt");
  write_string(w, p.request.negative_prompt);
  w.Key("predicted_cost_usd");
  w.Double(p.predicted_cost_usd);
  w.Key("fallback");
  w.Bool(p.fallback_on_disk);
  w.Key("retry");
  w.StartArray();
  for (auto& id : p.spec.retry)
    write_string(w, id);
  w.EndArray();
  w.Key("postprocess");
  w.StartArray();
  for (auto& id : p.spec.postprocess)
    write_string(w, id);
  w.EndArray();
  w.EndObject();
}

// `kiln plan --json`. Streamed, one asset at a time: a plan of any size is printed in constant
// memory.
void print_plan_json(Workspace& ws, const PlanView& v) {
  char out_buf[1 << 16];
  rapidjson::FileWriteStream out(stdout, out_buf, sizeof out_buf);
  JsonWriter w(out);
  w.SetIndent(' ', 2);
  w.StartObject();
  write_plan_summary(w, v);
  w.Key("assets");
  w.StartArray();
  for (size_t i = 0; i < v.plan.size(); ++i)
    write_planned_asset(w, v.plan.asset(ws, i));
  w.EndArray();
  // Files of assets no longer declared: "remove" (Kiln's, unedited) or "kept" (edited).
  w.Key("undeclared");
  w.StartArray();
  for (auto& u : v.undeclared) {
    w.StartObject();
    w.Key("name");
    write_string(w, u.name);
    w.Key("action");
    write_string(w, u.edited ? "kept" : "remove");
    w.Key("reason");
    write_string(w, u.reason());
    w.Key("output");
    write_string(w, u.output.string());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  out.Put('\n');
  out.Flush();
}

// `kiln plan`: a table of action, asset, reason and predicted cost, then a line of totals.
// Printed one asset at a time, as the JSON is.
void print_plan_table(Workspace& ws, const PlanView& v) {
  size_t width = 5;
  for (auto& e : v.plan.entries)
    width = std::max(width, ws.manifest.name(e.asset).size());
  for (auto& u : v.undeclared)
    width = std::max(width, u.name.size());
  for (size_t i = 0; i < v.plan.size(); ++i) {
    PlannedAsset p = v.plan.asset(ws, i);
    const char* action = p.prepare_error                ? "failed"
                         : p.action == Action::Generate ? "generate"
                         : p.action == Action::Cached   ? "cached"
                         : p.action == Action::Remote   ? "remote"
                         : p.action == Action::Kept     ? "kept"
                                                        : "up to date";
    std::string cost = p.predicted_cost_usd > 0 ? "  " + format_usd(p.predicted_cost_usd) : "";
    std::printf("%-10s  %-*s  %s%s\n", action, int(width), p.spec.name.c_str(),
                escape_controls(p.prepare_error ? p.prepare_error->message : p.reason).c_str(),
                cost.c_str());
  }
  for (auto& u : v.undeclared)
    std::printf("%-10s  %-*s  %s\n", u.edited ? "kept" : "remove", int(width),
                escape_controls(u.name).c_str(), u.reason().c_str());
  std::string extra;
  if (int kept = v.kept())
    extra += ", " + std::to_string(kept) + " kept (edited by hand)";
  if (v.to_remove)
    extra += ", " + std::to_string(v.to_remove) + " to remove";
  if (v.unplannable)
    extra += ", " + std::to_string(v.unplannable) + " failed";
  if (int remote = v.counts[int(Action::Remote)])
    extra = ", " + std::to_string(remote) + " in the remote cache" + extra;
  std::printf("%d to generate, %d cached, %d up to date%s; predicted cost %s\n",
              v.counts[int(Action::Generate)], v.counts[int(Action::Cached)],
              v.counts[int(Action::UpToDate)], extra.c_str(),
              format_usd(v.plan.predicted_cost_usd).c_str());
}

int cmd_plan(int argc, char** argv) {
  static const Command cmd{
      "plan", "show what `build` would do per asset and why, with the predicted cost",
      "  kiln plan                  # a table: action, asset, reason, predicted cost\n"
      "  kiln plan --json | jq '.assets[] | select(.action == \"generate\") | .name'\n"};
  CommonArgs a;
  bool json = false;
  po::options_description d = common_options(a, true);
  d.add_options()("json", po::bool_switch(&json),
                  "machine-readable: every asset with its final prompts and fingerprint");
  if (!parse(cmd, d, argc, argv, a.help))
    return k_exit_ok;

  auto s = open_session(a);
  Workspace ws = s->workspace();
  PlanView v;
  v.plan = make_plan(ws, PlanOptions{false, a.only});
  for (auto& e : v.plan.entries) {
    if (e.prepare_failed)
      ++v.unplannable;
    else
      ++v.counts[int(e.action)];
  }
  if (a.only.empty())
    v.undeclared = undeclared_outputs(ws);
  for (auto& u : v.undeclared)
    v.to_remove += !u.edited;

  if (json)
    print_plan_json(ws, v);
  else
    print_plan_table(ws, v);
  return v.unplannable ? k_exit_assets_failed : k_exit_ok;
}

int cmd_adopt(int argc, char** argv) {
  static const Command cmd{
      "adopt",
      "keep the files at these assets' outputs (edited by hand) as their art, in kiln.lock",
      "  kiln adopt icons/sword      # the retouched generated/icons/sword.png is the art now\n"
      "  kiln adopt 'icons/*'        # every icon as it is on disk\n"
      "A later build keeps an adopted file until the asset's fingerprint changes (its prompt,\n"
      "model, size...): then the file is saved in the cache and a new image made.\n"};
  CommonArgs a;
  std::vector<std::string> names;
  po::options_description d = common_options(a, false);
  d.add_options()("name", po::value(&names)->value_name("NAME")->composing(),
                  "an asset, or a glob ('icons/*'); repeatable, or given without --name")(
      "quiet,q", po::bool_switch(&a.quiet), "print errors only");
  po::positional_options_description positional;
  positional.add("name", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(d).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw Fatal(std::string("kiln adopt: ") + e.what() + "\nTry 'kiln adopt --help'.");
  }
  if (a.help) {
    std::cout << "kiln adopt NAME... - " << cmd.summary << "\n\n"
              << d << "\nExample:\n"
              << cmd.example;
    return k_exit_ok;
  }
  if (names.empty())
    throw Fatal("kiln adopt: name the assets to adopt (e.g. kiln adopt icons/sword)\nTry 'kiln "
                "adopt --help'.");
  a.only = names;
  auto s = open_session(a, LockMode::Wait);
  Workspace ws = s->workspace();
  Plan plan = [&] {
    try {
      return make_plan(ws, PlanOptions{false, a.only});
    } catch (const Fatal& e) { // said of --only: here the names are the arguments
      std::string message = e.what();
      if (message.rfind("--only ", 0) == 0)
        message = "kiln adopt: " + message.substr(7);
      throw Fatal(message, e.exit_code(), e.located());
    }
  }();
  int failed = 0, adopted = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    PlannedAsset p = plan.asset(ws, i);
    if (auto why = adopt_output(ws, p)) {
      s->log.error(p.spec.name + ": not adopted: " + *why);
      ++failed;
      continue;
    }
    ++adopted;
    if (!a.quiet)
      std::printf("adopted %s (%s)\n", p.spec.name.c_str(),
                  escape_controls(p.output.string()).c_str());
  }
  s->state->save();
  s->lockfile->save();
  if (!a.quiet && adopted)
    std::printf("kiln: %d adopted%s; recorded in %s\n", adopted,
                failed ? (", " + std::to_string(failed) + " not").c_str() : "",
                escape_controls(s->lockfile->path().string()).c_str());
  return failed ? k_exit_assets_failed : k_exit_ok;
}

// `kiln cache stats`: ccache -s style, the local store and what builds found in it and in
// the remote cache.
void print_cache_stats(const fs::path& dir, bool json) {
  CacheStats st = read_cache_stats(dir);
  CacheSize size = cache_size(dir);
  if (json) {
    rapidjson::StringBuffer buf;
    rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buf);
    w.StartObject();
    w.Key("dir");
    w.String(dir.string().c_str());
    const std::pair<const char*, uint64_t> counts[] = {{"entries", size.entries},
                                                       {"bytes", size.bytes},
                                                       {"builds", st.builds},
                                                       {"local_hits", st.local_hits},
                                                       {"local_misses", st.local_misses},
                                                       {"remote_hits", st.remote_hits},
                                                       {"remote_misses", st.remote_misses},
                                                       {"remote_errors", st.remote_errors},
                                                       {"remote_timeouts", st.remote_timeouts},
                                                       {"remote_corrupt", st.remote_corrupt},
                                                       {"remote_uploads", st.remote_uploads},
                                                       {"bytes_down", st.bytes_down},
                                                       {"bytes_up", st.bytes_up}};
    for (auto [key, value] : counts) {
      w.Key(key);
      w.Uint64(value);
    }
    w.Key("saved_usd");
    w.Double(st.saved_usd);
    w.EndObject();
    std::printf("%s\n", buf.GetString());
    return;
  }
  auto row = [](const char* what, uint64_t n) {
    std::printf("  %-22s %10llu\n", what, (unsigned long long)n);
  };
  std::printf("Local cache: %s\n", escape_controls(dir.string()).c_str());
  std::printf("  %-22s %10s  (%llu files)\n", "size", format_size(size.bytes).c_str(),
              (unsigned long long)size.entries);
  row("hits", st.local_hits);
  row("misses", st.local_misses);
  std::printf("Remote cache:\n");
  row("hits", st.remote_hits);
  row("misses", st.remote_misses);
  row("errors", st.remote_errors);
  row("  of them timeouts", st.remote_timeouts);
  row("bad entries refused", st.remote_corrupt);
  row("uploads", st.remote_uploads);
  std::printf("  %-22s %10s\n  %-22s %10s\n", "downloaded", format_size(st.bytes_down).c_str(),
              "uploaded", format_size(st.bytes_up).c_str());
  std::printf("Builds counted: %llu; money saved by cache hits: %s\n",
              (unsigned long long)st.builds, format_usd(st.saved_usd).c_str());
}

// The SHA-256 of every image the manifest's kiln.lock names: what gc keeps unless asked.
std::set<std::string> locked_content(const std::string& manifest) {
  std::set<std::string> keep;
  std::error_code ec;
  fs::path lock_path = Lockfile::path_for(fs::absolute(manifest));
  if (!fs::exists(lock_path, ec))
    return keep;
  Lockfile lock(lock_path);
  lock.load();
  for (auto& name : lock.names_not_in({}))
    if (auto e = lock.find(name))
      keep.insert(e->sha256);
  return keep;
}

int cmd_cache(int argc, char** argv) {
  static const Command cmd{
      "cache", "the local cache: what builds found in it (stats), and its size (gc)",
      "  kiln cache stats                    # hits, misses, remote errors, money saved\n"
      "  kiln cache stats --json             # the same for scripts\n"
      "  kiln cache gc --max-size 2G         # least recently used first; keeps kiln.lock's art\n"
      "  kiln cache stats --zero             # start counting again\n"};
  CommonArgs a;
  std::string action, max_size;
  bool json = false, zero = false, include_locked = false;
  po::options_description d("Options (kiln cache stats|gc ...)");
  d.add_options()("help,h", po::bool_switch(&a.help), "this text")("json", po::bool_switch(&json),
                                                                   "stats: print JSON")(
      "zero", po::bool_switch(&zero),
      "stats: set every count to zero")("max-size", po::value(&max_size)->value_name("SIZE"),
                                        "gc: shrink the cache to SIZE (500M, 2G, 1.5GiB...)")(
      "include-locked", po::bool_switch(&include_locked),
      "gc: may remove the images the manifest's kiln.lock names too")(
      "manifest,m", po::value(&a.manifest)->value_name("FILE"),
      "gc: the manifest whose kiln.lock names the images to keep (default: ./assets.toml)");
  // The action is the first word: `kiln cache gc --max-size 2G`.
  std::vector<char*> args(argv, argv + argc);
  if (argc > 1 && argv[1][0] != '-') {
    action = argv[1];
    args.erase(args.begin() + 1);
  }
  if (!parse(cmd, d, int(args.size()), args.data(), a.help))
    return k_exit_ok;
  bool gc_options = !max_size.empty() || include_locked;
  if ((action == "stats" && gc_options) || (action == "gc" && (json || zero)))
    throw Fatal("kiln cache " + action + ": " +
                (action == "stats" ? "--max-size and --include-locked are gc's"
                                   : "--json and --zero are stats'") +
                "\nTry 'kiln cache --help'.");
  fs::path dir = Cache::default_dir();
  if (action == "stats") {
    if (zero)
      zero_cache_stats(dir);
    print_cache_stats(dir, json);
    return k_exit_ok;
  }
  if (action != "gc")
    throw Fatal("kiln cache: say 'stats' or 'gc' (not '" + escape_controls(action) +
                "')\nTry 'kiln cache --help'.");
  auto limit = parse_size(max_size);
  if (!limit)
    throw Fatal("kiln cache gc: --max-size needs a size such as 500M or 2G (not '" +
                escape_controls(max_size) + "')");
  fs::path lock_path = Lockfile::path_for(fs::absolute(a.manifest));
  std::error_code ec;
  if (!include_locked && !fs::exists(lock_path, ec))
    throw Fatal("kiln cache gc: no kiln.lock at " + escape_controls(lock_path.string()) +
                " to keep its art: run it in the project's folder (or -m FILE), or pass "
                "--include-locked to let it remove any image");
  CacheUse use(dir, true, [] {
    std::fprintf(stderr, "kiln: cache gc: waiting for the builds using the cache to finish\n");
  });
  GcResult r =
      gc_cache(dir, *limit, include_locked ? std::set<std::string>{} : locked_content(a.manifest));
  std::printf("kiln: cache %s: %s in %llu files -> %s in %llu (%llu removed",
              escape_controls(dir.string()).c_str(), format_size(r.before.bytes).c_str(),
              (unsigned long long)r.before.entries, format_size(r.after.bytes).c_str(),
              (unsigned long long)r.after.entries, (unsigned long long)r.removed);
  if (r.kept_locked)
    std::printf("; %llu kept: kiln.lock names them, --include-locked removes them too",
                (unsigned long long)r.kept_locked);
  std::printf(")\n");
  return k_exit_ok;
}

int cmd_outputs(int argc, char** argv) {
  static const Command cmd{"outputs", "print one absolute output path per line",
                           "  kiln outputs -m assets.toml   # e.g. for CMake BYPRODUCTS\n"
                           "  kiln outputs --folder         # the output folder alone\n"};
  CommonArgs a;
  bool folder = false;
  po::options_description d = common_options(a, false);
  d.add_options()("folder", po::bool_switch(&folder), "print the output folder, not the files");
  if (!parse(cmd, d, argc, argv, a.help))
    return k_exit_ok;
  // The manifest alone decides the paths: no plugins are loaded, so this stays fast enough to
  // run at every configure.
  Manifest m = read_manifest(a);
  std::string out;
  for (size_t i = 0; i < (folder ? 1 : m.size()); ++i) {
    std::string path = (folder ? m.output_dir : m.output_dir / m.relative_output(i)).string();
    // Asset names cannot hold control characters; a folder can. One path per line cannot carry
    // a newline, and nothing raw reaches the terminal: refused, shown escaped.
    if (std::string shown = escape_controls(path); shown != path)
      throw Fatal("the output path '" + shown +
                  "' holds control characters, which one path per line cannot carry: rename the "
                  "output folder");
    out += path + "\n";
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return k_exit_ok;
}

int cmd_plugins(int argc, char** argv) {
  static const Command cmd{"plugins", "list every plugin kiln finds: kind, id, version, ABI, file",
                           "  kiln plugins                  # built-ins and KILN_PLUGIN_PATH\n"
                           "  kiln plugins -m assets.toml   # plus the manifest's [plugins] paths\n"
                           "  kiln plugins -v               # with each plugin's options\n"};
  CommonArgs a;
  a.manifest.clear();
  bool verbose = false;
  po::options_description d("Options");
  d.add_options()("help,h", po::bool_switch(&a.help), "this text")(
      "manifest,m", po::value(&a.manifest)->value_name("FILE"),
      "also search this manifest's [plugins] paths")("verbose,v", po::bool_switch(&verbose),
                                                     "show each plugin's options");
  if (!parse(cmd, d, argc, argv, a.help))
    return k_exit_ok;
  Log log;
  PluginRegistry registry(log);
  std::optional<Manifest> manifest;
  if (!a.manifest.empty())
    manifest = load_manifest(a.manifest, a.manifest);
  load_plugins(registry, manifest ? &*manifest : nullptr);
  auto plugins = registry.all();
  if (plugins.empty() && registry.broken().empty()) {
    std::printf("no plugins found (searched %s)\n",
                escape_controls(PluginRegistry::builtin_dir().string()).c_str());
    return k_exit_ok;
  }
  std::printf("%-15s %-20s %-9s %-4s %s\n", "KIND", "ID", "VERSION", "ABI", "FILE");
  for (auto* p : plugins) {
    std::string abi = std::to_string(p->info->abi_version) + "." + std::to_string(p->abi_minor);
    // A plugin's own text and its file's path are shown with control characters escaped.
    std::printf("%-15s %-20s %-9s %-4s %s\n", std::string(kind_name(p->kind)).c_str(),
                p->id.c_str(), escape_controls(p->version).c_str(), abi.c_str(),
                escape_controls(p->path.string()).c_str());
    if (verbose) {
      if (!p->description.empty())
        std::printf("    %s\n", escape_controls(p->description).c_str());
      for (size_t i = 0; i < p->options.size(); ++i) {
        const kiln_option_spec& o = p->options[i];
        const char* type = option_type_word(o.type);
        std::string fallback = !o.default_value   ? "required"
                               : *o.default_value ? "default " + std::string(o.default_value)
                               : o.type == KILN_OPTION_PATH ? "default none"
                                                            : "default \"\"";
        std::printf("    option %s (%s, %s%s): %s\n", escape_controls(o.name).c_str(), type,
                    escape_controls(fallback).c_str(),
                    p->shapes[i] || p->kind == KILN_KIND_VALIDATOR ? "" : ", not in fingerprints",
                    escape_controls(o.description ? o.description : "").c_str());
      }
    }
  }
  // Libraries that did not load: listed with why; a build fails on one only if its manifest
  // names it.
  for (const auto& b : registry.broken()) {
    std::printf("%-15s %-20s %-9s %-4s %s\n", "broken", b.id.empty() ? "?" : b.id.c_str(), "-", "-",
                escape_controls(b.path.string()).c_str());
    std::printf("    %s\n", escape_controls(b.message).c_str());
  }
  return k_exit_ok;
}

} // namespace

int cli_main(int argc, char** argv) {
  install_plugin_crash_reporting();
  if (argc < 2) {
    std::fputs(k_overview, stderr);
    return k_exit_usage;
  }
  std::string command = argv[1];
  if (command == "-h" || command == "--help" || command == "help") {
    std::fputs(k_overview, stdout);
    return k_exit_ok;
  }
  if (command == "--version" || command == "version") {
    std::printf("kiln %s (plugin ABI %u.%u)\n", k_kiln_version, KILN_PLUGIN_ABI_VERSION,
                KILN_PLUGIN_ABI_MINOR);
    return k_exit_ok;
  }
  // Each command parses the arguments after its name.
  int sub_argc = argc - 1;
  char** sub_argv = argv + 1;
  if (command == "build")
    return cmd_build(sub_argc, sub_argv);
  if (command == "plan")
    return cmd_plan(sub_argc, sub_argv);
  if (command == "outputs")
    return cmd_outputs(sub_argc, sub_argv);
  if (command == "adopt")
    return cmd_adopt(sub_argc, sub_argv);
  if (command == "plugins")
    return cmd_plugins(sub_argc, sub_argv);
  if (command == "cache")
    return cmd_cache(sub_argc, sub_argv);
  std::string msg = "unknown command '" + command + "'";
  if (auto hint = did_you_mean(command, {"build", "plan", "adopt", "outputs", "plugins", "cache"}))
    msg += " (did you mean '" + *hint + "'?)";
  throw Fatal(msg + "\nRun 'kiln --help' for the commands.");
}

} // namespace kiln::host
