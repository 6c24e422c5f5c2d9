// The Replicate backend: one prediction per asset through Replicate's HTTP API, spoken through
// the host's HTTP service (which owns TLS, proxies, timeouts and redaction).
//
// Money rules, in order of importance:
// - a prediction id is reported to the host (set_remote_id) the moment it is known, and while
//   Kiln holds an id that may still succeed it never creates another: it waits, re-fetches, or
//   cancels first (timeout, Ctrl-C);
// - a resumed request (resume_job_id) re-attaches to its prediction and only creates a new one
//   when that prediction can no longer deliver (failed, cancelled, outputs removed);
// - Replicate has no idempotency key, so a create whose answer is not a prediction (no answer,
//   a 5xx or 408, a 2xx with a body that is not a prediction: a proxy gave up after the server
//   had created it) may have created one, billed: it is looked for among the newest predictions,
//   twice, and re-attached to if found. So is the create of a killed run (lost_create). Only a
//   definite refusal (429, 401, 402, other 4xx) is known to have created nothing;
// - downloads are free, predictions are not: a failed download is a retryable failure whose
//   retry (the host's one retry loop) re-attaches to the same prediction and downloads again.
#include "protocol.hpp"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <kiln/kiln.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

using namespace kiln::replicate;
using kiln::Error;
using Clock = std::chrono::steady_clock;

bool contains_nocase(std::string_view haystack, std::string_view needle) {
  auto lower = [](char c) {
    return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
  };
  for (size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    size_t k = 0;
    while (k < needle.size() && lower(haystack[i + k]) == lower(needle[k]))
      ++k;
    if (k == needle.size())
      return true;
  }
  return false;
}

std::string describe(const Problem& problem) {
  std::string text = problem.detail.empty() ? problem.title : problem.detail;
  if (!problem.invalid_fields.empty()) {
    text += text.empty() ? "[invalid fields: " : " [invalid fields: ";
    for (size_t i = 0; i < problem.invalid_fields.size(); ++i)
      text += (i ? ", " : "") + problem.invalid_fields[i];
    text += "]";
  }
  return text;
}

struct Settings {
  std::string token_env;
  std::string token;
  std::string base_url;
  std::string default_model;
  uint32_t sync_wait_s = 10;
  uint32_t timeout_s = 300;
  uint64_t max_download_bytes = 64ull << 20;
  PriceTable prices;
};

// What every request of the run learns. The token is checked once, with the free
// GET /account, before the first prediction: a wrong token costs one request, not one per asset.
struct SharedState {
  enum class Token { Unchecked, Usable, Rejected };
  std::mutex token_mutex;
  Token token = Token::Unchecked;
  std::string rejection;
  std::atomic<bool> warned_unpriced{false};

  // Every prediction this run created or re-attached to: a lost create's search skips them, as
  // they belong to other attempts (an older identical request whose image was rejected).
  void remember(const std::string& id) {
    std::lock_guard lock(ids_mutex);
    ids.push_back(id);
  }
  std::vector<std::string> known_ids() {
    std::lock_guard lock(ids_mutex);
    return ids;
  }

private:
  std::mutex ids_mutex;
  std::vector<std::string> ids;
};

// One asset's request: create (or re-attach), wait, charge, download.
class Job {
public:
  Job(const Settings& settings, SharedState& shared, const kiln::Request& request,
      kiln::BackendResult& out)
      : m_s(settings), m_shared(shared), m_request(request), m_out(out), m_start(Clock::now()) {}

  void run() {
    std::string model_text(m_request.model.empty() ? m_s.default_model : m_request.model);
    auto model = parse_model_ref(model_text);
    if (!model)
      throw Error("model '" + model_text +
                  "' is not a Replicate model reference (owner/name, owner/name:<version> or a "
                  "64-digit version id)");
    m_model = *model;
    m_expected_outputs = requested_outputs(m_request);
    if (m_s.token.empty())
      throw Error("the environment variable " + m_s.token_env +
                      " is not set: Replicate needs an API token (create one at "
                      "https://replicate.com/account/api-tokens, or build with --backend "
                      "placeholder)",
                  KILN_ERROR_NEEDS_PERSON);
    check_token();

    Prediction p;
    if (!m_request.resume_job_id.empty())
      p = reattach(std::string(m_request.resume_job_id));
    if (p.id.empty() && m_request.lost_create)
      p = find_lost_create(input_json(m_request, family_of(m_model)), std::nullopt);
    if (p.id.empty())
      p = create();
    p = wait(std::move(p));
    charge(p);
    finish(p);
  }

private:
  std::string prediction_url(const std::string& id, const char* suffix = "") const {
    // Built from base_url, never from URLs in answers: the token only goes where it was meant.
    return m_s.base_url + "/predictions/" + id + suffix;
  }

