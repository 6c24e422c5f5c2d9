#include "manifest.hpp"

#include "fatal.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>
#include <toml++/toml.h>

namespace kiln::host {

namespace {

constexpr uint32_t k_max_side_px = 16384;

const std::vector<std::string> k_top_keys = {"project",      "plugins",    "defaults",   "backends",
                                             "enhancers",    "validators", "strategies", "types",
                                             "retry_policy", "asset"};
const std::vector<std::string> k_project_keys = {"output_dir", "budget_usd", "allow_fallback"};
const std::vector<std::string> k_retry_policy_keys = {"max_attempts", "budget_ratio", "budget_min",
                                                      "breaker_failures", "breaker_cooldown_s"};
const std::vector<std::string> k_plugins_keys = {"paths"};
// Fields an asset may set, and so may [defaults] and [types.X].
const std::vector<std::string> k_field_keys = {
    "backend",  "model",     "seed",   "width", "height",          "format",    "style",
    "negative", "enhancers", "params", "retry", "fallback_models", "modifiers", "validators"};
// The fields that hold a list of strings.
const std::vector<std::string> k_list_keys = {"enhancers", "validators", "retry", "fallback_models",
                                              "modifiers"};
const std::vector<std::string> k_formats = {"png", "webp", "jpg"};

SourceLoc loc_of(const toml::source_region& r) {
  return {r.begin.line, r.begin.column};
}
SourceLoc loc_of(const toml::node& n) {
  return loc_of(n.source());
}

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

std::string in_quotes(std::string_view s) {
  return "'" + std::string(s) + "'";
}

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
};

class Parser {
public:
  Parser(Manifest& m, Diagnostics& d) : m_m(m), m_d(d) {}

