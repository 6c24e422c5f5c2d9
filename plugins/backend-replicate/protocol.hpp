// Replicate's HTTP API as data: model references, the inputs each known model takes, prices,
// prediction objects and problem answers. No I/O here, so all of it is unit-tested directly
// (tests/unit/replicate_protocol_test.cpp); replicate.cpp does the talking.
#pragma once

#include <kiln/kiln.hpp>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::replicate {

// "owner/name" (an official model, run through /models/{owner}/{name}/predictions),
// "owner/name:<64 hex>" or a bare "<64 hex>" (run through /predictions with "version").
struct ModelRef {
  std::string name;    // "owner/name"; empty for a bare version
  std::string version; // 64 hex digits; empty for an official model
  bool official() const { return version.empty(); }
};
// nullopt when `text` is none of the three forms.
std::optional<ModelRef> parse_model_ref(std::string_view text);

// Models whose inputs Kiln maps from an asset's size and prompts; others get `params` as given.
enum class Family { Flux, Sdxl, Other };
Family family_of(const ModelRef& model);

constexpr std::string_view k_flux_schnell = "black-forest-labs/flux-schnell";
constexpr std::string_view k_sdxl = "stability-ai/sdxl";
constexpr std::string_view k_sdxl_version =
    "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc";

// flux-schnell's nearest aspect ratio to w:h, and the smallest megapixel setting whose image
// still covers w x h (so the host only ever scales down, when it can).
struct FluxShape {
  std::string aspect_ratio;       // "16:9"
  std::string megapixels;         // "1" or "0.25"
  uint32_t width = 0, height = 0; // what the model will return
};
FluxShape flux_shape(uint32_t width, uint32_t height);

// SDXL's width and height for an asset: its aspect ratio at about one megapixel (the size SDXL
// was trained at), each side a multiple of 8.
std::pair<uint32_t, uint32_t> sdxl_size(uint32_t width, uint32_t height);

// The `input` object for a request: prompt, seed and the model's own fields, then the asset's
// `params` on top (params win). Throws kiln::Error when params_json is not an object.
std::string input_json(const Request& request, Family family);

// How many images a request asks for (`num_outputs` in params, else 1).
int requested_outputs(const Request& request);

// Price per model: flux-schnell per output image, SDXL per second of predict_time.
struct Price {
  enum Unit { PerImage, PerSecond } unit = PerImage;
  double usd = 0;
  double typical_s = 0; // PerSecond: the run time `kiln plan` predicts with
};
using PriceTable = std::map<std::string, Price, std::less<>>;
PriceTable default_prices();
// Adds or replaces one entry written as "owner/name: 0.003 per image" or
// "owner/name: 0.000725 per second, 11 s typical". Throws kiln::Error saying what is wrong.
void add_price(PriceTable& table, std::string_view entry);
// The entry for a model (by name, else by version), or null.
const Price* find_price(const PriceTable& table, const ModelRef& model);

// The fields of a prediction object Kiln acts on.
struct Prediction {
  std::string id;
  std::string status; // starting | processing | succeeded | failed | canceled | aborted
  std::string error;
  std::vector<std::string> output; // URLs or data: URIs
  bool data_removed = false;
  std::optional<double> predict_time_s;
  std::string get_url, cancel_url;

  bool terminal() const {
    return status == "succeeded" || status == "failed" || status == "canceled" ||
           status == "aborted";
  }
};
// nullopt when `body` is not a prediction object (no id or status).
std::optional<Prediction> parse_prediction(std::string_view body);
// Whether `id` looks like a Replicate prediction id (lowercase letters and digits, at most 64):
// anything else never goes into a URL or the journal.
bool valid_prediction_id(std::string_view id);

// Why the token must not be sent to `url`, or nullopt: https:// to any host, http:// only to
// this machine (localhost, 127.x, [::1]), never with credentials in it. Its host in `host`.
std::optional<std::string> base_url_problem(std::string_view url, std::string* host = nullptr);
// Why `name` may not be read as the token, or nullopt: only variables naming REPLICATE, or KILN_*,
// so a manifest cannot name AWS_SECRET_ACCESS_KEY and send it to its base_url.
std::optional<std::string> token_env_problem(std::string_view name);
// localhost, [::1] or 127.x.y.z.
bool is_loopback_host(std::string_view host);

// What a create's answer says about money. Replicate has no idempotency key: only a prediction
// object (Created) or a definite refusal (429, 401, 402, any 4xx but 408: nothing was created)
// settle it. No answer, a 5xx or 408 (often a proxy's HTML page) and a 2xx whose body is not a
// prediction leave the prediction possibly created, and billed: Unknown, look for it.
// BadId: a 2xx prediction whose id Kiln will not put in a URL: created, never to be followed.
enum class CreateAnswer { Created, Refused, Unknown, BadId };
CreateAnswer classify_create_answer(int status, std::string_view body);

// How a lost create's prediction is told apart from older ones of the same request.
struct LostSearch {
  // Only predictions created at or after this time (seconds since the epoch, on the server's
  // clock): those of this create, not an older identical one. None: no bound (a killed run's
  // create, whose time is unknown).
  std::optional<double> created_after;
  // Ids already accounted for (predictions this run created or re-attached to).
  std::vector<std::string> exclude;
};

// In a page of GET /predictions (newest first), the newest prediction of `model` whose input is
// exactly `input_json`, which may still deliver and which `search` allows: how a create whose
// answer was lost is found again instead of being paid for twice.
std::optional<std::string> find_lost_prediction(std::string_view list_body, const ModelRef& model,
                                                std::string_view input_json,
                                                const LostSearch& search = {});

// Seconds since the epoch of an ISO 8601 UTC time as Replicate writes `created_at`
// ("2024-05-01T12:00:00.123456Z", also "+00:00" or another offset); nullopt if unreadable.
std::optional<double> parse_iso_time(std::string_view text);
// Seconds since the epoch of an HTTP date ("Thu, 01 Jan 2009 00:00:00 GMT"); nullopt if not one.
std::optional<double> parse_http_date(std::string_view text);

// An RFC 7807 answer: title, detail, invalid_fields, retry_after (seconds, 429 only).
struct Problem {
  std::string title;
  std::string detail;
  std::vector<std::string> invalid_fields; // "input.num_inference_steps (number_lte)"
  double retry_after_s = -1;
};
// Whatever of it the body holds; a non-JSON body (a gateway's HTML page) gives its first line.
Problem parse_problem(std::string_view body);

// The wait a 429 asks for: `retry_after` in the body, else a Retry-After header (seconds or an
// HTTP date); -1 when neither is there.
int64_t retry_after_ms(const Problem& problem, std::string_view retry_after_header);

// "Cancel-After" for a bound in seconds: "5m", "90s", "1h30m". Replicate's minimum is 5 s.
std::string cancel_after(uint32_t seconds);

} // namespace kiln::replicate
