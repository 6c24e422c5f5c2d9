// Finding, loading and checking plugins, and creating their instances from manifest options.
// Every refusal names the file and says exactly what is wrong; tests/plugins/ holds a broken
// plugin for each message.
#pragma once

#include "diagnostics.hpp"
#include "http.hpp"
#include "log.hpp"
#include "manifest.hpp"
#include "result.hpp"
#include "util.hpp"

#include <functional>
#include <kiln/kiln.hpp>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

struct kiln_result {
  std::string plugin_id;
  kiln::host::Log* log = nullptr;
  const kiln::host::HttpClient* http = nullptr;
  kiln_error_category category = KILN_ERROR_NONE;
  std::string message;
  int64_t retry_after_ms = -1;
  std::string remote_id;
  // Called with each remote id the backend reports, on the backend's thread (the journal).
  std::function<void(const std::string&)> on_remote_id;
  std::optional<double> cost_usd;
  std::optional<kiln::Image> image;
  std::string image_file;
  std::optional<std::string> prompt;
  std::optional<std::string> negative_prompt;
  // A retry strategy's proposal (with prompt, negative_prompt and retry_after_ms as the delay).
  std::optional<std::string> model;
  std::optional<uint64_t> seed;
  std::optional<std::string> params_json;
  std::optional<std::string> backend;
  bool fallback = false;
  // A validator's rejection: the kiln_image_property bits the image lacks.
  uint32_t missing_property = 0;

  bool failed() const { return category != KILN_ERROR_NONE; }
  kiln::host::Fault failure() const { return {category, message, retry_after_ms}; }
};

namespace kiln::host {

// "backend", "enhancer", "retry-strategy", "validator", "postprocessor"
std::string_view kind_name(uint32_t kind);
// The manifest table of a kind's options: "backends", "enhancers", "strategies", "validators",
// "postprocessors".
std::string_view table_name(uint32_t kind);

struct Plugin {
  fs::path path;
  const kiln_plugin_info* info = nullptr;
  std::string id;
  std::string version;
  std::string description;
  kiln_plugin_kind kind = KILN_KIND_BACKEND;
  uint32_t abi_minor = 0; // KILN_PLUGIN_ABI_MINOR it was built against (0: before 1.1)
  // The option schema, each `type` without its flags; `shapes[i]`: option i can change an
  // image (it lacks KILN_OPTION_NOT_SHAPING) and so is part of fingerprints.
  std::vector<kiln_option_spec> options;
  std::vector<bool> shapes;

  const kiln_backend_functions* backend() const {
    return static_cast<const kiln_backend_functions*>(info->functions);
  }
  const kiln_enhancer_functions* enhancer() const {
    return static_cast<const kiln_enhancer_functions*>(info->functions);
  }
  const kiln_validator_functions* validator() const {
    return static_cast<const kiln_validator_functions*>(info->functions);
  }
  const kiln_retry_strategy_functions* strategy() const {
    return static_cast<const kiln_retry_strategy_functions*>(info->functions);
  }
  const kiln_postprocessor_functions* postprocessor() const {
    return static_cast<const kiln_postprocessor_functions*>(info->functions);
  }
  // A function of the kind's table added after ABI 1.0, or null when the plugin's table is
  // too old to have it: `table_field(&kiln_backend_functions::paints)`.
  template <class Table, class Field> Field table_field(Field Table::*member) const {
    const auto* table = static_cast<const Table*>(info->functions);
    size_t end = size_t(reinterpret_cast<const char*>(&(table->*member)) -
                        reinterpret_cast<const char*>(table)) +
                 sizeof(Field);
    return table->struct_size >= end ? table->*member : Field{};
  }
  // The postprocessor's kiln_image_property bits (0 for other kinds).
  uint32_t provides() const {
    return kind == KILN_KIND_POSTPROCESSOR ? postprocessor()->provides : 0;
  }
  std::string id_version() const { return id + "@" + version; }
};

// A created plugin instance; destroyed with its owner.
class PluginInstance {
public:
  PluginInstance(const Plugin* plugin, void* instance, std::string signature = {},
                 std::string shaping_signature = {}, std::vector<fs::path> files = {})
      : m_plugin(plugin), m_instance(instance), m_signature(std::move(signature)),
        m_shaping_signature(std::move(shaping_signature)), m_files(std::move(files)) {}
  ~PluginInstance();
  PluginInstance(const PluginInstance&) = delete;
  PluginInstance& operator=(const PluginInstance&) = delete;

  const Plugin& plugin() const { return *m_plugin; }
  void* handle() const { return m_instance; }
  // What of this instance can change a verdict: "id@version{key=value\n...}" over the options
  // the manifest sets to other than their defaults (defaults come with the version), a file
  // option with its content's SHA-256.
  const std::string& signature() const { return m_signature; }
  // The same over the options that can change an image (not KILN_OPTION_NOT_SHAPING): what a
  // backend or postprocessor puts into fingerprints.
  const std::string& shaping_signature() const { return m_shaping_signature; }
  // Only its options' part, "" when none is set: "{caption=b:false\n}".
  std::string shaping_options() const {
    size_t brace = m_shaping_signature.find('{');
    std::string options = m_shaping_signature.substr(brace);
    return options == "{}" ? std::string() : options;
  }
  // The files its options name (KILN_OPTION_PATH), absolute: inputs of the build like the
  // manifest (the depfile and the no-op record list them).
  const std::vector<fs::path>& files() const { return m_files; }

private:
  const Plugin* m_plugin;
  void* m_instance;
  std::string m_signature;
  std::string m_shaping_signature;
  std::vector<fs::path> m_files;
};

class PluginRegistry {
public:
  explicit PluginRegistry(Log& log);
  ~PluginRegistry();

