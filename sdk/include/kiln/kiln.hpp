// kiln/kiln.hpp — write a Kiln plugin as an ordinary C++ class.
//
// A complete validator plugin:
//
//   #include <kiln/kiln.hpp>
//
//   class MaxColours : public kiln::Validator {
//   public:
//     explicit MaxColours(const kiln::Context& context)
//         : m_max(context.options().get_int("max_colours")) {}
//
//     static kiln::OptionSchema options() {
//       return {{"max_colours", "Most distinct colours allowed", KILN_OPTION_INT, "16"}};
//     }
//
//     kiln::Verdict validate(const kiln::Asset& asset, const kiln::ImageFile& file) override {
//       if (count_colours(file) > m_max)
//         return kiln::Verdict::reject("too many colours");
//       return kiln::Verdict::accept();
//     }
//
//   private:
//     int64_t m_max;
//   };
//
//   KILN_PLUGIN(MaxColours, "max-colours", "1.0.0", "Rejects images with too many colours")
//
// The five kinds are five base classes: kiln::Backend, kiln::Enhancer, kiln::RetryStrategy,
// kiln::Validator and kiln::Postprocessor (since ABI 1.1). A complete postprocessor:
//
//   class Invert : public kiln::Postprocessor {
//   public:
//     explicit Invert(const kiln::Context&) {}
//     kiln::Image process(const kiln::Asset&, kiln::Image image) override {
//       for (size_t i = 0; i < image.rgba.size(); i += 4)
//         for (int c = 0; c < 3; ++c)
//           image.rgba[i + c] = uint8_t(255 - image.rgba[i + c]);
//       return image;
//     }
//   };
//
//   KILN_PLUGIN(Invert, "invert", "1.0.0", "Inverts the colours")
//
// Build it with `kiln_add_plugin(max-colours SOURCES max_colours.cpp)` after
// `find_package(Kiln)`. The adapter turns every exception into a failure the host reports with the
// asset's name, so plugin code may throw freely; throw kiln::Error to choose the category.
//
// Only the C++17 standard library is needed. Nothing here crosses the library boundary except
// through <kiln/plugin.h>.
#ifndef KILN_KILN_HPP
#define KILN_KILN_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <kiln/plugin.h>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace kiln {

inline std::string_view view(kiln_str s) {
  return {s.data ? s.data : "", s.size};
}
inline kiln_str str(std::string_view s) {
  return {s.data(), s.size()};
}

// Throw from any plugin method to fail with a specific category (default: permanent).
class Error : public std::runtime_error {
public:
  explicit Error(const std::string& message, kiln_error_category category = KILN_ERROR_PERMANENT,
                 int64_t retry_after_ms = -1)
      : std::runtime_error(message), m_category(category), m_retry_after_ms(retry_after_ms) {}
  kiln_error_category category() const { return m_category; }
  // The server's hint of how long to wait, or -1.
  int64_t retry_after_ms() const { return m_retry_after_ms; }

private:
  kiln_error_category m_category;
  int64_t m_retry_after_ms;
};

using OptionSchema = std::vector<kiln_option_spec>;

// The plugin's resolved options: every option of its schema has a value.
class Options {
public:
  explicit Options(const kiln_options* options) : m_options(options) {}

  std::string get_string(std::string_view name) const {
    return std::string(view(find(name, KILN_OPTION_STRING).string_value));
  }
  // A KILN_OPTION_PATH option: the absolute path of the file, "" when none is set.
  std::string get_path(std::string_view name) const {
    return std::string(view(find(name, KILN_OPTION_PATH).string_value));
  }
  int64_t get_int(std::string_view name) const { return find(name, KILN_OPTION_INT).int_value; }
  double get_float(std::string_view name) const {
    return find(name, KILN_OPTION_FLOAT).float_value;
  }
  bool get_bool(std::string_view name) const {
    return find(name, KILN_OPTION_BOOL).bool_value != 0;
  }
  std::vector<std::string> get_list(std::string_view name) const {
    const kiln_option_value& v = find(name, KILN_OPTION_STRING_LIST);
    std::vector<std::string> out;
    for (size_t i = 0; i < v.list_size; ++i)
      out.emplace_back(view(v.list_values[i]));
    return out;
  }

  // The host's values live for the constructor only: after it, reading one is an error that
  // says so (the adapter calls this once the instance is made).
  void expire() { m_options = nullptr, m_expired = true; }

