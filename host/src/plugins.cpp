#include "plugins.hpp"

#include "fatal.hpp"
#include "image.hpp"
#include "interrupt.hpp"
#include "plugin_guard.hpp"
#include "version.hpp"

#define BOOST_DLL_USE_STD_FS
#include <algorithm>
#include <boost/dll/shared_library.hpp>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <strings.h>

namespace kiln::host {

std::string_view kind_name(uint32_t kind) {
  switch (kind) {
  case KILN_KIND_BACKEND:
    return "backend";
  case KILN_KIND_ENHANCER:
    return "enhancer";
  case KILN_KIND_RETRY_STRATEGY:
    return "retry-strategy";
  case KILN_KIND_VALIDATOR:
    return "validator";
  case KILN_KIND_POSTPROCESSOR:
    return "postprocessor";
  }
  return "unknown";
}

std::string_view table_name(uint32_t kind) {
  switch (kind) {
  case KILN_KIND_BACKEND:
    return "backends";
  case KILN_KIND_ENHANCER:
    return "enhancers";
  case KILN_KIND_RETRY_STRATEGY:
    return "strategies";
  case KILN_KIND_POSTPROCESSOR:
    return "postprocessors";
  default:
    return "validators";
  }
}

namespace {

// --- the services table handed to every plugin --------------------------------------------

std::string_view sv(kiln_str s) {
  return {s.data ? s.data : "", s.data ? s.size : 0};
}

// A plugin's message is one line: line breaks in it (often a server's text) are shown as \n,
// so they cannot forge lines of Kiln's own ("kiln: generated ...").
std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text)
    out += c == '\n' ? std::string("\\n") : c == '\r' ? std::string("\\r") : std::string(1, c);
  return out;
}

void host_log(kiln_result* r, uint32_t level, kiln_str message) {
  // Outside a call there is no result to name the plugin; the message still goes out.
  if (r && r->log)
    r->log->write(kiln_log_level(std::min<uint32_t>(level, KILN_LOG_ERROR)), one_line(sv(message)),
                  r->plugin_id);
}
void host_fail(kiln_result* r, uint32_t category, kiln_str message) {
  if (category == KILN_ERROR_NONE || category > KILN_ERROR_INTERRUPTED)
    category = KILN_ERROR_PERMANENT;
  r->category = kiln_error_category(category);
  r->message = one_line(sv(message));
  if (r->message.empty())
    r->message = "failed without a message";
}
void host_set_retry_after_ms(kiln_result* r, int64_t ms) {
  r->retry_after_ms = ms;
}
void host_set_remote_id(kiln_result* r, kiln_str id) {
  r->remote_id = std::string(sv(id));
  if (r->on_remote_id && !r->remote_id.empty())
    r->on_remote_id(r->remote_id);
}
void host_set_cost_usd(kiln_result* r, double usd) {
  r->cost_usd = usd;
}
void host_set_image(kiln_result* r, const kiln_image* image) {
  if (!image || !image->pixels || image->width == 0 || image->height == 0) {
    host_fail(r, KILN_ERROR_PERMANENT, kiln_cstr("plugin handed the host an empty image"));
    return;
  }
  // Rows shorter than the width would be read past the plugin's buffer; a side beyond what
  // Kiln makes is no image for a game (and would take the host's memory).
  std::string why;
  if (image->stride < size_t(image->width) * 4)
    why = "plugin handed the host an image whose rows (" + std::to_string(image->stride) +
          " bytes apart) are shorter than its width of " + std::to_string(image->width) + " pixels";
  else if (image->width > k_max_image_side_px || image->height > k_max_image_side_px)
    why = "plugin handed the host a " + std::to_string(image->width) + "x" +
          std::to_string(image->height) + " image; the largest side Kiln takes is " +
          std::to_string(k_max_image_side_px);
  if (!why.empty()) {
    host_fail(r, KILN_ERROR_PERMANENT, kiln::str(why));
    return;
  }
  try {
    Image copy(image->width, image->height);
    for (uint32_t y = 0; y < image->height; ++y)
      std::memcpy(copy.at(0, y), image->pixels + y * image->stride, size_t(image->width) * 4);
    r->image = std::move(copy);
  } catch (const std::bad_alloc&) {
    host_fail(r, KILN_ERROR_PERMANENT, kiln_cstr("not enough memory for the plugin's image"));
  }
}
void host_set_image_file(kiln_result* r, kiln_str path) {
  r->image_file = std::string(sv(path));
}
void host_set_prompt(kiln_result* r, kiln_str p) {
  r->prompt = std::string(sv(p));
}
void host_set_negative_prompt(kiln_result* r, kiln_str p) {
  r->negative_prompt = std::string(sv(p));
}

void host_set_model(kiln_result* r, kiln_str model) {
  r->model = std::string(sv(model));
}
void host_set_seed(kiln_result* r, uint64_t seed) {
  r->seed = seed;
}
void host_set_params_json(kiln_result* r, kiln_str params) {
  r->params_json = std::string(sv(params));
}
void host_set_backend(kiln_result* r, kiln_str backend) {
  r->backend = std::string(sv(backend));
}
void host_set_fallback(kiln_result* r, int32_t fallback) {
  r->fallback = fallback != 0;
}
void host_set_missing_property(kiln_result* r, uint32_t property) {
  r->missing_property |= property;
}
int32_t host_scale_image(const kiln_image* source, uint32_t width, uint32_t height,
                         uint8_t* pixels) {
  if (!source || !source->pixels || !pixels || source->width == 0 || source->height == 0 ||
      source->stride < size_t(source->width) * 4 || width == 0 || height == 0 ||
      width > k_max_image_side_px || height > k_max_image_side_px)
    return 1;
  Image in(source->width, source->height);
  for (uint32_t y = 0; y < source->height; ++y)
    std::memcpy(in.at(0, y), source->pixels + size_t(y) * source->stride,
                size_t(source->width) * 4);
  Image out = scale_image(in, width, height);
  std::memcpy(pixels, out.rgba.data(), out.rgba.size());
  return 0;
}