  kiln::HttpResponse api(const std::string& method, const std::string& url,
                         const std::string& body = {}, uint32_t timeout_ms = 30000,
                         std::vector<std::pair<std::string, std::string>> extra = {}) {
    kiln::HttpRequest req;
    req.method = method;
    req.url = url;
    req.headers = {{"Authorization", "Bearer " + m_s.token}};
    if (method == "POST")
      req.headers.emplace_back("Content-Type", "application/json");
    for (auto& h : extra)
      req.headers.push_back(std::move(h));
    req.body = body;
    req.timeout_ms = timeout_ms;
    req.read_headers = {"retry-after", "preference-applied", "date"};
    return m_out.http().send(req);
  }

  void check_token() {
    std::lock_guard lock(m_shared.token_mutex);
    if (m_shared.token == SharedState::Token::Rejected)
      throw Error("not sent: " + m_shared.rejection);
    if (m_shared.token == SharedState::Token::Usable)
      return;
    kiln::HttpResponse r = api("GET", m_s.base_url + "/account");
    if (r.status == 401 || r.status == 403) {
      m_shared.token = SharedState::Token::Rejected;
      m_shared.rejection = "Replicate rejected the token in " + m_s.token_env + " (HTTP " +
                           std::to_string(r.status) + ": " + describe(parse_problem(r.body)) + ")";
      throw Error(m_shared.rejection);
    }
    // Anything else (even an outage) leaves the verdict to the first create.
    m_shared.token = SharedState::Token::Usable;
  }

  // Turns a non-success answer into the error the retry layer acts on.
  [[noreturn]] void fail_http(const kiln::HttpResponse& r, const std::string& what) {
    if (r.status == 0)
      throw Error(what + ": " + r.error, r.error_category);
    Problem problem = parse_problem(r.body);
    std::string text = what + ": HTTP " + std::to_string(r.status) + ": " + describe(problem);
    switch (r.status) {
    case 401: {
      std::lock_guard lock(m_shared.token_mutex);
      m_shared.token = SharedState::Token::Rejected;
      m_shared.rejection = "Replicate rejected the token in " + m_s.token_env +
                           " (HTTP 401: " + describe(problem) + ")";
      throw Error(what + ": " + m_shared.rejection);
    }
    case 402:
      throw Error(text, KILN_ERROR_NEEDS_PERSON);
    case 408:
    case 429:
      throw Error(text, KILN_ERROR_RETRYABLE, retry_after_ms(problem, r.header("retry-after")));
    default:
      if (r.status >= 500)
        throw Error(text, KILN_ERROR_RETRYABLE, retry_after_ms(problem, r.header("retry-after")));
      throw Error(text); // 400, 403, 404, 422...: the same request fails again
    }
  }

  Prediction create() {
    std::string input = input_json(m_request, family_of(m_model));
    std::string body = "{";
    if (!m_model.official())
      body += "\"version\":\"" + m_model.version + "\",";
    body += "\"input\":" + input + "}";
    std::string url = m_model.official() ? m_s.base_url + "/models/" + m_model.name + "/predictions"
                                         : m_s.base_url + "/predictions";
    std::vector<std::pair<std::string, std::string>> headers = {
        // The server cancels a runaway prediction even if this process dies.
        {"Cancel-After", cancel_after(m_s.timeout_s + 60)}};
    uint32_t timeout_ms = 30000;
    if (m_s.sync_wait_s > 0) {
      headers.emplace_back("Prefer", "wait=" + std::to_string(m_s.sync_wait_s));
      timeout_ms += m_s.sync_wait_s * 1000;
    }
    m_out.log(KILN_LOG_DEBUG,
              "creating a prediction of " + describe_model() + " with input " + input);
    double sent_at = epoch_now();
    kiln::HttpResponse r = api("POST", url, body, timeout_ms, std::move(headers));
    std::string what = "creating a prediction of " + describe_model();
    switch (classify_create_answer(r.status, r.body)) {
    case CreateAnswer::Created:
      break;
    case CreateAnswer::Refused:
      fail_http(r, what);
    case CreateAnswer::BadId:
      throw Error(what + ": the server answered with a prediction id that is not Replicate's "
                         "(letters and digits): it cannot be followed, and it is not created "
                         "again (it may have been billed)",
                  KILN_ERROR_PERMANENT);
    case CreateAnswer::Unknown: {
      m_out.log(KILN_LOG_DEBUG, what + ": " +
                                    (r.status ? "HTTP " + std::to_string(r.status) : r.error) +
                                    "; it may have been created: looking for it among the newest");
      Prediction found = find_lost_create(input, sent_at);
      if (!found.id.empty())
        return found;
      // Not created (as far as two looks can tell): fail as usual; the host's retry creates.
      what += " (not among the newest predictions after " +
              std::to_string(k_lost_create_grace_ms / 1000) + " s: not created)";
      if (r.status < 200 || r.status >= 300)
        fail_http(r, what);
      throw Error(what + ": HTTP " + std::to_string(r.status) +
                      ": the answer is not a prediction object",
                  KILN_ERROR_RETRYABLE);
    }
    }
    auto p = parse_prediction(r.body);
    m_out.set_remote_id(p->id);
    m_shared.remember(p->id);
    m_out.log(KILN_LOG_DEBUG, "prediction " + p->id + " is " + p->status);
    return *p;
  }