  static const char* type_name(uint32_t type) {
    switch (type & KILN_OPTION_TYPE_MASK) {
    case KILN_OPTION_STRING:
      return "string";
    case KILN_OPTION_INT:
      return "integer";
    case KILN_OPTION_FLOAT:
      return "number";
    case KILN_OPTION_BOOL:
      return "boolean";
    case KILN_OPTION_STRING_LIST:
      return "list";
    case KILN_OPTION_PATH:
      return "file";
    default:
      return "unknown type";
    }
  }

private:
  // "an integer", "a string".
  static std::string with_article(const char* word) {
    return std::string(std::strchr("aeiou", word[0]) ? "an " : "a ") + word;
  }
  // Reading an option wrongly is a bug in the plugin, not a verdict on an image: a
  // std::logic_error, which the host reports as the plugin's bug (naming the plugin and call).
  const kiln_option_value& find(std::string_view name, uint32_t type) const {
    if (m_expired)
      throw std::logic_error("option '" + std::string(name) +
                             "' read after the constructor: options are read there (keep the "
                             "values)");
    for (size_t i = 0; m_options && i < m_options->count; ++i) {
      const kiln_option_value& v = m_options->values[i];
      if (view(v.name) == name) {
        if (v.type != type)
          throw std::logic_error("option '" + std::string(name) + "' is " +
                                 with_article(type_name(v.type)) + " but was read as " +
                                 with_article(type_name(type)));
        return v;
      }
    }
    throw std::logic_error("option '" + std::string(name) + "' is not in the plugin's schema");
  }
  const kiln_options* m_options;
  bool m_expired = false;
};

struct HttpResponse {
  int status = 0; // 0: no response arrived, see error
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers; // the ones asked for
  kiln_error_category error_category = KILN_ERROR_NONE;
  std::string error;

  std::string header(std::string_view name) const {
    for (auto& [n, v] : headers)
      if (n == name)
        return v;
    return {};
  }
};

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string output_path;
  uint64_t max_bytes = 0;
  uint32_t timeout_ms = 0;
  std::vector<std::string> read_headers; // response headers to copy into HttpResponse
};

// The host's HTTP service.
class Http {
public:
  Http(const kiln_host_api* host, kiln_result* result) : m_host(host), m_result(result) {}

  HttpResponse send(const HttpRequest& req) const {
    std::vector<kiln_http_header> headers;
    for (auto& [n, v] : req.headers)
      headers.push_back({str(n), str(v)});
    kiln_http_request raw{sizeof raw,           str(req.method), str(req.url),
                          headers.data(),       headers.size(),  str(req.body),
                          str(req.output_path), req.max_bytes,   req.timeout_ms};
    kiln_http_response* r = m_host->http_send(m_result, &raw);
    HttpResponse out;
    out.status = m_host->http_status(r);
    out.body = std::string(view(m_host->http_body(r)));
    for (auto& name : req.read_headers)
      out.headers.emplace_back(name, std::string(view(m_host->http_header(r, str(name)))));
    if (out.status == 0) {
      out.error_category = kiln_error_category(m_host->http_error_category(r));
      out.error = std::string(view(m_host->http_error(r)));
    }
    m_host->http_free(r);
    return out;
  }

private:
  const kiln_host_api* m_host;
  kiln_result* m_result;
};

// What a plugin's constructor gets: its options and the host. Keep a reference to it if you
// like (the adapter keeps it alive as long as the instance): log() then works from every later
// call too (validate, enhance, propose, process, generate), each message tagged with the
// plugin's id. Not copyable. Outside a call of the host (a thread of the plugin's own) log()
// and add_secret() do nothing.
class Context {
public:
  Context(const kiln_host_api* host, const kiln_options* options)
      : m_host(host), m_options(options) {}
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  const kiln_host_api* host() const { return m_host; }
  // Valid in the constructor only (the host's values end with it).
  const Options& options() const { return m_options; }
  void expire_options() { m_options.expire(); }
  void log(kiln_log_level level, std::string_view message) const {
    if (kiln_result* r = current())
      m_host->log(r, level, str(message));
  }
  // Registers a secret the host must never print or store.
  void add_secret(std::string_view secret) const {
    if (kiln_result* r = current())
      m_host->add_secret(r, str(secret));
  }
  // HTTP during construction (e.g. to check a token); later calls use BackendResult::http().
  Http http() const { return Http(m_host, current()); }

