// Manifest errors are golden-tested: build scripts and people read them, so their exact text
// (file:line:col, the line, the caret) is part of the interface.
#include "manifest.hpp"
#include "test_support.hpp"

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

namespace kiln::host {
namespace {

using test::fatal_message;

const char* k_head = R"([types.icon]
width = 256
height = 256
)";

Manifest parse(const std::string& text) {
  return parse_manifest(text, "/tmp/game/assets.toml", "assets.toml");
}

std::string error_of(const std::string& text) {
  return fatal_message([&] { parse(text); });
}

TEST(Manifest, ResolvesDefaultsThenTypeThenAsset) {
  Manifest m = parse(R"(
[project]
output_dir = "out/art"
budget_usd = 2

[defaults]
backend = "placeholder"
model = "m1"
format = "webp"
params = { steps = 4, guidance = 3.5 }

[types.icon]
width = 256
height = 128
style = "flat"
negative = "text"
enhancers = ["style"]
params = { steps = 8 }

[[asset]]
name = "icons/sword"
type = "icon"
prompt = "a sword"
model = "m2"
height = 64
seed = 7
params = { extra = "x" }
)");
  ASSERT_EQ(m.size(), 1u);
  const AssetSpec a = m.asset(0);
  EXPECT_EQ(m.output_dir, fs::path("/tmp/game/out/art"));
  EXPECT_EQ(m.budget_usd, 2.0);
  EXPECT_EQ(a.backend, "placeholder");
  EXPECT_EQ(a.model, "m2");
  EXPECT_EQ(a.format, "webp");
  EXPECT_EQ(a.width, 256u);
  EXPECT_EQ(a.height, 64u);
  EXPECT_EQ(a.seed, 7u);
  EXPECT_EQ(a.style, "flat");
  EXPECT_EQ(a.negative, "text");
  EXPECT_EQ(a.enhancers, std::vector<std::string>{"style"});
  EXPECT_EQ(a.validators, (std::vector<std::string>{"resolution", "format", "not-corrupt"}));
  EXPECT_EQ(a.params_json, R"({"extra":"x","guidance":3.5,"steps":8})");
  EXPECT_EQ(a.relative_output(), "icons/sword.webp");
}

TEST(Manifest, WrongTypeNamesLineColumnAndShowsCaret) {
  EXPECT_EQ(error_of(std::string(k_head) + R"(
[[asset]]
name = "icons/sword"
type = "icon"
prompt = "a sword"
width = "256"
)"),
            "assets.toml:9:9: width must be an integer, not a string\n"
            "    width = \"256\"\n"
            "            ^");
}

TEST(Manifest, UnknownKeySuggestsTheClosestOne) {
  EXPECT_EQ(error_of(std::string(k_head) + R"(
[[asset]]
name = "icons/sword"
type = "icon"
promt = "a sword"
)"),
            "assets.toml:8:1: unknown key 'promt' in [[asset]] (did you mean 'prompt'?)\n"
            "    promt = \"a sword\"\n"
            "    ^\n"
            "assets.toml:5:1: asset 'icons/sword' has no prompt\n"
            "    [[asset]]\n"
            "    ^");
}

TEST(Manifest, NameThatEscapesOutputDirIsRefused) {
  EXPECT_EQ(error_of(std::string(k_head) + R"(
[[asset]]
name = "../../etc/sword"
type = "icon"
prompt = "a sword"
)"),
            "assets.toml:6:8: asset name '../../etc/sword' escapes output_dir ('..' is not "
            "allowed)\n"
            "    name = \"../../etc/sword\"\n"
            "           ^");
}

TEST(Manifest, AbsoluteNameIsRefused) {
  EXPECT_NE(error_of(std::string(k_head) + R"(
[[asset]]
name = "/etc/sword"
type = "icon"
prompt = "a sword"
)")
                .find("assets.toml:6:8: asset name '/etc/sword' is an absolute path"),
            std::string::npos);
}

TEST(Manifest, DuplicateNamePointsAtBothDeclarations) {
  EXPECT_EQ(error_of(std::string(k_head) + R"(
[[asset]]
name = "icons/sword"
type = "icon"
prompt = "a sword"

[[asset]]
name = "icons/sword"
type = "icon"
prompt = "another sword"
)"),
            "assets.toml:11:8: duplicate asset name 'icons/sword' (first declared at "
            "assets.toml:6)\n"
            "    name = \"icons/sword\"\n"
            "           ^");
}

TEST(Manifest, UnknownTypeSuggestsDeclaredOne) {
  EXPECT_EQ(error_of(std::string(k_head) + R"(
[[asset]]
name = "icons/sword"
type = "icno"
prompt = "a sword"
)"),
            "assets.toml:7:8: unknown type 'icno' (no [types.icno]) (did you mean 'icon'?)\n"
            "    type = \"icno\"\n"
            "           ^");
}

TEST(Manifest, TomlSyntaxErrorKeepsItsPosition) {
  std::string msg = error_of("[project\noutput_dir = 1\n");
  EXPECT_EQ(msg.rfind("assets.toml:1:", 0), 0u) << msg;
}

TEST(Manifest, MissingSizeSaysWhereToSetIt) {
  EXPECT_EQ(error_of(R"([types.icon]
format = "png"

[[asset]]
name = "icons/sword"
type = "icon"
prompt = "a sword"
height = 32
)"),
            "assets.toml:4:1: asset 'icons/sword' has no width: set it on the asset, in "
            "[types.icon] or in [defaults]\n"
            "    [[asset]]\n"
            "    ^");
}

TEST(Manifest, JpegGetsAHint) {
  EXPECT_EQ(error_of(std::string(k_head) + "format = \"jpeg\"\n"),
            "assets.toml:4:10: format must be one of png, webp, jpg, not 'jpeg' (did you mean "
            "'jpg'?)\n"
            "    format = \"jpeg\"\n"
            "             ^");
}

TEST(Manifest, ExtensionInNameIsRefusedWithAHint) {
  EXPECT_NE(error_of(std::string(k_head) + R"(
[[asset]]
name = "icons/sword.png"
type = "icon"
prompt = "a sword"
)")
                .find("ends in '.png': leave the extension out, `format` sets it"),
            std::string::npos);
}

TEST(Manifest, EveryErrorIsReportedNotJustTheFirst) {
  std::string msg = error_of(R"([project]
output_dir = 3
budget_usd = -1
colour = "red"
)");
  EXPECT_NE(msg.find("assets.toml:2:14: output_dir must be a string, not an integer"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("assets.toml:3:14: budget_usd must be zero or more"), std::string::npos);
  EXPECT_NE(msg.find("assets.toml:4:1: unknown key 'colour' in [project]"), std::string::npos);
}

TEST(Manifest, ErrorsExitWithUsageCode) {
  try {
    parse("[[asset]]\n");
    FAIL();
  } catch (const Fatal& e) {
    EXPECT_EQ(e.exit_code(), k_exit_usage);
    EXPECT_TRUE(e.located());
  }
}

TEST(Manifest, MissingFileIsAClearError) {
  EXPECT_EQ(fatal_message([] { load_manifest("/nonexistent/assets.toml", "assets.toml"); }),
            "assets.toml: no such manifest (pass one with -m FILE)");
}

} // namespace
} // namespace kiln::host