  void run(const toml::table& root) {
    check_keys(root, k_top_keys, "at the top level");
    parse_project(root);
    parse_plugins(root);
    parse_plugin_tables(root, "backends", m_m.backend_settings);
    parse_plugin_tables(root, "enhancers", m_m.enhancer_settings);
    parse_plugin_tables(root, "validators", m_m.validator_settings);
    parse_plugin_tables(root, "strategies", m_m.strategy_settings);
    parse_retry_policy(root);

    if (auto n = root.get("defaults")) {
      if (auto t = expect_table(*n, "[defaults]")) {
        check_keys(*t, k_field_keys, "in [defaults]");
        check_fields(*t);
        m_defaults = Layer{t, "[defaults]"};
      }
    }
    if (auto n = root.get("types")) {
      if (auto t = expect_table(*n, "[types]")) {
        for (auto&& [k, v] : *t) {
          std::string where = "[types." + std::string(k.str()) + "]";
          if (auto tt = expect_table(v, where)) {
            check_keys(*tt, k_field_keys, "in " + where);
            check_fields(*tt);
            m_types.emplace(std::string(k.str()), Layer{tt, where});
          }
        }
      }
    }
    parse_assets(root);
  }

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
    m_m.output_dir = m_m.dir / "generated";
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
      else
        m_m.output_dir = (m_m.dir / *dir).lexically_normal();
    }
    if (auto fb = t->get("allow_fallback")) {
      if (auto b = fb->as_boolean())
        m_m.allow_fallback = b->get();
      else
        m_d.error(loc_of(*fb), "allow_fallback must be true or false, not " + type_name(*fb));
    }
    if (auto b = t->get("budget_usd")) {
      std::optional<double> v;
      if (auto f = b->as_floating_point())
        v = f->get();
      else if (auto i = b->as_integer())
        v = double(i->get());
      if (!v)
        m_d.error(loc_of(*b), "budget_usd must be a number, not " + type_name(*b));
      else if (!(*v >= 0) || !std::isfinite(*v))
        m_d.error(loc_of(*b), "budget_usd must be zero or more");
      else
        m_m.budget_usd = v;
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
    RetryPolicy& p = m_m.retry_policy;
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
          m_m.plugin_paths.push_back((m_m.dir / (*list)[i]).lexically_normal());
          m_m.plugin_path_locs.push_back(loc_of(*a->get(i)));
        }
      }
    }
  }

  static bool is_pacing_key(std::string_view key) {
    return key == "requests_per_second" || key == "burst" || key == "concurrency";
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
        parse_pacing(*pt, m_m.backend_pacing[std::string(k.str())]);
      PluginSettings s;
      s.id = std::string(k.str());
      s.loc = loc_of(k.source());
      for (auto&& [ok, ov] : *pt) {
        if (kind == "backends" && is_pacing_key(ok.str()))
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
    if (auto n = t.get("params"))
      expect_table(*n, "params");
  }

  void check_name(const toml::node& n, const std::string& name) {
    SourceLoc loc = loc_of(n);
    auto bad = [&](const std::string& why) {
      m_d.error(loc, "asset name " + in_quotes(name) + " " + why);
    };
    if (name.empty())
      return bad("is empty");
    if (name.front() == '/')
      return bad("is an absolute path: names are paths below output_dir");
    for (unsigned char c : name)
      if (!(std::isalnum(c) || c == '_' || c == '-' || c == '.' || c == '/'))
        return bad("may only contain letters, digits, '_', '-', '.' and '/'");
    size_t start = 0;
    while (start <= name.size()) {
      size_t end = name.find('/', start);
      if (end == std::string::npos)
        end = name.size();
      std::string_view seg(name.data() + start, end - start);
      if (seg.empty())
        return bad("has an empty path segment");
      if (seg == "..")
        return bad("escapes output_dir ('..' is not allowed)");
      if (seg.front() == '.')
        return bad("has a path segment starting with '.' (hidden files are not allowed)");
      start = end + 1;
    }
    for (const char* ext : {".png", ".webp", ".jpg", ".jpeg"}) {
      std::string_view e(ext);
      if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0)
        return bad("ends in '" + std::string(e) + "': leave the extension out, `format` sets it");
    }
  }

  // The first layer (asset, type, defaults) that sets `key`.
  const toml::node* lookup(const std::vector<Layer>& layers, std::string_view key,
                           AssetSpec& spec) {
    for (const Layer& l : layers) {
      if (auto n = l.table->get(key)) {
        spec.field_locs[std::string(key)] = loc_of(*n);
        return n;
      }
    }
    return nullptr;
  }

  void parse_assets(const toml::table& root) {
    auto n = root.get("asset");
    if (!n)
      return;
    auto arr = n->as_array();
    if (!arr || !arr->is_array_of_tables()) {
      m_d.error(loc_of(*n), "'asset' must be an array of tables: write each as [[asset]]");
      return;
    }
    std::map<std::string, SourceLoc> seen;
    std::vector<std::string> type_names;
    for (auto& [k, v] : m_types)
      type_names.push_back(k);
    std::vector<std::string> asset_keys = {"name", "type", "prompt"};
    asset_keys.insert(asset_keys.end(), k_field_keys.begin(), k_field_keys.end());

    for (auto&& node : *arr) {
      const toml::table& t = *node.as_table();
      size_t errors_before = m_d.error_count();
      check_keys(t, asset_keys, "in [[asset]]");
      check_fields(t);
      AssetSpec spec;
      spec.loc = loc_of(t);

      auto name = get_string(t, "name", "name");
      if (!t.get("name"))
        m_d.error(spec.loc, "[[asset]] has no name");
      else if (name) {
        check_name(*t.get("name"), *name);
        spec.name = *name;
        spec.field_locs["name"] = loc_of(*t.get("name"));
        auto [it, inserted] = seen.emplace(*name, loc_of(*t.get("name")));
        if (!inserted)
          m_d.error(loc_of(*t.get("name")), "duplicate asset name " + in_quotes(*name) +
                                                " (first declared at " + m_d.display_path() + ":" +
                                                std::to_string(it->second.line) + ")");
      }
      std::string label = spec.name.empty() ? "[[asset]]" : "asset " + in_quotes(spec.name);

      auto prompt = get_string(t, "prompt", "prompt");
      if (!t.get("prompt"))
        m_d.error(spec.loc, label + " has no prompt");
      else if (prompt && prompt->find_first_not_of(" \t\r\n") == std::string::npos)
        m_d.error(loc_of(*t.get("prompt")), label + " has an empty prompt");
      else if (prompt)
        spec.prompt = *prompt;

      std::vector<Layer> layers{Layer{&t, "asset"}};
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
      if (m_d.error_count() == errors_before)
        m_m.assets.push_back(std::move(spec));
    }
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
        if (auto a = n->as_array())
          for (auto&& e : *a)
            if (auto s = e.as_string())
              out.push_back(s->get());
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

    // params merge key by key: the asset's keys over its type's over [defaults]'.
    toml::table params;
    for (auto it = layers.rbegin(); it != layers.rend(); ++it)
      if (auto n = it->table->get("params"); n && n->as_table())
        for (auto&& [k, v] : *n->as_table())
          params.insert_or_assign(k, v);
    spec.params_json.clear();
    to_json(spec.params_json, params);
  }

  Manifest& m_m;
  Diagnostics& m_d;
  Layer m_defaults;
  std::map<std::string, Layer> m_types;
};

} // namespace

Manifest parse_manifest(std::string_view text, const fs::path& path,
                        const std::string& display_path) {
  Manifest m;
  m.path = fs::absolute(path).lexically_normal();
  m.dir = m.path.parent_path();
  m.diagnostics = Diagnostics(display_path, text);
  toml::table root;
  try {
    root = toml::parse(text, display_path);
  } catch (const toml::parse_error& e) {
    m.diagnostics.error(loc_of(e.source()), std::string(e.description()));
    m.diagnostics.throw_if_errors();
  }
  Parser(m, m.diagnostics).run(root);
  m.diagnostics.throw_if_errors();
  return m;
}

Manifest load_manifest(const fs::path& path, const std::string& display_path) {
  auto text = read_file(path);
  if (!text) {
    std::error_code ec;
    if (!fs::exists(path, ec))
      throw Fatal(display_path + ": no such manifest (pass one with -m FILE)");
    throw Fatal(display_path + ": cannot read the manifest");
  }
  return parse_manifest(*text, path, display_path);
}

} // namespace kiln::host
