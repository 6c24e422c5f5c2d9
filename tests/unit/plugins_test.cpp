// The loader's refusals are golden-tested against purpose-built broken plugins
// (tests/plugins/): each names the file and says exactly what is wrong.
#include "plugins.hpp"
#include "test_support.hpp"

#include <fstream>

namespace kiln::host {
namespace {

using test::fatal_message;
using test::TempDir;

fs::path fixture(const char* dir, const char* name) {
  return fs::path(dir) / name;
}

std::string load_error(const fs::path& path) {
  Log log;
  PluginRegistry registry(log);
  return fatal_message([&] { registry.load_file(path); });
}

TEST(PluginLoader, LoadsEveryBuiltIn) {
  Log log;
  PluginRegistry registry(log);
  registry.load_directory(KILN_PLUGIN_BUILD_DIR);
  EXPECT_EQ(registry.ids(KILN_KIND_BACKEND),
            (std::vector<std::string>{"placeholder", "replicate"}));
  EXPECT_EQ(registry.ids(KILN_KIND_ENHANCER),
            (std::vector<std::string>{"negative", "quality", "style"}));
  EXPECT_EQ(registry.ids(KILN_KIND_RETRY_STRATEGY),
            (std::vector<std::string>{"adjust-parameters", "alternate-model", "backoff", "fallback",
                                      "simplify-prompt"}));
  EXPECT_EQ(registry.ids(KILN_KIND_VALIDATOR),
            (std::vector<std::string>{"alpha", "file-size", "format", "not-blank", "not-corrupt",
                                      "resolution", "tileable"}));
  const Plugin* p = registry.find("placeholder");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->version, "1.1.0");
  EXPECT_EQ(p->path.filename(), "kiln-backend-placeholder.so");
}

TEST(PluginLoader, RefusesAFileThatIsNotALibrary) {
  TempDir dir;
  fs::path path = dir / "kiln-garbage.so";
  std::ofstream(path) << std::string(200, '#') << " not an ELF file";
  std::string msg = load_error(path);
  EXPECT_EQ(msg.rfind("plugin '" + path.string() + "' cannot be loaded: ", 0), 0u) << msg;
  EXPECT_NE(msg.find("invalid ELF header"), std::string::npos) << msg;
}

TEST(PluginLoader, RefusesAMissingFile) {
  EXPECT_EQ(load_error("/nonexistent/kiln-x.so"), "plugin '/nonexistent/kiln-x.so' does not exist");
}

TEST(PluginLoader, RefusesALibraryWithoutTheEntrySymbol) {
  fs::path path = fixture(FIXTURE_DIR_no_entry, "kiln-fixture-no-entry.so");
  EXPECT_EQ(load_error(path), "plugin '" + path.string() +
                                  "' does not export 'kiln_plugin_entry': it is not a Kiln "
                                  "plugin");
}

TEST(PluginLoader, RefusesAnotherAbiAndSaysWhichItSupports) {
  fs::path path = fixture(FIXTURE_DIR_wrong_abi, "kiln-fixture-wrong-abi.so");
  EXPECT_EQ(load_error(path), "plugin '" + path.string() + "' was built for Kiln plugin ABI " +
                                  std::to_string(KILN_PLUGIN_ABI_VERSION + 1) +
                                  ", this kiln supports " +
                                  std::to_string(KILN_PLUGIN_ABI_VERSION));
}

// A backend option named like Kiln's own [backends.X] keys would never reach the plugin
// (issue 18): refused at load, and on the search path only a manifest naming it fails.
TEST(PluginLoader, RefusesABackendOptionNamedLikeKilnsOwnKeys) {
  fs::path path = fixture(FIXTURE_DIR_reserved_option, "kiln-fixture-reserved-option.so");
  EXPECT_EQ(load_error(path), "plugin '" + path.string() +
                                  "' ('greedy') declares option 'concurrency', a key Kiln keeps "
                                  "for itself in [backends.X] (the plugin would never see its "
                                  "value): rename the option");
  Log log{KILN_LOG_ERROR};
  PluginRegistry registry{log};
  registry.load_directory(FIXTURE_DIR_reserved_option);
  ASSERT_EQ(registry.broken().size(), 1u);
  EXPECT_EQ(registry.broken()[0].id, "greedy");
  EXPECT_EQ(registry.find("greedy"), nullptr);
}

TEST(PluginLoader, RefusesASchemaDefaultOfTheWrongTypeAtLoad) {
  fs::path path = fixture(FIXTURE_DIR_bad_default, "kiln-fixture-bad-default.so");
  EXPECT_EQ(load_error(path), "plugin '" + path.string() +
                                  "' ('bad-default') declares a bad default 'high' for its "
                                  "integer option 'level'");
}

TEST(PluginLoader, RefusesATooSmallInfoStruct) {
  fs::path path = fixture(FIXTURE_DIR_small_info, "kiln-fixture-small-info.so");
  EXPECT_EQ(load_error(path), "plugin '" + path.string() +
                                  "' has a plugin info of 8 bytes, expected at least " +
                                  std::to_string(offsetof(kiln_plugin_info, abi_minor)));
}

TEST(PluginLoader, RefusesAnUnknownKind) {
  fs::path path = fixture(FIXTURE_DIR_bad_kind, "kiln-fixture-bad-kind.so");
  EXPECT_EQ(load_error(path), "plugin '" + path.string() + "' declares unknown plugin kind 9");
}

TEST(PluginLoader, RefusesAMissingRequiredCallback) {
  fs::path path = fixture(FIXTURE_DIR_null_callback, "kiln-fixture-null-callback.so");
  EXPECT_EQ(load_error(path),
            "plugin '" + path.string() + "' is missing required callback 'validate'");
}

TEST(PluginLoader, RefusesAnInvalidId) {
  fs::path path = fixture(FIXTURE_DIR_bad_id, "kiln-fixture-bad-id.so");
  EXPECT_EQ(load_error(path), "plugin '" + path.string() +
                                  "' has an invalid id 'Bad_Id': use lowercase letters, digits "
                                  "and '-'");
}

TEST(PluginLoader, RefusesAnOptionOfUnknownType) {
  fs::path path = fixture(FIXTURE_DIR_bad_option, "kiln-fixture-bad-option.so");
  EXPECT_EQ(load_error(path),
            "plugin '" + path.string() + "' declares option 'level' with unknown type 42");
}

TEST(PluginLoader, RefusesAnIdAlreadyTaken) {
  Log log;
  PluginRegistry registry(log);
  registry.load_directory(KILN_PLUGIN_BUILD_DIR);
  fs::path path = fixture(FIXTURE_DIR_duplicate_id, "kiln-fixture-duplicate-id.so");
  fs::path builtin = fs::path(KILN_PLUGIN_BUILD_DIR) / "kiln-validator-not-blank.so";
  EXPECT_EQ(fatal_message([&] { registry.load_file(path); }),
            "plugin '" + path.string() + "' provides id 'not-blank', already taken by '" +
                builtin.lexically_normal().string() + "'");
}

// A registry with the built-ins and the given fixture folders, and a manifest using them.
struct Fixture {
  Log log{KILN_LOG_ERROR};
  PluginRegistry registry{log};
  Manifest manifest;