  static double epoch_now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  // A create that may have created a prediction without Kiln learning its id: one of this run
  // whose answer was not a prediction (`sent_at`: when it was sent, on this machine's clock), or
  // one of a killed run (lost_create; `sent_at` unknown). The server may register it late: a
  // proxy's 504 can come before the server is done, and a killed run's request may still be on
  // its way (seen in tests as one duplicate in about forty kill-restart cycles). So when the
  // newest predictions do not show it, look once more after a grace period; paying twice is
  // not cheap. An empty prediction when neither look finds it.
  Prediction find_lost_create(const std::string& input, std::optional<double> sent_at) {
    for (int look = 0; look < 2; ++look) {
      if (look == 1 && !m_out.wait_ms(k_lost_create_grace_ms))
        throw Error("interrupted while looking for a lost prediction", KILN_ERROR_INTERRUPTED);
      if (auto found = find_lost(input, sent_at))
        return std::move(*found);
    }
    return {};
  }
  static constexpr uint32_t k_lost_create_grace_ms = 2000;

  // One look at the newest predictions for one of this model and input, re-attached to if it
  // can still deliver. Only predictions created after `sent_at` count: an older identical one
  // (an earlier run's, which --force asked to replace, or an earlier attempt's whose image was
  // rejected) is not this create's, and re-attaching to it would deliver its image again instead
  // of a new one. The bound is applied here, not with the list's `created_after` filter, so that
  // it compares the server's `created_at` with the server's own clock (this answer's Date
  // header): a machine whose clock runs ahead would otherwise filter out the very prediction it
  // paid for. For a killed run's create there is no bound: its time is not journaled, and an
  // identical request's image is as valid (the cost of a rare case, not a second payment).
  std::optional<Prediction> find_lost(const std::string& input, std::optional<double> sent_at) {
    kiln::HttpResponse list = api("GET", m_s.base_url + "/predictions");
    if (list.status != 200) {
      m_out.log(KILN_LOG_DEBUG,
                "listing the newest predictions: " +
                    (list.status ? "HTTP " + std::to_string(list.status) : list.error));
      return std::nullopt;
    }
    LostSearch search;
    search.exclude = m_shared.known_ids();
    if (sent_at) {
      // Date has whole seconds and is stamped before the answer arrives: server time minus
      // local time is at least date - now, so the bound never lies after the create was sent.
      auto date = parse_http_date(list.header("date"));
      double offset = date ? *date - epoch_now() : -k_clock_tolerance_s;
      search.created_after = *sent_at + offset - 1.0;
    }
    auto id = find_lost_prediction(list.body, m_model, input, search);
    if (!id)
      return std::nullopt;
    // Reported at once: the host journals it, so even a failure from here on re-attaches.
    m_out.set_remote_id(*id);
    m_out.log(KILN_LOG_WARNING, "the answer to a create was lost; found its prediction " + *id);
    Prediction p = reattach(*id);
    if (p.id.empty())
      return std::nullopt;
    return p;
  }
  // Without a Date header, this machine's clock is trusted to within this.
  static constexpr double k_clock_tolerance_s = 60;

