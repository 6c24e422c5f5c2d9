// Whole builds through the engine's seams, in milliseconds: a backend written here (through the
// same plugin ABI as a library's, added in process) that paints what text-to-image models paint
// (opaque, textured, never exact seams) or fails as the test scripts it, the built-in
// strategies, validators and postprocessors, a real state folder and cache in a temp folder,
// and a Disk that counts the output folder's writes or fills up. Each test is one behaviour
// the run promises: retry chain, budget, breaker, resume, fallback, recheck, dedupe, and what
// is never paid for twice or lost.
#include "cache.hpp"
#include "engine.hpp"
#include "image.hpp"
#include "state.hpp"
#include "test_support.hpp"

#include <atomic>
#include <cerrno>
#include <cmath>
#include <kiln/kiln.hpp>
#include <mutex>
#include <thread>

namespace kiln::host::test {
namespace {

// One call the scripted backend received.
struct Call {
  std::string asset, prompt, model, resume_job_id, params_json;
  std::optional<uint64_t> seed;
  uint32_t attempt = 0;
  bool lost_create = false;
};

// An image as a text-to-image model paints it: opaque, a lit subject on a textured backdrop,
// all of it from the prompt and seed (same request, same pixels).
kiln::Image painted(uint32_t width, uint32_t height, std::string_view prompt,
                    std::optional<uint64_t> seed) {
  uint64_t h = std::hash<std::string_view>()(prompt) ^ (seed.value_or(7) * 0x9e3779b97f4a7c15ull);
  kiln::Image img(width, height);
  double cx = width * (0.4 + (h % 20) / 100.0), cy = height * (0.4 + (h / 20 % 20) / 100.0);
  double r = std::min(width, height) * 0.3;
  for (uint32_t y = 0; y < height; ++y)
    for (uint32_t x = 0; x < width; ++x) {
      uint8_t* p = img.at(x, y);
      double d = std::hypot(x - cx, y - cy);
      double noise = double((x * 73856093u ^ y * 19349663u ^ uint32_t(h)) % 17);
      bool subject = d < r;
      p[0] = uint8_t(subject ? 200 - d / r * 60 : 40 + noise + x * 60.0 / width);
      p[1] = uint8_t(subject ? 90 + (h >> 8) % 80 : 70 + noise + y * 50.0 / height);
      p[2] = uint8_t(subject ? 50 : 110 + noise);
      p[3] = 255;
    }
  return img;
}

// A blank frame: what a model returns when a safety filter blacks out its image.
kiln::Image blank(uint32_t width, uint32_t height) {
  kiln::Image img(width, height);
  for (size_t i = 0; i < img.rgba.size(); i += 4)
    img.rgba[i + 3] = 255;
  return img;
}

// What the scripted backend does: for each call, `reply` (given the call's index from 0)
// delivers an image or throws kiln::Error; by default a painted image, $0.01.
struct Script {
  std::mutex mutex;
  std::vector<Call> calls;
  std::function<void(const kiln::Request&, kiln::BackendResult&, size_t)> reply;
  double estimate_usd = 0.01;
  double cost_usd = 0.01;
  uint32_t paints = 0;             // a text-to-image model: no transparency, no exact seams
  std::atomic<int> validations{0}; // calls of the "gate" validator
  std::atomic<bool> reject{false}; // "gate" rejects every image

  size_t count() {
    std::lock_guard lock(mutex);
    return calls.size();
  }
  Call call(size_t i) {
    std::lock_guard lock(mutex);
    return calls.at(i);
  }
};
Script* g_script = nullptr;

class Scripted : public kiln::Backend {
public:
  static constexpr uint32_t k_capabilities = KILN_BACKEND_CAN_RESUME;
  explicit Scripted(const kiln::Context&) {}

