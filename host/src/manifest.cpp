#include "manifest.hpp"

#include "fatal.hpp"
#include "state.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <thread>
#include <toml++/toml.h>
#include <unistd.h>
#include <unordered_map>

namespace kiln::host {

namespace {

constexpr uint32_t k_max_side_px = 16384;

const std::vector<std::string> k_top_keys = {
    "project",    "plugins",        "defaults", "backends",     "enhancers", "validators",
    "strategies", "postprocessors", "types",    "retry_policy", "asset",     "cache"};
const std::vector<std::string> k_project_keys = {"output_dir", "budget_usd", "allow_fallback",
                                                 "max_image_megapixels"};
const std::vector<std::string> k_retry_policy_keys = {"max_attempts", "budget_ratio", "budget_min",
                                                      "breaker_failures", "breaker_cooldown_s"};
const std::vector<std::string> k_plugins_keys = {"paths"};
const std::vector<std::string> k_cache_keys = {"remote", "remote_read_only", "remote_timeout_s"};
// Fields an asset may set, and so may [defaults] and [types.X].
const std::vector<std::string> k_field_keys = {
    "backend", "model",           "seed",      "width",      "height",
    "format",  "style",           "negative",  "enhancers",  "params",
    "retry",   "fallback_models", "modifiers", "validators", "postprocess"};
// The fields that hold a list of strings.
const std::vector<std::string> k_list_keys = {"enhancers",       "validators", "retry",
                                              "fallback_models", "modifiers",  "postprocess"};
const std::vector<std::string> k_formats = {"png", "webp", "jpg"};

std::string type_name(const toml::node& n) {
  switch (n.type()) {
  case toml::node_type::string:
    return "a string";
  case toml::node_type::integer:
    return "an integer";
  case toml::node_type::floating_point:
    return "a float";
  case toml::node_type::boolean:
    return "a boolean";
  case toml::node_type::table:
    return "a table";
  case toml::node_type::array:
    return "an array";
  default:
    return "a date/time";
  }
}

// Names as a case-insensitive file system sees them (names are ASCII).
std::string fold_case(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Quoted for a message, control characters shown as \xNN: text from a file never drives the
// terminal it is printed on.
std::string in_quotes(std::string_view s) {
  std::string out = "'";
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "'";
}

} // namespace

std::optional<std::string> asset_name_problem(std::string_view name) {
  if (name.empty())
    return "is empty";
  if (name.front() == '/')
    return "is an absolute path: names are paths below output_dir";
  for (unsigned char c : name)
    if (!(std::isalnum(c) || c == '_' || c == '-' || c == '.' || c == '/'))
      return "may only contain letters, digits, '_', '-', '.' and '/'";
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string_view::npos)
      end = name.size();
    std::string_view seg(name.data() + start, end - start);
    if (seg.empty())
      return "has an empty path segment";
    if (seg == "..")
      return "escapes output_dir ('..' is not allowed)";
    if (seg.front() == '.')
      return "has a path segment starting with '.' (hidden files are not allowed)";
    start = end + 1;
  }
  if (name.find(".kiln-tmp") != std::string_view::npos)
    return "contains '.kiln-tmp', which marks Kiln's temporary files";
  for (const char* ext : {".png", ".webp", ".jpg", ".jpeg"}) {
    std::string_view e(ext);
    if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0)
      return "ends in '" + std::string(e) + "': leave the extension out, `format` sets it";
  }
  return std::nullopt;
}

namespace {

std::string with_hint(std::string message, std::string_view word,
                      const std::vector<std::string>& candidates) {
  if (auto hint = did_you_mean(word, candidates))
    message += " (did you mean " + in_quotes(*hint) + "?)";
  return message;
}

void json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      } else {
        out += char(c);
      }
    }
  }
  out += '"';
}

// Canonical JSON: toml++ tables iterate in key order, floats print in shortest round-trip form,
// so the same values always give the same text whatever the manifest's formatting.
void to_json(std::string& out, const toml::node& n) {
  if (auto t = n.as_table()) {
    out += '{';
    bool first = true;
    for (auto&& [k, v] : *t) {
      if (!first)
        out += ',';
      first = false;
      json_string(out, k.str());
      out += ':';
      to_json(out, v);
    }
    out += '}';
  } else if (auto a = n.as_array()) {
    out += '[';
    for (size_t i = 0; i < a->size(); ++i) {
      if (i)
        out += ',';
      to_json(out, *a->get(i));
    }
    out += ']';
  } else if (auto s = n.as_string()) {
    json_string(out, s->get());
  } else if (auto i = n.as_integer()) {
    out += std::to_string(i->get());
  } else if (auto f = n.as_floating_point()) {
    double d = f->get();
    if (!std::isfinite(d)) {
      out += "null";
      return;
    }
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, d);
    std::string_view text(buf, size_t(r.ptr - buf));
    out += text;
    // Keep floats distinguishable from integers: 1.0 stays "1.0".
    if (text.find_first_of(".eE") == std::string_view::npos)
      out += ".0";
  } else if (auto b = n.as_boolean()) {
    out += b->get() ? "true" : "false";
  } else {
    std::ostringstream os; // dates and times: their TOML text
    n.visit([&](auto&& v) { os << v; });
    json_string(out, os.str());
  }
}

// A field as written in one layer ([defaults], [types.X] or the asset).
struct Layer {
  const toml::table* table = nullptr;
  std::string where;
  bool own = false; // the asset's table: its lines are offset, the others' are not
};

class Parser {
public:
  // `line_offset`: lines before the text toml++ parsed (an asset is parsed on its own).
  Parser(Manifest* m, Diagnostics& d, uint32_t line_offset = 0)
      : m_m(m), m_d(d), m_line_offset(line_offset) {}

  void set_line_offset(uint32_t offset) { m_line_offset = offset; }

  // Everything but the assets: the manifest with its [[asset]] tables blanked.
  void header(const toml::table& root) {
    check_keys(root, k_top_keys, "at the top level");
    parse_project(root);
    parse_plugins(root);
    parse_plugin_tables(root, "backends", m_m->backend_settings);
    parse_plugin_tables(root, "enhancers", m_m->enhancer_settings);
    parse_plugin_tables(root, "validators", m_m->validator_settings);
    parse_plugin_tables(root, "strategies", m_m->strategy_settings);
    parse_plugin_tables(root, "postprocessors", m_m->postprocessor_settings);
    parse_retry_policy(root);
    parse_cache(root);
    use_layers(root, true);
    // [[asset]] tables never reach here: an `asset` left is of another kind.
    if (auto n = root.get("asset"))
      m_d.error(loc_of(*n), "'asset' must be an array of tables: write each as [[asset]]");
  }

  // [defaults] and [types.X] of `root`, checked when `check`.
  void use_layers(const toml::table& root, bool check) {
    if (auto n = root.get("defaults")) {
      if (auto t = check ? expect_table(*n, "[defaults]") : n->as_table()) {
        if (check) {
          check_keys(*t, k_field_keys, "in [defaults]");
          check_fields(*t);
        }
        m_defaults = Layer{t, "[defaults]"};
      }
    }
    if (auto n = root.get("types")) {
      if (auto t = check ? expect_table(*n, "[types]") : n->as_table()) {
        for (auto&& [k, v] : *t) {
          std::string where = "[types." + std::string(k.str()) + "]";
          if (auto tt = check ? expect_table(v, where) : v.as_table()) {
            if (check) {
              check_keys(*tt, k_field_keys, "in " + where);
              check_fields(*tt);
            }
            m_types.emplace(std::string(k.str()), Layer{tt, where});
          }
        }
      }
    }
  }