void host_add_secret(kiln_result* r, kiln_str secret) {
  if (r && r->log)
    r->log->add_secret(std::string(sv(secret)));
}

} // namespace
} // namespace kiln::host

// The opaque response handed to plugins.
struct kiln_http_response {
  kiln::host::HttpResponse response;
  kiln::host::Fault error;
};

namespace kiln::host {
namespace {

kiln_http_response* host_http_send(kiln_result* r, const kiln_http_request* q) {
  auto* out = new kiln_http_response;
  if (!r || !r->http || !q) {
    out->error = {KILN_ERROR_PERMANENT, "http_send called without a result or request", -1};
    return out;
  }
  HttpRequest req;
  req.method = std::string(sv(q->method));
  req.url = std::string(sv(q->url));
  for (size_t i = 0; i < q->header_count; ++i)
    req.headers.emplace_back(sv(q->headers[i].name), sv(q->headers[i].value));
  req.body = std::string(sv(q->body));
  req.output_path = std::string(sv(q->output_path));
  if (q->max_bytes)
    req.max_bytes = q->max_bytes;
  if (q->timeout_ms)
    req.timeout_ms = q->timeout_ms;
  auto result = r->http->send(req);
  if (result)
    out->response = std::move(*result);
  else
    out->error = result.error();
  return out;
}
int32_t host_http_status(const kiln_http_response* r) {
  return int32_t(r->response.status);
}
kiln_str host_http_body(const kiln_http_response* r) {
  return {r->response.body.data(), r->response.body.size()};
}
kiln_str host_http_header(const kiln_http_response* r, kiln_str name) {
  // Kept in the response so the returned slice stays valid until http_free.
  auto* self = const_cast<kiln_http_response*>(r);
  std::string key(sv(name));
  for (auto it = self->response.headers.rbegin(); it != self->response.headers.rend(); ++it)
    if (strcasecmp(it->first.c_str(), key.c_str()) == 0)
      return {it->second.data(), it->second.size()};
  return {"", 0};
}
uint32_t host_http_error_category(const kiln_http_response* r) {
  return r->response.status ? uint32_t(KILN_ERROR_NONE) : uint32_t(r->error.category);
}
kiln_str host_http_error(const kiln_http_response* r) {
  return {r->error.message.data(), r->error.message.size()};
}
void host_http_free(kiln_http_response* r) {
  delete r;
}
int32_t host_wait_ms(kiln_result*, uint32_t ms) {
  return sleep_unless_interrupted(ms) ? 0 : 1;
}

const kiln_host_api k_host_api = {
    sizeof(kiln_host_api),
    KILN_PLUGIN_ABI_VERSION,
    {k_kiln_version, std::strlen(k_kiln_version)},
    host_log,
    host_fail,
    host_set_retry_after_ms,
    host_set_remote_id,
    host_set_cost_usd,
    host_set_image,
    host_set_image_file,
    host_set_prompt,
    host_set_negative_prompt,
    host_add_secret,
    host_http_send,
    host_http_status,
    host_http_body,
    host_http_header,
    host_http_error_category,
    host_http_error,
    host_http_free,
    host_wait_ms,
    host_set_model,
    host_set_seed,
    host_set_params_json,
    host_set_backend,
    host_set_fallback,
    host_set_missing_property,
    host_scale_image,
};

// The largest file a KILN_OPTION_PATH option may name (a palette, a lookup table): it is read
// whole, to fingerprint it, by every run.
constexpr uintmax_t k_max_option_file_bytes = 16u << 20;

// Smallest info struct this host can read: up to and including `functions`.
constexpr size_t k_min_info_size = offsetof(kiln_plugin_info, functions) + sizeof(void*);

bool valid_id(const char* id) {
  if (!id || !*id || std::strlen(id) > 64)
    return false;
  for (const char* p = id; *p; ++p)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
      return false;
  return id[0] != '-';
}

std::string quoted(const fs::path& p) {
  return "'" + p.string() + "'";
}

bool parse_default(const kiln_option_spec& spec, SettingValue& out);

} // namespace

bool is_plugin_bug(std::string_view message) {
  return message.substr(0, std::string_view(kiln::detail::k_plugin_bug).size()) ==
         kiln::detail::k_plugin_bug;
}

std::string plugin_failure(std::string_view kind, std::string_view id, std::string_view call,
                           std::string_view usual, std::string_view message) {
  std::string head = std::string(kind) + " '" + std::string(id) + "' ";
  if (is_plugin_bug(message))
    return head + "threw in " + std::string(call) +
           "() (a bug in the plugin; report it to its author): " +
           std::string(message.substr(std::string_view(kiln::detail::k_plugin_bug).size()));
  return head + std::string(usual) + ": " +
         (message.empty() ? std::string("no reason given") : std::string(message));
}

const char* option_type_word(uint32_t type) {
  static const char* k_types[] = {"?", "string", "integer", "number", "boolean", "list", "file"};
  type &= KILN_OPTION_TYPE_MASK;
  return type <= KILN_OPTION_PATH ? k_types[type] : "?";
}

struct PluginRegistry::Library {
  boost::dll::shared_library library;
};

PluginRegistry::PluginRegistry(Log& log) : m_log(log), m_http(log) {}

kiln_result PluginRegistry::make_result(const std::string& plugin_id) {
  kiln_result r;
  r.plugin_id = plugin_id;
  r.log = &m_log;
  r.http = &m_http;
  return r;
}

// Libraries are never unloaded (RTLD_NODELETE): a plugin may have started threads or registered
// atexit handlers, and an unload that pulls code from under them crashes at exit.
PluginRegistry::~PluginRegistry() = default;

PluginInstance::~PluginInstance() {
  if (m_instance) {
    PluginCall call(m_plugin->path.string(), m_plugin->id, "destroy");
    m_plugin->info->destroy(m_instance);
  }
}

fs::path PluginRegistry::builtin_dir() {
  return (executable_dir() / ".." / "lib" / "kiln" / "plugins").lexically_normal();
}

std::vector<fs::path> PluginRegistry::search_dirs(const Manifest* manifest) {
  std::vector<fs::path> dirs{builtin_dir()};
  if (manifest)
    dirs.insert(dirs.end(), manifest->plugin_paths.begin(), manifest->plugin_paths.end());
  if (const char* env = std::getenv("KILN_PLUGIN_PATH")) {
    std::string_view rest(env);
    while (!rest.empty()) {
      size_t colon = rest.find(':');
      std::string_view part = rest.substr(0, colon);
      if (!part.empty())
        dirs.push_back(fs::absolute(fs::path(part)).lexically_normal());
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    }
  }
  // One folder listed twice (say, KILN_PLUGIN_PATH naming the built-ins) is searched once.
  std::vector<fs::path> unique;
  for (auto& d : dirs) {
    std::error_code ec;
    fs::path key = fs::weakly_canonical(d, ec);
    if (ec)
      key = d;
    if (std::find(unique.begin(), unique.end(), key) == unique.end())
      unique.push_back(key);
  }
  return unique;
}

void PluginRegistry::load_directory(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    m_log.debug("plugin folder '" + dir.string() + "' does not exist; skipped");
    return;
  }
  std::vector<fs::path> files;
  for (auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind("kiln-", 0) == 0 && entry.path().extension() == ".so" &&
        entry.is_regular_file(ec))
      files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (auto& f : files) {
    try {
      load_file(f);
    } catch (const Fatal& e) {
      // One bad library on the path must not stop every command of every manifest.
      m_broken.push_back(Broken{fs::absolute(f).lexically_normal(), m_loading_id, e.what()});
      m_log.debug("skipped: " + std::string(e.what()));
    }
  }
}

