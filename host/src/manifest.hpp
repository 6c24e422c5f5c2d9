// assets.toml: parsing, checking and resolving every asset against [defaults] and its [types.X].
// The schema is a contract (see README "Manifest reference"): extend it, never rename keys.
#pragma once

#include "diagnostics.hpp"
#include "image.hpp"
#include "util.hpp"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kiln::host {

// One option value from a plugin's table, e.g. `[validators.not-blank] min_stddev = 3.0`.
struct SettingValue {
  enum class Type { String, Int, Float, Bool, StringList, Other };
  Type type = Type::Other;
  std::string string_value;
  int64_t int_value = 0;
  double float_value = 0;
  bool bool_value = false;
  std::vector<std::string> list_value;
  std::string toml_type; // for messages: "string", "integer", "table"...
  SourceLoc key_loc;
  SourceLoc value_loc;
};

// The options of one plugin: `[<kind>.<id>]`.
struct PluginSettings {
  std::string id;
  SourceLoc loc;
  fs::path dir; // the manifest's folder: file options are relative to it
  std::map<std::string, SettingValue> values;
};

struct AssetSpec {
  std::string name;
  std::string type;
  std::string prompt;
  std::string negative;
  std::string style;
  std::string backend;
  std::string model;
  std::string format; // png | webp | jpg
  uint32_t width = 0;
  uint32_t height = 0;
  std::optional<uint64_t> seed;
  std::string params_json; // canonical JSON object, keys sorted
  std::vector<std::string> enhancers;
  std::vector<std::string> validators;
  std::vector<std::string> retry;           // the strategy chain, in order
  std::vector<std::string> fallback_models; // for the alternate-model strategy
  std::vector<std::string> modifiers;       // extra style words (the style enhancer)
  std::vector<std::string> postprocess;     // postprocessor ids, in the order they run
  SourceLoc loc;
  // Where each resolved field was set (the asset, its type or [defaults]), for errors found
  // after resolution such as an unknown plugin id.
  std::map<std::string, SourceLoc> field_locs;
  // Where each id of a list field was written: "validators\x1fnot-blank" -> its place.
  std::map<std::string, SourceLoc> item_locs;

  // name + "." + format: the file below the output directory.
  std::string relative_output() const { return name + "." + format; }
};

// `[cache]`: the remote cache behind the local one (a team's shared store). The environment
// overrides it (KILN_REMOTE_CACHE, KILN_REMOTE_CACHE_READ_ONLY): remote_cache.hpp.
struct RemoteCacheSettings {
  std::string remote; // "http(s)://host:port/prefix" or "s3://bucket/prefix"; empty: none
  SourceLoc remote_loc;
  bool read_only = false;
  double timeout_s = 10;
};

// `[retry_policy]`: limits over every asset's strategy chain.
struct RetryPolicy {
  uint32_t max_attempts = 10; // per asset, whatever the strategies propose
  double budget_ratio = 0.5;  // retries in a run: budget_min + ratio x assets attempted
  uint32_t budget_min = 10;
  uint32_t breaker_failures = 8; // unhinted retryable failures in a row cool a model down
  double breaker_cooldown_s = 60;
};

// The chain when neither an asset, its type nor [defaults] sets `retry`: recovers from
// throttling and outages (backoff) and from blank or refused images (a new seed) without ever
// changing what the prompt asks for.
inline const std::vector<std::string> k_default_retry_chain = {"backoff", "adjust-parameters"};

// Kiln's own keys in a `[backends.X]` table (not the plugin's options): how fast and how much
// at once the backend is used.
struct BackendPacing {
  double requests_per_second = 0; // new remote jobs per second; 0: learn it from 429s
  double burst = 1;               // jobs that may start at once after a quiet spell
  unsigned concurrency = 0;       // jobs in flight at once; 0: the backend's default (-j wins)
  // The longest server wait hint (429 retry_after) honoured: an asset told to wait longer fails
  // ("run again later") instead of holding the backend's other assets back.
  double max_retry_after_s = 300;
};

// Whether `key` of a [backends.X] table is one of Kiln's own (BackendPacing), never a plugin's.
bool is_kiln_backend_key(std::string_view key);