  void generate(const kiln::Request& q, kiln::BackendResult& result) override {
    Script& s = *g_script;
    size_t index;
    {
      std::lock_guard lock(s.mutex);
      index = s.calls.size();
      s.calls.push_back(Call{std::string(q.asset.name), std::string(q.prompt), std::string(q.model),
                             std::string(q.resume_job_id), std::string(q.params_json), q.seed,
                             q.attempt, q.lost_create});
    }
    result.set_remote_id(q.resume_job_id.empty() ? "job" + std::to_string(index)
                                                 : std::string(q.resume_job_id));
    // A re-attached job was paid for when it was created.
    result.set_cost_usd(q.resume_job_id.empty() ? s.cost_usd : 0.0);
    if (s.reply)
      s.reply(q, result, index);
    else
      result.set_image(painted(q.width, q.height, q.prompt, q.seed));
  }
  double estimate_cost_usd(const kiln::Request&) override { return g_script->estimate_usd; }
  uint32_t paints(const kiln::Request&) override { return g_script->paints; }
};

// A validator the test controls: counts its calls, rejects when told to.
class Gate : public kiln::Validator {
public:
  explicit Gate(const kiln::Context&) {}
  kiln::Verdict validate(const kiln::Asset&, const kiln::ImageFile&) override {
    ++g_script->validations;
    return g_script->reject ? kiln::Verdict::reject("the gate says no") : kiln::Verdict::accept();
  }
};

// The output folder's files, counted, and a disk that can fill up.
class TestDisk : public Disk {
public:
  void write(const fs::path& path, std::string_view bytes) override {
    if (full)
      throw std::runtime_error("cannot write '" + path.string() + "': No space left on device");
    ++writes;
    Disk::write(path, bytes);
  }
  bool full = false;
  int writes = 0;
};

// Collects each asset's outcome, by name.
class Outcomes : public OutcomeSink {
public:
  void add(size_t, const AssetOutcome& o) override { by_name[o.name] = o; }
  const AssetOutcome& operator[](const std::string& name) const { return by_name.at(name); }
  std::map<std::string, AssetOutcome> by_name;
};

const std::string k_icons = R"(
[defaults]
backend = "scripted"
model = "test/model"

[strategies.backoff]
base_delay_ms = 1
max_delay_ms = 2

[types.icon]
width = 32
height = 32
validators = ["resolution", "format", "not-blank"]

[[asset]]
name = "icons/sword"
type = "icon"
prompt = "a sword"

[[asset]]
name = "icons/shield"
type = "icon"
prompt = "a shield"

[[asset]]
name = "icons/potion"
type = "icon"
prompt = "a potion"
)";

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  if (at == std::string::npos)
    throw std::runtime_error("no '" + from + "' in the manifest");
  return text.replace(at, from.size(), to);
}

class Engine : public ::testing::Test {
protected:
  Engine() {
    g_script = &script;
    load(k_icons);
  }
  ~Engine() override { g_script = nullptr; }

  // The manifest `text`, its plugins started; the state, cache and kiln.lock stay.
  void load(const std::string& text) {
    plugins = {};
    registry = std::make_unique<PluginRegistry>(log);
    registry->load_directory(KILN_PLUGIN_BUILD_DIR);
    registry->add_in_process(kiln::detail::info<Scripted>("scripted", "1.0.0", "scripted"),
                             "in-process:scripted");
    registry->add_in_process(kiln::detail::info<Gate>("gate", "1.0.0", "gate"), "in-process:gate");
    manifest = parse_manifest(text, dir / "assets.toml", "assets.toml");
    plugins = instantiate_manifest_plugins(*registry, manifest);
    if (!state) {
      state = std::make_unique<StateFile>(dir / "state");
      state->load();
      cache = std::make_unique<Cache>(dir / "cache");
      lock = std::make_unique<Lockfile>(dir / "kiln.lock");
    }
  }
  // A second build tree of the same project: a state of its own, the same cache and kiln.lock.
  void new_build_tree() {
    state = std::make_unique<StateFile>(dir / "state2");
    state->load();
  }
  Workspace workspace() {
    Workspace ws{manifest, *registry, plugins, log, *state, *cache, lock.get()};
    ws.disk = &disk;
    return ws;
  }
  Plan plan(PlanOptions options = {}) {
    Workspace ws = workspace();
    return make_plan(ws, options);
  }
  BuildSummary build(BuildOptions options = {}, PlanOptions plan_options = {}) {
    Workspace ws = workspace();
    Plan p = make_plan(ws, plan_options);
    out = Outcomes();
    options.progress = Progress::Mode::Lines;
    options.verbosity = KILN_LOG_ERROR;
    return kiln::host::build(ws, p, options, &out);
  }
  fs::path output(const std::string& name) { return dir / "generated" / (name + ".png"); }
  std::string bytes(const std::string& name) { return read_file(output(name)).value_or(""); }