std::string PluginRegistry::broken_reason(std::string_view id, bool exact) const {
  for (const Broken& b : m_broken)
    if (b.id == id)
      return b.message;
  if (exact)
    return "";
  std::string unnamed;
  for (const Broken& b : m_broken)
    if (b.id.empty())
      unnamed += (unnamed.empty() ? "" : "; ") + b.message;
  return unnamed.empty() ? "" : "a plugin that did not load may be it: " + unnamed;
}

const Plugin& PluginRegistry::load_file(const fs::path& path_in) {
  fs::path path = fs::absolute(path_in).lexically_normal();
  auto fail = [&](const std::string& why) -> void {
    throw Fatal("plugin " + quoted(path) + " " + why);
  };

  std::error_code exists_ec;
  if (!fs::exists(path, exists_ec))
    fail("does not exist");

  m_log.debug("loading " + path.string());
  m_loading_id.clear();
  PluginCall call(path.string(), "", "load");
  auto lib = std::make_unique<Library>();
  std::error_code ec;
  lib->library.load(path, ec,
                    boost::dll::load_mode::rtld_lazy | boost::dll::load_mode::rtld_local |
                        static_cast<boost::dll::load_mode::type>(RTLD_NODELETE));
  if (ec) {
    const char* why = dlerror();
    fail(std::string("cannot be loaded: ") + (why ? why : ec.message().c_str()));
  }
  if (!lib->library.has(KILN_PLUGIN_ENTRY_SYMBOL))
    fail("does not export '" KILN_PLUGIN_ENTRY_SYMBOL "': it is not a Kiln plugin");

  auto entry = lib->library.get<const kiln_plugin_info*()>(KILN_PLUGIN_ENTRY_SYMBOL);
  const kiln_plugin_info* info = entry();
  if (!info)
    fail("returned no plugin info from '" KILN_PLUGIN_ENTRY_SYMBOL "'");
  return add(info, path, std::move(lib));
}

const Plugin& PluginRegistry::add_in_process(const kiln_plugin_info* info, const fs::path& label) {
  m_loading_id.clear();
  return add(info, label, nullptr);
}

