// The pace of new remote jobs per backend: a token bucket shared by every worker, adapted to
// what the provider says. A 429 slows the whole backend (multiplicatively, once per window, and
// not before the server's retry_after); then the rate grows back additively (AIMD, as TCP does):
// to the configured rate, or with none configured, quickly to just under the last rate refused
// and then only probing above it. The first 429 of a backend whose rate is unknown also holds
// every new request until the server's hint.
#pragma once

#include "resilience.hpp"

#include <deque>
#include <limits>
#include <mutex>

namespace kiln::host {

class RateLimiter {
public:
  static constexpr double k_unlimited = std::numeric_limits<double>::infinity();

  // `rate` requests per second (0: not configured, learn it from 429s); `burst` requests may go
  // at once after a quiet spell.
  RateLimiter(double rate, double burst, Clock::time_point now = Clock::now());

  // Takes the next slot and says how long to wait before using it (zero: go now). Slots are
  // handed out in order, so waiting callers never overtake each other.
  Clock::duration reserve(Clock::time_point now = Clock::now());
  // The provider throttled a request; `retry_after_ms` is its hint, or -1.
  void throttled(int64_t retry_after_ms, Clock::time_point now = Clock::now());
  // A request went through: the rate creeps back up.
  void succeeded(Clock::time_point now = Clock::now());

  double rate() const; // requests per second now (k_unlimited when unthrottled and unconfigured)

  // Multiplicative decrease on a 429. The first, with no rate known, halves what was sent in the
  // last second (an unpaced start sends a whole -j at once); later ones are gentler, as the
  // rate is then close to the provider's.
  static constexpr double k_first_decrease = 0.5;
  static constexpr double k_decrease = 0.85;
  static constexpr double k_increase_per_s = 0.25; // additive increase, requests/s per second
  // Once a known rate was refused: growth stops at k_settle of that rate, and above it only
  // probes (the provider's limit may have risen) at k_probe_per_s.
  static constexpr double k_settle = 0.95;
  // Below a configured rate (and no lower limit found), growth is this share of it per second.
  static constexpr double k_regrow_per_s = 0.1;
  static constexpr double k_probe_per_s = 0.02;
  static constexpr double k_min_rate = 0.05; // never slower than one request per 20 s

private:
  double observed_rate(Clock::time_point now);

  mutable std::mutex m_mutex;
  double m_ceiling; // the configured rate, or k_unlimited
  double m_rate;    // the rate allowed now
  double m_burst;
  Clock::time_point m_next;        // when the next slot is free (token bucket as a schedule)
  Clock::time_point m_last_change; // last decrease or increase
  Clock::time_point m_last_decrease;
  double m_refused_at = 0;                // the last known rate the provider refused
  std::deque<Clock::time_point> m_recent; // slots handed out in the last second
};

} // namespace kiln::host