  TempDir dir;
  Log log{KILN_LOG_ERROR};
  Script script;
  TestDisk disk;
  std::unique_ptr<PluginRegistry> registry;
  Manifest manifest;
  PluginSet plugins;
  std::unique_ptr<StateFile> state;
  std::unique_ptr<Cache> cache;
  std::unique_ptr<Lockfile> lock;
  Outcomes out;
};

BuildOptions jobs(unsigned n, std::optional<double> budget = std::nullopt) {
  BuildOptions o;
  o.jobs = n;
  o.budget_usd = budget;
  return o;
}

// --- planning, and what is never paid for twice ------------------------------------------

TEST_F(Engine, PlanPredictsTheCostAndCallsNoBackend) {
  Plan p = plan();
  EXPECT_NEAR(p.predicted_cost_usd, 0.03, 1e-9);
  EXPECT_EQ(script.count(), 0u);
  for (auto& e : p.entries)
    EXPECT_EQ(e.action, Action::Generate);
}

TEST_F(Engine, FirstBuildMakesEveryAssetOnceAtTheDeclaredSize) {
  BuildSummary s = build();
  EXPECT_EQ(s.generated, 3);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(script.count(), 3u);
  EXPECT_NEAR(s.cost_usd, 0.03, 1e-9);
  auto probe = probe_image(bytes("icons/sword"));
  ASSERT_TRUE(probe);
  EXPECT_EQ(probe->width, 32u);
  EXPECT_EQ(probe->format, "png");
  EXPECT_EQ(lock->find("icons/sword")->sha256, sha256_hex(bytes("icons/sword")));
  EXPECT_TRUE(lock->find("icons/sword")->paid);
}

TEST_F(Engine, SecondBuildCallsNothingAndWritesNothing) {
  build();
  int writes = disk.writes;
  BuildSummary s = build();
  EXPECT_EQ(s.up_to_date, 3);
  EXPECT_EQ(script.count(), 3u);
  EXPECT_EQ(disk.writes, writes);
}

TEST_F(Engine, OnlyTheAssetWhosePromptChangedIsMadeAgain) {
  build();
  load(replaced(k_icons, "a shield", "a tower shield"));
  BuildSummary s = build();
  EXPECT_EQ(s.generated, 1);
  EXPECT_EQ(s.up_to_date, 2);
  ASSERT_EQ(script.count(), 4u);
  EXPECT_EQ(script.call(3).prompt, "a tower shield");
  EXPECT_EQ(out["icons/shield"].reason, "prompt changed");
}

TEST_F(Engine, IdenticalBytesAreNotWrittenAgain) {
  // A model that ignores the prompt's last word: a new request, the same image.
  script.reply = [](const kiln::Request& q, kiln::BackendResult& r, size_t) {
    r.set_image(painted(q.width, q.height, "same", 1));
  };
  build();
  auto before = fs::last_write_time(output("icons/sword"));
  int writes = disk.writes;
  load(replaced(k_icons, "a sword", "a long sword"));
  BuildSummary s = build();
  EXPECT_EQ(s.generated, 1);
  EXPECT_EQ(disk.writes, writes); // downstream build steps key on the mtime
  EXPECT_EQ(fs::last_write_time(output("icons/sword")), before);
}

TEST_F(Engine, ADeletedOutputComesBackFromTheCacheForFree) {
  build();
  fs::remove(output("icons/potion"));
  BuildSummary s = build();
  EXPECT_EQ(s.cached, 1);
  EXPECT_EQ(script.count(), 3u);
  EXPECT_EQ(probe_image(bytes("icons/potion"))->width, 32u);
}

TEST_F(Engine, ASecondBuildTreePaysForNothing) {
  build();
  new_build_tree();
  fs::remove_all(dir / "generated");
  BuildSummary s = build();
  EXPECT_EQ(s.cached, 3);
  EXPECT_EQ(script.count(), 3u);
  EXPECT_EQ(s.cost_usd, 0);
}

