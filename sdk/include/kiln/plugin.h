/*
 * kiln/plugin.h — the Kiln plugin ABI.
 *
 * This is the whole contract between the `kiln` host and a plugin shared library. It is plain C
 * (stdint/stddef only) so that a plugin built with another compiler, standard library or language
 * still loads. C++ authors normally include <kiln/kiln.hpp> instead, which wraps this header in
 * ordinary classes and one macro; read this file to know exactly what crosses the boundary.
 *
 * Rules of the boundary
 *   - A plugin exports one symbol, `kiln_plugin_entry`, returning a pointer to a static
 *     kiln_plugin_info that lives as long as the library. The host never unloads a plugin.
 *   - Strings cross as kiln_str (pointer + length, not NUL-terminated unless said) and are only
 *     valid for the duration of the call they are passed to. Copy what you keep.
 *   - Memory is freed by whoever allocated it. Plugins hand results to the host through the
 *     kiln_host_api setters below; the host copies what it is given.
 *   - Nothing throws across the boundary. Functions report failure through their kiln_result.
 *   - Structs that may grow start with `struct_size`; readers check it before touching a field
 *     added later (each field says in which ABI version it appeared, `@since 1` for the first
 *     release, `@since 1.1` for a field added by minor version 1). The ABI grows by minor
 *     versions: new fields at the end of structs, new kinds, new host services. A host of any
 *     minor version loads a plugin of any minor version of the same major; only a new major
 *     version (a change that cannot be read safely) refuses older plugins.
 *   - generate/enhance/validate/propose/process may be called concurrently on one instance from
 * several host threads: keep instances free of unsynchronised mutable state.
 *
 * A complete minimal plugin in C:
 *
 *   #include <kiln/plugin.h>
 *   static kiln_status create(const kiln_host_api* host, const kiln_options* options,
 *                             void** instance, kiln_result* result) {
 *     *instance = (void*)host;  // nothing to configure; keep the host table
 *     return KILN_OK;
 *   }
 *   static void destroy(void* instance) { (void)instance; }
 *   static kiln_status validate(void* instance, const kiln_asset* asset,
 *                               const kiln_image_file* file, kiln_result* result) {
 *     const kiln_host_api* host = (const kiln_host_api*)instance;
 *     if (file->size > 1000000) {
 *       host->fail(result, KILN_ERROR_VALIDATION, kiln_cstr("file larger than 1 MB"));
 *       return KILN_FAILED;
 *     }
 *     return KILN_OK;
 *   }
 *   static const kiln_validator_functions functions = {sizeof functions, validate};
 *   static const kiln_plugin_info info = {
 *       KILN_PLUGIN_ABI_VERSION, sizeof info, KILN_KIND_VALIDATOR, "max-1mb", "1.0.0",
 *       "Rejects files over one megabyte", NULL, 0, create, destroy, &functions,
 *       KILN_PLUGIN_ABI_MINOR};
 *   KILN_EXPORT const kiln_plugin_info* kiln_plugin_entry(void) { return &info; }
 */
#ifndef KILN_PLUGIN_H
#define KILN_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The ABI's major version. A plugin built against another major version is refused: the host
 * cannot read it safely.
 */
#define KILN_PLUGIN_ABI_VERSION 1u
/**
 * The ABI's minor version: what has been added to major version 1 since it first shipped (minor
 * 0). Stamped into kiln_plugin_info::abi_minor; the host reads a field added in minor N only from
 * a plugin whose struct_size covers it, so plugins of every minor version keep loading.
 *   1.1: the postprocessor kind, image properties (kiln_image_property), kiln_asset::postprocess,
 *        kiln_backend_functions::paints, kiln_host_api::set_missing_property and scale_image,
 *        kiln_plugin_info::abi_minor, KILN_OPTION_PATH, KILN_OPTION_NOT_SHAPING.
 */
#define KILN_PLUGIN_ABI_MINOR 1u

/** The one symbol a plugin exports. */
#define KILN_PLUGIN_ENTRY_SYMBOL "kiln_plugin_entry"