  // The root of one asset's own text (`[[asset]]` and its sub-tables): checks and resolves it.
  // False when it has errors. `name_loc` gets where its name is.
  bool asset(const toml::table& root, AssetSpec& spec, SourceLoc& name_loc) {
    const toml::array* arr = root.get("asset") ? root.get("asset")->as_array() : nullptr;
    if (!arr || arr->size() != 1 || !arr->get(0)->is_table()) {
      m_d.error({m_line_offset + 1, 1}, "expected one [[asset]] table here");
      return false;
    }
    return parse_asset(*arr->get(0)->as_table(), spec, name_loc);
  }

  SourceLoc loc_of(const toml::source_region& r) const {
    return {r.begin.line ? r.begin.line + m_line_offset : 0, r.begin.column};
  }
  SourceLoc loc_of(const toml::node& n) const { return loc_of(n.source()); }

private:
  void check_keys(const toml::table& t, const std::vector<std::string>& allowed,
                  const std::string& where) {
    for (auto&& [k, v] : t) {
      std::string key(k.str());
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
        m_d.error(loc_of(k.source()),
                  with_hint("unknown key " + in_quotes(key) + " " + where, key, allowed));
    }
  }

  const toml::table* expect_table(const toml::node& n, const std::string& what) {
    if (auto t = n.as_table())
      return t;
    m_d.error(loc_of(n), what + " must be a table, not " + type_name(n));
    return nullptr;
  }

  std::optional<std::string> get_string(const toml::table& t, std::string_view key,
                                        const std::string& what) {
    auto n = t.get(key);
    if (!n)
      return std::nullopt;
    if (auto s = n->as_string())
      return s->get();
    m_d.error(loc_of(*n), what + " must be a string, not " + type_name(*n));
    return std::nullopt;
  }

  std::optional<std::vector<std::string>> get_string_list(const toml::node& n,
                                                          const std::string& what) {
    auto a = n.as_array();
    if (!a) {
      m_d.error(loc_of(n), what + " must be an array of strings, not " + type_name(n));
      return std::nullopt;
    }
    std::vector<std::string> out;
    for (auto&& e : *a) {
      if (auto s = e.as_string()) {
        out.push_back(s->get());
      } else {
        m_d.error(loc_of(e), what + " must contain only strings, not " + type_name(e));
        return std::nullopt;
      }
    }
    return out;
  }

  void parse_project(const toml::table& root) {
    m_m->output_dir = m_m->dir / "generated";
    auto n = root.get("project");
    if (!n)
      return;
    auto t = expect_table(*n, "[project]");
    if (!t)
      return;
    check_keys(*t, k_project_keys, "in [project]");
    if (auto dir = get_string(*t, "output_dir", "output_dir")) {
      if (dir->empty())
        m_d.error(loc_of(*t->get("output_dir")), "output_dir must not be empty");
      else {
        m_m->output_dir = (m_m->dir / *dir).lexically_normal();
        m_m->output_dir_loc = loc_of(*t->get("output_dir"));
      }
    }
    if (auto fb = t->get("allow_fallback")) {
      if (auto b = fb->as_boolean())
        m_m->allow_fallback = b->get();
      else
        m_d.error(loc_of(*fb), "allow_fallback must be true or false, not " + type_name(*fb));
    }
    if (auto v = get_number(*t, "budget_usd")) {
      if (!(*v >= 0) || !std::isfinite(*v))
        m_d.error(loc_of(*t->get("budget_usd")), "budget_usd must be zero or more");
      else
        m_m->budget_usd = v;
    }
    if (auto v = get_number(*t, "max_image_megapixels")) {
      constexpr double k_most = double(k_max_image_side_px) * k_max_image_side_px / 1e6;
      if (!(*v > 0) || *v > k_most)
        m_d.error(loc_of(*t->get("max_image_megapixels")),
                  "max_image_megapixels must be above 0 and at most " +
                      std::to_string(int(k_most)));
      else
        m_m->max_decoded_pixels = uint64_t(*v * 1e6);
    }
  }

  std::optional<double> get_number(const toml::table& t, std::string_view key) {
    auto n = t.get(key);
    if (!n)
      return std::nullopt;
    if (auto f = n->as_floating_point())
      return f->get();
    if (auto i = n->as_integer())
      return double(i->get());
    m_d.error(loc_of(*n), std::string(key) + " must be a number, not " + type_name(*n));
    return std::nullopt;
  }

  void parse_retry_policy(const toml::table& root) {
    auto n = root.get("retry_policy");
    if (!n)
      return;
    auto t = expect_table(*n, "[retry_policy]");
    if (!t)
      return;
    check_keys(*t, k_retry_policy_keys, "in [retry_policy]");
    RetryPolicy& p = m_m->retry_policy;
    auto count = [&](std::string_view key, uint32_t& out, double lowest) {
      if (auto v = get_number(*t, key)) {
        if (*v != std::floor(*v) || *v < lowest || *v > 1e6)
          m_d.error(loc_of(*t->get(key)), std::string(key) + " must be a whole number from " +
                                              std::to_string(int(lowest)) + " to 1000000");
        else
          out = uint32_t(*v);
      }
    };
    count("max_attempts", p.max_attempts, 1);
    count("budget_min", p.budget_min, 0);
    count("breaker_failures", p.breaker_failures, 1);
    for (auto [key, out] : {std::pair{"budget_ratio", &p.budget_ratio},
                            std::pair{"breaker_cooldown_s", &p.breaker_cooldown_s}})
      if (auto v = get_number(*t, key)) {
        if (!(*v >= 0) || !std::isfinite(*v))
          m_d.error(loc_of(*t->get(key)), std::string(key) + " must be zero or more");
        else
          *out = *v;
      }
  }

  // [cache]: remote = "http://host:port/prefix" | "s3://bucket/prefix", remote_read_only,
  // remote_timeout_s.
  void parse_cache(const toml::table& root) {
    auto n = root.get("cache");
    if (!n)
      return;
    auto t = expect_table(*n, "[cache]");
    if (!t)
      return;
    check_keys(*t, k_cache_keys, "in [cache]");
    RemoteCacheSettings& c = m_m->remote_cache;
    if (auto url = get_string(*t, "remote", "remote")) {
      c.remote_loc = loc_of(*t->get("remote"));
      if (!url->empty() && url->rfind("http://", 0) != 0 && url->rfind("https://", 0) != 0 &&
          url->rfind("s3://", 0) != 0)
        m_d.error(c.remote_loc,
                  "remote must be an http://, https:// or s3:// address, not '" + *url + "'");
      else
        c.remote = *url;
    }
    if (auto ro = t->get("remote_read_only")) {
      if (auto b = ro->as_boolean())
        c.read_only = b->get();
      else
        m_d.error(loc_of(*ro), "remote_read_only must be true or false, not " + type_name(*ro));
    }
    if (auto v = get_number(*t, "remote_timeout_s")) {
      if (!(*v > 0) || *v > 3600)
        m_d.error(loc_of(*t->get("remote_timeout_s")),
                  "remote_timeout_s must be above 0 and at most 3600");
      else
        c.timeout_s = *v;
    }
  }

  void parse_plugins(const toml::table& root) {
    auto n = root.get("plugins");
    if (!n)
      return;
    auto t = expect_table(*n, "[plugins]");
    if (!t)
      return;
    check_keys(*t, k_plugins_keys, "in [plugins]");
    if (auto p = t->get("paths")) {
      if (auto list = get_string_list(*p, "paths")) {
        auto a = p->as_array();
        for (size_t i = 0; i < list->size(); ++i) {
          m_m->plugin_paths.push_back((m_m->dir / (*list)[i]).lexically_normal());
          m_m->plugin_path_locs.push_back(loc_of(*a->get(i)));
        }
      }
    }
  }