  // The prediction of an earlier attempt or run, if it can still deliver; else an empty one.
  Prediction reattach(const std::string& id) {
    // The id comes from Kiln's journal, a file on disk: checked as an answer's id is before it
    // goes into a URL ('../../x' would send the token elsewhere on the host).
    if (!valid_prediction_id(id)) {
      m_out.log(KILN_LOG_WARNING, "the journal's job id for this asset is not a Replicate "
                                  "prediction id; not re-attaching to it");
      return {};
    }
    kiln::HttpResponse r = api("GET", prediction_url(id));
    if (r.status == 404)
      return {};
    if (r.status != 200)
      fail_http(r, "re-attaching to prediction " + id);
    auto p = parse_prediction(r.body);
    if (!p || (p->terminal() && (p->status != "succeeded" || p->output.empty()))) {
      m_out.log(KILN_LOG_DEBUG,
                "prediction " + id + " cannot deliver any more; creating a new one");
      return {};
    }
    m_out.set_remote_id(p->id);
    m_shared.remember(p->id);
    m_out.log(KILN_LOG_INFO, "re-attached to prediction " + id + " (" + p->status + ")");
    return *p;
  }

  bool complete(const Prediction& p) const {
    // Sync answers of image models often still say "processing" with the output complete.
    return p.status == "succeeded" || (!p.terminal() && int(p.output.size()) >= m_expected_outputs);
  }

  double elapsed_s() const { return std::chrono::duration<double>(Clock::now() - m_start).count(); }

  Prediction wait(Prediction p) {
    uint32_t interval_ms = 500;
    std::string last_problem;
    while (!p.terminal() && !complete(p)) {
      if (elapsed_s() > m_s.timeout_s) {
        cancel(p.id);
        throw Error("prediction " + p.id + " did not finish within " +
                        std::to_string(m_s.timeout_s) + " s" +
                        (last_problem.empty() ? "" : " (last poll: " + last_problem + ")") +
                        "; cancelled it",
                    KILN_ERROR_RETRYABLE);
      }
      if (!m_out.wait_ms(interval_ms)) {
        cancel(p.id);
        throw Error("interrupted; cancelled prediction " + p.id, KILN_ERROR_INTERRUPTED);
      }
      interval_ms = std::min<uint32_t>(interval_ms * 5 / 4, 2000);
      kiln::HttpResponse r = api("GET", prediction_url(p.id));
      if (r.status == 200) {
        if (auto next = parse_prediction(r.body)) {
          if (next->status != p.status)
            m_out.log(KILN_LOG_DEBUG, "prediction " + p.id + " is " + next->status);
          p = std::move(*next);
          continue;
        }
        last_problem = "an answer that is not a prediction";
        continue;
      }
      // Polls are free and the prediction may still succeed: keep polling through throttling,
      // server errors and network trouble until the timeout.
      bool transient = r.status == 429 || r.status >= 500 ||
                       (r.status == 0 && r.error_category == KILN_ERROR_RETRYABLE);
      if (!transient)
        fail_http(r, "polling prediction " + p.id);
      last_problem = r.status ? "HTTP " + std::to_string(r.status) : r.error;
      if (r.status == 429) {
        int64_t hint = retry_after_ms(parse_problem(r.body), r.header("retry-after"));
        if (hint > 0 && !m_out.wait_ms(uint32_t(std::min<int64_t>(hint, 60000)))) {
          cancel(p.id);
          throw Error("interrupted; cancelled prediction " + p.id, KILN_ERROR_INTERRUPTED);
        }
      }
    }
    return p;
  }

  void cancel(const std::string& id) {
    kiln::HttpResponse r = api("POST", prediction_url(id, "/cancel"));
    if (r.status == 200)
      m_out.log(KILN_LOG_DEBUG, "cancelled prediction " + id);
    else
      m_out.log(KILN_LOG_WARNING, "could not cancel prediction " + id + " (" +
                                      (r.status ? "HTTP " + std::to_string(r.status) : r.error) +
                                      "); Replicate's Cancel-After bound will stop it");
  }