namespace kiln::host {
namespace {

TEST(Manifest, RetryChainsFallbackModelsAndPolicy) {
  Manifest m = parse(R"([project]
allow_fallback = true

[defaults]
retry = ["backoff", "fallback"]

[retry_policy]
max_attempts = 6
budget_ratio = 0.25
breaker_cooldown_s = 5

[strategies.backoff]
max_attempts = 2

[types.icon]
width = 64
height = 64
fallback_models = ["stability-ai/sdxl"]

[[asset]]
name = "a"
type = "icon"
prompt = "a"
modifiers = ["glowing"]

[[asset]]
name = "b"
type = "icon"
prompt = "b"
retry = []
)");
  EXPECT_TRUE(m.allow_fallback);
  EXPECT_EQ(m.retry_policy.max_attempts, 6u);
  EXPECT_EQ(m.retry_policy.budget_ratio, 0.25);
  EXPECT_EQ(m.retry_policy.breaker_cooldown_s, 5.0);
  EXPECT_EQ(m.retry_policy.breaker_failures, 8u); // the default
  EXPECT_EQ(m.strategy_settings.at("backoff").values.at("max_attempts").int_value, 2);
  EXPECT_EQ(m.asset(0).retry, (std::vector<std::string>{"backoff", "fallback"}));
  EXPECT_EQ(m.asset(0).fallback_models, std::vector<std::string>{"stability-ai/sdxl"});
  EXPECT_EQ(m.asset(0).modifiers, std::vector<std::string>{"glowing"});
  EXPECT_TRUE(m.asset(1).retry.empty()); // an empty chain: no retries at all
  EXPECT_EQ(parse(std::string(k_head) + "[[asset]]\nname = \"c\"\ntype = \"icon\"\n"
                                        "prompt = \"c\"\n")
                .asset(0)
                .retry,
            k_default_retry_chain);
}

TEST(Manifest, RetryPolicyMistakesAreLocated) {
  EXPECT_EQ(error_of("[retry_policy]\nmax_attempts = 0\nbudget_ratio = -1\nbreaker_failure = 3\n"),
            "assets.toml:4:1: unknown key 'breaker_failure' in [retry_policy] (did you mean "
            "'breaker_failures'?)\n"
            "    breaker_failure = 3\n"
            "    ^\n"
            "assets.toml:2:16: max_attempts must be a whole number from 1 to 1000000\n"
            "    max_attempts = 0\n"
            "                   ^\n"
            "assets.toml:3:16: budget_ratio must be zero or more\n"
            "    budget_ratio = -1\n"
            "                   ^");
  EXPECT_EQ(error_of("[project]\nallow_fallback = \"yes\"\n"),
            "assets.toml:2:18: allow_fallback must be true or false, not a string\n"
            "    allow_fallback = \"yes\"\n"
            "                     ^");
}

// Assets are found by a scan of the text for top-level table headers, then parsed one at a time:
// anything that only looks like a header must not cut an asset in two.
TEST(Manifest, AssetsAreSplitOnlyAtRealTableHeaders) {
  Manifest m = parse(std::string(k_head) + R"(
[[asset]]  # a comment with [[asset]] in it
name = "a"
type = "icon"
prompt = """
[[asset]]
name = "not an asset"
"""
modifiers = [
  "x",
  # [types.y]
]
[asset.params]
steps = 4
grid = [
  [1, 2],
  [3, 4],
]

[[ asset ]]
name = 'b'
type = "icon"
prompt = 'c:\[[asset]]'
negative = "\"[[asset]]"
)");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m.name(0), "a");
  EXPECT_EQ(m.name(1), "b");
  AssetSpec a = m.asset(0);
  EXPECT_EQ(a.prompt, "[[asset]]\nname = \"not an asset\"\n");
  EXPECT_EQ(a.modifiers, std::vector<std::string>{"x"});
  EXPECT_EQ(a.params_json, R"({"grid":[[1,2],[3,4]],"steps":4})");
  EXPECT_EQ(a.loc.line, 5u);
  AssetSpec b = m.asset(1);
  EXPECT_EQ(b.prompt, R"(c:\[[asset]])");
  EXPECT_EQ(b.negative, R"("[[asset]])");
  EXPECT_EQ(m.relative_output(1), "b.png");
}

TEST(Manifest, ATableAfterTheAssetsIsNotPartOfTheLastAsset) {
  Manifest m = parse(R"([[asset]]
name = "a"
type = "icon"
prompt = "a"

[types.icon]
width = 32
height = 16
)");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m.asset(0).width, 32u);
  EXPECT_EQ(m.asset(0).height, 16u);
}

TEST(Manifest, SyntaxErrorsInSeveralAssetsAreAllReportedAtTheirLines) {
  std::string msg = error_of(std::string(k_head) + R"(
[[asset]]
name = "a"
type = "icon"
prompt = "a

[[asset]]
name = "b"
type = "icon"
prompt = "b"
width = 12 12
)");
  EXPECT_NE(msg.find("assets.toml:8:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("assets.toml:14:"), std::string::npos) << msg;
}

TEST(Manifest, AnAssetTableThatIsNotAnArrayIsRefused) {
  EXPECT_NE(error_of(std::string(k_head) + "[asset]\nname = \"a\"\n")
                .find("'asset' must be an array of tables: write each as [[asset]]"),
            std::string::npos);
}

// Writes `text` to `file` in place (the run's descriptor sees it) and moves its modification time
// on, so the change shows in the stamp even within one tick of the file system's clock.
void rewrite(const fs::path& file, const std::string& text) {
  static int tick = 0;
  std::ofstream(file) << text;
  fs::last_write_time(file, fs::file_time_type::clock::now() + std::chrono::seconds(++tick));
}

std::string asset_text(const std::string& name, const std::string& prompt) {
  return "[[asset]]\nname = \"" + name + "\"\ntype = \"icon\"\nprompt = \"" + prompt + "\"\n";
}

// An edit during the run is read again: each asset is found by its name in the new text and
// resolved with the new [defaults] and [types]; the engine then compares fingerprints, so an
// asset the edit leaves alone goes on and one it changed fails.
TEST(Manifest, AManifestEditedDuringTheRunIsReadAgainAndAssetsFoundByName) {
  test::TempDir dir;
  fs::path file = dir / "assets.toml";
  std::string head = k_head;
  std::string a = asset_text("a", "an apple"), b = asset_text("b", "a bell"),
              c = asset_text("c", "a cat");
  rewrite(file, head + "\n" + a + "\n" + b + "\n" + c);
  Manifest m = load_manifest(file, "assets.toml");
  m.keep_text_on_disk();
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m.asset(1).prompt, "a bell");
  EXPECT_EQ(m.asset(1).loc.line, 10u);

  // A comment appended: nothing moves.
  rewrite(file, head + "\n" + a + "\n" + b + "\n" + c + "# edited\n");
  const std::vector<std::string> prompts = {"an apple", "a bell", "a cat"};
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(m.asset(i).prompt, prompts[i]);
  EXPECT_EQ(m.asset(1).loc.line, 10u);

  // Lines added above, whitespace changed, the assets reordered, another asset's prompt changed.
  std::string spaced_a = "[[asset]]\n  name   =   \"a\"\n\ntype = \"icon\"   # fruit\nprompt = "
                         "'an apple'\n";
  rewrite(file, "# the game's art\n\n" + head + "\n" + c + "\n" + asset_text("b", "a drum") + "\n" +
                    spaced_a);
  AssetSpec a_now = m.asset(0);
  EXPECT_EQ(a_now.name, "a");
  EXPECT_EQ(a_now.prompt, "an apple");
  EXPECT_EQ(a_now.width, 256u);
  EXPECT_EQ(a_now.loc.line, 17u);         // where it is now
  EXPECT_EQ(m.asset(1).prompt, "a drum"); // its own prompt changed: the new one
  EXPECT_EQ(m.asset(2).prompt, "a cat");
  EXPECT_EQ(m.relative_output(0), "a.png");

  // The header changed too: the new [types] apply.
  rewrite(file, "[types.icon]\nwidth = 128\nheight = 256\n\n" + a + "\n" + b + "\n" + c);
  EXPECT_EQ(m.asset(0).width, 128u);
  EXPECT_EQ(m.asset(2).width, 128u);

  // An asset removed, one that no longer checks: each fails naming it; the others resolve.
  rewrite(file, head + "\n" + a + "\n" + c + "width = 0\n\n" + asset_text("d", "a dog"));
  EXPECT_EQ(m.asset(0).prompt, "an apple");
  EXPECT_EQ(fatal_message([&] { m.asset(1); }),
            "assets.toml changed during the run (asset 'b' is not in it any more, or its table "
            "does not parse): run kiln again");
  EXPECT_EQ(fatal_message([&] { m.asset(2); }),
            "assets.toml changed during the run (asset 'c' has errors now): run kiln again");

  // An asset now declared twice: which one is meant is unknown.
  rewrite(file, head + "\n" + a + "\n" + b + "\n" + asset_text("b", "another bell"));
  EXPECT_EQ(m.asset(0).prompt, "an apple");
  EXPECT_EQ(fatal_message([&] { m.asset(1); }),
            "assets.toml changed during the run (asset 'b' is in it twice now): run kiln again");

  // A header that no longer parses fails every asset.
  rewrite(file, "[types.icon\n" + a);
  EXPECT_EQ(fatal_message([&] { m.asset(0); }),
            "assets.toml changed during the run (its tables outside [[asset]] have errors "
            "now): run kiln again");
}

TEST(Manifest, AnAssetEditedToUseAPluginTheRunDidNotLoadFails) {
  test::TempDir dir;
  fs::path file = dir / "assets.toml";
  rewrite(file, std::string(k_head) + asset_text("a", "an apple"));
  Manifest m = load_manifest(file, "assets.toml");
  m.keep_text_on_disk();
  rewrite(file, std::string(k_head) + asset_text("a", "an apple") + "enhancers = [\"style\"]\n");
  EXPECT_EQ(fatal_message([&] { m.asset(0); }),
            "assets.toml changed during the run (asset 'a' now uses enhancer 'style', which "
            "this run did not load): run kiln again");
}

// The file is read and indexed again once per change, not once per asset: many assets from
// several threads after an edit cost about one load.
TEST(Manifest, AnEditedManifestIsReadAgainOncePerChangeForAllThreads) {
  test::TempDir dir;
  fs::path file = dir / "assets.toml";
  const size_t n = 3000;
  std::string text = k_head;
  for (size_t i = 0; i < n; ++i)
    text += "\n" + asset_text("icons/i" + std::to_string(i), "icon " + std::to_string(i));
  rewrite(file, text);
  Manifest m = load_manifest(file, "assets.toml");
  m.keep_text_on_disk();
  rewrite(file, "# moved\n" + text + "# edited\n");
  auto start = std::chrono::steady_clock::now();
  std::atomic<size_t> next{0}, wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (size_t i; (i = next++) < n;)
        if (m.asset(i).prompt != "icon " + std::to_string(i))
          ++wrong;
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(wrong, 0u);
  // Read again per asset, this takes minutes (n parses of n tables); once, well under a second.
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20);
}

// Names that are the same file on a case-insensitive file system (macOS, Windows).
TEST(Manifest, NamesThatDifferOnlyByCaseAreRefused) {
  EXPECT_EQ(error_of(std::string(k_head) + R"(
[[asset]]
name = "icons/sword"
type = "icon"
prompt = "a sword"

[[asset]]
name = "Icons/Sword"
type = "icon"
prompt = "another sword"

[[asset]]
name = "ICONS/SWORD"
type = "icon"
format = "webp"
prompt = "a third sword"
)"),
            "assets.toml:11:8: asset name 'Icons/Sword' is the same as 'icons/sword' (line 6) "
            "but for case\n"
            "    name = \"Icons/Sword\"\n"
            "           ^\n"
            "assets.toml:16:8: asset name 'ICONS/SWORD' is the same as 'icons/sword' (line 6) "
            "but for case\n"
            "    name = \"ICONS/SWORD\"\n"
            "           ^");
}

// `b` writes the file b.png; `b.png/c` needs a folder b.png: they cannot both exist.
TEST(Manifest, AnOutputFileThatIsAnotherAssetsFolderIsRefused) {
  EXPECT_EQ(error_of(std::string(k_head) + R"(
[[asset]]
name = "b"
type = "icon"
prompt = "b"

[[asset]]
name = "b.png/c"
type = "icon"
prompt = "c"

[[asset]]
name = "D.Webp/e"
type = "icon"
prompt = "e"

[[asset]]
name = "d"
type = "icon"
format = "webp"
prompt = "d"
)"),
            "assets.toml:11:8: asset name 'b.png/c' needs a folder 'b.png' where asset 'b' "
            "(line 6) writes its file\n"
            "    name = \"b.png/c\"\n"
            "           ^\n"
            "assets.toml:21:8: asset name 'd' writes its file to 'd.webp', a folder of asset "
            "'D.Webp/e' (line 16)\n"
            "    name = \"d\"\n"
            "           ^");
}

// A name is an asset or a folder of assets, not both (`b` and `b/c`, in either order, in any
// case): an atlas, an engine's resource tree or a `--only 'b/*'` would not know which is meant.
TEST(Manifest, ANameThatIsAFolderOfAnotherIsRefused) {
  EXPECT_EQ(error_of(std::string(k_head) + asset_text("b", "b") + asset_text("B/c", "c") +
                     asset_text("x/y/z", "z") + asset_text("x/Y", "y")),
            "assets.toml:9:8: asset name 'B/c' is inside 'B', which is asset 'b' (line 5): a "
            "name is an asset or a folder of assets, not both\n"
            "    name = \"B/c\"\n"
            "           ^\n"
            "assets.toml:17:8: asset name 'x/Y' is a folder of asset 'x/y/z' (line 13): a name "
            "is an asset or a folder of assets, not both\n"
            "    name = \"x/Y\"\n"
            "           ^");
  Manifest m = parse(std::string(k_head) + asset_text("b/a", "a") + asset_text("b/c", "c") +
                     asset_text("bc", "bc"));
  EXPECT_EQ(m.size(), 3u);
}

// Kiln's temp-file marker is not a name (a build's cleanup would delete the asset's file), and
// a name's control characters are shown escaped, never sent to the terminal.
TEST(Manifest, TempMarkersAndControlCharactersInNamesAreRefusedSafely) {
  std::string message = error_of(std::string(k_head) + asset_text("icons/x.kiln-tmp.1", "x"));
  EXPECT_NE(message.find("asset name 'icons/x.kiln-tmp.1' contains '.kiln-tmp', which marks "
                         "Kiln's temporary files"),
            std::string::npos)
      << message;
  message = error_of(std::string(k_head) + asset_text("a\\u001b[31mRED\\u0000b", "x"));
  EXPECT_NE(message.find("asset name 'a\\x1b[31mRED\\x00b' may only contain"), std::string::npos)
      << message;
  EXPECT_EQ(message.find('\x1b'), std::string::npos);
  EXPECT_EQ(asset_name_problem("../docs/logo"), "escapes output_dir ('..' is not allowed)");
  EXPECT_FALSE(asset_name_problem("icons/sword"));
}

// Valid TOML that the asset splitter once refused (issue 16): an escaped table name, a
// sub-table of the last asset, and a UTF-8 byte order mark before the first asset.
TEST(Manifest, ValidTomlSpellingsOfAssetTablesAreAccepted) {
  Manifest escaped = parse(std::string(k_head) +
                           "[[\"\\u0061sset\"]]\nname = \"a\"\ntype = \"icon\"\nprompt = \"x\"\n");
  ASSERT_EQ(escaped.size(), 1u);
  EXPECT_EQ(escaped.name(0), "a");
  Manifest sub = parse(std::string(k_head) + asset_text("a", "x") +
                       "[asset.params]\nnum_inference_steps = 4\n" + asset_text("b", "y"));
  ASSERT_EQ(sub.size(), 2u);
  EXPECT_NE(sub.asset(0).params_json.find("\"num_inference_steps\":4"), std::string::npos)
      << sub.asset(0).params_json;
  // A sub-table that other tables separate from its asset (TOML gives it to the last asset):
  // read with that asset, and errors in it or after it keep their lines.
  Manifest far = parse(asset_text("a", "x") + "\n" + k_head + "\n[asset.params]\nsteps = 4\n" +
                       "[types.extra]\nwidth = 32\n[asset.params.inner]\nk = 1\n");
  ASSERT_EQ(far.size(), 1u);
  EXPECT_NE(far.asset(0).params_json.find("\"steps\":4"), std::string::npos)
      << far.asset(0).params_json;
  EXPECT_NE(far.asset(0).params_json.find("\"inner\":{\"k\":1}"), std::string::npos)
      << far.asset(0).params_json;
  EXPECT_EQ(error_of(asset_text("a", "x") + "\n" + k_head + "\n[asset.params]\nsteps = 4\n" +
                     "[asset.params]\nk = 1\n"),
            "assets.toml:12:1: Error while parsing table header: cannot redefine existing table "
            "'asset.params'\n"
            "    [asset.params]\n"
            "    ^");
  for (std::string text : {"\xEF\xBB\xBF" + asset_text("a", "x") + k_head,
                           "\xEF\xBB\xBF" + std::string(k_head) + asset_text("a", "x")}) {
    Manifest bom = parse(text);
    ASSERT_EQ(bom.size(), 1u);
    EXPECT_EQ(bom.asset(0).prompt, "x");
  }
}

// Keys nested thousands deep (`params.k.k.k...` or a header) would overflow the stack in the
// TOML library's recursion: refused first, at the key (issue 16).
TEST(Manifest, KeysNestedTooDeepAreRefusedNotACrash) {
  std::string deep;
  for (int i = 0; i < 100000; ++i)
    deep += ".k";
  for (std::string text : {asset_text("a", "x") + "params" + deep + " = 1\n",
                           asset_text("a", "x") + "[asset.params" + deep + "]\nz = 1\n",
                           asset_text("a", "x") + "params = { k" + deep + " = 1 }\n"}) {
    std::string message = error_of(std::string(k_head) + text);
    EXPECT_NE(message.find(":8:"), std::string::npos) << message.substr(0, 200);
    EXPECT_NE(message.find("keys nest deeper than 64 levels here"), std::string::npos)
        << message.substr(0, 200);
  }
  // Floats, dates and 64 levels are fine.
  std::string ok;
  for (int i = 0; i < 63; ++i)
    ok += ".k";
  Manifest m = parse(std::string(k_head) + asset_text("a", "x") + "params" + ok +
                     " = 1.5\nseed = 3\n[asset.params.when]\nat = 1979-05-27T07:32:00.999\n");
  EXPECT_EQ(m.size(), 1u);
}

} // namespace
} // namespace kiln::host