  // The adapter's bookkeeping: the host's calls in progress on each thread, so that a kept
  // Context speaks for the call its caller is in, never for a finished one. (No thread_local:
  // plugins are loaded with dlopen, where dynamic TLS trips up some tools.)
  void enter(kiln_result* result) const {
    std::lock_guard<std::mutex> lock(m_mutex);
    m_calls.emplace_back(std::this_thread::get_id(), result);
  }
  void leave() const {
    std::lock_guard<std::mutex> lock(m_mutex);
    for (auto it = m_calls.rbegin(); it != m_calls.rend(); ++it)
      if (it->first == std::this_thread::get_id()) {
        m_calls.erase(std::next(it).base());
        return;
      }
  }

private:
  kiln_result* current() const {
    std::lock_guard<std::mutex> lock(m_mutex);
    for (auto it = m_calls.rbegin(); it != m_calls.rend(); ++it)
      if (it->first == std::this_thread::get_id())
        return it->second;
    return nullptr;
  }

  const kiln_host_api* m_host;
  Options m_options;
  mutable std::mutex m_mutex;
  mutable std::vector<std::pair<std::thread::id, kiln_result*>> m_calls;
};

namespace detail {
// A host call in progress, for the Context of the instance it is made on.
class CallScope {
public:
  CallScope(const Context& context, kiln_result* result) : m_context(context) {
    m_context.enter(result);
  }
  ~CallScope() { m_context.leave(); }
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;

private:
  const Context& m_context;
};
} // namespace detail

// Whether a struct the host passed is large enough to hold `field` (for fields added later).
#define KILN_HAS_FIELD(ptr, type, field)                                                           \
  ((ptr)->struct_size >= offsetof(type, field) + sizeof((ptr)->field))

struct Asset {
  std::string_view name, type, prompt, negative, style, backend, model, format;
  uint32_t width = 0, height = 0;
  std::optional<uint64_t> seed;
  std::string_view params_json;
  std::vector<std::string_view> fallback_models; // for the alternate-model strategy, in order
  std::vector<std::string_view> modifiers;       // the asset's extra style words
  std::vector<std::string_view> postprocess;     // postprocessor ids, in order (ABI 1.1 hosts)

  static Asset from(const kiln_asset* a) {
    Asset r;
    r.name = view(a->name);
    r.type = view(a->type);
    r.prompt = view(a->prompt);
    r.negative = view(a->negative);
    r.style = view(a->style);
    r.backend = view(a->backend);
    r.model = view(a->model);
    r.format = view(a->format);
    r.width = a->width;
    r.height = a->height;
    if (a->has_seed)
      r.seed = a->seed;
    r.params_json = view(a->params_json);
    if (KILN_HAS_FIELD(a, kiln_asset, fallback_model_count))
      for (size_t i = 0; i < a->fallback_model_count; ++i)
        r.fallback_models.push_back(view(a->fallback_models[i]));
    if (KILN_HAS_FIELD(a, kiln_asset, modifier_count))
      for (size_t i = 0; i < a->modifier_count; ++i)
        r.modifiers.push_back(view(a->modifiers[i]));
    if (KILN_HAS_FIELD(a, kiln_asset, postprocess_count))
      for (size_t i = 0; i < a->postprocess_count; ++i)
        r.postprocess.push_back(view(a->postprocess[i]));
    return r;
  }
};

struct Request {
  Asset asset;
  std::string_view prompt, negative_prompt, model, format, params_json, fingerprint, work_dir,
      resume_job_id, backend;
  uint32_t width = 0, height = 0;
  std::optional<uint64_t> seed;
  uint32_t attempt = 1; // 1 for the first attempt at the asset in this run
  // An earlier run was killed while creating this request's job: look for it before creating.
  bool lost_create = false;
  const kiln_request* raw = nullptr;