namespace {

// The plugin info's header: ABI, size, kind, id, version, lifecycle callbacks. Its ABI minor.
uint32_t check_info(const kiln_plugin_info* info, const std::function<void(std::string)>& fail) {
  if (info->abi_version != KILN_PLUGIN_ABI_VERSION)
    fail("was built for Kiln plugin ABI " + std::to_string(info->abi_version) +
         ", this kiln supports " + std::to_string(KILN_PLUGIN_ABI_VERSION));
  if (info->struct_size < k_min_info_size)
    fail("has a plugin info of " + std::to_string(info->struct_size) +
         " bytes, expected at least " + std::to_string(k_min_info_size));
  if (info->kind < KILN_KIND_BACKEND || info->kind > KILN_KIND_POSTPROCESSOR)
    fail("declares unknown plugin kind " + std::to_string(info->kind));
  // ABI 1.0 plugins have no abi_minor: their info ends at `functions`.
  uint32_t minor = info->struct_size >= offsetof(kiln_plugin_info, abi_minor) + sizeof(uint32_t)
                       ? info->abi_minor
                       : 0;
  if (info->kind == KILN_KIND_POSTPROCESSOR && minor < 1)
    fail(std::string("('") + (info->id ? info->id : "") +
         "') is a postprocessor but was built for Kiln plugin ABI 1." + std::to_string(minor) +
         ", before postprocessors existed (1.1)");
  if (!valid_id(info->id))
    fail(std::string("has an invalid id '") + (info->id ? info->id : "") +
         "': use lowercase letters, digits and '-'");
  if (!info->version || !*info->version)
    fail(std::string("'") + info->id + "' has no version");
  if (!info->create)
    fail("is missing required callback 'create'");
  if (!info->destroy)
    fail("is missing required callback 'destroy'");
  if (!info->functions)
    fail("is missing its " + std::string(kind_name(info->kind)) + " function table");
  return minor;
}

// Each kind's table: at least as large as ABI 1's, and its required callbacks present.
void check_table(const kiln_plugin_info* info, const std::function<void(std::string)>& fail) {
  uint32_t table_size = *static_cast<const uint32_t*>(info->functions);
  auto need = [&](size_t min_size, const void* callback, const char* name) {
    if (table_size < min_size)
      fail("has a " + std::string(kind_name(info->kind)) + " function table of " +
           std::to_string(table_size) + " bytes, expected at least " + std::to_string(min_size));
    if (!callback)
      fail(std::string("is missing required callback '") + name + "'");
  };
  switch (info->kind) {
  case KILN_KIND_BACKEND: {
    // ABI 1.0's table ends at estimate_cost_usd; `paints` came in 1.1.
    auto f = static_cast<const kiln_backend_functions*>(info->functions);
    size_t min_size = offsetof(kiln_backend_functions, estimate_cost_usd) + sizeof(void*);
    need(min_size, table_size >= min_size ? (void*)f->generate : nullptr, "generate");
    break;
  }
  case KILN_KIND_ENHANCER: {
    auto f = static_cast<const kiln_enhancer_functions*>(info->functions);
    need(sizeof *f, table_size >= sizeof *f ? (void*)f->enhance : nullptr, "enhance");
    break;
  }
  case KILN_KIND_RETRY_STRATEGY: {
    auto f = static_cast<const kiln_retry_strategy_functions*>(info->functions);
    need(sizeof *f, table_size >= sizeof *f ? (void*)f->propose : nullptr, "propose");
    break;
  }
  case KILN_KIND_VALIDATOR: {
    auto f = static_cast<const kiln_validator_functions*>(info->functions);
    need(sizeof *f, table_size >= sizeof *f ? (void*)f->validate : nullptr, "validate");
    break;
  }
  case KILN_KIND_POSTPROCESSOR: {
    // prompt_hint is optional: the table must reach `process`.
    auto f = static_cast<const kiln_postprocessor_functions*>(info->functions);
    size_t min_size = offsetof(kiln_postprocessor_functions, process) + sizeof(void*);
    need(min_size, table_size >= min_size ? (void*)f->process : nullptr, "process");
    break;
  }
  }
}

// The option schema, each type without its flags, and which options shape images.
void read_options(const kiln_plugin_info* info, const std::function<void(std::string)>& fail,
                  Plugin& plugin) {
  for (size_t i = 0; i < info->option_count; ++i) {
    kiln_option_spec o = info->options[i];
    if (!o.name || !*o.name)
      fail("declares option " + std::to_string(i + 1) + " without a name");
    uint32_t flags = o.type & ~KILN_OPTION_TYPE_MASK;
    o.type &= KILN_OPTION_TYPE_MASK;
    if (o.type < KILN_OPTION_STRING || o.type > KILN_OPTION_PATH ||
        (flags & ~KILN_OPTION_NOT_SHAPING))
      fail("declares option '" + std::string(o.name) + "' with unknown type " +
           std::to_string(info->options[i].type));
    // A default that does not parse as its type would only fail when first used.
    if (SettingValue parsed; o.default_value && !parse_default(o, parsed))
      fail("('" + std::string(info->id) + "') declares a bad default '" + o.default_value +
           "' for its " + option_type_word(o.type) + " option '" + o.name + "'");
    if (info->kind == KILN_KIND_BACKEND && is_kiln_backend_key(o.name))
      fail("('" + std::string(info->id) + "') declares option '" + o.name +
           "', a key Kiln keeps for itself in [backends.X] (the plugin would never see its "
           "value): rename the option");
    plugin.options.push_back(o);
    plugin.shapes.push_back(!(flags & KILN_OPTION_NOT_SHAPING));
  }
}

} // namespace