TEST_F(Engine, TwoAssetsOfTheSameImageArePaidForOnce) {
  load(k_icons + R"(
[[asset]]
name = "icons/sword-copy"
type = "icon"
prompt = "a sword"
)");
  BuildSummary s = build(jobs(4));
  EXPECT_EQ(script.count(), 3u);
  EXPECT_EQ(s.generated, 3);
  EXPECT_EQ(s.cached, 1);
  EXPECT_EQ(bytes("icons/sword-copy"), bytes("icons/sword"));
  EXPECT_NE(out["icons/sword-copy"].reason.find("same image as icons/sword"), std::string::npos);
}

TEST_F(Engine, APostprocessingChangeReusesTheModelsImage) {
  build();
  // (pixelate without its prompt hint: with it, the model is asked for pixel art, a new request)
  load(replaced(k_icons, "validators = [", "postprocess = [\"pixelate\"]\nvalidators = [") +
       "\n[postprocessors.pixelate]\nprompt_hint = \"\"\n");
  BuildSummary s = build();
  EXPECT_EQ(s.generated, 3);
  EXPECT_EQ(script.count(), 3u);
  EXPECT_EQ(s.cost_usd, 0);
  EXPECT_TRUE(out["icons/sword"].attempts.at(0).from_cache);
}

TEST_F(Engine, AWrongSizeImageIsFittedToTheAsset) {
  script.reply = [](const kiln::Request& q, kiln::BackendResult& r, size_t) {
    r.set_image(painted(q.width * 3, q.height * 2, q.prompt, q.seed));
  };
  build();
  auto probe = probe_image(bytes("icons/shield"));
  ASSERT_TRUE(probe);
  EXPECT_EQ(probe->width, 32u);
  EXPECT_EQ(probe->height, 32u);
}

// --- the retry chain --------------------------------------------------------------------

TEST_F(Engine, ABlankImageBuysANewSeed) {
  script.reply = [](const kiln::Request& q, kiln::BackendResult& r, size_t n) {
    r.set_image(n == 0 ? blank(q.width, q.height) : painted(q.width, q.height, q.prompt, q.seed));
  };
  load(replaced(k_icons, "prompt = \"a shield\"",
                "prompt = \"a shield\"\nretry = [\"adjust-parameters\"]"));
  BuildSummary s = build(jobs(1), {false, {"icons/shield"}});
  EXPECT_EQ(s.generated, 1);
  ASSERT_EQ(script.count(), 2u);
  EXPECT_NE(script.call(0).seed, script.call(1).seed);
  const auto& attempts = out["icons/shield"].attempts;
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[0].source, "not-blank");
  EXPECT_EQ(attempts[0].decision, "retry");
  EXPECT_EQ(attempts[1].strategy, "adjust-parameters");
}

TEST_F(Engine, ANewSeedCannotAddTransparency) {
  load(replaced(k_icons, "\"not-blank\"]",
                "\"not-blank\", \"alpha\"]\nretry = [\"adjust-parameters\"]"));
  BuildSummary s = build(jobs(1), {false, {"icons/sword"}});
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(script.count(), 1u); // the opaque model is not asked again
  const AssetOutcome& o = out["icons/sword"];
  EXPECT_EQ(o.error->category, KILN_ERROR_PERMANENT);
  EXPECT_NE(o.error->message.find("no new image can pass"), std::string::npos);
  EXPECT_NE(o.hint.find("remove-background"), std::string::npos);
}

TEST_F(Engine, AModelThatPaintsTransparencyIsAskedAgain) {
  script.paints = KILN_PROPERTY_ALPHA;
  load(replaced(k_icons, "\"not-blank\"]",
                "\"not-blank\", \"alpha\"]\nretry = [\"adjust-parameters\"]"));
  build(jobs(1), {false, {"icons/sword"}});
  EXPECT_EQ(script.count(), 3u); // the first image and the strategy's two tries
}

TEST_F(Engine, ARetryOfTheSameRequestReattachesToItsJob) {
  script.reply = [](const kiln::Request& q, kiln::BackendResult& r, size_t n) {
    if (n == 0)
      throw kiln::Error("prediction failed: CUDA out of memory", KILN_ERROR_RETRYABLE);
    r.set_image(painted(q.width, q.height, q.prompt, q.seed));
  };
  BuildSummary s = build(jobs(1), {false, {"icons/sword"}});
  EXPECT_EQ(s.generated, 1);
  ASSERT_EQ(script.count(), 2u);
  EXPECT_EQ(script.call(1).resume_job_id, "job0");
  EXPECT_EQ(script.call(1).attempt, 2u);
  EXPECT_EQ(out["icons/sword"].attempts[1].strategy, "backoff");
}