#if defined(_WIN32)
#define KILN_EXPORT __declspec(dllexport)
#else
#define KILN_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
#define KILN_EXTERN_C extern "C"
#else
#define KILN_EXTERN_C
#endif

/** What a plugin is. Each kind has its own function table (see below). */
typedef enum kiln_plugin_kind {
  /** Turns a generation request into an image and reports its cost. */
  KILN_KIND_BACKEND = 1,
  /** Rewrites the prompt and negative prompt before generation. */
  KILN_KIND_ENHANCER = 2,
  /** Given a failed request and its error category, proposes the next request or gives up. */
  KILN_KIND_RETRY_STRATEGY = 3,
  /** Judges an image file against the asset's spec. */
  KILN_KIND_VALIDATOR = 4,
  /**
   * Turns the decoded image into the game-ready one (transparent background, seamless edges,
   * pixel art...) before validators judge it. @since 1.1
   */
  KILN_KIND_POSTPROCESSOR = 5,
} kiln_plugin_kind;

/**
 * What makes an image game-ready beyond its size and format: properties a validator checks, a
 * model may or may not paint by itself, and a postprocessor gives every image it processes. The
 * host uses them to buy only retries that can change a verdict: a new seed, prompt or model of
 * a backend that never paints transparency cannot make an image pass an alpha check; a
 * postprocessor that makes it can. A bit set of these values. @since 1.1
 */
typedef enum kiln_image_property {
  /** A transparent background around an opaque subject. */
  KILN_PROPERTY_ALPHA = 1u << 0,
  /** Opposite edges meet without a seam, so the image tiles. */
  KILN_PROPERTY_TILEABLE = 1u << 1,
  /** A small palette of flat colours with hard edges (pixel art). */
  KILN_PROPERTY_PALETTE = 1u << 2,
} kiln_image_property;

/** "Any property": what the host assumes of a backend that does not say what it paints. */
#define KILN_PROPERTIES_ANY 0xffffffffu

/** The return value of every plugin function that can fail. */
typedef enum kiln_status {
  KILN_OK = 0,
  /** The function failed; details were given through kiln_host_api::fail. */
  KILN_FAILED = 1,
} kiln_status;

/** How the host should react to a failure. */
typedef enum kiln_error_category {
  KILN_ERROR_NONE = 0,
  /** Try the same request again later (throttling, 5xx, timeouts, truncated downloads). */
  KILN_ERROR_RETRYABLE = 1,
  /** The same request will fail again (bad input, unknown model, bad token...). */
  KILN_ERROR_PERMANENT = 2,
  /** A person must act before anything else can succeed (no credit, billing). */
  KILN_ERROR_NEEDS_PERSON = 3,
  /** The provider refused the prompt or its image (safety filters). */
  KILN_ERROR_CONTENT_POLICY = 4,
  /** An image was produced but a validator rejected it. */
  KILN_ERROR_VALIDATION = 5,
  /** The run was interrupted (SIGINT) and the backend cancelled its job. @since 1 */
  KILN_ERROR_INTERRUPTED = 6,
} kiln_error_category;

/** A string slice. Not NUL-terminated unless a field says so. */
typedef struct kiln_str {
  const char* data;
  size_t size;
} kiln_str;

/** A kiln_str over a NUL-terminated string (NULL gives the empty string). */
static inline kiln_str kiln_cstr(const char* s) {
  kiln_str r;
  r.data = s ? s : "";
  r.size = s ? strlen(s) : 0;
  return r;
}

/** The type of a plugin option, as declared in its schema and checked by the host. */
typedef enum kiln_option_type {
  KILN_OPTION_STRING = 1,
  KILN_OPTION_INT = 2,
  KILN_OPTION_FLOAT = 3, /**< an integer in the manifest is accepted too */
  KILN_OPTION_BOOL = 4,
  KILN_OPTION_STRING_LIST = 5,
  /**
   * A file, written in the manifest relative to the manifest's folder: the plugin gets the
   * absolute path in string_value ("" when the option is empty). The host checks that the file
   * exists, and a change to its content changes the fingerprint of every image it shapes. The
   * default must be "" (no file). @since 1.1
   */
  KILN_OPTION_PATH = 6,
} kiln_option_type;