  Fixture(const std::string& text, std::vector<const char*> dirs = {}) {
    registry.load_directory(KILN_PLUGIN_BUILD_DIR);
    for (auto d : dirs)
      registry.load_directory(d);
    manifest = parse_manifest(text, "/tmp/game/assets.toml", "assets.toml");
  }
  std::string error() {
    return fatal_message([&] { instantiate_manifest_plugins(registry, manifest); });
  }
};

const char* k_asset = R"(
[[asset]]
name = "a"
type = "t"
prompt = "p"
)";

TEST(PluginOptions, UnknownOptionSuggestsTheClosest) {
  Fixture f(std::string("[types.t]\nwidth = 8\nheight = 8\n"
                        "validators = [\"not-blank\"]\n"
                        "[validators.not-blank]\nmin_stdev = 2.0\n") +
            k_asset);
  EXPECT_EQ(f.error(), "assets.toml:6:1: unknown option 'min_stdev' for validator 'not-blank' "
                       "(did you mean 'min_stddev'?)\n"
                       "    min_stdev = 2.0\n"
                       "    ^");
}

TEST(PluginOptions, WrongOptionTypeIsNamed) {
  Fixture f(std::string("[types.t]\nwidth = 8\nheight = 8\n"
                        "[backends.placeholder]\ncaption = \"yes\"\n") +
            k_asset);
  EXPECT_EQ(f.error(), "assets.toml:5:11: option 'caption' of backend 'placeholder' must be a "
                       "boolean, not a string\n"
                       "    caption = \"yes\"\n"
                       "              ^");
}