const Plugin& PluginRegistry::add(const kiln_plugin_info* info, const fs::path& path,
                                  std::unique_ptr<Library> lib) {
  std::function<void(std::string)> fail = [&](const std::string& why) {
    throw Fatal("plugin " + quoted(path) + " " + why);
  };
  if (info->struct_size >= offsetof(kiln_plugin_info, id) + sizeof info->id && valid_id(info->id))
    m_loading_id = info->id;
  auto plugin = std::make_unique<Plugin>();
  plugin->abi_minor = check_info(info, fail);
  check_table(info, fail);
  read_options(info, fail, *plugin);
  if (auto it = m_by_id.find(info->id); it != m_by_id.end())
    fail(std::string("provides id '") + info->id + "', already taken by " +
         quoted(it->second->path));
  plugin->path = path;
  plugin->info = info;
  plugin->id = info->id;
  plugin->version = info->version;
  plugin->description = info->description ? info->description : "";
  plugin->kind = kiln_plugin_kind(info->kind);
  if (lib)
    m_libraries.push_back(std::move(lib));
  m_by_id.emplace(plugin->id, plugin.get());
  m_plugins.push_back(std::move(plugin));
  return *m_plugins.back();
}

const Plugin* PluginRegistry::find(std::string_view id) const {
  auto it = m_by_id.find(id);
  return it == m_by_id.end() ? nullptr : it->second;
}

const Plugin* PluginRegistry::find(std::string_view id, kiln_plugin_kind kind) const {
  const Plugin* p = find(id);
  return p && p->kind == kind ? p : nullptr;
}

std::vector<const Plugin*> PluginRegistry::all() const {
  std::vector<const Plugin*> out;
  for (auto& p : m_plugins)
    out.push_back(p.get());
  std::sort(out.begin(), out.end(), [](const Plugin* a, const Plugin* b) {
    return std::tie(a->kind, a->id) < std::tie(b->kind, b->id);
  });
  return out;
}

std::vector<std::string> PluginRegistry::ids(kiln_plugin_kind kind) const {
  std::vector<std::string> out;
  for (auto& p : m_plugins)
    if (p->kind == kind)
      out.push_back(p->id);
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

std::string_view option_type_name(uint32_t t) {
  switch (t) {
  case KILN_OPTION_STRING:
    return "a string";
  case KILN_OPTION_INT:
    return "an integer";
  case KILN_OPTION_FLOAT:
    return "a number";
  case KILN_OPTION_BOOL:
    return "a boolean";
  case KILN_OPTION_PATH:
    return "a file path (a string)";
  default:
    return "an array of strings";
  }
}

// Storage for resolved option values; kiln_option_value points into it.
struct ResolvedOptions {
  std::vector<std::string> strings;
  std::vector<std::vector<kiln_str>> lists;
  std::vector<std::vector<std::string>> list_storage;
  std::vector<kiln_option_value> values;
};

// Parses a schema default given in text form. Returns false when the plugin's default is bad.
bool parse_default(const kiln_option_spec& spec, SettingValue& out) {
  std::string text = spec.default_value;
  char* end = nullptr;
  switch (spec.type) {
  case KILN_OPTION_STRING:
    out.type = SettingValue::Type::String;
    out.string_value = text;
    return true;
  case KILN_OPTION_PATH: // no file unless the manifest names one
    out.type = SettingValue::Type::String;
    return text.empty();
  case KILN_OPTION_INT:
    out.type = SettingValue::Type::Int;
    out.int_value = std::strtoll(text.c_str(), &end, 10);
    return !text.empty() && *end == 0;
  case KILN_OPTION_FLOAT:
    out.type = SettingValue::Type::Float;
    out.float_value = std::strtod(text.c_str(), &end);
    return !text.empty() && *end == 0;
  case KILN_OPTION_BOOL:
    out.type = SettingValue::Type::Bool;
    out.bool_value = text == "true";
    return text == "true" || text == "false";
  default: {
    out.type = SettingValue::Type::StringList;
    size_t start = 0;
    while (start < text.size()) {
      size_t comma = text.find(',', start);
      if (comma == std::string::npos)
        comma = text.size();
      if (comma > start)
        out.list_value.push_back(text.substr(start, comma - start));
      start = comma + 1;
    }
    return true;
  }
  }
}

} // namespace

namespace { // Whether `text` has `word` in it as a word of its own (not inside another name).
bool names_word(std::string_view text, std::string_view word) {
  auto part = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  };
  for (size_t at = text.find(word); at != std::string_view::npos; at = text.find(word, at + 1))
    if ((at == 0 || !part(text[at - 1])) &&
        (at + word.size() == text.size() || !part(text[at + word.size()])))
      return true;
  return false;
}

// A value as the option's declared type reads it: an integer written for a number option is
// that number, so `margin = 8` and `margin = 8.0` say the same.
std::string option_text(uint32_t type, const SettingValue& v) {
  if (type == KILN_OPTION_FLOAT && v.type == SettingValue::Type::Int) {
    SettingValue as_float = v;
    as_float.type = SettingValue::Type::Float;
    as_float.float_value = double(v.int_value);
    return setting_text(as_float);
  }
  return setting_text(v);
}

} // namespace

fs::path resolve_option_path(const PluginSettings& settings, const std::string& value) {
  fs::path p(value);
  return (p.is_absolute() ? p : settings.dir / p).lexically_normal();
}

