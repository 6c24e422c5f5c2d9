// Which asset starts next, and how many jobs each backend has in flight. Assets are grouped by
// backend and model; an asset starts only when its backend has a free job slot (`concurrency`,
// or -j), and among the groups that can start, the one with the fewest assets in flight goes
// first, so a slow or failing model keeps its share and never holds up the others. A slot is
// held from the create request until the image is downloaded: CPU work on an image (decode,
// convert, validate, write) never keeps a remote job from starting.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln::host {

class Scheduler {
public:
  // A backend's slots; a backend never set has one.
  void set_limit(const std::string& backend, unsigned limit);
  void add(size_t index, const std::string& backend, const std::string& model);

  struct Job {
    size_t index;
    size_t group;
    bool holds_slot; // a slot of its backend is taken for its first attempt
  };
  // Waits until an asset can start and takes a slot for it; none once every asset has started.
  // Once the run is interrupted the rest come back at once, without a slot.
  std::optional<Job> next();
  // The asset is finished (its group has one fewer in flight).
  void done(const Job& job);

  // A slot for a later attempt (a retry, another backend); false when interrupted while waiting.
  bool acquire(const std::string& backend);
  void release(const std::string& backend);

  // The slots of every backend some asset starts on: the remote jobs that can be in flight.
  size_t slots_in_use() const;
  size_t pending() const;
  // Threads blocked in next() or acquire() right now, waiting for a slot: what a test waits
  // for before it frees one (an event, not a sleep).
  size_t waiting() const;

private:
  struct Slots {
    unsigned limit = 1;
    unsigned free = 1;
  };
  struct Group {
    std::string backend;
    std::string model;
    std::deque<size_t> pending;
    size_t in_flight = 0;
  };
  Slots& slots_locked(const std::string& backend);

  mutable std::mutex m_mutex;
  std::condition_variable m_changed;
  std::map<std::string, Slots> m_slots;
  std::vector<Group> m_groups;
  size_t m_waiting = 0;
};

// One slot of a backend while an attempt holds it; given back at the latest when destroyed.
class SlotLease {
public:
  SlotLease(Scheduler& scheduler, std::string backend, bool held = false)
      : m_scheduler(scheduler), m_backend(std::move(backend)), m_held(held) {}
  ~SlotLease() { release(); }
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;

  // Waits for a slot unless one is held; false when the run is interrupted.
  bool acquire() { return m_held || (m_held = m_scheduler.acquire(m_backend)); }
  void release() {
    if (m_held)
      m_scheduler.release(m_backend);
    m_held = false;
  }
  // Gives the slot to whoever takes it next (a new lease made `held`); whether one was held.
  bool hand_over() { return std::exchange(m_held, false); }

private:
  Scheduler& m_scheduler;
  std::string m_backend;
  bool m_held;
};

} // namespace kiln::host