TEST(PluginOptions, UnknownPluginsAreNamedWithHints) {
  Fixture f(std::string("[types.t]\nwidth = 8\nheight = 8\nbackend = \"placeholdr\"\n"
                        "validators = [\"not-blnk\", \"style\"]\n") +
            k_asset);
  std::string msg = f.error();
  EXPECT_NE(msg.find("assets.toml:4:11: unknown backend 'placeholdr' (did you mean "
                     "'placeholder'?)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("assets.toml:5:15: unknown validator 'not-blnk' (did you mean "
                     "'not-blank'?)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("unknown validator 'style' ('style' is an enhancer)"), std::string::npos)
      << msg;
}

TEST(PluginOptions, NumbersMustBeFinite) {
  Fixture f(std::string("[types.t]\nwidth = 8\nheight = 8\npostprocess = [\"trim\"]\n"
                        "[postprocessors.trim]\nmargin = nan\n") +
            k_asset);
  EXPECT_EQ(f.error(), "assets.toml:6:10: option 'margin' of postprocessor 'trim' must be a "
                       "finite number, not nan\n"
                       "    margin = nan\n"
                       "             ^");
  Fixture inf(std::string("[types.t]\nwidth = 8\nheight = 8\nvalidators = [\"alpha\"]\n"
                          "[validators.alpha]\nmin_clear_border = -inf\n") +
              k_asset);
  EXPECT_NE(inf.error().find("must be a finite number, not inf"), std::string::npos);
}

TEST(PluginOptions, APluginsRefusalPointsAtTheOptionItNames) {
  Fixture f(std::string("[types.t]\nwidth = 8\nheight = 8\npostprocess = [\"pixelate\"]\n"
                        "[postprocessors.pixelate]\npixel_size = 2\ncolors = 1000\n") +
            k_asset);
  EXPECT_EQ(f.error(), "assets.toml:7:10: postprocessor 'pixelate' could not start: colors must "
                       "be 2 to 256\n"
                       "    colors = 1000\n"
                       "             ^");
}

TEST(PluginOptions, AFileOptionMustNameAFileOfModestSize) {
  TempDir dir;
  fs::create_directories(dir / "art");
  auto manifest_with = [&](const std::string& palette) {
    return std::string("[types.t]\nwidth = 8\nheight = 8\npostprocess = [\"pixelate\"]\n"
                       "[postprocessors.pixelate]\npalette = \"") +
           palette + "\"\n" + k_asset;
  };
  auto error = [&](const std::string& palette) {
    Log log{KILN_LOG_ERROR};
    PluginRegistry registry{log};
    registry.load_directory(KILN_PLUGIN_BUILD_DIR);
    Manifest m = parse_manifest(manifest_with(palette), dir / "assets.toml", "assets.toml");
    return fatal_message([&] { instantiate_manifest_plugins(registry, m); });
  };
  EXPECT_NE(error("art").find("option 'palette' of postprocessor 'pixelate': '" +
                              (dir / "art").string() + "' is a folder, not a file"),
            std::string::npos);
  EXPECT_NE(error("/dev/zero").find("'/dev/zero' is not a regular file"), std::string::npos);
  {
    std::ofstream big(dir / "art" / "big.hex");
    big.seekp((16 << 20) + 1);
    big << "\n";
  }
  EXPECT_NE(error("art/big.hex").find("is larger than 16 MiB"), std::string::npos);
}

TEST(PluginOptions, WritingADefaultOutDoesNotChangeTheSignature) {
  auto signature = [](const std::string& table) {
    Fixture f(std::string("[types.t]\nwidth = 8\nheight = 8\npostprocess = [\"trim\"]\n") + table +
              k_asset);
    PluginSet set = instantiate_manifest_plugins(f.registry, f.manifest);
    return set.postprocessors.at("trim")->signature();
  };
  std::string plain = signature("");
  EXPECT_EQ(signature("[postprocessors.trim]\nmargin = 8\n"), plain);
  EXPECT_EQ(signature("[postprocessors.trim]\nmargin = 8.0\nalpha_threshold = 16\n"), plain);
  EXPECT_NE(signature("[postprocessors.trim]\nmargin = 9\n"), plain);
}

TEST(PluginOptions, RequiredOptionMustBeGiven) {
  Fixture f(std::string("[types.t]\nwidth = 8\nheight = 8\nbackend = \"solid\"\n") + k_asset,
            {FIXTURE_DIR_good_backend});
  EXPECT_EQ(f.error(), "assets.toml: backend 'solid' needs option 'label': add it under "
                       "[backends.solid]");
}

TEST(PluginOptions, SettingsForAnUnknownPluginAreAnError) {
  Fixture f(std::string("[types.t]\nwidth = 8\nheight = 8\n[backends.replicat]\nx = 1\n") +
            k_asset);
  EXPECT_EQ(f.error(), "assets.toml:4:11: unknown backend 'replicat' (did you mean "
                       "'replicate'?) in [backends.replicat]\n"
                       "    [backends.replicat]\n"
                       "              ^");
  Fixture g(std::string("[types.t]\nwidth = 8\nheight = 8\n[backends.openai]\nx = 1\n") + k_asset);
  EXPECT_EQ(g.error(), "assets.toml:4:11: unknown backend 'openai' (available: placeholder, "
                       "replicate) in [backends.openai]\n"
                       "    [backends.openai]\n"
                       "              ^");
}

TEST(PluginAdapter, ExceptionInCreateBecomesAnError) {
  Fixture f(std::string("[types.t]\nwidth = 8\nheight = 8\nvalidators = [\"throws\"]\n"
                        "[validators.throws]\nthrow_in_create = true\n") +
                k_asset,
            {FIXTURE_DIR_throws});
  // A bug says which library to report it against.
  fs::path library = fs::absolute(fixture(FIXTURE_DIR_throws, "kiln-fixture-throws.so"));
  EXPECT_EQ(f.error(), "assets.toml:5:13: validator 'throws' threw in create() (a bug in the "
                       "plugin; report it to its author): refusing to start [" +
                           library.lexically_normal().string() +
                           "]\n"
                           "    [validators.throws]\n"
                           "                ^");
}

TEST(PluginOptions, AnUnusedPluginIsCheckedButNotStarted) {
  // No asset uses `throws`: its table is checked against the schema, but create() (which would
  // throw here) is not called, as a paid backend's token check must not run in an offline build.
  const std::string head = "[types.t]\nwidth = 8\nheight = 8\n[validators.throws]\n";
  Fixture unused(head + "throw_in_create = true\n" + k_asset, {FIXTURE_DIR_throws});
  PluginSet set = instantiate_manifest_plugins(unused.registry, unused.manifest);
  EXPECT_EQ(set.validators.count("throws"), 0u);

  Fixture typo(head + "throw_in_creat = true\n" + k_asset, {FIXTURE_DIR_throws});
  EXPECT_EQ(typo.error(), "assets.toml:5:1: unknown option 'throw_in_creat' for validator "
                          "'throws' (did you mean 'throw_in_create'?)\n"
                          "    throw_in_creat = true\n"
                          "    ^");
}

TEST(PluginAdapter, ExceptionsInCallsBecomeCategorisedFailures) {
  Fixture f(std::string("[types.t]\nwidth = 8\nheight = 8\nvalidators = [\"throws\"]\n") + k_asset,
            {FIXTURE_DIR_throws});
  PluginSet set = instantiate_manifest_plugins(f.registry, f.manifest);
  const PluginInstance& inst = *set.validators.at("throws");
  auto call = [&](const char* name) {
    kiln_asset asset{};
    asset.struct_size = sizeof asset;
    asset.name = kiln_cstr(name);
    kiln_image_file file{};
    file.struct_size = sizeof file;
    kiln_result r;
    kiln_status st = inst.plugin().validator()->validate(inst.handle(), &asset, &file, &r);
    EXPECT_EQ(st, KILN_FAILED);
    return r;
  };
  kiln_result r = call("std");
  EXPECT_EQ(r.category, KILN_ERROR_PERMANENT);
  EXPECT_EQ(r.message, "plugin bug: unexpected exception: validate exploded");
  EXPECT_EQ(plugin_failure("validator", "throws", "validate", "rejected the image", r.message),
            "validator 'throws' threw in validate() (a bug in the plugin; report it to its "
            "author): validate exploded");
  r = call("int");
  EXPECT_EQ(r.message, "plugin bug: unexpected exception: an exception of no standard type");
  r = call("typed");
  EXPECT_EQ(r.category, KILN_ERROR_RETRYABLE);
  EXPECT_EQ(r.message, "typed failure");
  EXPECT_EQ(r.retry_after_ms, 1500);
}

// Offline backends are started only as spares for a retry chain with `fallback` (issue 18):
// a build that cannot fall back does not start (or depend on) them.
TEST(PluginSet, UnusedOfflineBackendsStartOnlyForTheFallback) {
  const std::string head = "[defaults]\nbackend = \"solid\"\n[backends.solid]\nlabel = \"x\"\n"
                           "[types.t]\nwidth = 8\nheight = 8\n";
  Fixture plain(head + k_asset, {FIXTURE_DIR_good_backend});
  Fixture spare(head + "retry = [\"fallback\"]\n" + k_asset, {FIXTURE_DIR_good_backend});
  PluginSet set = instantiate_manifest_plugins(plain.registry, plain.manifest);
  EXPECT_EQ(set.backends.count("solid"), 1u);
  EXPECT_EQ(set.backends.count("placeholder"), 0u);
  PluginSet with_spare = instantiate_manifest_plugins(spare.registry, spare.manifest);
  EXPECT_EQ(with_spare.backends.count("placeholder"), 1u);
}

} // namespace
} // namespace kiln::host
