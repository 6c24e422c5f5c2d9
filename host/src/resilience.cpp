#include "resilience.hpp"

#include <algorithm>

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

namespace {
constexpr double k_cent_fraction = 1e-9; // sums of prices are not exact in binary
}

bool MoneyBudget::reserve(double usd, const std::function<bool()>& interrupted) {
  std::unique_lock lock(m_mutex);
  if (!m_limit || usd <= 0)
    return true;
  while (m_spent + m_reserved + usd > *m_limit + k_cent_fraction) {
    if (m_holders == 0 || (interrupted && interrupted())) {
      m_refused_usd += usd;
      ++m_refused;
      return false;
    }
    ++m_waiting;
    m_changed.wait_for(lock, std::chrono::milliseconds(200));
    --m_waiting;
  }
  m_reserved += usd;
  ++m_holders;
  return true;
}

bool MoneyBudget::reserve_unknown(double& usd, const std::function<double()>& known,
                                  const std::function<bool()>& interrupted) {
  std::unique_lock lock(m_mutex);
  for (;;) {
    if (double cost = known ? known() : 0.0; cost > 0) {
      usd = cost;
      lock.unlock();
      return reserve(cost, interrupted);
    }
    if (!m_limit) {
      usd = 0;
      return true;
    }
    if (m_holders == 0) {
      double left = *m_limit - m_spent;
      if (left <= k_cent_fraction) {
        ++m_refused;
        usd = 0;
        return false;
      }
      usd = left;
      m_reserved += left;
      ++m_holders;
      return true;
    }
    if (interrupted && interrupted()) {
      ++m_refused;
      usd = 0;
      return false;
    }
    ++m_waiting;
    m_changed.wait_for(lock, std::chrono::milliseconds(200));
    --m_waiting;
  }
}

uint32_t MoneyBudget::waiting() const {
  std::lock_guard lock(m_mutex);
  return m_waiting;
}

void MoneyBudget::settle(double reserved, double actual) {
  {
    std::lock_guard lock(m_mutex);
    if (m_limit && reserved > 0 && m_holders > 0) {
      // Counted, not compared: sums of prices leave a residue that would never reach zero.
      m_reserved = --m_holders == 0 ? 0.0 : std::max(0.0, m_reserved - reserved);
    }
    m_spent += actual;
  }
  m_changed.notify_all();
}

double MoneyBudget::spent() const {
  std::lock_guard lock(m_mutex);
  return m_spent;
}

double MoneyBudget::needed() const {
  std::lock_guard lock(m_mutex);
  if (!m_limit || m_refused == 0)
    return 0;
  return std::max(0.0, m_spent + m_refused_usd - *m_limit);
}

uint32_t MoneyBudget::refused() const {
  std::lock_guard lock(m_mutex);
  return m_refused;
}

} // namespace kiln::host
