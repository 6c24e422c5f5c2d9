#include "scheduler.hpp"

#include "interrupt.hpp"

#include <chrono>
#include <set>

namespace kiln::host {

namespace {
// Waiters wake at least this often to notice an interrupt (a signal handler cannot notify).
constexpr auto k_poll = std::chrono::milliseconds(100);
} // namespace

Scheduler::Slots& Scheduler::slots_locked(const std::string& backend) {
  return m_slots[backend]; // a backend never set has one slot
}

void Scheduler::set_limit(const std::string& backend, unsigned limit) {
  std::lock_guard lock(m_mutex);
  Slots& s = slots_locked(backend);
  limit = std::max(1u, limit);
  s.free = s.free + limit - s.limit;
  s.limit = limit;
}

void Scheduler::add(size_t index, const std::string& backend, const std::string& model) {
  std::lock_guard lock(m_mutex);
  slots_locked(backend);
  for (Group& g : m_groups)
    if (g.backend == backend && g.model == model) {
      g.pending.push_back(index);
      return;
    }
  m_groups.push_back(Group{backend, model, {index}, 0});
}

std::optional<Scheduler::Job> Scheduler::next() {
  std::unique_lock lock(m_mutex);
  for (;;) {
    bool stop = interrupted();
    Group* best = nullptr;
    bool any = false;
    for (Group& g : m_groups) {
      if (g.pending.empty())
        continue;
      any = true;
      if ((stop || m_slots[g.backend].free > 0) && (!best || g.in_flight < best->in_flight))
        best = &g;
    }
    if (!any)
      return std::nullopt;
    if (best) {
      Job job{best->pending.front(), size_t(best - m_groups.data()), !stop};
      best->pending.pop_front();
      ++best->in_flight;
      if (!stop)
        --m_slots[best->backend].free;
      return job;
    }
    ++m_waiting;
    m_changed.wait_for(lock, k_poll);
    --m_waiting;
  }
}

void Scheduler::done(const Job& job) {
  std::lock_guard lock(m_mutex);
  --m_groups[job.group].in_flight;
}

bool Scheduler::acquire(const std::string& backend) {
  std::unique_lock lock(m_mutex);
  Slots& s = slots_locked(backend);
  while (s.free == 0) {
    if (interrupted())
      return false;
    ++m_waiting;
    m_changed.wait_for(lock, k_poll);
    --m_waiting;
  }
  --s.free;
  return true;
}

void Scheduler::release(const std::string& backend) {
  {
    std::lock_guard lock(m_mutex);
    ++slots_locked(backend).free;
  }
  m_changed.notify_all();
}

size_t Scheduler::waiting() const {
  std::lock_guard lock(m_mutex);
  return m_waiting;
}

size_t Scheduler::slots_in_use() const {
  std::lock_guard lock(m_mutex);
  std::set<std::string> seen;
  size_t total = 0;
  for (const Group& g : m_groups)
    if (seen.insert(g.backend).second)
      total += m_slots.at(g.backend).limit;
  return total;
}

size_t Scheduler::pending() const {
  std::lock_guard lock(m_mutex);
  size_t n = 0;
  for (const Group& g : m_groups)
    n += g.pending.size();
  return n;
}

} // namespace kiln::host