  void charge(Prediction& p) {
    const Price* price = find_price(m_s.prices, m_model);
    if (!price) {
      if (!m_shared.warned_unpriced.exchange(true))
        m_out.log(KILN_LOG_WARNING, "no price known for " + describe_model() +
                                        "; its cost is not counted (add it to "
                                        "[backends.replicate] prices)");
      return;
    }
    if (price->unit == Price::PerImage) {
      if (complete(p))
        m_out.set_cost_usd(price->usd * double(p.output.size()));
      return;
    }
    // Billed per second of compute, failed runs included. A sync answer carries no metrics yet:
    // they come with the final state, a moment later.
    for (int i = 0; !p.predict_time_s && i < 10 && p.status != "aborted"; ++i) {
      if (!m_out.wait_ms(i == 0 ? 200 : 500))
        break;
      kiln::HttpResponse r = api("GET", prediction_url(p.id));
      if (r.status != 200)
        continue;
      if (auto next = parse_prediction(r.body); next && next->predict_time_s)
        p.predict_time_s = next->predict_time_s;
    }
    if (p.predict_time_s) {
      m_out.set_cost_usd(price->usd * *p.predict_time_s);
    } else if (p.status != "aborted") {
      m_out.log(KILN_LOG_WARNING, "prediction " + p.id +
                                      " reported no predict_time; counting the typical " +
                                      std::to_string(int(price->typical_s)) + " s");
      m_out.set_cost_usd(price->usd * price->typical_s);
    }
  }

  void finish(const Prediction& p) {
    std::string name = "prediction " + p.id;
    if (complete(p)) {
      if (p.output.empty())
        throw Error(name + " succeeded but its output " +
                        (p.data_removed ? "was already removed (data_removed)" : "is empty"),
                    KILN_ERROR_RETRYABLE);
      m_out.set_image_file(download(p));
      return;
    }
    if (p.status == "failed") {
      if (contains_nocase(p.error, "nsfw"))
        throw Error(name + " failed: " + p.error, KILN_ERROR_CONTENT_POLICY);
      // A model failure may be a fluke (out of memory, a bad node): once more, then permanent.
      throw Error(name + " failed: " + (p.error.empty() ? "no reason given" : p.error),
                  m_request.attempt <= 1 ? KILN_ERROR_RETRYABLE : KILN_ERROR_PERMANENT);
    }
    if (p.status == "aborted")
      throw Error(name + " was aborted before it started", KILN_ERROR_RETRYABLE);
    throw Error(name + " was cancelled outside Kiln (on replicate.com, or by its Cancel-After "
                       "bound)",
                m_request.attempt <= 1 ? KILN_ERROR_RETRYABLE : KILN_ERROR_PERMANENT);
  }

  // Downloads the first output into the work folder. Outputs expire an hour after the
  // prediction ends, so this happens at once. A transient failure is retryable: the host's
  // retry re-attaches to this prediction (resume_job_id) and downloads again, for free.
  std::string download(const Prediction& p) {
    const std::string& url = p.output.front();
    std::string ext = "img";
    for (const char* e : {".webp", ".png", ".jpg", ".jpeg"})
      if (url.size() > std::strlen(e) &&
          url.compare(url.size() - std::strlen(e), std::string::npos, e) == 0)
        ext = e + 1;
    std::string path = std::string(m_request.work_dir) + "/output." + ext;
    kiln::HttpRequest get;
    get.url = url; // no Authorization: delivery URLs are public, the token stays with the API
    get.output_path = path;
    get.max_bytes = m_s.max_download_bytes;
    get.timeout_ms = 120000;
    kiln::HttpResponse r = m_out.http().send(get);
    if (r.status == 200)
      return path;
    if (r.status == 404 || r.status == 410)
      throw Error("the output of prediction " + p.id + " is gone (HTTP " +
                      std::to_string(r.status) + "); outputs expire an hour after completion",
                  KILN_ERROR_RETRYABLE);
    std::string problem = r.status ? "HTTP " + std::to_string(r.status) : r.error;
    bool transient = r.status == 429 || r.status >= 500 ||
                     (r.status == 0 && r.error_category == KILN_ERROR_RETRYABLE);
    throw Error("downloading the output of prediction " + p.id + ": " + problem +
                    (transient ? " (the prediction is kept: a retry downloads it again)" : ""),
                transient ? KILN_ERROR_RETRYABLE : KILN_ERROR_PERMANENT);
  }

  std::string describe_model() const {
    return m_model.name.empty() ? m_model.version : m_model.name;
  }

  const Settings& m_s;
  SharedState& m_shared;
  const kiln::Request& m_request;
  kiln::BackendResult& m_out;
  Clock::time_point m_start;
  ModelRef m_model;
  int m_expected_outputs = 1;
};

class Replicate : public kiln::Backend {
public:
  static constexpr uint32_t k_capabilities = KILN_BACKEND_CAN_RESUME;

