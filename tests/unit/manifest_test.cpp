// Manifest errors are golden-tested: build scripts and people read them, so their exact text
// (file:line:col, the line, the caret) is part of the interface.
#include "manifest.hpp"
#include "test_support.hpp"

#include <fstream>

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

TEST(Manifest, AManifestChangedDuringTheRunIsNotReadHalfOld) {
  test::TempDir dir;
  fs::path file = dir / "assets.toml";
  std::string text =
      std::string(k_head) + "[[asset]]\nname = \"a\"\ntype = \"icon\"\nprompt = \"a\"\n";
  std::ofstream(file) << text;
  Manifest m = load_manifest(file, "assets.toml");
  m.keep_text_on_disk();
  EXPECT_EQ(m.asset(0).prompt, "a");
  std::ofstream(file) << text << "# edited\n";
  EXPECT_EQ(fatal_message([&] { m.asset(0); }),
            "assets.toml changed during the run: run kiln again");
}

} // namespace
} // namespace kiln::host