  static Request from(const kiln_request* q) {
    Request r;
    r.asset = Asset::from(q->asset);
    r.prompt = view(q->prompt);
    r.negative_prompt = view(q->negative_prompt);
    r.model = view(q->model);
    r.format = view(q->format);
    r.params_json = view(q->params_json);
    r.fingerprint = view(q->fingerprint);
    r.work_dir = view(q->work_dir);
    r.resume_job_id = view(q->resume_job_id);
    r.width = q->width;
    r.height = q->height;
    if (q->has_seed)
      r.seed = q->seed;
    if (KILN_HAS_FIELD(q, kiln_request, attempt) && q->attempt)
      r.attempt = q->attempt;
    if (KILN_HAS_FIELD(q, kiln_request, backend))
      r.backend = view(q->backend);
    if (KILN_HAS_FIELD(q, kiln_request, lost_create))
      r.lost_create = q->lost_create != 0;
    r.raw = q;
    return r;
  }
};

// 8-bit RGBA pixels, tightly packed.
struct Image {
  uint32_t width = 0, height = 0;
  std::vector<uint8_t> rgba;

  Image() = default;
  Image(uint32_t w, uint32_t h) : width(w), height(h), rgba(size_t(w) * h * 4, 0) {}
  uint8_t* at(uint32_t x, uint32_t y) { return &rgba[(size_t(y) * width + x) * 4]; }
  const uint8_t* at(uint32_t x, uint32_t y) const { return &rgba[(size_t(y) * width + x) * 4]; }

  // A copy of a host image (rows `stride` bytes apart).
  static Image from(const kiln_image* image) {
    Image out(image->width, image->height);
    for (uint32_t y = 0; y < image->height; ++y)
      std::copy_n(image->pixels + size_t(y) * image->stride, size_t(image->width) * 4,
                  out.at(0, y));
    return out;
  }
  // A view of this image for the host; valid while the image lives unchanged.
  kiln_image raw() const { return {width, height, size_t(width) * 4, rgba.data()}; }
};

// `image` scaled to width x height with the host's resampler (gamma-correct, alpha-weighted: the
// filter that fits every output to its asset's size). Needs a host of ABI 1.1.
inline Image scale(const kiln_host_api* host, const Image& image, uint32_t width, uint32_t height) {
  if (image.width == width && image.height == height)
    return image;
  if (!KILN_HAS_FIELD(host, kiln_host_api, scale_image))
    throw Error("this kiln is too old to scale images for plugins (it needs plugin ABI 1.1)");
  Image out(width, height);
  kiln_image source = image.raw();
  if (host->scale_image(&source, width, height, out.rgba.data()) != 0)
    throw Error("cannot scale a " + std::to_string(image.width) + "x" +
                std::to_string(image.height) + " image to " + std::to_string(width) + "x" +
                std::to_string(height));
  return out;
}

// Where a backend delivers its outcome.
class BackendResult {
public:
  BackendResult(const kiln_host_api* host, kiln_result* result) : m_host(host), m_result(result) {}
  void set_remote_id(std::string_view id) { m_host->set_remote_id(m_result, str(id)); }
  void set_cost_usd(double usd) { m_host->set_cost_usd(m_result, usd); }
  void set_image(const Image& image) {
    kiln_image raw = image.raw();
    m_host->set_image(m_result, &raw);
  }
  void set_image_file(std::string_view path) { m_host->set_image_file(m_result, str(path)); }
  Http http() const { return Http(m_host, m_result); }
  void log(kiln_log_level level, std::string_view message) {
    m_host->log(m_result, level, str(message));
  }
  // Sleeps up to `ms`; returns false, early, when the run is being interrupted (then cancel the
  // remote job and throw kiln::Error(..., KILN_ERROR_INTERRUPTED)).
  bool wait_ms(uint32_t ms) { return m_host->wait_ms(m_result, ms) == 0; }
  bool interrupted() { return m_host->wait_ms(m_result, 0) != 0; }

private:
  const kiln_host_api* m_host;
  kiln_result* m_result;
};

struct ImageFile {
  std::string_view path;
  const uint8_t* bytes = nullptr;
  size_t size = 0;
  std::string_view detected_format;
  const kiln_image* image = nullptr; // null when decoding failed
  std::string_view decode_error;

  static ImageFile from(const kiln_image_file* f) {
    return {view(f->path),        f->bytes, f->size, view(f->detected_format), f->image,
            view(f->decode_error)};
  }
  // RGBA of pixel (x, y); the image must be decoded.
  const uint8_t* pixel(uint32_t x, uint32_t y) const {
    return image->pixels + size_t(y) * image->stride + size_t(x) * 4;
  }
};