/**
 * OR'ed into kiln_option_spec::type: the option cannot change an image (a timeout, a URL, a
 * token's name, a wait, a price), so it is left out of fingerprints: changing it makes nothing
 * again. Every other option of a backend or postprocessor is part of the fingerprint of every
 * image it makes: when in doubt, leave this out. Plugins from before 1.1 have none. @since 1.1
 */
#define KILN_OPTION_NOT_SHAPING 0x100u
/** The kiln_option_type part of kiln_option_spec::type, without the flags. */
#define KILN_OPTION_TYPE_MASK 0xffu

/**
 * One option a plugin accepts, from the manifest table of the same name as the plugin id
 * (`[backends.<id>]`, `[enhancers.<id>]`, `[strategies.<id>]`, `[validators.<id>]`,
 * `[postprocessors.<id>]`). The host rejects unknown options
 * (with a "did you mean") and values of the wrong type before the plugin is created.
 */
typedef struct kiln_option_spec {
  /** NUL-terminated option name, e.g. "min_stddev". */
  const char* name;
  /** NUL-terminated one-line help text, shown by `kiln plugins -v`. */
  const char* description;
  /** A kiln_option_type, maybe with KILN_OPTION_NOT_SHAPING (@since 1.1). */
  uint32_t type;
  /**
   * NUL-terminated default in text form ("4.0", "true", "icon,sprite" for a list), or NULL
   * when the option is required.
   */
  const char* default_value;
} kiln_option_spec;

/** The value of one option, as resolved by the host (manifest value, else the default). */
typedef struct kiln_option_value {
  kiln_str name;
  /** A kiln_option_type, always the declared one (without flags). */
  uint32_t type;
  /** KILN_OPTION_STRING; KILN_OPTION_PATH: the absolute path, or "" for none. */
  kiln_str string_value;
  /** KILN_OPTION_INT. */
  int64_t int_value;
  /** KILN_OPTION_FLOAT. */
  double float_value;
  /** KILN_OPTION_BOOL: 0 or 1. */
  int32_t bool_value;
  /** KILN_OPTION_STRING_LIST. */
  const kiln_str* list_values;
  size_t list_size;
} kiln_option_value;

/** Every option of the plugin's schema, each with a value. */
typedef struct kiln_options {
  const kiln_option_value* values;
  size_t count;
} kiln_options;

/** An asset as declared in the manifest, with defaults and its type applied. */
typedef struct kiln_asset {
  uint32_t struct_size;
  /** Output path below the output directory, without extension, e.g. "icons/sword". */
  kiln_str name;
  /** Asset type, e.g. "icon". */
  kiln_str type;
  /** The prompt as written in the manifest. */
  kiln_str prompt;
  /** The type's or asset's `negative`. */
  kiln_str negative;
  /** The type's or asset's `style`. */
  kiln_str style;
  kiln_str backend;
  kiln_str model;
  /** The output format: "png", "webp" or "jpg". */
  kiln_str format;
  uint32_t width;
  uint32_t height;
  /** Non-zero when `seed` is set. */
  int32_t has_seed;
  uint64_t seed;
  /** The asset's `params` table as a JSON object (keys sorted), "{}" when there is none. */
  kiln_str params_json;
  /** The asset's `fallback_models`, in the order the alternate-model strategy tries them. @since 1
   */
  const kiln_str* fallback_models;
  size_t fallback_model_count;
  /** The asset's `modifiers`: words the style enhancer appends after the type's style. @since 1 */
  const kiln_str* modifiers;
  size_t modifier_count;
  /** The asset's `postprocess` chain: postprocessor ids, in the order they run. @since 1.1 */
  const kiln_str* postprocess;
  size_t postprocess_count;
} kiln_asset;