  void parse_pacing(const toml::table& t, BackendPacing& out) {
    if (auto v = get_number(t, "requests_per_second")) {
      if (!(*v > 0) || !std::isfinite(*v))
        m_d.error(loc_of(*t.get("requests_per_second")),
                  "requests_per_second must be more than zero (leave it out to learn the rate "
                  "from the provider's 429s)");
      else
        out.requests_per_second = *v;
    }
    if (auto v = get_number(t, "burst")) {
      if (*v < 1 || *v != std::floor(*v) || *v > 1e6)
        m_d.error(loc_of(*t.get("burst")), "burst must be a whole number of at least 1");
      else
        out.burst = *v;
    }
    if (auto v = get_number(t, "max_retry_after_s")) {
      if (!(*v >= 0) || !std::isfinite(*v) || *v > 86400)
        m_d.error(loc_of(*t.get("max_retry_after_s")),
                  "max_retry_after_s must be from 0 to 86400 (seconds a server may ask to wait)");
      else
        out.max_retry_after_s = *v;
    }
    if (auto v = get_number(t, "concurrency")) {
      if (*v < 1 || *v != std::floor(*v) || *v > 1024)
        m_d.error(loc_of(*t.get("concurrency")),
                  "concurrency must be a whole number from 1 to 1024 (jobs in flight at once)");
      else
        out.concurrency = unsigned(*v);
    }
  }

  void parse_plugin_tables(const toml::table& root, const std::string& kind,
                           std::map<std::string, PluginSettings>& out) {
    auto n = root.get(kind);
    if (!n)
      return;
    auto t = expect_table(*n, "[" + kind + "]");
    if (!t)
      return;
    for (auto&& [k, v] : *t) {
      std::string where = "[" + kind + "." + std::string(k.str()) + "]";
      auto pt = expect_table(v, where);
      if (!pt)
        continue;
      if (kind == "backends")
        parse_pacing(*pt, m_m->backend_pacing[std::string(k.str())]);
      PluginSettings s;
      s.id = std::string(k.str());
      s.loc = loc_of(k.source());
      s.dir = m_m->dir;
      for (auto&& [ok, ov] : *pt) {
        if (kind == "backends" && is_kiln_backend_key(ok.str()))
          continue; // Kiln's, not the plugin's
        SettingValue sv;
        sv.key_loc = loc_of(ok.source());
        sv.value_loc = loc_of(ov);
        sv.toml_type = type_name(ov);
        if (auto s1 = ov.as_string()) {
          sv.type = SettingValue::Type::String;
          sv.string_value = s1->get();
        } else if (auto i = ov.as_integer()) {
          sv.type = SettingValue::Type::Int;
          sv.int_value = i->get();
        } else if (auto f = ov.as_floating_point()) {
          sv.type = SettingValue::Type::Float;
          sv.float_value = f->get();
        } else if (auto b = ov.as_boolean()) {
          sv.type = SettingValue::Type::Bool;
          sv.bool_value = b->get();
        } else if (auto a = ov.as_array();
                   a && std::all_of(a->begin(), a->end(),
                                    [](const toml::node& e) { return e.is_string(); })) {
          sv.type = SettingValue::Type::StringList;
          for (auto&& e : *a)
            sv.list_value.push_back(e.as_string()->get());
        }
        s.values.emplace(std::string(ok.str()), std::move(sv));
      }
      out.emplace(s.id, std::move(s));
    }
  }

  // Type checks of the fields of one layer; values are read again during resolution.
  void check_fields(const toml::table& t) {
    for (const char* key : {"backend", "model", "style", "negative"})
      get_string(t, key, key);
    if (auto f = get_string(t, "format", "format")) {
      if (std::find(k_formats.begin(), k_formats.end(), *f) == k_formats.end()) {
        std::string hint = *f == "jpeg" ? " (did you mean 'jpg'?)" : "";
        m_d.error(loc_of(*t.get("format")),
                  "format must be one of png, webp, jpg, not " + in_quotes(*f) + hint);
      }
    }
    for (const char* key : {"width", "height"}) {
      if (auto n = t.get(key)) {
        auto i = n->as_integer();
        if (!i)
          m_d.error(loc_of(*n), std::string(key) + " must be an integer, not " + type_name(*n));
        else if (i->get() < 1 || i->get() > k_max_side_px)
          m_d.error(loc_of(*n), std::string(key) + " must be between 1 and " +
                                    std::to_string(k_max_side_px) + ", not " +
                                    std::to_string(i->get()));
      }
    }
    if (auto n = t.get("seed")) {
      auto i = n->as_integer();
      if (!i)
        m_d.error(loc_of(*n), "seed must be an integer, not " + type_name(*n));
      else if (i->get() < 0)
        m_d.error(loc_of(*n), "seed must be zero or more");
    }
    for (auto& key : k_list_keys)
      if (auto n = t.get(key))
        get_string_list(*n, key);
    // A postprocessor twice is a slip (each pass is paid in time, and a second trim or pixelate
    // changes nothing but the fingerprint).
    if (auto n = t.get("postprocess"); n && n->as_array()) {
      std::set<std::string> seen;
      for (auto&& e : *n->as_array())
        if (auto id = e.as_string(); id && !seen.insert(id->get()).second)
          m_d.error(loc_of(e), "postprocessor " + in_quotes(id->get()) + " is listed twice");
    }
    if (auto n = t.get("params"))
      expect_table(*n, "params");
  }

  void check_name(const toml::node& n, const std::string& name) {
    SourceLoc loc = loc_of(n);
    auto bad = [&](const std::string& why) {
      m_d.error(loc, "asset name " + in_quotes(name) + " " + why);
    };
    if (auto why = asset_name_problem(name))
      bad(*why);
  }

  // The first layer (asset, type, defaults) that sets `key`.
  const toml::node* lookup(const std::vector<Layer>& layers, std::string_view key,
                           AssetSpec& spec) {
    for (const Layer& l : layers) {
      if (auto n = l.table->get(key)) {
        SourceLoc loc = loc_of(*n);
        if (!l.own && loc.line)
          loc.line -= m_line_offset; // [defaults] or [types.X]: parsed with the whole file
        spec.field_locs[std::string(key)] = loc;
        return n;
      }
    }
    return nullptr;
  }