// Where each [[asset]] table sits in the manifest, with its name and format: the manifest keeps
// this, not the assets, so 10,000 assets cost about 40 bytes each; Manifest::asset() reads one
// again on demand. (A manifest edited during the run costs 12 bytes an asset more: where each
// asset is in the new text.)
class AssetIndex {
public:
  struct Place {
    uint32_t offset = 0; // of its `[[asset]]` line in the file
    uint32_t length = 0; // up to the next table that is not one of its own
    uint32_t line = 0;   // of its `[[asset]]` line, 1-based
  };
  size_t size() const { return m_entries.size(); }
  Place place(size_t i) const { return m_entries[i].place; }
  std::string_view name(size_t i) const {
    return std::string_view(m_names).substr(m_entries[i].name_offset, m_entries[i].name_length);
  }
  std::string_view format(size_t i) const; // "png", "webp" or "jpg"
  void add(Place place, std::string_view name, std::string_view format);
  void reserve(size_t n) { m_entries.reserve(n); }

private:
  struct Entry {
    Place place;
    uint32_t name_offset = 0;
    uint16_t name_length = 0;
    uint8_t format = 0;
  };
  std::vector<Entry> m_entries;
  std::string m_names; // every name, back to back
};

// The plugins the assets name: kind field ("backend", "enhancers", "validators", "retry",
// "postprocess") -> plugin id -> where it was first named.
using PluginUses = std::map<std::string, std::map<std::string, SourceLoc>>;

struct LayerTables; // [defaults] and [types.X], parsed once

struct Manifest {
  fs::path path;            // absolute
  fs::path dir;             // absolute folder of the manifest
  fs::path output_dir;      // absolute
  SourceLoc output_dir_loc; // where [project] sets it (none: the default)
  std::optional<double> budget_usd;
  bool allow_fallback = false; // [project]: a fallback image does not fail the run
  // [project] max_image_megapixels: a larger image from a backend is refused before it is
  // decoded (a decompression bomb); each decode holds at most 4 bytes a pixel of it.
  uint64_t max_decoded_pixels = k_max_decoded_pixels;
  RetryPolicy retry_policy;
  RemoteCacheSettings remote_cache;
  std::vector<fs::path> plugin_paths; // absolute, in declaration order
  std::vector<SourceLoc> plugin_path_locs;
  std::map<std::string, PluginSettings> backend_settings;
  std::map<std::string, PluginSettings> enhancer_settings;
  std::map<std::string, PluginSettings> validator_settings;
  std::map<std::string, PluginSettings> strategy_settings;
  std::map<std::string, PluginSettings> postprocessor_settings;
  std::map<std::string, BackendPacing> backend_pacing;
  PluginUses plugin_uses;
  AssetIndex assets; // every asset, checked, in manifest order
  std::shared_ptr<const LayerTables> layers;
  Diagnostics diagnostics; // for errors found later (unknown plugins, bad options)

  size_t size() const { return assets.size(); }
  std::string_view name(size_t i) const { return assets.name(i); }
  // AssetSpec::relative_output() of asset i, without parsing it.
  std::string relative_output(size_t i) const {
    return std::string(assets.name(i)) + "." + std::string(assets.format(i));
  }
  // The manifest's text is not kept: assets are read again from its file, whose size and
  // modification time tell when it changes during the run.
  void keep_text_on_disk();
  // Asset i, resolved against [defaults] and its type (parsed again: it was checked when the
  // manifest was loaded). When the file changed since, it is read, split and indexed again,
  // once per change for every thread: the asset is found by its name and resolved against the
  // new [defaults] and [types] (the engine then fails it if its fingerprint changed). Throws
  // Fatal "<file> changed during the run (why): run kiln again", naming the asset, when it is
  // gone, twice, no longer valid, or names a plugin the run did not load, and when the new
  // tables outside [[asset]] have errors.
  AssetSpec asset(size_t i) const;
  // Whether the file changed since it was loaded (false while its text is kept in memory).
  bool changed_on_disk() const;
  // Every asset uses this backend (`--backend`): set by override_backend().
  void override_backend(const std::string& id);

  struct Source; // the text, or the file it was read from
  std::shared_ptr<const Source> source;

private:
  std::string m_backend_override;
};

// Why `name` cannot be an asset's name (a path below output_dir without extension: letters,
// digits, `_ - . /`, no `..`, no absolute path, no hidden segment), or nullopt.
std::optional<std::string> asset_name_problem(std::string_view name);

// Parses and resolves `path` (shown in messages as `display_path`). Throws Fatal (exit 2) with
// every error found, each as `file:line:col: message` with the line and a caret.
Manifest load_manifest(const fs::path& path, const std::string& display_path);

// Same, from text (tests).
Manifest parse_manifest(std::string_view text, const fs::path& path,
                        const std::string& display_path);

} // namespace kiln::host