  // Where built-in plugins live: <exe dir>/../lib/kiln/plugins, in the build tree as installed.
  static fs::path builtin_dir();
  // The folders to search for a manifest (may be null): built-ins, [plugins] paths,
  // KILN_PLUGIN_PATH, in that order.
  static std::vector<fs::path> search_dirs(const Manifest* manifest);

  // Loads every kiln-*.so of `dir`, in name order. A library that cannot be loaded is not an
  // error here: it is kept in broken(), and only a manifest that names its id (or an id no
  // plugin provides) fails because of it.
  void load_directory(const fs::path& dir);
  // Loads and checks one library. Throws Fatal with the exact reason.
  const Plugin& load_file(const fs::path& path);
  // Checks and adds a plugin linked into this program (`kiln::detail::info<Class>(...)` of the
  // C++ adapter): the engine's tests run whole builds on backends and strategies written beside
  // them, through the same ABI as a library's. `label` stands for its file in messages.
  const Plugin& add_in_process(const kiln_plugin_info* info, const fs::path& label);

  // A library of the search path that did not load: its file, its id when it got as far as
  // declaring one, and the whole message ("plugin '<file>' was built for ...").
  struct Broken {
    fs::path path;
    std::string id;
    std::string message;
  };
  const std::vector<Broken>& broken() const { return m_broken; }
  // Why a manifest cannot use `id` because of a broken library ("" if none is in the way):
  // one that declared `id`, else (unless `exact`) any that failed before declaring an id.
  std::string broken_reason(std::string_view id, bool exact = false) const;

  // The HTTP service plugins reach through their results.
  const HttpClient& http() const { return m_http; }
  // A result for a call into `plugin_id`, wired to the host's log and HTTP service.
  kiln_result make_result(const std::string& plugin_id);

  const Plugin* find(std::string_view id) const;
  const Plugin* find(std::string_view id, kiln_plugin_kind kind) const;
  std::vector<const Plugin*> all() const;
  std::vector<std::string> ids(kiln_plugin_kind kind) const;

  // Checks `settings` against the plugin's option schema without starting the plugin.
  static bool check_options(const Plugin& plugin, const PluginSettings* settings,
                            Diagnostics& diag);
  // Checks `settings` against the plugin's option schema (errors into `diag`, at the manifest
  // lines) and creates an instance. Returns null when the options or create() failed.
  std::unique_ptr<PluginInstance> instantiate(const Plugin& plugin, const PluginSettings* settings,
                                              Diagnostics& diag);

  Log& log() { return m_log; }

private:
  struct Library;
  // Checks `info` (of the library `lib`, none for a plugin in process) and adds its plugin.
  const Plugin& add(const kiln_plugin_info* info, const fs::path& path,
                    std::unique_ptr<Library> lib);

  Log& m_log;
  HttpClient m_http;
  std::vector<std::unique_ptr<Library>> m_libraries;
  std::vector<std::unique_ptr<Plugin>> m_plugins;
  std::map<std::string, const Plugin*, std::less<>> m_by_id;
  std::vector<Broken> m_broken;
  std::string m_loading_id; // of the library being loaded, once its info names one
};

// A plugin's failure in words: "<kind> '<id>' <usual>: <message>", or, when the C++ adapter
// caught an exception that is no kiln::Error (a bug, not a verdict), "<kind> '<id>' threw in
// <call>() (a bug in the plugin; report it to its author): <what>".
std::string plugin_failure(std::string_view kind, std::string_view id, std::string_view call,
                           std::string_view usual, std::string_view message);
// Whether `message` is the adapter's mark of an unexpected exception.
bool is_plugin_bug(std::string_view message);

// An option type's word for people: "string", "integer", "number", "boolean", "list", "file".
const char* option_type_word(uint32_t type);

// An option value in canonical text ("i:4", "s:white", "l:a\x1fb"...), for signatures.
std::string setting_text(const SettingValue& value);

// A KILN_OPTION_PATH value as the plugin gets it: absolute, relative ones from the manifest's
// folder.
fs::path resolve_option_path(const PluginSettings& settings, const std::string& value);

// Every plugin a manifest names, created once per run.
struct PluginSet {
  std::map<std::string, std::unique_ptr<PluginInstance>, std::less<>> backends;
  std::map<std::string, std::unique_ptr<PluginInstance>, std::less<>> enhancers;
  std::map<std::string, std::unique_ptr<PluginInstance>, std::less<>> validators;
  std::map<std::string, std::unique_ptr<PluginInstance>, std::less<>> strategies;
  std::map<std::string, std::unique_ptr<PluginInstance>, std::less<>> postprocessors;

  // Every instance, of every kind.
  std::vector<const PluginInstance*> all() const;
};

// Checks that every plugin the manifest names exists with the right kind and that every
// `[backends.X]`, `[enhancers.X]`, `[validators.X]` table fits its plugin's schema, then creates
// the instances. Throws Fatal (exit 2) listing every problem at its manifest line.
PluginSet instantiate_manifest_plugins(PluginRegistry& registry, Manifest& manifest);

} // namespace kiln::host