TEST_F(Engine, ACorruptDownloadIsFetchedAgainForFree) {
  fs::path junk = dir / "junk.png";
  write_file_atomic(junk, "\x89PNG\r\n\x1a\n not really");
  script.reply = [&](const kiln::Request& q, kiln::BackendResult& r, size_t n) {
    if (n == 0)
      r.set_image_file(junk.string());
    else
      r.set_image(painted(q.width, q.height, q.prompt, q.seed));
  };
  BuildSummary s = build(jobs(1), {false, {"icons/sword"}});
  EXPECT_EQ(s.generated, 1);
  ASSERT_EQ(script.count(), 2u);
  EXPECT_EQ(script.call(1).resume_job_id, "job0");
  EXPECT_EQ(out["icons/sword"].attempts[1].strategy, "download-again");
  EXPECT_NEAR(out["icons/sword"].cost_usd, 0.01, 1e-9); // one job, paid once
}

TEST_F(Engine, AFileThatStaysCorruptIsFetchedAgainOnlyOnce) {
  fs::path junk = dir / "junk.png";
  write_file_atomic(junk, "\x89PNG\r\n\x1a\n not really");
  script.reply = [&](const kiln::Request&, kiln::BackendResult& r, size_t) {
    r.set_image_file(junk.string());
  };
  load(replaced(k_icons, "[types.icon]", "[types.icon]\nretry = []"));
  BuildSummary s = build(jobs(1), {false, {"icons/sword"}});
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(script.count(), 2u); // the create, and one free download again
  const auto& attempts = out["icons/sword"].attempts;
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[1].strategy, "download-again");
  EXPECT_EQ(attempts[1].decision, "stop");
}

TEST_F(Engine, AStrategyMayMoveTheAssetToAnotherModel) {
  script.reply = [](const kiln::Request& q, kiln::BackendResult& r, size_t n) {
    r.set_image(n == 0 ? blank(q.width, q.height) : painted(q.width, q.height, q.prompt, q.seed));
  };
  load(replaced(k_icons, "[types.icon]",
                "[types.icon]\nretry = [\"alternate-model\"]\nfallback_models = [\"test/other\"]") +
       "\n[strategies.alternate-model]\nafter_validation_failures = 1\n");
  BuildSummary s = build(jobs(1), {false, {"icons/sword"}});
  EXPECT_EQ(s.generated, 1);
  ASSERT_EQ(script.count(), 2u);
  EXPECT_EQ(script.call(0).model, "test/model");
  EXPECT_EQ(script.call(1).model, "test/other");
  EXPECT_EQ(out["icons/sword"].model, "test/other");
  EXPECT_EQ(lock->find("icons/sword")->model, "test/other");
}

TEST_F(Engine, MaxAttemptsEndsTheChain) {
  script.reply = [](const kiln::Request&, kiln::BackendResult&, size_t) {
    throw kiln::Error("model is booting", KILN_ERROR_RETRYABLE);
  };
  load(k_icons + "\n[retry_policy]\nmax_attempts = 3\n");
  BuildSummary s = build(jobs(1), {false, {"icons/sword"}});
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(script.count(), 3u);
  EXPECT_NE(out["icons/sword"].error->message.find("gave up after 3 attempts"), std::string::npos);
  EXPECT_EQ(out["icons/sword"].attempts.back().decision, "stop");
}

TEST_F(Engine, TheRunsRetryBudgetCapsRetriesAcrossAssets) {
  script.reply = [](const kiln::Request&, kiln::BackendResult&, size_t) {
    throw kiln::Error("upstream 502", KILN_ERROR_RETRYABLE);
  };
  load(k_icons + "\n[retry_policy]\nbudget_min = 1\nbudget_ratio = 0.0\n");
  BuildSummary s = build(jobs(1));
  EXPECT_EQ(s.failed, 3);
  EXPECT_EQ(script.count(), 4u); // three first attempts, one retry in all
}