  explicit Replicate(const kiln::Context& context)
      : m_settings(std::make_shared<Settings>()), m_shared(std::make_shared<SharedState>()) {
    const kiln::Options& o = context.options();
    Settings& s = *m_settings;
    s.token_env = o.get_string("token_env");
    if (auto why = token_env_problem(s.token_env))
      throw Error("token_env " + *why);
    // The token is read here and checked when the first image is asked for, so `kiln plan` and
    // builds with nothing to generate work without one.
    if (const char* token = std::getenv(s.token_env.c_str()))
      s.token = token;
    if (!s.token.empty())
      context.add_secret(s.token);
    s.base_url = o.get_string("base_url");
    while (!s.base_url.empty() && s.base_url.back() == '/')
      s.base_url.pop_back();
    std::string host;
    if (auto why = base_url_problem(s.base_url, &host))
      throw Error("base_url " + *why);
    if (host != "api.replicate.com" && !is_loopback_host(host))
      context.log(KILN_LOG_WARNING, "base_url sends the Replicate token to " + host +
                                        ", not api.replicate.com: make sure you trust it");
    s.default_model = o.get_string("model");
    if (!parse_model_ref(s.default_model))
      throw Error("model '" + s.default_model + "' is not a Replicate model reference");
    int64_t wait = o.get_int("sync_wait_s");
    if (wait < 0 || wait > 60)
      throw Error("sync_wait_s must be between 0 (poll only) and 60");
    s.sync_wait_s = uint32_t(wait);
    int64_t timeout = o.get_int("timeout_s");
    if (timeout < 5)
      throw Error("timeout_s must be at least 5");
    s.timeout_s = uint32_t(timeout);
    int64_t cap = o.get_int("max_download_mb");
    if (cap < 1)
      throw Error("max_download_mb must be at least 1");
    s.max_download_bytes = uint64_t(cap) << 20;
    s.prices = default_prices();
    for (auto& entry : o.get_list("prices"))
      add_price(s.prices, entry);
  }

  // Only `model` can change an image; the rest are how and where to ask, and what it costs.
  static kiln::OptionSchema options() {
    constexpr uint32_t k_not_shaping = KILN_OPTION_NOT_SHAPING;
    return {
        {"token_env", "environment variable holding the API token",
         KILN_OPTION_STRING | k_not_shaping, "REPLICATE_API_TOKEN"},
        {"base_url", "the API's base URL", KILN_OPTION_STRING | k_not_shaping,
         "https://api.replicate.com/v1"},
        {"model", "model for assets that name none", KILN_OPTION_STRING,
         "black-forest-labs/flux-schnell"},
        {"sync_wait_s", "seconds a create may wait for the result (Prefer: wait); 0 = poll",
         KILN_OPTION_INT | k_not_shaping, "10"},
        {"timeout_s", "seconds before an unfinished prediction is cancelled",
         KILN_OPTION_INT | k_not_shaping, "300"},
        {"max_download_mb", "largest output file accepted", KILN_OPTION_INT | k_not_shaping, "64"},
        {"prices",
         "extra or corrected prices: \"owner/name: 0.003 per image\", \"owner/name: 0.000725 "
         "per second, 11 s typical\"",
         KILN_OPTION_STRING_LIST | k_not_shaping, ""},
    };
  }

  void generate(const kiln::Request& request, kiln::BackendResult& result) override {
    Job(*m_settings, *m_shared, request, result).run();
  }

  double estimate_cost_usd(const kiln::Request& request) override {
    std::string text(request.model.empty() ? m_settings->default_model : request.model);
    auto model = parse_model_ref(text);
    const Price* price = model ? find_price(m_settings->prices, *model) : nullptr;
    if (!price)
      return 0;
    if (price->unit == Price::PerImage)
      return price->usd * requested_outputs(request);
    return price->usd * price->typical_s;
  }

  // flux and SDXL return opaque RGB that does not tile, whatever the prompt asks ("transparent
  // background" gets a painted checkerboard): a retry cannot add either. Other models: unknown.
  uint32_t paints(const kiln::Request& request) override {
    std::string text(request.model.empty() ? m_settings->default_model : request.model);
    auto model = parse_model_ref(text);
    if (model && family_of(*model) != Family::Other)
      return 0;
    return KILN_PROPERTIES_ANY;
  }

private:
  // Shared pointers: the adapter moves the instance once; requests run on many threads.
  std::shared_ptr<Settings> m_settings;
  std::shared_ptr<SharedState> m_shared;
};

} // namespace

KILN_PLUGIN(Replicate, "replicate", "1.0.0",
            "Images from Replicate's API (flux-schnell, SDXL, any model by version)")