/** What a backend is asked to make. */
typedef struct kiln_request {
  uint32_t struct_size;
  const kiln_asset* asset;
  /** The final prompt, after enhancers. */
  kiln_str prompt;
  /** The final negative prompt, after enhancers (may be empty). */
  kiln_str negative_prompt;
  kiln_str model;
  uint32_t width;
  uint32_t height;
  kiln_str format;
  int32_t has_seed;
  uint64_t seed;
  kiln_str params_json;
  /** Hex SHA-256 of everything that shapes the image. Same fingerprint, same request. */
  kiln_str fingerprint;
  /** A private directory for this request's temporary files; the host removes it. */
  kiln_str work_dir;
  /** Non-empty when the host asks the backend to re-attach to a remote job it reported earlier. */
  kiln_str resume_job_id;
  /**
   * 1 for the first attempt at this asset in this run, 2 for the first retry, and so on; lets a
   * backend retry a failure once and then call it permanent. @since 1
   */
  uint32_t attempt;
  /** The backend this request is for (a retry strategy may switch it). @since 1 */
  kiln_str backend;
  /**
   * Non-zero when an earlier run began creating a remote job for this very request and was
   * killed before it learnt the job's id: the job may exist and be paid for. A backend that can
   * find such a job (by listing recent jobs) re-attaches to it instead of creating another.
   * @since 1
   */
  int32_t lost_create;
} kiln_request;

/** A decoded image: 8-bit RGBA, rows `stride` bytes apart. */
typedef struct kiln_image {
  uint32_t width;
  uint32_t height;
  size_t stride;
  const uint8_t* pixels;
} kiln_image;

/** An encoded image file handed to a validator. */
typedef struct kiln_image_file {
  uint32_t struct_size;
  /** NUL-terminated path of the file. */
  kiln_str path;
  /** The whole file. */
  const uint8_t* bytes;
  size_t size;
  /** "png", "jpg", "webp", or "" when the bytes are none of those. */
  kiln_str detected_format;
  /** The fully decoded pixels, or NULL when decoding failed. */
  const kiln_image* image;
  /** Why decoding failed; empty when `image` is set. */
  kiln_str decode_error;
} kiln_image_file;

/** Opaque: where a plugin function puts its outcome, through the host's setters. */
typedef struct kiln_result kiln_result;

typedef enum kiln_log_level {
  KILN_LOG_DEBUG = 0,
  KILN_LOG_INFO = 1,
  KILN_LOG_WARNING = 2,
  KILN_LOG_ERROR = 3,
} kiln_log_level;

/** One HTTP header. */
typedef struct kiln_http_header {
  kiln_str name;
  kiln_str value;
} kiln_http_header;

/** An HTTP request for kiln_host_api::http_send. */
typedef struct kiln_http_request {
  uint32_t struct_size;
  /** "GET", "POST"... */
  kiln_str method;
  /** http(s):// or data: */
  kiln_str url;
  const kiln_http_header* headers;
  size_t header_count;
  kiln_str body;
  /** When non-empty, the body is streamed to this file (keep it inside the work_dir). */
  kiln_str output_path;
  /** Largest body accepted; 0 means the host's default (64 MiB). */
  uint64_t max_bytes;
  /** Whole-request timeout; 0 means the host's default (60 s). */
  uint32_t timeout_ms;
} kiln_http_request;

/** Opaque: an HTTP response owned by the host until http_free. */
typedef struct kiln_http_response kiln_http_response;

/**
 * Services the host offers to plugins. Passed to `create`; valid until `destroy`.
 * Every function may be called from any thread.
 */