struct Verdict {
  bool ok = true;
  std::string reason;
  uint32_t missing = 0; // kiln_image_property bits the image lacks (see lacks())

  static Verdict accept() { return {}; }
  static Verdict reject(std::string reason) { return {false, std::move(reason)}; }
  // Rejected because the image lacks a property (KILN_PROPERTY_ALPHA...): the host then pays for
  // another image only if the model paints that property or a postprocessor of the asset makes
  // it, and otherwise names a postprocessor that would.
  static Verdict lacks(uint32_t property, std::string reason) {
    return {false, std::move(reason), property};
  }
};

struct Prompt {
  std::string positive;
  std::string negative;
};

struct Failure {
  Request request;
  kiln_error_category category = KILN_ERROR_NONE;
  std::string_view message;
  uint32_t attempt = 0;
  int64_t retry_after_ms = -1;        // the server's hint, or -1
  uint32_t same_request_failures = 1; // failures in a row of exactly this request
  uint32_t category_streak = 1;       // failures in a row of this category for the asset
  uint32_t proposals = 0;             // retries this strategy already proposed for the asset
  std::string_view source;            // backend id, validator id, or "kiln"

  static Failure from(const kiln_failure* f) {
    Failure r;
    r.request = Request::from(f->request);
    r.category = kiln_error_category(f->category);
    r.message = view(f->message);
    r.attempt = f->attempt;
    if (KILN_HAS_FIELD(f, kiln_failure, source)) {
      r.retry_after_ms = f->retry_after_ms;
      r.same_request_failures = f->same_request_failures;
      r.category_streak = f->category_streak;
      r.proposals = f->proposals;
      r.source = view(f->source);
    }
    return r;
  }
};

// A retry strategy's proposal: the fields it changes (the rest stay as they were).
struct Proposal {
  std::optional<std::string> prompt;
  std::optional<std::string> negative_prompt;
  std::optional<std::string> model;
  std::optional<uint64_t> seed;
  std::optional<std::string> params_json;
  std::optional<std::string> backend;
  bool fallback = false; // the image will be a stand-in (see kiln_host_api::set_fallback)
  int64_t delay_ms = -1; // wait this long before the attempt
};

class Backend {
public:
  static constexpr kiln_plugin_kind k_kind = KILN_KIND_BACKEND;
  static constexpr uint32_t k_capabilities = 0;
  static OptionSchema options() { return {}; }
  virtual ~Backend() = default;
  virtual void generate(const Request& request, BackendResult& result) = 0;
  virtual double estimate_cost_usd(const Request&) { return 0.0; }
  // The kiln_image_property bits the request's model paints by itself (see
  // kiln_backend_functions::paints). The default, "any", never stops a retry; say 0 for a
  // text-to-image model that returns opaque images.
  virtual uint32_t paints(const Request&) { return KILN_PROPERTIES_ANY; }
};

class Enhancer {
public:
  static constexpr kiln_plugin_kind k_kind = KILN_KIND_ENHANCER;
  static OptionSchema options() { return {}; }
  virtual ~Enhancer() = default;
  virtual Prompt enhance(const Asset& asset, Prompt current) = 0;
};

class RetryStrategy {
public:
  static constexpr kiln_plugin_kind k_kind = KILN_KIND_RETRY_STRATEGY;
  static OptionSchema options() { return {}; }
  virtual ~RetryStrategy() = default;
  // std::nullopt gives up and lets the next strategy of the chain decide.
  virtual std::optional<Proposal> propose(const Failure& failure) = 0;
};

class Validator {
public:
  static constexpr kiln_plugin_kind k_kind = KILN_KIND_VALIDATOR;
  static OptionSchema options() { return {}; }
  virtual ~Validator() = default;
  virtual Verdict validate(const Asset& asset, const ImageFile& file) = 0;
};

// Turns the decoded image into the game-ready one, before validators judge it (ABI 1.1).
class Postprocessor {
public:
  static constexpr kiln_plugin_kind k_kind = KILN_KIND_POSTPROCESSOR;
  // The kiln_image_property bits every image process() returns has.
  static constexpr uint32_t k_provides = 0;
  static OptionSchema options() { return {}; }
  virtual ~Postprocessor() = default;
  // The processed image, any size (the host then scales it to cover the asset's size). Throw
  // kiln::Error(why, KILN_ERROR_VALIDATION) when this image cannot be processed but another
  // might; any other exception fails the asset permanently.
  virtual Image process(const Asset& asset, Image image) = 0;
  // What the prompt must ask the model for so that process() works; "" for nothing.
  virtual std::string prompt_hint(const Asset&) { return {}; }
};

