// Limits that hold across every asset of a run, whatever their strategy chains propose: a
// circuit breaker per model and a retry budget, so that a failing provider neither receives a
// storm of retries nor multiplies the run's traffic (the chain consults both: chain.hpp), and
// the money budget (reserved and settled by admission.hpp, the one place attempts are
// admitted).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace kiln::host {

using Clock = std::chrono::steady_clock;

// After `threshold` retryable failures in a row, a model (backend + model id) is cooled down
// for everyone for `cooldown`: attempts on it are passed over and its assets move on in their
// chains. After the cool-down one attempt is let through; one more failure opens it again.
class CircuitBreakers {
public:
  CircuitBreakers(uint32_t threshold, Clock::duration cooldown)
      : m_threshold(threshold), m_cooldown(cooldown) {}

  // Seconds of cool-down left for `key`, 0 when attempts may go ahead.
  double open_for(const std::string& key, Clock::time_point now = Clock::now());
  void success(const std::string& key);
  // Counts a retryable failure; true when this one opened the breaker.
  bool failure(const std::string& key, Clock::time_point now = Clock::now());

private:
  struct State {
    uint32_t failures = 0;
    Clock::time_point open_until{};
  };
  std::mutex m_mutex;
  std::map<std::string, State> m_states;
  uint32_t m_threshold;
  Clock::duration m_cooldown;
};

// Retries in a run may number at most `min + ratio × assets attempted` (a retry budget in the
// manner of Finagle's and gRPC's): a few failing assets retry freely, a failing provider cannot
// turn every asset into several requests.
class RetryBudget {
public:
  RetryBudget(double ratio, uint32_t min) : m_ratio(ratio), m_min(min) {}

  void first_attempt();
  // Takes one retry from the budget; false when it is spent.
  bool try_retry();
  uint32_t retries() const;
  uint32_t assets() const;

private:
  mutable std::mutex m_mutex;
  double m_ratio;
  uint32_t m_min;
  uint32_t m_assets = 0;
  uint32_t m_retries = 0;
};

// budget_usd / --budget: money spent (this run and the killed runs before it) plus money
// reserved for jobs in flight stays within the limit. Each attempt on a paid backend reserves
// its predicted cost before it may create anything and settles to the real cost afterwards.
class MoneyBudget {
public:
  MoneyBudget(std::optional<double> limit, double spent_before)
      : m_limit(limit), m_spent(spent_before) {}

  // Reserves `usd`. While it does not fit but jobs in flight hold reservations (which may come
  // back smaller), waits for them; false when it cannot fit even with nothing in flight, or
  // when `interrupted` says so while waiting. The refused amount is remembered (needed()).
  bool reserve(double usd, const std::function<bool()>& interrupted = {});
  // For an attempt whose cost nobody can predict (its backend gives no estimate): once
  // `known()` says what such jobs cost (learned from one that ended), reserves that; before,
  // waits until no other reservation is held, then reserves everything the limit leaves, so
  // jobs of unknown price run one at a time. `usd` gets what was reserved. False as reserve().
  bool reserve_unknown(double& usd, const std::function<double()>& known,
                       const std::function<bool()>& interrupted = {});
  void settle(double reserved, double actual);

  std::optional<double> limit() const { return m_limit; }
  double spent() const;
  // What the refused reservations would need beyond the limit (0 when none was refused).
  double needed() const;
  uint32_t refused() const;
  // Reservations blocked in reserve() right now, waiting for others to settle (for tests).
  uint32_t waiting() const;

private:
  mutable std::mutex m_mutex;
  std::condition_variable m_changed;
  uint32_t m_waiting = 0;
  std::optional<double> m_limit;
  double m_spent = 0;
  double m_reserved = 0;
  uint32_t m_holders = 0; // reservations not yet settled
  double m_refused_usd = 0;
  uint32_t m_refused = 0;
};

} // namespace kiln::host