  bool parse_asset(const toml::table& t, AssetSpec& spec, SourceLoc& name_loc) {
    std::vector<std::string> type_names;
    for (auto& [k, v] : m_types)
      type_names.push_back(k);
    static const std::vector<std::string> asset_keys = [] {
      std::vector<std::string> keys = {"name", "type", "prompt"};
      keys.insert(keys.end(), k_field_keys.begin(), k_field_keys.end());
      return keys;
    }();

    size_t errors_before = m_d.error_count();
    check_keys(t, asset_keys, "in [[asset]]");
    check_fields(t);
    spec.loc = loc_of(t);

    auto name = get_string(t, "name", "name");
    if (!t.get("name"))
      m_d.error(spec.loc, "[[asset]] has no name");
    else if (name) {
      check_name(*t.get("name"), *name);
      spec.name = *name;
      name_loc = spec.field_locs["name"] = loc_of(*t.get("name"));
    }
    std::string label = spec.name.empty() ? "[[asset]]" : "asset " + in_quotes(spec.name);

    auto prompt = get_string(t, "prompt", "prompt");
    if (!t.get("prompt"))
      m_d.error(spec.loc, label + " has no prompt");
    else if (prompt && prompt->find_first_not_of(" \t\r\n") == std::string::npos)
      m_d.error(loc_of(*t.get("prompt")), label + " has an empty prompt");
    else if (prompt)
      spec.prompt = *prompt;

    std::vector<Layer> layers{Layer{&t, "asset", true}};
    auto type = get_string(t, "type", "type");
    if (!t.get("type")) {
      m_d.error(spec.loc,
                label + " has no type" +
                    (type_names.empty() ? std::string(": declare one in [types]")
                                        : " (declared types: " + join(type_names, ", ") + ")"));
    } else if (type) {
      spec.type = *type;
      spec.field_locs["type"] = loc_of(*t.get("type"));
      auto it = m_types.find(*type);
      if (it == m_types.end())
        m_d.error(loc_of(*t.get("type")),
                  with_hint("unknown type " + in_quotes(*type) + " (no [types." + *type + "])",
                            *type, type_names));
      else
        layers.push_back(it->second);
    }
    if (m_defaults.table)
      layers.push_back(m_defaults);

    // With its type unknown, the asset's missing fields are noise: report the type only.
    bool type_known = spec.type.empty() || m_types.count(spec.type);
    resolve(spec, layers, label, type_known);
    // Only a fully checked asset is kept: later stages may trust every field.
    return m_d.error_count() == errors_before;
  }

  void resolve(AssetSpec& spec, const std::vector<Layer>& layers, const std::string& label,
               bool report_missing) {
    auto str = [&](const char* key, std::string fallback) {
      if (auto n = lookup(layers, key, spec))
        if (auto s = n->as_string())
          return s->get();
      spec.field_locs.emplace(key, spec.loc);
      return fallback;
    };
    spec.backend = str("backend", "placeholder");
    spec.model = str("model", "");
    spec.style = str("style", "");
    spec.negative = str("negative", "");
    spec.format = str("format", "png");

    for (const char* key : {"width", "height"}) {
      auto n = lookup(layers, key, spec);
      uint32_t v = 0;
      if (n && n->as_integer())
        v = uint32_t(std::clamp<int64_t>(n->as_integer()->get(), 0, k_max_side_px));
      if (!n && report_missing)
        m_d.error(spec.loc, label + " has no " + key + ": set it on the asset, in [types." +
                                (spec.type.empty() ? std::string("<type>") : spec.type) +
                                "] or in [defaults]");
      (std::string_view(key) == "width" ? spec.width : spec.height) = v;
    }
    if (auto n = lookup(layers, "seed", spec); n && n->as_integer())
      spec.seed = uint64_t(std::max<int64_t>(0, n->as_integer()->get()));

    auto list = [&](const std::string& key, std::vector<std::string> fallback) {
      std::vector<std::string> out;
      if (auto n = lookup(layers, key, spec)) {
        // Each element's place, moved as the array's was (a layer parsed with the whole file).
        const SourceLoc at = spec.field_locs[key];
        const int64_t shift = int64_t(at.line) - int64_t(loc_of(*n).line);
        if (auto a = n->as_array())
          for (auto&& e : *a)
            if (auto s = e.as_string()) {
              out.push_back(s->get());
              SourceLoc item = loc_of(e);
              if (item.line)
                item.line = uint32_t(int64_t(item.line) + shift);
              spec.item_locs.emplace(key + '\x1f' + s->get(), item);
            }
        return out;
      }
      spec.field_locs.emplace(key, spec.loc);
      return fallback;
    };
    spec.enhancers = list("enhancers", {});
    spec.validators = list("validators", {"resolution", "format", "not-corrupt"});
    spec.retry = list("retry", k_default_retry_chain);
    spec.fallback_models = list("fallback_models", {});
    spec.modifiers = list("modifiers", {});
    spec.postprocess = list("postprocess", {});

    // params merge key by key: the asset's keys over its type's over [defaults]'.
    toml::table params;
    for (auto it = layers.rbegin(); it != layers.rend(); ++it)
      if (auto n = it->table->get("params"); n && n->as_table())
        for (auto&& [k, v] : *n->as_table())
          params.insert_or_assign(k, v);
    spec.params_json.clear();
    to_json(spec.params_json, params);
  }

  Manifest* m_m; // null when only assets are parsed
  Diagnostics& m_d;
  uint32_t m_line_offset = 0;
  Layer m_defaults;
  std::map<std::string, Layer> m_types;
};

// A manifest split at its top-level table headers, so each asset can be parsed on its own and
// none is kept parsed: the asset tables (an `[[asset]]` header up to the next header that is
// not one of its `[asset.x]` sub-tables), and the rest with those tables blanked to spaces, so
// every line and column stays where it was.
struct Split {
  struct Chunk {
    size_t begin = 0, end = 0;
    uint32_t line = 0;
    bool detached = false; // an `[asset.x]` table that other tables separate from its asset
  };
  // An asset's chunk that takes in `[asset.x]` tables other tables separate from it (valid
  // TOML: they belong to the last asset) spans those other tables too: own_tables() blanks
  // them before it is parsed.
  std::vector<Chunk> assets;
  std::string header;
  // The first key nested deeper than k_max_key_depth (`a.b.c...` or a header), line and column:
  // toml++ builds and destroys such tables recursively, so a long enough one would overflow
  // the stack. Refused before it is parsed.
  std::optional<std::pair<uint32_t, uint32_t>> too_deep;
};

constexpr int k_max_key_depth = 64;

// Code point `cp` as UTF-8, for the \\u and \\U escapes of toml_unescape().
void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xc0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += char(0xe0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  } else {
    out += char(0xf0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3f));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  }
}

// A basic string's escapes decoded (\\uXXXX and \\UXXXXXXXX as UTF-8); nullopt if malformed.
std::optional<std::string> toml_unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out += s[i];
      continue;
    }
    if (++i >= s.size())
      return std::nullopt;
    switch (s[i]) {
    case 'b':
      out += '\b';
      break;
    case 't':
      out += '\t';
      break;
    case 'n':
      out += '\n';
      break;
    case 'f':
      out += '\f';
      break;
    case 'r':
      out += '\r';
      break;
    case 'e':
      out += '\x1b';
      break;
    case '"':
      out += '"';
      break;
    case '\\':
      out += '\\';
      break;
    case 'u':
    case 'U': {
      size_t digits = s[i] == 'u' ? 4 : 8;
      uint32_t cp = 0;
      for (size_t k = 1; k <= digits; ++k) {
        if (i + k >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + k])))
          return std::nullopt;
        char c = s[i + k];
        cp = cp * 16 + uint32_t(std::isdigit(static_cast<unsigned char>(c))
                                    ? c - '0'
                                    : std::tolower(static_cast<unsigned char>(c)) - 'a' + 10);
      }
      i += digits;
      append_utf8(out, cp);
      break;
    }
    default:
      return std::nullopt;
    }
  }
  return out;
}