namespace {

// Each key of `settings` that is not one of the plugin's options (`names`): an error at its
// line, with the option meant or the ones it takes.
void report_unknown_options(const std::string& label, const std::vector<std::string>& names,
                            const PluginSettings& settings, Diagnostics& diag) {
  for (auto& [key, value] : settings.values)
    if (std::find(names.begin(), names.end(), key) == names.end()) {
      std::string msg = "unknown option '" + key + "' for " + label;
      if (auto hint = did_you_mean(key, names))
        msg += " (did you mean '" + *hint + "'?)";
      else if (names.empty())
        msg += " (it takes no options)";
      else
        msg += " (it takes: " + join(names, ", ") + ")";
      diag.error(value.key_loc, msg);
    }
}

// Why a path option's file cannot be read as one, else empty: the plugin gets only files.
std::string option_file_problem(const fs::path& file) {
  std::error_code ec;
  auto status = fs::status(file, ec);
  if (!fs::exists(status))
    return "no file '" + file.string() + "' (paths are relative to the manifest's folder)";
  if (fs::is_directory(status))
    return "'" + file.string() + "' is a folder, not a file";
  if (!fs::is_regular_file(status))
    return "'" + file.string() + "' is not a regular file";
  if (fs::file_size(file, ec) > k_max_option_file_bytes)
    return "'" + file.string() + "' is larger than " +
           std::to_string(k_max_option_file_bytes >> 20) + " MiB";
  return "";
}

// Checks a value the manifest gives against the option's type and makes it what the plugin
// gets: an integer as a float for a number, a path resolved from the manifest's folder. False,
// with an error at the value, when it does not fit.
bool accept_given(const kiln_option_spec& spec, const PluginSettings& settings,
                  const std::string& label, SettingValue& v, Diagnostics& diag) {
  bool fits = ((spec.type == KILN_OPTION_STRING || spec.type == KILN_OPTION_PATH) &&
               v.type == SettingValue::Type::String) ||
              (spec.type == KILN_OPTION_INT && v.type == SettingValue::Type::Int) ||
              (spec.type == KILN_OPTION_FLOAT &&
               (v.type == SettingValue::Type::Float || v.type == SettingValue::Type::Int)) ||
              (spec.type == KILN_OPTION_BOOL && v.type == SettingValue::Type::Bool) ||
              (spec.type == KILN_OPTION_STRING_LIST && v.type == SettingValue::Type::StringList);
  if (!fits) {
    diag.error(v.value_loc, "option '" + std::string(spec.name) + "' of " + label + " must be " +
                                std::string(option_type_name(spec.type)) + ", not " + v.toml_type);
    return false;
  }
  if (spec.type == KILN_OPTION_FLOAT && v.type == SettingValue::Type::Int)
    v.float_value = double(v.int_value);
  if (spec.type == KILN_OPTION_FLOAT && !std::isfinite(v.float_value)) {
    diag.error(v.value_loc, "option '" + std::string(spec.name) + "' of " + label +
                                " must be a finite number, not " +
                                (std::isnan(v.float_value) ? "nan" : "inf"));
    return false;
  }
  if (spec.type == KILN_OPTION_PATH && !v.string_value.empty()) {
    fs::path file = resolve_option_path(settings, v.string_value);
    if (std::string problem = option_file_problem(file); !problem.empty()) {
      diag.error(v.value_loc,
                 "option '" + std::string(spec.name) + "' of " + label + ": " + problem);
      return false;
    }
    v.string_value = file.string();
  }
  return true;
}

// Appends the option's value in the C ABI's form; `r` owns the strings and lists it points
// into.
void add_resolved(ResolvedOptions& r, const kiln_option_spec& spec, const SettingValue& v) {
  kiln_option_value ov{};
  r.strings.push_back(spec.name);
  ov.name = {r.strings.back().data(), r.strings.back().size()};
  ov.type = spec.type;
  r.strings.push_back(v.string_value);
  ov.string_value = {r.strings.back().data(), r.strings.back().size()};
  ov.int_value = v.int_value;
  ov.float_value = v.float_value;
  ov.bool_value = v.bool_value ? 1 : 0;
  r.list_storage.push_back(v.list_value);
  r.lists.emplace_back();
  for (auto& s : r.list_storage.back())
    r.lists.back().push_back({s.data(), s.size()});
  ov.list_values = r.lists.back().data();
  ov.list_size = r.lists.back().size();
  r.values.push_back(ov);
}

// Checks `settings` against the plugin's schema, errors into `diag` at the manifest lines, and
// fills `r` with every option's value (given, else the default). False when anything is wrong.
bool resolve_options(const Plugin& plugin, const PluginSettings* settings, Diagnostics& diag,
                     ResolvedOptions& r) {
  std::string label = std::string(kind_name(plugin.kind)) + " '" + plugin.id + "'";
  size_t errors_before = diag.error_count();
  std::vector<std::string> names;
  for (auto& o : plugin.options)
    names.emplace_back(o.name);
  if (settings)
    report_unknown_options(label, names, *settings, diag);

  const size_t count = plugin.options.size();
  r.values.reserve(count);
  r.strings.reserve(count * 2);
  r.list_storage.reserve(count);
  r.lists.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const kiln_option_spec& spec = plugin.options[i];
    SettingValue v;
    const SettingValue* given = nullptr;
    if (settings)
      if (auto it = settings->values.find(spec.name); it != settings->values.end())
        given = &it->second;
    if (given) {
      v = *given;
      if (!accept_given(spec, *settings, label, v, diag))
        continue;
    } else if (!spec.default_value) {
      diag.error(settings ? settings->loc : SourceLoc{},
                 label + " needs option '" + spec.name + "'" +
                     (settings ? std::string()
                               : ": add it under [" + std::string(table_name(plugin.kind)) + "." +
                                     plugin.id + "]"));
      continue;
    } else if (!parse_default(spec, v)) {
      throw Fatal("plugin '" + plugin.path.string() + "' declares a bad default '" +
                  spec.default_value + "' for option '" + spec.name + "'");
    }
    add_resolved(r, spec, v);
  }
  return diag.error_count() == errors_before;
}

} // namespace