typedef struct kiln_host_api {
  uint32_t struct_size;
  /** The host's KILN_PLUGIN_ABI_VERSION. */
  uint32_t abi_version;
  /** The host's version, e.g. "0.1.0" (NUL-terminated). */
  kiln_str kiln_version;

  /** Logs a line under the plugin's id. `result` may be NULL outside a call. @since 1 */
  void (*log)(kiln_result* result, uint32_t level, kiln_str message);

  /**
   * Marks the call as failed with a category and a message for the user. The message must not
   * contain secrets (tokens, signed URLs); the host redacts what it knows of, as a second line of
   * defence. @since 1
   */
  void (*fail)(kiln_result* result, uint32_t category, kiln_str message);
  /** With fail: the server's hint of how long to wait before retrying (milliseconds). @since 1 */
  void (*set_retry_after_ms)(kiln_result* result, int64_t milliseconds);

  /** Backend: the remote job id (e.g. a prediction id), as soon as it is known. @since 1 */
  void (*set_remote_id)(kiln_result* result, kiln_str remote_id);
  /** Backend: what this request really cost, in US dollars. @since 1 */
  void (*set_cost_usd)(kiln_result* result, double cost_usd);
  /** Backend: the generated image as pixels; the host copies them. @since 1 */
  void (*set_image)(kiln_result* result, const kiln_image* image);
  /**
   * Backend: the generated image as an encoded file (PNG, JPEG or WebP) the backend wrote inside
   * the request's work_dir. The host decodes it and converts it to the asset's size and format.
   * @since 1
   */
  void (*set_image_file)(kiln_result* result, kiln_str path);

  /** Enhancer, retry strategy: the new prompt. @since 1 */
  void (*set_prompt)(kiln_result* result, kiln_str prompt);
  /** Enhancer, retry strategy: the new negative prompt. @since 1 */
  void (*set_negative_prompt)(kiln_result* result, kiln_str negative_prompt);

  /**
   * Registers a secret (an API token...): the host replaces it with "[REDACTED]" in everything it
   * prints, reports or stores from then on. Call it in create(). @since 1
   */
  void (*add_secret)(kiln_result* result, kiln_str secret);

  /**
   * Sends one HTTP request with the host's timeouts, TLS verification, proxies, User-Agent and
   * size cap; `data:` URIs are answered too. Never retries (the host's retry layer decides).
   * Always returns a response, to be freed with http_free: its status is 0 when the transport
   * failed (see http_error). `result` is the call's result (may be the one given to create).
   * @since 1
   */
  kiln_http_response* (*http_send)(kiln_result* result, const kiln_http_request* request);
  /** The HTTP status, or 0 when no response arrived. @since 1 */
  int32_t (*http_status)(const kiln_http_response* response);
  /** The body (empty when streamed to output_path). Valid until http_free. @since 1 */
  kiln_str (*http_body)(const kiln_http_response* response);
  /** The last value of a header, case-insensitive; empty when absent. @since 1 */
  kiln_str (*http_header)(const kiln_http_response* response, kiln_str name);
  /**
   * With status 0: how the transport failed, a kiln_error_category (timeouts, resets and
   * truncated bodies are KILN_ERROR_RETRYABLE), and a message free of headers and query
   * strings. @since 1
   */
  uint32_t (*http_error_category)(const kiln_http_response* response);
  kiln_str (*http_error)(const kiln_http_response* response);
  void (*http_free)(kiln_http_response* response);
  /**
   * Sleeps up to `ms` milliseconds (0: just looks). Returns nonzero, early, once the run is being
   * interrupted (SIGINT, SIGTERM): a backend then cancels its remote job and fails with
   * KILN_ERROR_INTERRUPTED. Backends wait with this between polls. @since 1
   */
  int32_t (*wait_ms)(kiln_result* result, uint32_t ms);

  /*
   * Retry strategy: what the next request changes; fields not set stay as they were. With
   * set_retry_after_ms, a strategy asks the host to wait that long before the next attempt.
   */
  /** The model (the backend maps the request to that model's inputs). @since 1 */
  void (*set_model)(kiln_result* result, kiln_str model);
  /** The seed. @since 1 */
  void (*set_seed)(kiln_result* result, uint64_t seed);
  /** The params, a JSON object. @since 1 */
  void (*set_params_json)(kiln_result* result, kiln_str params_json);
  /** Another backend plugin, by id. @since 1 */
  void (*set_backend)(kiln_result* result, kiln_str backend);
  /**
   * Nonzero: the image that comes of this request is a stand-in, not the asset asked for; the
   * report and `kiln plan` flag it and the run fails unless the project allows fallbacks.
   * @since 1
   */
  void (*set_fallback)(kiln_result* result, int32_t fallback);

  /**
   * Validator, with fail(KILN_ERROR_VALIDATION): the image lacks `property` (a
   * kiln_image_property bit). The host then buys another image only when it can have that
   * property: the model paints it (kiln_backend_functions::paints), or a postprocessor of the
   * asset makes it. Otherwise the asset fails at once, with a hint naming a postprocessor that
   * would. @since 1.1
   */
  void (*set_missing_property)(kiln_result* result, uint32_t property);
  /**
   * Scales `source` to `width` x `height` into `pixels`, a buffer of width * height * 4 bytes the
   * caller owns (RGBA, rows width * 4 bytes apart), with the host's resampler: the same filter
   * that fits every image to its asset's size, gamma-correct and weighted by alpha, so a
   * transparent background leaves no fringe. Returns 0 on success, nonzero when a size is 0 or
   * too large. @since 1.1
   */
  int32_t (*scale_image)(const kiln_image* source, uint32_t width, uint32_t height,
                         uint8_t* pixels);
} kiln_host_api;