// The first key of a table header's text (between the brackets), unquoted (escapes decoded),
// and whether more keys follow it: `asset.params` -> {"asset", true}; ` "asset" ` and
// `"\\u0061sset"` -> {"asset", false}.
std::pair<std::string, bool> first_key(std::string_view inner) {
  size_t i = inner.find_first_not_of(" \t");
  if (i == std::string_view::npos)
    return {"", false};
  std::string key;
  if (inner[i] == '"') {
    size_t end = i + 1;
    while (end < inner.size() && inner[end] != '"')
      end += inner[end] == '\\' ? 2 : 1;
    if (end >= inner.size())
      return {"", false};
    key = toml_unescape(inner.substr(i + 1, end - i - 1)).value_or("");
    i = end + 1;
  } else if (inner[i] == '\'') {
    size_t end = inner.find('\'', i + 1);
    if (end == std::string_view::npos)
      return {"", false};
    key = inner.substr(i + 1, end - i - 1);
    i = end + 1;
  } else {
    size_t end = inner.find_first_of(" \t.", i);
    key = inner.substr(i, std::min(end, inner.size()) - i);
    i = std::min(end, inner.size());
  }
  i = inner.find_first_not_of(" \t", i);
  return {key, i != std::string_view::npos && inner[i] == '.'};
}

// split_manifest()'s single pass over the text: where it is, what it is inside of, and the
// asset chunk being read.
class ManifestSplitter {
public:
  explicit ManifestSplitter(std::string_view text) : m_text(text), m_n(text.size()) {
    m_out.header.assign(text);
  }
  Split run();

private:
  size_t line_begin(size_t at) const; // where the line holding `at` starts
  void dot(size_t at);                // a dot between keys: counts towards too_deep
  void close_chunk(size_t at);        // the asset chunk read so far ends at `at`
  void skip_string(char q);           // at the opening quote; leaves m_i after the closing one
  void table_header();                // at the `[` that starts a header line
  // Where a header's keys, from `inner`, end (its `]` or the line's end); counts their dots.
  size_t header_end(size_t inner);
  // A header line at `begin` whose first key is `key`: an `[[asset]]` opens a chunk, an
  // `[asset.x]` belongs to the chunk open (or, past other tables, to the last asset's), and any
  // other table ends the chunk.
  void chunk_at(std::string_view key, bool more, bool array, size_t begin);

  std::string_view m_text;
  size_t m_n = 0, m_i = 0;
  uint32_t m_line = 1;
  int m_depth = 0;          // open [ and { of values
  bool m_line_start = true; // only blanks so far on this line
  int m_dots = 0;           // in the key being read (between separators, outside strings)
  std::optional<Split::Chunk> m_chunk;
  Split m_out;
};

Split ManifestSplitter::run() {
  if (m_text.substr(0, 3) == "\xEF\xBB\xBF")
    m_i = 3; // a UTF-8 byte order mark, as some Windows editors write
  while (m_i < m_n) {
    char c = m_text[m_i];
    if (c == '\n') {
      ++m_line;
      ++m_i;
      m_dots = 0;
      m_line_start = true;
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r') {
      ++m_i;
      continue;
    }
    if (c == '#') {
      while (m_i < m_n && m_text[m_i] != '\n')
        ++m_i;
      continue;
    }
    if (m_line_start && m_depth == 0 && c == '[') {
      table_header();
      continue;
    }
    m_line_start = false;
    if (c == '"' || c == '\'') {
      skip_string(c);
      continue;
    }
    if (c == '.')
      dot(m_i);
    else if (c == '=' || c == ',' || c == '[' || c == ']' || c == '{' || c == '}')
      m_dots = 0;
    if (c == '[' || c == '{')
      ++m_depth;
    else if ((c == ']' || c == '}') && m_depth > 0)
      --m_depth;
    ++m_i;
  }
  close_chunk(m_n);
  return std::move(m_out);
}

size_t ManifestSplitter::line_begin(size_t at) const {
  size_t begin = m_text.rfind('\n', at);
  return begin == std::string_view::npos ? 0 : begin + 1;
}

void ManifestSplitter::dot(size_t at) {
  if (++m_dots > k_max_key_depth && !m_out.too_deep)
    m_out.too_deep = {m_line, uint32_t(at - line_begin(at) + 1)};
}

void ManifestSplitter::close_chunk(size_t at) {
  if (!m_chunk)
    return;
  m_chunk->end = at;
  for (size_t k = m_chunk->begin; k < at; ++k)
    if (m_out.header[k] != '\n')
      m_out.header[k] = ' ';
  if (m_chunk->detached)
    m_out.assets.back().end = at;
  else
    m_out.assets.push_back(*m_chunk);
  m_chunk.reset();
}

void ManifestSplitter::skip_string(char q) {
  bool multi = m_i + 2 < m_n && m_text[m_i + 1] == q && m_text[m_i + 2] == q;
  m_i += multi ? 3 : 1;
  while (m_i < m_n) {
    char c = m_text[m_i];
    if (c == '\\' && q == '"') {
      if (m_i + 1 < m_n && m_text[m_i + 1] == '\n')
        ++m_line;
      m_i += 2;
      continue;
    }
    if (c == '\n' && !multi)
      return; // unterminated: toml++ reports it
    if (c == '\n')
      ++m_line;
    if (c == q && !multi) {
      ++m_i;
      return;
    }
    if (c == q) { // """a""""" : a run of 3 to 5 quotes closes, the extra ones are content
      size_t run = 0;
      while (m_i + run < m_n && m_text[m_i + run] == q)
        ++run;
      m_i += run;
      if (run >= 3)
        return;
      continue;
    }
    ++m_i;
  }
}

void ManifestSplitter::table_header() {
  size_t begin = line_begin(m_i);
  bool array = m_i + 1 < m_n && m_text[m_i + 1] == '[';
  size_t inner = m_i + (array ? 2 : 1);
  m_dots = 0;
  size_t k = header_end(inner);
  auto [key, more] = first_key(m_text.substr(inner, std::min(k, m_n) - inner));
  chunk_at(key, more, array, begin);
  m_i = k;
  m_line_start = false;
  while (m_i < m_n && m_text[m_i] != '\n' && m_text[m_i] != '#')
    ++m_i;
}

size_t ManifestSplitter::header_end(size_t inner) {
  size_t k = inner;
  while (k < m_n && m_text[k] != ']' && m_text[k] != '\n') {
    if (m_text[k] == '.')
      dot(k);
    if (m_text[k] == '"') { // a basic string: \" does not close it
      ++k;
      while (k < m_n && m_text[k] != '"' && m_text[k] != '\n')
        k += m_text[k] == '\\' ? 2 : 1;
    } else if (m_text[k] == '\'') {
      size_t end = m_text.find('\'', k + 1);
      k = end == std::string_view::npos ? m_n : end;
    }
    ++k;
  }
  return k;
}

void ManifestSplitter::chunk_at(std::string_view key, bool more, bool array, size_t begin) {
  if (key == "asset" && array && !more) {
    close_chunk(begin);
    m_chunk = Split::Chunk{begin, 0, m_line};
  } else if (!(key == "asset" && more && m_chunk)) {
    close_chunk(begin);
    if (key == "asset" && more && !m_out.assets.empty())
      m_chunk = Split::Chunk{begin, 0, m_line, true};
  }
}

Split split_manifest(std::string_view text) {
  return ManifestSplitter(text).run();
}

// One asset's chunk of the manifest with every table that is not its own blanked to spaces
// (lines and columns stay): what lies between it and an `[asset.x]` table of its own further
// down. Usually there is none, and the chunk comes back as it is.
std::string own_tables(std::string_view chunk) {
  Split split = split_manifest(chunk);
  if (split.too_deep) // checked when loaded; an edit during the run may bring one
    throw toml::parse_error("keys nested too deep", toml::source_region{});
  std::string& out = split.header; // the chunk with its own tables blanked: inverted here
  for (size_t k = 0; k < chunk.size(); ++k)
    out[k] = out[k] == chunk[k] && chunk[k] != '\n' ? ' ' : chunk[k];
  return std::move(out);
}

} // namespace

