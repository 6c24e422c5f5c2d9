// Limits that hold across every asset of a run, whatever their strategy chains propose: a
// circuit breaker per model and a retry budget, so that a failing provider neither receives a
// storm of retries nor multiplies the run's traffic.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
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

} // namespace kiln::host
