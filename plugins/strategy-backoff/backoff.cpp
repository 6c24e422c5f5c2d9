// The `backoff` retry strategy: the same request again after a retryable failure (throttling,
// 5xx, timeouts, broken downloads), after a capped exponential delay with full jitter. The
// server's hint (`retry_after`, `Retry-After`) is the floor of the delay; a hint longer than
// `max_retry_after_s` gives up, so the chain moves on instead of stalling the build.
#include <algorithm>
#include <cmath>
#include <kiln/kiln.hpp>
#include <mutex>
#include <random>
#include <string>

namespace {

class Backoff : public kiln::RetryStrategy {
public:
  explicit Backoff(const kiln::Context& context)
      : m_max_attempts(context.options().get_int("max_attempts")),
        m_base_ms(context.options().get_int("base_delay_ms")),
        m_max_ms(context.options().get_int("max_delay_ms")),
        m_max_hint_ms(int64_t(context.options().get_float("max_retry_after_s") * 1000.0)) {
    if (m_max_attempts < 1)
      throw kiln::Error("max_attempts must be at least 1");
    if (m_base_ms < 0 || m_max_ms < m_base_ms)
      throw kiln::Error("base_delay_ms must be zero or more and at most max_delay_ms");
  }

  static kiln::OptionSchema options() {
    return {
        {"max_attempts", "attempts of one request in all, the first included", KILN_OPTION_INT,
         "4"},
        {"base_delay_ms", "delay cap before the first retry; it doubles with each retry",
         KILN_OPTION_INT, "1000"},
        {"max_delay_ms", "largest delay cap, whatever the number of retries", KILN_OPTION_INT,
         "30000"},
        {"max_retry_after_s", "a server asking for a longer wait fails over to the next strategy",
         KILN_OPTION_FLOAT, "300"},
    };
  }

  std::optional<kiln::Proposal> propose(const kiln::Failure& failure) override {
    if (failure.category != KILN_ERROR_RETRYABLE)
      return std::nullopt;
    if (failure.same_request_failures >= uint64_t(m_max_attempts))
      throw kiln::Error("gave up after " + std::to_string(failure.same_request_failures) +
                        " attempts of this request");
    if (failure.retry_after_ms > m_max_hint_ms)
      throw kiln::Error("the server asks to wait " + std::to_string(failure.retry_after_ms / 1000) +
                        " s; not waiting that long");
    // Full jitter: uniform in [0, cap], the cap doubling per retry of this request.
    unsigned doublings = std::min(failure.same_request_failures - 1, 30u);
    double cap = std::min(double(m_max_ms), double(m_base_ms) * std::ldexp(1.0, int(doublings)));
    int64_t delay = int64_t(jitter(cap));
    kiln::Proposal p;
    p.delay_ms = std::max(delay, failure.retry_after_ms);
    return p;
  }

private:
  // Uniform in [0, cap]. One generator for the instance, guarded: propose() runs on several
  // threads at once, and a thread_local in a dlopen'd library crashes LeakSanitizer at exit.
  double jitter(double cap) {
    std::lock_guard lock(m_rng_mutex);
    return std::uniform_real_distribution<double>(0.0, cap)(m_rng);
  }

  int64_t m_max_attempts, m_base_ms, m_max_ms, m_max_hint_ms;
  std::mutex m_rng_mutex;
  std::mt19937_64 m_rng{std::random_device{}()};
};

} // namespace

KILN_PLUGIN(Backoff, "backoff", "1.0.0",
            "Retries a retryable failure after a jittered exponential delay, honouring the "
            "server's hint")