TEST_F(Engine, AFailingModelCoolsDownForEveryAsset) {
  script.reply = [](const kiln::Request&, kiln::BackendResult&, size_t) {
    throw kiln::Error("upstream 500", KILN_ERROR_RETRYABLE);
  };
  load(replaced(k_icons, "[types.icon]", "[types.icon]\nretry = []") +
       "\n[retry_policy]\nbreaker_failures = 2\nbreaker_cooldown_s = 600\n");
  BuildSummary s = build(jobs(1));
  EXPECT_EQ(s.failed, 3);
  EXPECT_EQ(script.count(), 2u);
  int cooled = 0;
  for (auto& [name, o] : out.by_name)
    cooled += o.error->message.find("cooling down") != std::string::npos;
  EXPECT_EQ(cooled, 1);
}

TEST_F(Engine, NeedsAPersonStopsTheBackendForTheOtherAssets) {
  script.reply = [](const kiln::Request&, kiln::BackendResult&, size_t) {
    throw kiln::Error("insufficient credit", KILN_ERROR_NEEDS_PERSON);
  };
  BuildSummary s = build(jobs(1));
  EXPECT_EQ(script.count(), 1u);
  EXPECT_TRUE(s.needs_a_person);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.skipped, 2);
  ASSERT_EQ(s.stopped.size(), 1u);
}