struct LayerTables {
  toml::table root; // the manifest without its assets
};

namespace {

std::optional<FileStamp> stamp_of(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0)
    return std::nullopt;
  return FileStamp{uint64_t(st.st_size),
                   int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

bool same_stamp(const FileStamp& a, const FileStamp& b) {
  return a.size == b.size && a.mtime_ns == b.mtime_ns;
}

} // namespace

struct Manifest::Source {
  struct Fd {
    int fd = -1;
    ~Fd() {
      if (fd >= 0)
        ::close(fd);
    }
  };
  // The file as read again after it changed during the run: its [defaults] and [types], and
  // where each asset of the manifest's index is now, found by its name (12 bytes an asset).
  struct Reread {
    static constexpr uint32_t k_twice = 1; // an offset with length 0: the name is there twice
    FileStamp stamp;
    std::shared_ptr<const LayerTables> layers; // null: the tables outside [[asset]] have errors
    std::vector<AssetIndex::Place> places;     // by index; length 0: not there (or twice)
    bool complete() const {
      return layers && std::all_of(places.begin(), places.end(),
                                   [](const AssetIndex::Place& p) { return p.length > 0; });
    }
  };
  // The latest reading, shared by every thread and every copy of the manifest: the file is read
  // again once per change, not once per asset.
  struct Rereads {
    std::mutex mutex;
    std::shared_ptr<const Reread> latest;
  };

  std::shared_ptr<const std::string> text; // null: read from the file
  std::shared_ptr<Fd> file;
  FileStamp stamp; // the file's, when it was loaded
  std::string display_path;
  std::shared_ptr<Rereads> rereads = std::make_shared<Rereads>();

  // The file as it is at `stamp`, indexed for `m`; null when it changed again while read.
  std::shared_ptr<const Reread> reread(const Manifest& m, FileStamp stamp) const;
};

std::string_view AssetIndex::format(size_t i) const {
  return k_formats.at(m_entries[i].format);
}

void AssetIndex::add(Place place, std::string_view name, std::string_view format) {
  Entry e;
  e.place = place;
  e.name_offset = uint32_t(m_names.size());
  e.name_length = uint16_t(std::min<size_t>(name.size(), UINT16_MAX));
  auto f = std::find(k_formats.begin(), k_formats.end(), format);
  e.format = uint8_t(f == k_formats.end() ? 0 : f - k_formats.begin());
  m_names.append(name.substr(0, e.name_length));
  m_entries.push_back(e);
}

bool is_kiln_backend_key(std::string_view key) {
  return key == "requests_per_second" || key == "burst" || key == "concurrency" ||
         key == "max_retry_after_s";
}

namespace {

// A toml++ error in text whose first line is `line_offset` lines into the manifest.
void report_parse_error(Diagnostics& d, const toml::parse_error& e, uint32_t line_offset) {
  SourceLoc loc{e.source().begin.line, e.source().begin.column};
  if (loc.line)
    loc.line += line_offset;
  d.error(loc, std::string(e.description()));
}

// The asset names met so far, to refuse one that collides with an earlier one. Names are
// compared with their case folded: on macOS and Windows `Icons/Sword` and `icons/sword` are
// the same file.
class NameClashes {
public:
  NameClashes(const AssetIndex& assets, Diagnostics& d) : m_assets(assets), m_d(d) {}
  // Whether `spec` may join the assets (`ok`: it has no other errors); if so, it is added as
  // the next one, named at `name_loc`. Every clash is reported there.
  bool admit(const AssetSpec& spec, SourceLoc name_loc, bool ok);

private:
  using At = std::pair<uint32_t, uint32_t>; // index, line
  static uint64_t hash_of(const std::string& folded) { return std::hash<std::string>{}(folded); }
  static std::string line_of(const At& first) {
    return " (line " + std::to_string(first.second) + ")";
  }
  // The earlier asset whose folded name is `folded_name`, or null.
  const At* earlier(const std::string& folded_name) const;
  // Whether an earlier asset has the name, or the name but for case.
  bool repeats_a_name(const AssetSpec& spec, const std::string& folded, SourceLoc name_loc);
  // Whether the name is a folder of an earlier asset's, or its file where one needs a folder.
  bool is_a_folder(const AssetSpec& spec, const std::string& folded, SourceLoc name_loc);
  // Whether the name needs a folder that is an earlier asset, or where one writes its file;
  // `folders` gets the folders it needs, folded.
  bool needs_a_file(const AssetSpec& spec, SourceLoc name_loc, std::vector<std::string>& folders);