bool PluginRegistry::check_options(const Plugin& plugin, const PluginSettings* settings,
                                   Diagnostics& diag) {
  ResolvedOptions r;
  return resolve_options(plugin, settings, diag, r);
}

std::unique_ptr<PluginInstance> PluginRegistry::instantiate(const Plugin& plugin,
                                                            const PluginSettings* settings,
                                                            Diagnostics& diag) {
  ResolvedOptions r;
  if (!resolve_options(plugin, settings, diag, r))
    return nullptr;
  const kiln_plugin_info* info = plugin.info;
  std::string label = std::string(kind_name(plugin.kind)) + " '" + plugin.id + "'";

  kiln_options options{r.values.data(), r.values.size()};
  kiln_result result = make_result(plugin.id);
  void* handle = nullptr;
  kiln_status status = [&] {
    PluginCall call(plugin.path.string(), plugin.id, "create");
    return info->create(&k_host_api, &options, &handle, &result);
  }();
  if (status != KILN_OK || result.failed() || !handle) {
    // At the option the plugin names ("margin must be..."), else at its table.
    SourceLoc where = settings ? settings->loc : SourceLoc{};
    if (settings)
      for (auto& [key, value] : settings->values)
        if (names_word(result.message, key)) {
          where = value.value_loc;
          break;
        }
    std::string message =
        plugin_failure(kind_name(plugin.kind), plugin.id, "create", "could not start",
                       result.message.empty() ? std::string("create() failed without a message")
                                              : m_log.redact(result.message));
    // A bug is reported to the plugin's author: say which library it is.
    if (is_plugin_bug(result.message) || result.message.empty())
      message += " [" + plugin.path.string() + "]";
    diag.error(where, message);
    if (handle)
      info->destroy(handle);
    return nullptr;
  }
  // The signatures: the options the manifest sets to something else than their default, in
  // key order (writing a default out changes nothing); a file by its content, so an edited
  // palette changes the fingerprint of what it shapes. The shaping one leaves out what cannot
  // change an image (a timeout, a URL).
  std::string signature = plugin.id_version() + "{", shaping = signature;
  std::vector<fs::path> files;
  if (settings)
    for (auto& [key, value] : settings->values) {
      size_t i = 0;
      while (i < plugin.options.size() && key != plugin.options[i].name)
        ++i;
      const kiln_option_spec* spec = i < plugin.options.size() ? &plugin.options[i] : nullptr;
      SettingValue fallback;
      if (spec && spec->default_value && parse_default(*spec, fallback) &&
          option_text(spec->type, value) == option_text(spec->type, fallback))
        continue;
      std::string text = key + "=" + setting_text(value);
      if (spec && spec->type == KILN_OPTION_PATH && !value.string_value.empty()) {
        files.push_back(resolve_option_path(*settings, value.string_value));
        auto bytes = read_file(files.back());
        text += "#sha256:" + (bytes ? sha256_hex(*bytes) : std::string("unreadable"));
      }
      signature += text + "\n";
      if (!spec || plugin.shapes[i])
        shaping += text + "\n";
    }
  signature += "}";
  shaping += "}";
  return std::make_unique<PluginInstance>(&plugin, handle, std::move(signature), std::move(shaping),
                                          std::move(files));
}

std::vector<const PluginInstance*> PluginSet::all() const {
  std::vector<const PluginInstance*> out;
  for (auto* kind : {&backends, &enhancers, &validators, &strategies, &postprocessors})
    for (auto& [id, instance] : *kind)
      out.push_back(instance.get());
  return out;
}

std::string setting_text(const SettingValue& v) {
  switch (v.type) {
  case SettingValue::Type::String:
    return "s:" + v.string_value;
  case SettingValue::Type::Int:
    return "i:" + std::to_string(v.int_value);
  case SettingValue::Type::Float: {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, v.float_value);
    return "f:" + std::string(buf, r.ptr);
  }
  case SettingValue::Type::Bool:
    return v.bool_value ? "b:true" : "b:false";
  case SettingValue::Type::StringList:
    return "l:" + join(v.list_value, "\x1f");
  default:
    return "?:" + v.toml_type;
  }
}