/** Backend capability bits. */
enum {
  /** The backend can re-attach to a remote job by id (see kiln_request::resume_job_id). */
  KILN_BACKEND_CAN_RESUME = 1u << 0,
  /** The backend costs nothing and needs no network (e.g. the placeholder). */
  KILN_BACKEND_OFFLINE = 1u << 1,
};

typedef struct kiln_backend_functions {
  uint32_t struct_size;
  /** Capability bits (KILN_BACKEND_*). @since 1 */
  uint32_t capabilities;
  /**
   * Makes the image for `request`: report it with set_image or set_image_file and its cost with
   * set_cost_usd; or fail with a category. Required. @since 1
   */
  kiln_status (*generate)(void* instance, const kiln_request* request, kiln_result* result);
  /**
   * Predicts the cost of `request` in US dollars without any network call, for `kiln plan` and
   * the budget. NULL means free. @since 1
   */
  double (*estimate_cost_usd)(void* instance, const kiln_request* request);
  /**
   * The kiln_image_property bits the model of `request` can paint by itself (0: none of them;
   * text-to-image models return opaque images that do not tile). The host buys no retry for a
   * missing property the model cannot paint and no postprocessor of the asset makes. NULL (or a
   * table from ABI 1.0): unknown, the host assumes KILN_PROPERTIES_ANY. No network call.
   * @since 1.1
   */
  uint32_t (*paints)(void* instance, const kiln_request* request);
} kiln_backend_functions;

typedef struct kiln_enhancer_functions {
  uint32_t struct_size;
  /**
   * Rewrites the prompt: call set_prompt / set_negative_prompt for what changes (not calling a
   * setter keeps that text). Must be deterministic: same inputs, same output. Required.
   * @since 1
   */
  kiln_status (*enhance)(void* instance, const kiln_asset* asset, kiln_str prompt,
                         kiln_str negative_prompt, kiln_result* result);
} kiln_enhancer_functions;

/** A failed attempt, as seen by a retry strategy. */
typedef struct kiln_failure {
  uint32_t struct_size;
  const kiln_request* request;
  /** A kiln_error_category. */
  uint32_t category;
  kiln_str message;
  /** 1 for the first attempt of the asset. */
  uint32_t attempt;
  /** The server's hint of how long to wait (milliseconds), or -1. @since 1 */
  int64_t retry_after_ms;
  /** Failures in a row of exactly this request, this one included (1 = first time). @since 1 */
  uint32_t same_request_failures;
  /** Failures in a row of this category for the asset, whatever the request (1 = this one). @since
   * 1 */
  uint32_t category_streak;
  /** How many retries this strategy has already proposed for this asset in this run. @since 1 */
  uint32_t proposals;
  /** Who failed: the backend's id, a validator's id, or "kiln" (decoding, converting). @since 1 */
  kiln_str source;
} kiln_failure;

typedef struct kiln_retry_strategy_functions {
  uint32_t struct_size;
  /**
   * Proposes the next request after `failure`: KILN_OK with the changes set through the result
   * setters (set_prompt, set_model, set_seed... and set_retry_after_ms for a wait), or
   * KILN_FAILED to give up and let the next strategy of the chain decide. The host asks the
   * chain's strategies in order after every failed attempt, so a strategy decides from the
   * failure's counters, not from memory of its own. Required. @since 1
   */
  kiln_status (*propose)(void* instance, const kiln_failure* failure, kiln_result* result);
} kiln_retry_strategy_functions;

