#include "resilience.hpp"

namespace kiln::host {

double CircuitBreakers::open_for(const std::string& key, Clock::time_point now) {
  std::lock_guard lock(m_mutex);
  auto it = m_states.find(key);
  if (it == m_states.end() || now >= it->second.open_until)
    return 0;
  return std::chrono::duration<double>(it->second.open_until - now).count();
}

void CircuitBreakers::success(const std::string& key) {
  std::lock_guard lock(m_mutex);
  m_states.erase(key);
}

bool CircuitBreakers::failure(const std::string& key, Clock::time_point now) {
  std::lock_guard lock(m_mutex);
  State& s = m_states[key];
  if (now < s.open_until)
    return false; // an attempt that started before the breaker opened
  if (++s.failures < m_threshold)
    return false;
  s.open_until = now + m_cooldown;
  s.failures = m_threshold - 1; // half-open afterwards: one more failure re-opens
  return true;
}

void RetryBudget::first_attempt() {
  std::lock_guard lock(m_mutex);
  ++m_assets;
}

bool RetryBudget::try_retry() {
  std::lock_guard lock(m_mutex);
  if (double(m_retries) >= double(m_min) + m_ratio * double(m_assets))
    return false;
  ++m_retries;
  return true;
}

uint32_t RetryBudget::retries() const {
  std::lock_guard lock(m_mutex);
  return m_retries;
}

uint32_t RetryBudget::assets() const {
  std::lock_guard lock(m_mutex);
  return m_assets;
}

} // namespace kiln::host
