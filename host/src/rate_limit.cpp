#include "rate_limit.hpp"

#include <algorithm>
#include <cmath>

namespace kiln::host {

namespace {

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

} // namespace

RateLimiter::RateLimiter(double rate, double burst, Clock::time_point now)
    : m_ceiling(rate > 0 ? rate : k_unlimited), m_rate(m_ceiling), m_burst(std::max(1.0, burst)),
      m_next(now), m_last_change(now), m_last_decrease(now) {
  if (!std::isinf(m_rate))
    m_next = now - seconds((m_burst - 1) / m_rate); // the bucket starts full
}

Clock::duration RateLimiter::reserve(Clock::time_point now) {
  std::lock_guard lock(m_mutex);
  m_recent.push_back(now);
  observed_rate(now); // drops what is older than a second
  if (std::isinf(m_rate))
    return Clock::duration::zero();
  // The schedule may lag `now` by at most a burst's worth of slots (the bucket's capacity).
  Clock::duration interval = seconds(1.0 / m_rate);
  Clock::time_point earliest = now - seconds((m_burst - 1) / m_rate);
  Clock::time_point slot = std::max(m_next, earliest);
  m_next = slot + interval;
  return slot > now ? slot - now : Clock::duration::zero();
}

double RateLimiter::observed_rate(Clock::time_point now) {
  while (!m_recent.empty() && m_recent.front() < now - std::chrono::seconds(1))
    m_recent.pop_front();
  return double(m_recent.size());
}

void RateLimiter::throttled(int64_t retry_after_ms, Clock::time_point now) {
  std::lock_guard lock(m_mutex);
  // Every request in flight may come back 429 at once: one decrease per window of the
  // current interval (at least 1 s), so a burst of refusals counts once.
  double window = std::isinf(m_rate) ? 1.0 : std::max(1.0, 1.0 / m_rate);
  bool decreased_recently =
      now - m_last_decrease < seconds(window) && !std::isinf(m_rate) && m_rate < m_ceiling;
  bool unknown = std::isinf(m_rate);
  if (!decreased_recently) {
    if (!unknown) {
      // Refused at this rate: the schedule steps back two slots so the provider's bucket
      // refills. Below the configured rate, the provider's limit was found: growth slows to a
      // crawl just under it. (At the configured rate, a refusal is timing jitter: growth goes
      // back to the configured rate.)
      if (m_rate < m_ceiling)
        m_refused_at = m_rate;
      m_next = std::max(m_next, now) + seconds(2.0 / m_rate);
    }
    m_rate = std::max(k_min_rate, unknown ? std::max(1.0, observed_rate(now)) * k_first_decrease
                                          : m_rate * k_decrease);
    m_last_change = m_last_decrease = now;
  }
  // The refused request itself waits for the server's hint (the backoff strategy's floor). With
  // no rate known yet, every request did go at once: nothing new starts before the hint either.
  // Once a rate is known, the slower pace is enough; pausing the whole backend for each late
  // refusal would waste a second of every slot.
  if (unknown && retry_after_ms > 0)
    m_next = std::max(m_next, now + std::chrono::milliseconds(retry_after_ms));
}

void RateLimiter::succeeded(Clock::time_point now) {
  std::lock_guard lock(m_mutex);
  if (std::isinf(m_rate) || m_rate >= m_ceiling)
    return;
  double elapsed = std::chrono::duration<double>(now - m_last_change).count();
  if (elapsed <= 0)
    return;
  // Quickly back to just under the rate last refused, then only probing above it. Below a
  // configured rate, "quickly" is a tenth of it per second.
  double fast = std::isinf(m_ceiling) ? k_increase_per_s
                                      : std::max(k_increase_per_s, m_ceiling * k_regrow_per_s);
  double settle = m_refused_at * k_settle;
  if (m_refused_at > 0 && m_rate >= settle)
    m_rate += k_probe_per_s * elapsed;
  else if (m_refused_at > 0)
    m_rate = std::min(settle, m_rate + fast * elapsed);
  else
    m_rate += fast * elapsed;
  m_rate = std::min(m_ceiling, m_rate);
  m_last_change = now;
}

double RateLimiter::rate() const {
  std::lock_guard lock(m_mutex);
  return m_rate;
}

} // namespace kiln::host
