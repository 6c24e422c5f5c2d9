// The fingerprint decides what costs money: stable under everything that does not shape the
// image, sensitive to everything that does.
#include "engine_support.hpp"

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