  const AssetIndex& m_assets;
  Diagnostics& m_d;
  std::unordered_multimap<uint64_t, At> m_seen; // folded name's hash -> its asset
  // Every folder some asset's name makes (`b` and `b.png` of `b/c` and `b.png/c`), folded: no
  // asset may be one of them (a name is a file or a folder of files, not both; `b.png` could
  // not even be written).
  std::unordered_map<std::string, At> m_folders_of;
};

bool NameClashes::admit(const AssetSpec& spec, SourceLoc name_loc, bool ok) {
  const std::string folded = fold_case(spec.name);
  if (!spec.name.empty())
    ok = !repeats_a_name(spec, folded, name_loc) && ok;
  std::vector<std::string> folders; // of this asset
  ok = ok && !is_a_folder(spec, folded, name_loc) && !needs_a_file(spec, name_loc, folders);
  if (ok) {
    At at{uint32_t(m_assets.size()), name_loc.line};
    m_seen.emplace(hash_of(folded), at);
    for (auto& folder : folders)
      m_folders_of.emplace(std::move(folder), at);
  }
  return ok;
}

const NameClashes::At* NameClashes::earlier(const std::string& folded_name) const {
  auto [first, last] = m_seen.equal_range(hash_of(folded_name));
  for (auto it = first; it != last; ++it)
    if (fold_case(m_assets.name(it->second.first)) == folded_name)
      return &it->second;
  return nullptr;
}

bool NameClashes::repeats_a_name(const AssetSpec& spec, const std::string& folded,
                                 SourceLoc name_loc) {
  const At *same = nullptr, *same_but_case = nullptr;
  auto [first, last] = m_seen.equal_range(hash_of(folded));
  for (auto it = first; it != last && !same; ++it) {
    std::string_view other = m_assets.name(it->second.first);
    if (other == spec.name)
      same = &it->second;
    else if (!same_but_case && fold_case(other) == folded)
      same_but_case = &it->second;
  }
  if (same)
    m_d.error(name_loc, "duplicate asset name " + in_quotes(spec.name) + " (first declared at " +
                            m_d.display_path() + ":" + std::to_string(same->second) + ")");
  else if (same_but_case)
    m_d.error(name_loc, "asset name " + in_quotes(spec.name) + " is the same as " +
                            in_quotes(m_assets.name(same_but_case->first)) +
                            line_of(*same_but_case) + " but for case");
  return same || same_but_case;
}

bool NameClashes::is_a_folder(const AssetSpec& spec, const std::string& folded,
                              SourceLoc name_loc) {
  if (auto it = m_folders_of.find(folded); it != m_folders_of.end()) {
    m_d.error(name_loc, "asset name " + in_quotes(spec.name) + " is a folder of asset " +
                            in_quotes(m_assets.name(it->second.first)) + line_of(it->second) +
                            ": a name is an asset or a folder of assets, not both");
    return true;
  }
  if (auto it = m_folders_of.find(fold_case(spec.relative_output())); it != m_folders_of.end()) {
    m_d.error(name_loc, "asset name " + in_quotes(spec.name) + " writes its file to " +
                            in_quotes(spec.relative_output()) + ", a folder of asset " +
                            in_quotes(m_assets.name(it->second.first)) + line_of(it->second));
    return true;
  }
  return false;
}

bool NameClashes::needs_a_file(const AssetSpec& spec, SourceLoc name_loc,
                               std::vector<std::string>& folders) {
  for (size_t slash = spec.name.find('/'); slash != std::string::npos;
       slash = spec.name.find('/', slash + 1)) {
    std::string_view folder(spec.name.data(), slash);
    std::string folded_folder = fold_case(folder);
    if (auto* other = earlier(folded_folder)) {
      m_d.error(name_loc, "asset name " + in_quotes(spec.name) + " is inside " + in_quotes(folder) +
                              ", which is asset " + in_quotes(m_assets.name(other->first)) +
                              line_of(*other) +
                              ": a name is an asset or a folder of assets, not both");
      return true;
    }
    folders.push_back(folded_folder);
    size_t dot = folder.rfind('.');
    if (dot == std::string_view::npos || folder.find('/', dot) != std::string_view::npos)
      continue;
    std::string format = fold_case(folder.substr(dot + 1));
    if (std::find(k_formats.begin(), k_formats.end(), format) == k_formats.end())
      continue;
    auto* other = earlier(fold_case(folder.substr(0, dot)));
    if (other && m_assets.format(other->first) == format) {
      m_d.error(name_loc, "asset name " + in_quotes(spec.name) + " needs a folder " +
                              in_quotes(folder) + " where asset " +
                              in_quotes(m_assets.name(other->first)) + line_of(*other) +
                              " writes its file");
      return true;
    }
  }
  return false;
}

// The plugins an asset names, each where it was written, for the run to load.
void add_plugin_uses(PluginUses& plugin_uses, const AssetSpec& spec) {
  auto use = [&](const char* field, const std::vector<std::string>& ids) {
    auto& uses = plugin_uses[field];
    for (auto& id : ids) {
      auto item = spec.item_locs.find(field + std::string(1, '\x1f') + id);
      auto set_at = spec.field_locs.find(field);
      uses.emplace(id, item != spec.item_locs.end()      ? item->second
                       : set_at != spec.field_locs.end() ? set_at->second
                                                         : SourceLoc{});
    }
  };
  use("backend", {spec.backend});
  use("enhancers", spec.enhancers);
  use("validators", spec.validators);
  use("retry", spec.retry);
  use("postprocess", spec.postprocess);
}

// The manifest's tables outside [[asset]] (split.header, freed once parsed) read into `m` and
// `parser`, which resolves the assets against them. Throws Fatal on errors.
void parse_header(Manifest& m, Parser& parser, Split& split, const std::string& display_path) {
  Diagnostics& d = m.diagnostics;
  if (split.too_deep) {
    d.error(SourceLoc{split.too_deep->first, split.too_deep->second},
            "keys nest deeper than " + std::to_string(k_max_key_depth) + " levels here");
    d.throw_if_errors();
  }
  auto layers = std::make_shared<LayerTables>();
  try {
    layers->root = toml::parse(split.header, display_path);
  } catch (const toml::parse_error& e) {
    report_parse_error(d, e, 0);
    d.throw_if_errors();
  }
  split.header = std::string();
  parser.header(layers->root);
  m.layers = layers;
}

// Each asset is parsed, checked and dropped: only its place and name are kept.
void index_assets(Manifest& m, Parser& parser, const Split& split, std::string_view text,
                  const std::string& display_path) {
  NameClashes names(m.assets, m.diagnostics);
  m.assets.reserve(split.assets.size());
  for (auto& chunk : split.assets) {
    AssetIndex::Place place{uint32_t(chunk.begin), uint32_t(chunk.end - chunk.begin), chunk.line};
    toml::table root;
    try {
      root = toml::parse(own_tables(text.substr(place.offset, place.length)), display_path);
    } catch (const toml::parse_error& e) {
      report_parse_error(m.diagnostics, e, chunk.line - 1);
      continue;
    }
    parser.set_line_offset(chunk.line - 1);
    AssetSpec spec;
    SourceLoc name_loc;
    bool ok = parser.asset(root, spec, name_loc);
    if (!names.admit(spec, name_loc, ok))
      continue;
    m.assets.add(place, spec.name, spec.format);
    add_plugin_uses(m.plugin_uses, spec);
  }
}

Manifest parse_text(std::shared_ptr<const std::string> text, const fs::path& path,
                    const std::string& display_path) {
  Manifest m;
  m.path = fs::absolute(path).lexically_normal();
  m.dir = m.path.parent_path();
  m.diagnostics = Diagnostics(display_path, text);
  if (text->size() > UINT32_MAX)
    throw Fatal(display_path + ": larger than 4 GiB");
  Split split = split_manifest(*text);
  Parser parser(&m, m.diagnostics);
  parse_header(m, parser, split, display_path);
  index_assets(m, parser, split, *text, display_path);
  m.diagnostics.throw_if_errors();
  auto source = std::make_shared<Manifest::Source>();
  source->text = std::move(text);
  source->display_path = display_path;
  m.source = std::move(source);
  return m;
}

} // namespace

Manifest parse_manifest(std::string_view text, const fs::path& path,
                        const std::string& display_path) {
  return parse_text(std::make_shared<const std::string>(text), path, display_path);
}

namespace {

// `text` (the manifest's file at `stamp`) split and indexed for `m`: the new [defaults] and
// [types], and where each of m's assets is now, found by its name (its offset and line may
// have moved). Only the places are kept, not the text.
std::shared_ptr<const Manifest::Source::Reread>
index_again(const Manifest& m, const std::string& text, FileStamp stamp) {
  auto out = std::make_shared<Manifest::Source::Reread>();
  out->stamp = stamp;
  out->places.resize(m.assets.size());
  if (text.size() > UINT32_MAX)
    return out;
  Split split = split_manifest(text);
  if (split.too_deep)
    return out; // every asset fails: its tables do not parse
  auto layers = std::make_shared<LayerTables>();
  try {
    layers->root = toml::parse(split.header, m.path.string());
    Manifest header; // checked as when loaded; what it sets is the run's already
    header.path = m.path;
    header.dir = m.dir;
    Diagnostics scratch;
    Parser(&header, scratch).header(layers->root);
    if (!scratch.has_errors())
      out->layers = std::move(layers);
  } catch (const toml::parse_error&) {
  }
  split.header = std::string();
  if (!out->layers)
    return out; // every asset fails: no need to find them

  std::unordered_map<std::string_view, uint32_t> by_name;
  by_name.reserve(m.assets.size());
  for (size_t i = 0; i < m.assets.size(); ++i)
    by_name.emplace(m.assets.name(i), uint32_t(i));
  for (auto& chunk : split.assets) {
    toml::table root;
    try {
      root = toml::parse(
          own_tables(std::string_view(text).substr(chunk.begin, chunk.end - chunk.begin)));
    } catch (const toml::parse_error&) {
      continue; // its name is unknown: the asset it was is not found
    }
    auto name = root["asset"][0]["name"].as_string();
    if (!name)
      continue;
    auto it = by_name.find(name->get());
    if (it == by_name.end())
      continue;
    AssetIndex::Place& place = out->places[it->second];
    if (place.length == 0 && place.offset == 0)
      place = {uint32_t(chunk.begin), uint32_t(chunk.end - chunk.begin), chunk.line};
    else
      place = {Manifest::Source::Reread::k_twice, 0, 0};
  }
  return out;
}

// What the ids of an asset's list field are.
std::string plugin_kind(std::string_view field) {
  if (field == "enhancers")
    return "enhancer";
  if (field == "validators")
    return "validator";
  if (field == "retry")
    return "retry strategy";
  return "postprocessor";
}

} // namespace

std::shared_ptr<const Manifest::Source::Reread> Manifest::Source::reread(const Manifest& m,
                                                                         FileStamp at) const {
  std::lock_guard<std::mutex> lock(rereads->mutex);
  for (int settle = 0;; ++settle) {
    if (rereads->latest && same_stamp(rereads->latest->stamp, at))
      return rereads->latest;
    auto now_text = pread_exact(file->fd, 0, size_t(at.size));
    auto after = stamp_of(file->fd);
    if (!now_text || !after || !same_stamp(*after, at))
      return nullptr; // changed again while read
    auto now = index_again(m, *now_text, at);
    rereads->latest = now;
    // An asset missing or an error may be a save caught half-written (an editor truncates the
    // file, then writes it): once settled, the file is read again.
    if (now->complete() || settle == 2)
      return now;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    after = stamp_of(file->fd);
    if (!after || same_stamp(*after, at))
      return now;
    at = *after;
  }
}

bool Manifest::changed_on_disk() const {
  if (source->text || !source->file)
    return false;
  auto stamp = stamp_of(source->file->fd);
  return !stamp || !same_stamp(*stamp, source->stamp);
}

namespace {

// Why asset() cannot go on: the file changed in a way this run cannot follow.
Fatal changed_during_run(const Manifest& m, const std::string& why) {
  return Fatal(m.source->display_path + " changed during the run" +
               (why.empty() ? std::string() : " (" + why + ")") + ": run kiln again");
}

// Why an asset read again is not found by its name.
constexpr const char* k_not_found = " is not in it any more, or its table does not parse";

// An asset's table as asset() reads it, with where it is and what it is resolved against.
struct AssetText {
  std::string text;
  AssetIndex::Place place;
  std::shared_ptr<const LayerTables> layers;
  bool read_again = false; // the file changed: found again by name
};

// Asset i's table read from the manifest's file. The stamp is checked before and after the
// asset is read: a change in between is read again, never half old.
AssetText read_from_file(const Manifest& m, size_t i, const std::string& asset_label) {
  AssetText out;
  const int fd = m.source->file->fd;
  for (int attempt = 0;; ++attempt) {
    auto stamp = stamp_of(fd);
    if (!stamp)
      throw Fatal("cannot read " + m.source->display_path + " again: " + std::strerror(errno));
    out.read_again = !same_stamp(*stamp, m.source->stamp);
    if (!out.read_again) {
      out.place = m.assets.place(i);
      out.layers = m.layers;
    } else if (auto now = m.source->reread(m, *stamp)) {
      if (!now->layers)
        throw changed_during_run(m, "its tables outside [[asset]] have errors now");
      out.place = now->places[i];
      if (out.place.length == 0)
        throw changed_during_run(m, asset_label +
                                        (out.place.offset == Manifest::Source::Reread::k_twice
                                             ? " is in it twice now"
                                             : k_not_found));
      out.layers = now->layers;
      stamp = now->stamp;
    } else {
      if (attempt == 4)
        throw changed_during_run(m, "it is still being written");
      continue;
    }
    auto bytes = pread_exact(fd, out.place.offset, out.place.length);
    const int error = errno;
    auto after = stamp_of(fd);
    if (after && same_stamp(*after, *stamp)) {
      if (!bytes)
        throw Fatal("cannot read " + m.source->display_path + " again: " + std::strerror(error));
      out.text = std::move(*bytes);
      return out;
    }
    if (attempt == 4)
      throw changed_during_run(m, "it is still being written");
  }
}

// The run started the plugins its assets named when it was loaded, and no others: an asset
// read again after the file changed may name no other.
void refuse_plugins_not_loaded(const Manifest& m, const AssetSpec& spec,
                               const std::string& asset_label) {
  for (auto [field, ids] :
       {std::pair<const char*, const std::vector<std::string>*>{"enhancers", &spec.enhancers},
        {"validators", &spec.validators},
        {"retry", &spec.retry},
        {"postprocess", &spec.postprocess}}) {
    auto uses = m.plugin_uses.find(field);
    for (auto& id : *ids)
      if (uses == m.plugin_uses.end() || !uses->second.count(id))
        throw changed_during_run(m, asset_label + " now uses " + plugin_kind(field) + " " +
                                        in_quotes(id) + ", which this run did not load");
  }
  auto backends = m.plugin_uses.find("backend");
  if (backends == m.plugin_uses.end() || !backends->second.count(spec.backend))
    throw changed_during_run(m, asset_label + " now uses backend " + in_quotes(spec.backend) +
                                    ", which this run did not load");
}

} // namespace

AssetSpec Manifest::asset(size_t i) const {
  const std::string_view name = assets.name(i);
  const std::string asset_label = "asset " + in_quotes(name);
  AssetText read;
  if (source->text) {
    read.place = assets.place(i);
    read.text = source->text->substr(read.place.offset, read.place.length);
    read.layers = layers;
  } else {
    read = read_from_file(*this, i, asset_label);
  }
  toml::table root;
  try {
    root = toml::parse(own_tables(read.text), path.string());
  } catch (const toml::parse_error&) {
    throw changed_during_run(*this, asset_label + k_not_found);
  }
  Diagnostics scratch;
  Parser parser(nullptr, scratch, read.place.line - 1);
  parser.use_layers(read.layers->root, false);
  AssetSpec spec;
  SourceLoc name_loc;
  if (!parser.asset(root, spec, name_loc))
    throw changed_during_run(*this, asset_label + " has errors now");
  if (spec.name != name) // the file changed without its stamp changing
    throw changed_during_run(*this, asset_label + k_not_found);
  if (!m_backend_override.empty()) {
    spec.backend = m_backend_override;
    spec.field_locs["backend"] = SourceLoc{}; // set on the command line
  }
  if (read.read_again)
    refuse_plugins_not_loaded(*this, spec, asset_label);
  return spec;
}

void Manifest::override_backend(const std::string& id) {
  m_backend_override = id;
  plugin_uses["backend"] = {{id, SourceLoc{}}};
}

void Manifest::keep_text_on_disk() {
  if (!source || !source->file)
    return;
  auto on_disk = std::make_shared<Source>(*source);
  on_disk->text.reset();
  source = std::move(on_disk);
  diagnostics.read_lines_from(path.string());
}

Manifest load_manifest(const fs::path& path, const std::string& display_path) {
  auto file = std::make_shared<Manifest::Source::Fd>();
  file->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  std::error_code ec;
  if (file->fd < 0 && !fs::exists(path, ec))
    throw Fatal(display_path + ": no such manifest (pass one with -m FILE)");
  struct stat st;
  if (file->fd < 0 || ::fstat(file->fd, &st) != 0 || !S_ISREG(st.st_mode))
    throw Fatal(display_path + ": cannot read the manifest");
  auto text = pread_exact(file->fd, 0, size_t(st.st_size));
  if (!text)
    throw Fatal(display_path + ": cannot read the manifest");
  Manifest m =
      parse_text(std::make_shared<const std::string>(std::move(*text)), path, display_path);
  auto source = std::make_shared<Manifest::Source>(*m.source);
  source->file = std::move(file);
  source->stamp =
      FileStamp{uint64_t(st.st_size), int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
  m.source = std::move(source);
  return m;
}

} // namespace kiln::host
