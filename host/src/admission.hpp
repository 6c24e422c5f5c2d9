// Where an attempt is admitted, and so where the budget is enforced: before an attempt sends
// anything it needs its backend's job slot (Scheduler: -j / `concurrency`), a backend that has
// not been stopped, the money it may cost reserved against `budget_usd` / --budget (MoneyBudget:
// settled to the real cost when the attempt ends), and its turn in the backend's pace
// (RateLimiter: `requests_per_second`, slowed by 429s). One Admission per run, shared by every
// worker.
#pragma once

#include "attempt.hpp"
#include "rate_limit.hpp"
#include "resilience.hpp"
#include "scheduler.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace kiln::host {

class Admission {
public:
  Admission(const Workspace& ws, unsigned jobs, std::optional<double> budget_usd);

  // A remote backend's jobs in flight when neither -j nor `concurrency` says: enough to keep a
  // provider's queue busy at a few seconds a job, few enough not to trip its limits at once.
  static constexpr unsigned k_default_remote_concurrency = 8;

  Scheduler& scheduler() { return m_scheduler; }
  const MoneyBudget& money() const { return m_money; }

  // No new attempt starts on `backend` any more (a person must act), for `why`.
  void stop_backend(const std::string& backend, const Fault& why);
  // Why no new attempt may start on `backend`, if so: it was stopped, or the run interrupted.
  std::optional<Fault> stopped(const std::string& backend);

  // An admitted attempt: its money is reserved until the ticket is destroyed, then settled to
  // what `rec.cost_usd` says it cost.
  class Ticket {
  public:
    Ticket(Admission& admission, double reserved, const AttemptRecord& rec, bool paced);
    Ticket(Ticket&& other) noexcept;
    ~Ticket();
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    Ticket& operator=(Ticket&&) = delete;

  private:
    friend class Admission;
    Admission* m_admission;
    double m_reserved;
    const AttemptRecord* m_rec;
    bool m_paced; // a paid call: it took a turn of its backend's pace
  };

  // Admits an attempt at `req`: reserves its predicted cost (nothing when `free`: the model's
  // image is in the cache), then waits for its turn in the backend's pace. A refusal: the
  // budget cannot cover it (permanent, with the figures), or the run was interrupted.
  Result<Ticket> admit(Workspace& ws, const PlannedAsset& p, const GenerationRequest& req,
                       const std::string& fingerprint, bool free, const AttemptRecord& rec);

  // What the attempt's outcome means for its backend's pace: a success lets the rate grow, a
  // throttled request slows the whole backend and waits for the server's hint, and a hint
  // longer than the backend's `max_retry_after_s` fails the attempt for good (nothing is gained
  // by buying another request) without holding up the others.
  void paced(const GenerationRequest& req, const Ticket& ticket, Result<Generated>& result,
             const AttemptRecord& rec);

private:
  RateLimiter* limiter(const std::string& backend);
  double known_cost(const std::string& backend) const;

  MoneyBudget m_money;
  Scheduler m_scheduler;
  // The pace of new jobs per backend, and the longest wait hint honoured (max_retry_after_s),
  // in milliseconds.
  std::map<std::string, std::unique_ptr<RateLimiter>, std::less<>> m_limiters;
  std::map<std::string, int64_t, std::less<>> m_max_wait_ms;
  std::mutex m_stop_mutex;
  std::map<std::string, Fault> m_stopped; // backends that stopped taking new work, and why
  // Per backend, the most one of its jobs cost in this run: what an attempt on a backend that
  // gives no estimate reserves.
  mutable std::mutex m_cost_mutex;
  std::map<std::string, double> m_known_cost;
};

} // namespace kiln::host