namespace detail {

// The instance with the Context it was made with: a plugin may keep a reference to it.
template <class T> struct Holder {
  Holder(const kiln_host_api* h, const kiln_options* options, kiln_result* creating)
      : host(h), context(h, options), impl((context.enter(creating), context)) {
    context.leave();
    context.expire_options();
  }
  const kiln_host_api* host;
  Context context;
  T impl;
};

// How the adapter marks an exception other than kiln::Error in a failure's message.
inline constexpr const char* k_plugin_bug = "plugin bug: unexpected exception: ";

template <class F>
kiln_status guarded(const kiln_host_api* host, kiln_result* result, F&& body) noexcept {
  try {
    return body();
  } catch (const Error& e) {
    host->fail(result, e.category(), str(e.what()));
    if (e.retry_after_ms() >= 0)
      host->set_retry_after_ms(result, e.retry_after_ms());
  } catch (const std::exception& e) {
    // Not a kiln::Error: not a failure the plugin meant to report, but a bug. The host names it
    // as one (plugin, call), never as a verdict ("rejected the image: vector index ...").
    host->fail(result, KILN_ERROR_PERMANENT, str(std::string(k_plugin_bug) + e.what()));
  } catch (...) {
    host->fail(result, KILN_ERROR_PERMANENT,
               str(std::string(k_plugin_bug) + "an exception of no standard type"));
  }
  return KILN_FAILED;
}

template <class T>
kiln_status create(const kiln_host_api* host, const kiln_options* options, void** instance,
                   kiln_result* result) noexcept {
  return guarded(host, result, [&] {
    *instance = new Holder<T>(host, options, result);
    return KILN_OK;
  });
}

template <class T> void destroy(void* instance) noexcept {
  try {
    delete static_cast<Holder<T>*>(instance);
  } catch (...) {
  }
}

template <class T>
kiln_status generate(void* instance, const kiln_request* request, kiln_result* result) noexcept {
  auto* h = static_cast<Holder<T>*>(instance);
  CallScope scope(h->context, result);
  return guarded(h->host, result, [&] {
    BackendResult out(h->host, result);
    h->impl.generate(Request::from(request), out);
    return KILN_OK;
  });
}

template <class T> double estimate(void* instance, const kiln_request* request) noexcept {
  try {
    return static_cast<Holder<T>*>(instance)->impl.estimate_cost_usd(Request::from(request));
  } catch (...) {
    return -1.0; // the host reports an estimate it cannot trust
  }
}

template <class T>
kiln_status enhance(void* instance, const kiln_asset* asset, kiln_str prompt, kiln_str negative,
                    kiln_result* result) noexcept {
  auto* h = static_cast<Holder<T>*>(instance);
  CallScope scope(h->context, result);
  return guarded(h->host, result, [&] {
    Prompt out = h->impl.enhance(Asset::from(asset),
                                 Prompt{std::string(view(prompt)), std::string(view(negative))});
    h->host->set_prompt(result, str(out.positive));
    h->host->set_negative_prompt(result, str(out.negative));
    return KILN_OK;
  });
}

template <class T> uint32_t paints(void* instance, const kiln_request* request) noexcept {
  try {
    return static_cast<Holder<T>*>(instance)->impl.paints(Request::from(request));
  } catch (...) {
    return KILN_PROPERTIES_ANY; // unknown: the host never refuses a retry on a guess
  }
}

template <class T>
kiln_status validate(void* instance, const kiln_asset* asset, const kiln_image_file* file,
                     kiln_result* result) noexcept {
  auto* h = static_cast<Holder<T>*>(instance);
  CallScope scope(h->context, result);
  return guarded(h->host, result, [&] {
    Verdict v = h->impl.validate(Asset::from(asset), ImageFile::from(file));
    if (v.ok)
      return KILN_OK;
    h->host->fail(result, KILN_ERROR_VALIDATION, str(v.reason));
    if (v.missing && KILN_HAS_FIELD(h->host, kiln_host_api, set_missing_property))
      h->host->set_missing_property(result, v.missing);
    return KILN_FAILED;
  });
}

template <class T>
kiln_status process(void* instance, const kiln_asset* asset, const kiln_image* image,
                    kiln_result* result) noexcept {
  auto* h = static_cast<Holder<T>*>(instance);
  CallScope scope(h->context, result);
  return guarded(h->host, result, [&] {
    Image out = h->impl.process(Asset::from(asset), Image::from(image));
    kiln_image raw = out.raw();
    h->host->set_image(result, &raw);
    return KILN_OK;
  });
}

template <class T>
kiln_status prompt_hint(void* instance, const kiln_asset* asset, kiln_result* result) noexcept {
  auto* h = static_cast<Holder<T>*>(instance);
  CallScope scope(h->context, result);
  return guarded(h->host, result, [&] {
    std::string hint = h->impl.prompt_hint(Asset::from(asset));
    if (!hint.empty())
      h->host->set_prompt(result, str(hint));
    return KILN_OK;
  });
}

template <class T>
kiln_status propose(void* instance, const kiln_failure* failure, kiln_result* result) noexcept {
  auto* h = static_cast<Holder<T>*>(instance);
  CallScope scope(h->context, result);
  return guarded(h->host, result, [&] {
    std::optional<Proposal> p = h->impl.propose(Failure::from(failure));
    if (!p)
      return KILN_FAILED;
    const kiln_host_api* host = h->host;
    if (p->prompt)
      host->set_prompt(result, str(*p->prompt));
    if (p->negative_prompt)
      host->set_negative_prompt(result, str(*p->negative_prompt));
    bool can_change = KILN_HAS_FIELD(host, kiln_host_api, set_fallback);
    if (!can_change && (p->model || p->seed || p->params_json || p->backend || p->fallback))
      throw Error("this kiln is too old for the strategy's proposal");
    if (p->model)
      host->set_model(result, str(*p->model));
    if (p->seed)
      host->set_seed(result, *p->seed);
    if (p->params_json)
      host->set_params_json(result, str(*p->params_json));
    if (p->backend)
      host->set_backend(result, str(*p->backend));
    if (p->fallback)
      host->set_fallback(result, 1);
    if (p->delay_ms >= 0)
      host->set_retry_after_ms(result, p->delay_ms);
    return KILN_OK;
  });
}

template <class T> const void* functions() {
  if constexpr (T::k_kind == KILN_KIND_BACKEND) {
    static const kiln_backend_functions f{sizeof f, T::k_capabilities, &generate<T>, &estimate<T>,
                                          &paints<T>};
    return &f;
  } else if constexpr (T::k_kind == KILN_KIND_ENHANCER) {
    static const kiln_enhancer_functions f{sizeof f, &enhance<T>};
    return &f;
  } else if constexpr (T::k_kind == KILN_KIND_VALIDATOR) {
    static const kiln_validator_functions f{sizeof f, &validate<T>};
    return &f;
  } else if constexpr (T::k_kind == KILN_KIND_POSTPROCESSOR) {
    static const kiln_postprocessor_functions f{sizeof f, T::k_provides, &process<T>,
                                                &prompt_hint<T>};
    return &f;
  } else {
    static const kiln_retry_strategy_functions f{sizeof f, &propose<T>};
    return &f;
  }
}

template <class T>
const kiln_plugin_info* info(const char* id, const char* version, const char* description) {
  static const OptionSchema schema = T::options();
  static const kiln_plugin_info i{KILN_PLUGIN_ABI_VERSION,
                                  sizeof(kiln_plugin_info),
                                  T::k_kind,
                                  id,
                                  version,
                                  description,
                                  schema.empty() ? nullptr : schema.data(),
                                  schema.size(),
                                  &create<T>,
                                  &destroy<T>,
                                  functions<T>(),
                                  KILN_PLUGIN_ABI_MINOR};
  return &i;
}

} // namespace detail
} // namespace kiln

// Exports `Class` (derived from kiln::Backend, Enhancer, RetryStrategy, Validator or
// Postprocessor) as this library's plugin. One per shared library.
#define KILN_PLUGIN(Class, id, version, description)                                               \
  KILN_EXTERN_C KILN_EXPORT const kiln_plugin_info* kiln_plugin_entry(void) {                      \
    return ::kiln::detail::info<Class>(id, version, description);                                  \
  }

#endif // KILN_KILN_HPP