typedef struct kiln_validator_functions {
  uint32_t struct_size;
  /**
   * Judges `file` against `asset`: KILN_OK to accept, or fail(result, KILN_ERROR_VALIDATION,
   * reason) and KILN_FAILED to reject. Fail with KILN_ERROR_PERMANENT when no image could pass
   * (the asset's settings contradict the check), so that no new image is paid for. Required.
   * @since 1
   */
  kiln_status (*validate)(void* instance, const kiln_asset* asset, const kiln_image_file* file,
                          kiln_result* result);
} kiln_validator_functions;

typedef struct kiln_postprocessor_functions {
  uint32_t struct_size;
  /**
   * The kiln_image_property bits every image this postprocessor returns has (KILN_PROPERTY_ALPHA
   * for a background remover...), so the host knows which validator failures it can fix.
   * @since 1.1
   */
  uint32_t provides;
  /**
   * Makes `image` game-ready for `asset`: report the new pixels with set_image (any size: the
   * host scales the last postprocessor's image to cover the asset's width and height and crops
   * the overflow, a no-op when it already has that size), or set nothing to keep the image as it
   * is. `image` is 8-bit RGBA at the model's resolution or an earlier postprocessor's. Fail with
   * KILN_ERROR_VALIDATION when this image cannot be processed but another might be (a subject
   * that fills the frame), KILN_ERROR_PERMANENT when no image could (an option contradicts the
   * asset). Must be deterministic: same image and options, same pixels. Required. @since 1.1
   */
  kiln_status (*process)(void* instance, const kiln_asset* asset, const kiln_image* image,
                         kiln_result* result);
  /**
   * What the prompt must ask the model for so that process() can do its work, e.g. "isolated on
   * a plain white background" for a background remover: set it with set_prompt (nothing set: no
   * hint). The host appends each postprocessor's hint to the prompt after the enhancers, unless
   * the prompt already says it, so it is part of the final prompt and of the fingerprint. NULL:
   * no hint. Must be deterministic. @since 1.1
   */
  kiln_status (*prompt_hint)(void* instance, const kiln_asset* asset, kiln_result* result);
} kiln_postprocessor_functions;

/** What `kiln_plugin_entry` returns. Static; lives as long as the library. */
typedef struct kiln_plugin_info {
  /** KILN_PLUGIN_ABI_VERSION the plugin was built against. Must stay the first field. */
  uint32_t abi_version;
  /** sizeof(kiln_plugin_info) as the plugin saw it. Must stay the second field. */
  uint32_t struct_size;
  /** A kiln_plugin_kind. */
  uint32_t kind;
  /** NUL-terminated id used in manifests: lowercase letters, digits and '-', e.g. "not-blank". */
  const char* id;
  /** NUL-terminated version of the plugin, e.g. "1.2.0". Part of every fingerprint it shapes. */
  const char* version;
  /** NUL-terminated one-line description for `kiln plugins`. */
  const char* description;
  /** The options the plugin accepts (may be NULL when option_count is 0). */
  const kiln_option_spec* options;
  size_t option_count;
  /**
   * Creates an instance from resolved options. On failure call host->fail and return
   * KILN_FAILED. Required.
   */
  kiln_status (*create)(const kiln_host_api* host, const kiln_options* options, void** instance,
                        kiln_result* result);
  /** Destroys an instance made by create. Required. */
  void (*destroy)(void* instance);
  /** The kind's function table: kiln_backend_functions, kiln_validator_functions... */
  const void* functions;
  /**
   * KILN_PLUGIN_ABI_MINOR the plugin was built against. A plugin from before minor 1 has no such
   * field (its struct_size ends before it): the host reads that as minor 0. @since 1.1
   */
  uint32_t abi_minor;
} kiln_plugin_info;

/** The type of the entry symbol. */
typedef const kiln_plugin_info* (*kiln_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* KILN_PLUGIN_H */
