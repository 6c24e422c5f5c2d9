// The fingerprint decides what costs money: stable under everything that does not shape the
// image, sensitive to everything that does.
#include "engine_support.hpp"

#include <set>

namespace kiln::host {
namespace {

using test::Project;

const std::string k_base = R"(
[types.icon]
width = 64
height = 64
style = "flat icon"
negative = "text"
enhancers = ["style"]

[[asset]]
name = "icons/sword"
type = "icon"
prompt = "a sword"

[[asset]]
name = "icons/shield"
type = "icon"
prompt = "a shield"
)";

std::string sword_fingerprint(const std::string& text) {
  return Project(text).fingerprint("icons/sword");
}

std::string replace(std::string text, const std::string& from, const std::string& to) {
  size_t pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  return text.replace(pos, from.size(), to);
}

TEST(Fingerprint, IsAHexSha256) {
  std::string fp = sword_fingerprint(k_base);
  EXPECT_EQ(fp.size(), 64u);
  EXPECT_EQ(fp.find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(Fingerprint, IgnoresFormattingCommentsKeyOrderAndOtherAssets) {
  std::string fp = sword_fingerprint(k_base);
  std::string reformatted = R"(# art direction
[types.icon]
enhancers=["style"]   # the type's style is appended
negative="text"
style="flat icon"
height=64
width=64

[[asset]]
prompt = 'a sword'
type   = "icon"
name   = "icons/sword"
)";
  EXPECT_EQ(sword_fingerprint(reformatted), fp);
  EXPECT_EQ(sword_fingerprint(replace(k_base, "a shield", "a tower shield")), fp);
  // Where a value is set does not matter, only what it resolves to.
  std::string moved = replace(k_base, "width = 64\n", "");
  moved = replace(moved, "name = \"icons/sword\"\n", "name = \"icons/sword\"\nwidth = 64\n");
  moved = replace(moved, "name = \"icons/shield\"\n", "name = \"icons/shield\"\nwidth = 64\n");
  EXPECT_EQ(sword_fingerprint(moved), fp);
}

TEST(Fingerprint, ChangesWithEverythingThatShapesTheImage) {
  std::string fp = sword_fingerprint(k_base);
  const std::pair<std::string, std::string> edits[] = {
      {"prompt = \"a sword\"", "prompt = \"a long sword\""},
      {"style = \"flat icon\"", "style = \"painted icon\""},
      {"negative = \"text\"", "negative = \"text, blur\""},
      {"width = 64", "width = 65"},
      {"height = 64", "height = 32"},
      {"enhancers = [\"style\"]", "enhancers = []"},
      {"prompt = \"a sword\"", "prompt = \"a sword\"\nseed = 1"},
      {"prompt = \"a sword\"", "prompt = \"a sword\"\nmodel = \"other/model\""},
      {"prompt = \"a sword\"", "prompt = \"a sword\"\nformat = \"webp\""},
      {"prompt = \"a sword\"", "prompt = \"a sword\"\nparams = { steps = 4 }"},
  };
  for (auto& [from, to] : edits)
    EXPECT_NE(sword_fingerprint(replace(k_base, from, to)), fp) << to;
  // Seeds and params are compared by value and type.
  std::string with_seed = replace(k_base, "prompt = \"a sword\"", "prompt = \"a sword\"\nseed = 1");
  EXPECT_NE(sword_fingerprint(with_seed),
            sword_fingerprint(replace(with_seed, "seed = 1", "seed = 2")));
  std::string p_int =
      replace(k_base, "prompt = \"a sword\"", "prompt = \"a sword\"\nparams = { s = 1 }");
  EXPECT_NE(sword_fingerprint(p_int), sword_fingerprint(replace(p_int, "s = 1", "s = 1.0")));
}

TEST(Fingerprint, ChangesWithPluginVersions) {
  GenerationRequest r;
  r.prompt = "a sword";
  r.backend = "placeholder";
  r.backend_version = "1.0.0";
  r.enhancers = {"style@1.0.0"};
  std::string fp = fingerprint_of(fingerprint_fields(r));
  GenerationRequest newer_backend = r;
  newer_backend.backend_version = "1.0.1";
  EXPECT_NE(fingerprint_of(fingerprint_fields(newer_backend)), fp);
  GenerationRequest newer_enhancer = r;
  newer_enhancer.enhancers = {"style@1.1.0"};
  EXPECT_NE(fingerprint_of(fingerprint_fields(newer_enhancer)), fp);
}

TEST(Fingerprint, PostprocessorsCountInOrderAndOnlyWhenThereAreAny) {
  GenerationRequest r;
  r.prompt = "a sword";
  r.backend = "placeholder";
  r.backend_version = "1.0.0";
  // No postprocessors: the fields (and so every fingerprint made before they existed) are as
  // they were, so upgrading Kiln makes nothing paid for again.
  for (auto& [key, value] : fingerprint_fields(r))
    EXPECT_NE(key, "postprocess");
  std::string plain = fingerprint_of(fingerprint_fields(r));
  GenerationRequest both = r;
  both.postprocess = {"remove-background@1.0.0{}", "trim@1.0.0{margin=i:8\n}"};
  GenerationRequest swapped = r;
  swapped.postprocess = {both.postprocess[1], both.postprocess[0]};
  GenerationRequest option = r;
  option.postprocess = {both.postprocess[0], "trim@1.0.0{margin=i:9\n}"};
  std::set<std::string> fingerprints;
  for (auto* req : {&r, &both, &swapped, &option})
    fingerprints.insert(fingerprint_of(fingerprint_fields(*req)));
  EXPECT_EQ(fingerprints.size(), 4u);
  EXPECT_EQ(fingerprint_of(fingerprint_fields(r)), plain);
  EXPECT_EQ(describe_changes(fingerprint_fields(r), fingerprint_fields(both)),
            (std::vector<std::string>{"postprocessing changed"}));
  EXPECT_EQ(describe_changes(fingerprint_fields(both), fingerprint_fields(r)),
            (std::vector<std::string>{"postprocessing changed"}));
  EXPECT_EQ(describe_changes(fingerprint_fields(both), fingerprint_fields(option)),
            (std::vector<std::string>{"postprocessing changed"}));
}

// Issue 15: a backend option that shapes the image is in the fingerprint; one that cannot (a
// URL, a timeout) is not, nor is an option written out at its default.
TEST(Fingerprint, BackendOptionsThatShapeTheImageCount) {
  std::string plain = sword_fingerprint(k_base);
  EXPECT_NE(sword_fingerprint(k_base + "\n[backends.placeholder]\ncaption = false\n"), plain);
  EXPECT_EQ(sword_fingerprint(k_base + "\n[backends.placeholder]\ncaption = true\n"), plain);
  const std::string paid = replace(k_base, "enhancers = [\"style\"]",
                                   "enhancers = [\"style\"]\nbackend = \"replicate\"");
  std::string replicate = sword_fingerprint(paid);
  EXPECT_EQ(sword_fingerprint(paid + "\n[backends.replicate]\nbase_url = "
                                     "\"http://127.0.0.1:9/v1\"\ntimeout_s = 60\n"
                                     "sync_wait_s = 0\ntoken_env = \"OTHER_REPLICATE_TOKEN\"\n"),
            replicate);
  EXPECT_NE(sword_fingerprint(paid + "\n[backends.replicate]\nmodel = \"stability-ai/sdxl\"\n"),
            replicate);
}

TEST(Fingerprint, FieldBoundariesCannotBeForged) {
  GenerationRequest a, b;
  a.prompt = "x";
  a.negative_prompt = "y";
  b.prompt = "x\nnegative_prompt 1:y";
  EXPECT_NE(fingerprint_of(fingerprint_fields(a)), fingerprint_of(fingerprint_fields(b)));
}

TEST(Fingerprint, ChangesAreDescribedForThePlan) {
  GenerationRequest a;
  a.prompt = "a";
  a.width = 8;
  GenerationRequest b = a;
  b.prompt = "b";
  b.width = 16;
  EXPECT_EQ(describe_changes(fingerprint_fields(a), fingerprint_fields(b)),
            (std::vector<std::string>{"prompt changed", "size changed"}));
}

TEST(Plan, PostprocessorsAskTheModelForWhatTheyNeedOncePerPhrase) {
  Project p(k_base + R"(
[types.texture]
width = 64
height = 64
style = "seamless tileable texture, top-down"
enhancers = ["style"]
postprocess = ["make-tileable"]

[types.sprite]
width = 32
height = 32
postprocess = ["remove-background", "trim", "pixelate"]

[[asset]]
name = "grass"
type = "texture"
prompt = "grass"

[[asset]]
name = "slime"
type = "sprite"
prompt = "a slime"
)");
  Plan plan = p.plan();
  // make-tileable's hint is "seamless tileable texture, even lighting": only the phrase the
  // style did not already say is added.
  EXPECT_EQ(p.planned(plan, "grass").request.prompt,
            "grass, seamless tileable texture, top-down, even lighting");
  EXPECT_EQ(p.planned(plan, "slime").request.prompt,
            "a slime, isolated on a plain white background, pixel art");
  // Postprocessors are in the fingerprint; an asset without any keeps its old one.
  auto fields = p.planned(plan, "slime").fields;
  EXPECT_EQ(fields.back().first, "postprocess");
  EXPECT_EQ(fields.back().second.find("remove-background@"), 0u);
  for (auto& [key, value] : p.planned(plan, "icons/sword").fields)
    EXPECT_NE(key, "postprocess");
}

TEST(Plan, StyleEnhancerShapesTheFinalPrompts) {
  Project p(k_base);
  Plan plan = p.plan();
  PlannedAsset sword = p.planned(plan, "icons/sword");
  EXPECT_EQ(sword.request.prompt, "a sword, flat icon");
  EXPECT_EQ(sword.request.negative_prompt, "text");
  EXPECT_EQ(sword.action, Action::Generate);
  EXPECT_EQ(sword.reason, "new");
}

} // namespace
} // namespace kiln::host