TEST_F(Engine, AWaitLongerThanTheBackendAllowsFailsAtOnce) {
  script.reply = [](const kiln::Request&, kiln::BackendResult&, size_t) {
    throw kiln::Error("throttled", KILN_ERROR_RETRYABLE, 600'000);
  };
  load(k_icons + "\n[backends.scripted]\nmax_retry_after_s = 1\n");
  BuildSummary s = build(jobs(1), {false, {"icons/sword"}});
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(script.count(), 1u);
  EXPECT_NE(out["icons/sword"].error->message.find("more than its max_retry_after_s"),
            std::string::npos);
}

TEST_F(Engine, AFallbackStandInIsWrittenButNeverCachedOrLocked) {
  script.reply = [](const kiln::Request&, kiln::BackendResult&, size_t) {
    throw kiln::Error("the model refused the prompt", KILN_ERROR_CONTENT_POLICY);
  };
  load(replaced(k_icons, "[types.icon]", "[types.icon]\nretry = [\"fallback\"]"));
  BuildSummary s = build(jobs(1), {false, {"icons/sword"}});
  EXPECT_EQ(s.generated, 1);
  EXPECT_EQ(s.fallbacks(), 1);
  EXPECT_TRUE(out["icons/sword"].fallback);
  EXPECT_EQ(out["icons/sword"].backend, "placeholder");
  EXPECT_FALSE(lock->find("icons/sword"));
  EXPECT_FALSE(cache->contains(out["icons/sword"].fingerprint, "png"));
  // The next build tries the real image again.
  script.reply = nullptr;
  s = build(jobs(1), {false, {"icons/sword"}});
  EXPECT_EQ(s.generated, 1);
  EXPECT_FALSE(out["icons/sword"].fallback);
}

TEST_F(Engine, ABackendsBugIsNamedAsOne) {
  script.reply = [](const kiln::Request&, kiln::BackendResult&, size_t) {
    std::vector<int>().at(3);
  };
  build(jobs(1), {false, {"icons/sword"}});
  const std::string& why = out["icons/sword"].error->message;
  EXPECT_NE(why.find("backend 'scripted' threw in generate()"), std::string::npos) << why;
  EXPECT_NE(why.find("a bug in the plugin"), std::string::npos) << why;
}

// --- money -------------------------------------------------------------------------------

TEST_F(Engine, TheBudgetStopsBeforeItIsCrossed) {
  script.estimate_usd = script.cost_usd = 0.05;
  BuildSummary s = build(jobs(1, 0.12));
  EXPECT_EQ(script.count(), 2u);
  EXPECT_EQ(s.generated, 2);
  EXPECT_EQ(s.skipped, 1);
  EXPECT_EQ(s.over_budget, 1u);
  EXPECT_LE(s.cost_usd, 0.12);
}

TEST_F(Engine, TheBudgetCountsWhatWasPaidNotWhatWasPredicted) {
  script.estimate_usd = 0.05;
  script.cost_usd = 0.01;
  BuildSummary s = build(jobs(1, 0.08)); // 0.15 predicted, 0.03 paid
  EXPECT_EQ(s.generated, 3);
  EXPECT_NEAR(s.cost_usd, 0.03, 1e-9);
}

TEST_F(Engine, ABackendThatGivesNoEstimateStillStopsAtTheBudget) {
  script.estimate_usd = 0; // "free", or an estimate that threw
  script.cost_usd = 0.05;
  BuildSummary s = build(jobs(4, 0.12));
  EXPECT_EQ(s.generated, 2); // the first alone until its cost was known, then one more
  EXPECT_EQ(s.skipped, 1);
  EXPECT_LE(s.cost_usd, 0.12);
  EXPECT_EQ(script.count(), 2u);
}

TEST_F(Engine, AFailedJobThatWasBilledCountsAgainstTheBudget) {
  script.estimate_usd = script.cost_usd = 0.02;
  script.reply = [](const kiln::Request&, kiln::BackendResult&, size_t) {
    throw kiln::Error("the prediction failed after running", KILN_ERROR_RETRYABLE);
  };
  BuildSummary s = build(jobs(1, 0.03), {false, {"icons/sword"}});
  EXPECT_EQ(script.count(), 1u); // 0.02 billed + 0.02 for a retry would cross 0.03
  EXPECT_NEAR(s.cost_usd, 0.02, 1e-9);
  EXPECT_NE(out["icons/sword"].error->message.find("not retried: the budget of $0.03"),
            std::string::npos)
      << out["icons/sword"].error->message;
}

TEST_F(Engine, ABudgetRefusalOfARetryIsNotARetry) {
  script.estimate_usd = script.cost_usd = 0.05;
  script.reply = [](const kiln::Request& q, kiln::BackendResult& r, size_t n) {
    r.set_image(n == 0 ? blank(q.width, q.height) : painted(q.width, q.height, q.prompt, q.seed));
  };
  load(replaced(k_icons, "[types.icon]", "[types.icon]\nretry = [\"adjust-parameters\"]"));
  BuildSummary s = build(jobs(1, 0.06), {false, {"icons/sword"}});
  EXPECT_EQ(script.count(), 1u);
  EXPECT_EQ(s.failed, 1);
  EXPECT_NE(out["icons/sword"].error->message.find("not retried: the budget of $0.06"),
            std::string::npos)
      << out["icons/sword"].error->message;
}

// --- a killed run -------------------------------------------------------------------------

TEST_F(Engine, AJobAKilledRunLeftIsReattachedNotBoughtAgain) {
  Plan p = plan();
  Workspace ws = workspace();
  std::string fp = p.asset(ws, 0).fingerprint;
  state->creating("icons/sword", fp, "scripted");
  state->submitted("icons/sword", fp, "scripted", "left-by-killed-run");
  build(jobs(1), {false, {"icons/sword"}});
  ASSERT_EQ(script.count(), 1u);
  EXPECT_EQ(script.call(0).resume_job_id, "left-by-killed-run");
  EXPECT_NE(out["icons/sword"].reason.find("re-attaches to left-by-killed-run"), std::string::npos);
}

TEST_F(Engine, ACreateWhoseAnswerNeverCameIsLookedForFirst) {
  Plan p = plan();
  Workspace ws = workspace();
  state->creating("icons/sword", p.asset(ws, 0).fingerprint, "scripted");
  build(jobs(1), {false, {"icons/sword"}});
  ASSERT_EQ(script.count(), 1u);
  EXPECT_TRUE(script.call(0).lost_create);
}

// --- the output folder: edits, validators, a full disk --------------------------------------

TEST_F(Engine, AnArtistsEditIsKeptAndNotReplaced) {
  build();
  std::string edit = encode_image(painted(32, 32, "by hand", 3), "png");
  write_file_atomic(output("icons/sword"), edit);
  int writes = disk.writes;
  BuildSummary s = build();
  EXPECT_EQ(s.kept, 1);
  EXPECT_EQ(disk.writes, writes);
  EXPECT_EQ(bytes("icons/sword"), edit);
  EXPECT_EQ(script.count(), 3u);
}

TEST_F(Engine, AnEditReplacedByANewPromptIsSavedFirst) {
  build();
  std::string edit = encode_image(painted(32, 32, "by hand", 3), "png");
  write_file_atomic(output("icons/sword"), edit);
  load(replaced(k_icons, "a sword", "a broadsword"));
  BuildSummary s = build();
  EXPECT_EQ(s.generated, 1);
  EXPECT_NE(bytes("icons/sword"), edit);
  bool saved = false;
  for (auto& f : fs::recursive_directory_iterator(dir / "cache"))
    saved = saved || (f.is_regular_file() && read_file(f.path()) == edit);
  EXPECT_TRUE(saved);
}

TEST_F(Engine, ChangedValidatorsCheckTheOutputsAgainForFree) {
  build();
  load(replaced(k_icons, "\"not-blank\"]", "\"not-blank\", \"gate\"]"));
  BuildSummary s = build();
  EXPECT_EQ(s.up_to_date, 3);
  EXPECT_EQ(script.validations, 3); // each output judged, by the validator it never met
  EXPECT_EQ(script.count(), 3u);
  EXPECT_EQ(out["icons/sword"].reason, "up to date; passes the changed validators");
}

TEST_F(Engine, AnImageFromTheCacheMeetsTheAssetsValidatorsOfNow) {
  build();
  load(replaced(k_icons, "\"not-blank\"]", "\"not-blank\", \"gate\"]\nretry = []"));
  script.reject = true;
  fs::remove(output("icons/sword"));
  BuildSummary s = build(jobs(1), {false, {"icons/sword"}});
  EXPECT_EQ(s.cached, 0);
  EXPECT_EQ(s.failed, 1);
  EXPECT_FALSE(fs::exists(output("icons/sword"))); // never installed unjudged
  EXPECT_NE(out["icons/sword"].reason.find("the cached image does not pass"), std::string::npos);
  EXPECT_EQ(script.count(), 3u); // the same request's image is judged again, not bought again
}

TEST_F(Engine, AnOutputTheChangedValidatorsRejectIsMadeAgain) {
  build();
  load(replaced(k_icons, "\"not-blank\"]", "\"not-blank\", \"file-size\"]") +
       "\n[validators.file-size]\nmin_bytes = 1\nmax_bytes = 10\n");
  BuildSummary s = build(jobs(1), {false, {"icons/sword"}});
  EXPECT_EQ(s.failed, 1); // made again, and the new images are too large as well
  EXPECT_EQ(out["icons/sword"].reason, "rejected by the changed validators");
  // The same request is not bought again (its image is the cached one, rejected the same way);
  // only adjust-parameters' two new seeds are.
  ASSERT_EQ(out["icons/sword"].attempts.size(), 3u);
  EXPECT_TRUE(out["icons/sword"].attempts[0].from_cache);
  EXPECT_EQ(script.count(), 5u);
}

TEST_F(Engine, AFullDiskLosesNoPaidImage) {
  disk.full = true;
  BuildSummary s = build(jobs(1));
  EXPECT_EQ(s.failed, 3);
  EXPECT_NE(out["icons/sword"].error->message.find("No space left on device"), std::string::npos);
  EXPECT_EQ(script.count(), 3u);
  disk.full = false;
  s = build(jobs(1));
  EXPECT_EQ(s.cached, 3);
  EXPECT_EQ(script.count(), 3u); // nothing bought twice
}

TEST_F(Engine, TheReportListsEveryAssetInManifestOrder) {
  // The assets finish in the reverse of their order: the report is in the manifest's all the
  // same.
  script.reply = [](const kiln::Request& q, kiln::BackendResult& r, size_t) {
    int wait_ms = q.prompt == "a sword" ? 80 : q.prompt == "a shield" ? 40 : 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    r.set_image(painted(q.width, q.height, q.prompt, q.seed));
  };
  fs::path path = dir / "report.json";
  Workspace ws = workspace();
  Plan p = make_plan(ws, {});
  ReportWriter report(path);
  BuildOptions o = jobs(3);
  o.progress = Progress::Mode::Lines;
  o.verbosity = KILN_LOG_ERROR;
  BuildSummary s = kiln::host::build(ws, p, o, &report);
  report.finish(s);
  std::string json = read_file(path).value();
  size_t sword = json.find("\"icons/sword\""), shield = json.find("\"icons/shield\""),
         potion = json.find("\"icons/potion\"");
  ASSERT_NE(potion, std::string::npos);
  EXPECT_LT(sword, shield);
  EXPECT_LT(shield, potion);
  EXPECT_NE(json.find("\"status\": \"generated\""), std::string::npos);
}

} // namespace
} // namespace kiln::host::test