namespace {

// One kind of plugin as the manifest uses it: its settings tables and where its instances go.
struct KindUse {
  kiln_plugin_kind kind;
  const char* table; // [backends.X]...
  const char* field; // the asset field that names plugins of this kind
  std::map<std::string, PluginSettings>* settings;
  std::map<std::string, std::unique_ptr<PluginInstance>, std::less<>>* instances;
};

// Why no plugin of `kind` is `id`: it did not load, it is of another kind, a near name, or the
// ones there are.
std::string unknown_plugin(const PluginRegistry& registry, kiln_plugin_kind kind,
                           const std::string& id) {
  std::string msg = "unknown " + std::string(kind_name(kind)) + " '" + id + "'";
  if (std::string why = registry.broken_reason(id); !why.empty())
    return msg + ": " + why;
  if (const Plugin* other = registry.find(id))
    return msg + " ('" + id + "' is " + (other->kind == KILN_KIND_ENHANCER ? "an " : "a ") +
           std::string(kind_name(other->kind)) + ")";
  std::vector<std::string> ids = registry.ids(kind);
  if (auto hint = did_you_mean(id, ids))
    return msg + " (did you mean '" + *hint + "'?)";
  return msg + (ids.empty()
                    ? std::string(" (no " + std::string(kind_name(kind)) + " plugins were found)")
                    : " (available: " + join(ids, ", ") + ")");
}

// Starts the plugins assets name (`wanted`: id, where first named), each with its settings.
void start_wanted(PluginRegistry& registry, const KindUse& use,
                  const std::map<std::string, SourceLoc>& wanted, Diagnostics& diag) {
  for (auto& [id, loc] : wanted) {
    const Plugin* p = registry.find(id, use.kind);
    if (!p) {
      diag.error(loc, unknown_plugin(registry, use.kind, id));
      continue;
    }
    // A second library with the same id did not load: which one was meant is unknown.
    if (std::string why = registry.broken_reason(id, true); !why.empty()) {
      diag.error(loc, std::string(kind_name(use.kind)) + " '" + id + "' is ambiguous: " + why);
      continue;
    }
    auto it = use.settings->find(id);
    auto inst = registry.instantiate(*p, it == use.settings->end() ? nullptr : &it->second, diag);
    if (inst)
      use.instances->emplace(id, std::move(inst));
  }
}

// Offline backends (the placeholder) are what the fallback strategy switches to: started when
// some asset's retry chain has it, and then only as spares. A spare that cannot start is
// skipped (said at -v) unless the manifest configured it: its table's mistakes are said.
// Each one is added to `wanted`.
void start_fallback_spares(PluginRegistry& registry, const Manifest& manifest, const KindUse& use,
                           std::map<std::string, SourceLoc>& wanted, Diagnostics& diag) {
  for (const Plugin* p : registry.all())
    if (p->kind == KILN_KIND_BACKEND && !wanted.count(p->id) &&
        (p->backend()->capabilities & KILN_BACKEND_OFFLINE)) {
      auto it = use.settings->find(p->id);
      const bool configured = it != use.settings->end();
      Diagnostics spare(manifest.diagnostics.display_path(), nullptr);
      if (auto inst = registry.instantiate(*p, configured ? &it->second : nullptr,
                                           configured ? diag : spare))
        use.instances->emplace(p->id, std::move(inst));
      else if (!configured)
        registry.log().debug("offline backend '" + p->id +
                             "' not started as a fallback spare: " + spare.text());
      wanted.emplace(p->id, SourceLoc{});
    }
}

// A settings table for a plugin nobody uses is still checked against its schema (a typo there
// is a mistake), but the plugin is not started: CI running `--backend placeholder` must not
// need the paid backend's token.
void check_unused_settings(const PluginRegistry& registry, const KindUse& use,
                           const std::map<std::string, SourceLoc>& wanted, Diagnostics& diag) {
  for (auto& [id, settings] : *use.settings) {
    if (wanted.count(id))
      continue;
    const Plugin* p = registry.find(id, use.kind);
    if (!p)
      diag.error(settings.loc,
                 unknown_plugin(registry, use.kind, id) + " in [" + use.table + "." + id + "]");
    else
      PluginRegistry::check_options(*p, &settings, diag);
  }
}

} // namespace

PluginSet instantiate_manifest_plugins(PluginRegistry& registry, Manifest& manifest) {
  Diagnostics& diag = manifest.diagnostics;
  PluginSet set;
  KindUse uses[] = {
      {KILN_KIND_BACKEND, "backends", "backend", &manifest.backend_settings, &set.backends},
      {KILN_KIND_ENHANCER, "enhancers", "enhancers", &manifest.enhancer_settings, &set.enhancers},
      {KILN_KIND_VALIDATOR, "validators", "validators", &manifest.validator_settings,
       &set.validators},
      {KILN_KIND_RETRY_STRATEGY, "strategies", "retry", &manifest.strategy_settings,
       &set.strategies},
      {KILN_KIND_POSTPROCESSOR, "postprocessors", "postprocess", &manifest.postprocessor_settings,
       &set.postprocessors},
  };
  auto retry = manifest.plugin_uses.find("retry");
  const bool fallback = retry != manifest.plugin_uses.end() && retry->second.count("fallback");
  for (auto& use : uses) {
    // Plugins named by assets, in first-use order, with where they were named.
    std::map<std::string, SourceLoc> wanted;
    if (auto it = manifest.plugin_uses.find(use.field); it != manifest.plugin_uses.end())
      wanted = it->second;
    start_wanted(registry, use, wanted, diag);
    if (use.kind == KILN_KIND_BACKEND && fallback)
      start_fallback_spares(registry, manifest, use, wanted, diag);
    check_unused_settings(registry, use, wanted, diag);
  }
  diag.throw_if_errors();
  return set;
}

} // namespace kiln::host
