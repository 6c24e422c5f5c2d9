#include "admission.hpp"

#include "interrupt.hpp"
#include "request.hpp"

#include <thread>

namespace kiln::host {

Admission::Admission(const Workspace& ws, unsigned jobs, std::optional<double> budget_usd)
    : m_money(budget_usd, ws.state.spent_before()) {
  for (auto& [id, backend] : ws.plugins.backends) {
    BackendPacing pacing;
    if (auto it = ws.manifest.backend_pacing.find(id); it != ws.manifest.backend_pacing.end())
      pacing = it->second;
    m_limiters.emplace(id, std::make_unique<RateLimiter>(pacing.requests_per_second, pacing.burst));
    m_max_wait_ms.emplace(id, int64_t(pacing.max_retry_after_s * 1000));
    unsigned concurrency = jobs ? jobs : pacing.concurrency;
    if (!concurrency)
      concurrency = backend_can(ws, id, KILN_BACKEND_OFFLINE)
                        ? std::max(1u, std::thread::hardware_concurrency())
                        : k_default_remote_concurrency;
    m_scheduler.set_limit(id, concurrency);
  }
}

void Admission::stop_backend(const std::string& backend, const Fault& why) {
  std::lock_guard lock(m_stop_mutex);
  m_stopped.emplace(backend, why);
}

std::optional<Fault> Admission::stopped(const std::string& backend) {
  if (interrupted())
    return Fault{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};
  std::lock_guard lock(m_stop_mutex);
  auto it = m_stopped.find(backend);
  if (it == m_stopped.end())
    return std::nullopt;
  return it->second;
}

double Admission::known_cost(const std::string& backend) const {
  std::lock_guard lock(m_cost_mutex);
  auto it = m_known_cost.find(backend);
  return it == m_known_cost.end() ? 0.0 : it->second;
}

RateLimiter* Admission::limiter(const std::string& backend) {
  auto it = m_limiters.find(backend);
  return it == m_limiters.end() ? nullptr : it->second.get();
}

Admission::Ticket::Ticket(Admission& admission, double reserved, const AttemptRecord& rec,
                          bool paced)
    : m_admission(&admission), m_reserved(reserved), m_rec(&rec), m_paced(paced) {}

Admission::Ticket::Ticket(Ticket&& other) noexcept
    : m_admission(std::exchange(other.m_admission, nullptr)), m_reserved(other.m_reserved),
      m_rec(other.m_rec), m_paced(other.m_paced) {}

Admission::Ticket::~Ticket() {
  if (m_admission)
    m_admission->m_money.settle(m_reserved, m_rec->cost_usd);
}

Result<Admission::Ticket> Admission::admit(Workspace& ws, const PlannedAsset& p,
                                           const GenerationRequest& req,
                                           const std::string& fingerprint, bool free,
                                           const AttemptRecord& rec) {
  // The money first: an attempt the budget cannot cover sends nothing. A paid backend that
  // gives no estimate (or one it cannot trust) is not free: its attempts reserve what its jobs
  // cost so far, or, before any is known, all the budget has left, one at a time.
  double reserved = free ? 0.0 : predict_cost(ws, p.spec, req, fingerprint);
  bool unknown = !free && reserved <= 0 && m_money.limit() && paid_backend(ws, req.backend);
  bool admitted = unknown ? m_money.reserve_unknown(
                                reserved, [&] { return known_cost(req.backend); }, interrupted)
                          : m_money.reserve(reserved, interrupted);
  if (!admitted) {
    if (interrupted())
      return Fault{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};
    char why[200];
    if (unknown && reserved <= 0)
      std::snprintf(why, sizeof why,
                    "the budget of %s is spent (%s), and %s gives no cost estimate",
                    format_usd(*m_money.limit()).c_str(), format_usd(m_money.spent()).c_str(),
                    req.backend.c_str());
    else
      std::snprintf(why, sizeof why,
                    "the budget of %s cannot cover it (%s spent, %s needed for this asset)",
                    format_usd(*m_money.limit()).c_str(), format_usd(m_money.spent()).c_str(),
                    format_usd(reserved).c_str());
    return Fault{KILN_ERROR_PERMANENT, why, -1};
  }
  Ticket ticket(*this, reserved, rec, !free);
  RateLimiter* pace = free ? nullptr : limiter(req.backend);
  if (pace) {
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(pace->reserve());
    if (wait.count() > 0 && !sleep_unless_interrupted(uint32_t(wait.count())))
      return Fault{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};
  }
  return ticket;
}

void Admission::paced(const GenerationRequest& req, const Ticket& ticket, Result<Generated>& result,
                      const AttemptRecord& rec) {
  if (rec.cost_usd > 0) {
    std::lock_guard lock(m_cost_mutex);
    double& known = m_known_cost[req.backend];
    known = std::max(known, rec.cost_usd);
  }
  RateLimiter* pace = ticket.m_paced ? limiter(req.backend) : nullptr;
  if (pace && result)
    pace->succeeded();
  if (result || rec.source != req.backend || result.error().category != KILN_ERROR_RETRYABLE)
    return;
  // A wait longer than the backend's max_retry_after_s: this asset fails now.
  auto cap = m_max_wait_ms.find(req.backend);
  if (cap != m_max_wait_ms.end() && result.error().retry_after_ms > cap->second) {
    Fault too_long = result.error();
    too_long.message += "; " + req.backend + " asks to wait " +
                        std::to_string((too_long.retry_after_ms + 999) / 1000) +
                        " s, more than its max_retry_after_s (" +
                        std::to_string(cap->second / 1000) + "): not waiting, run again later";
    too_long.category = KILN_ERROR_PERMANENT;
    too_long.retry_after_ms = -1;
    if (pace)
      pace->throttled(-1); // the pace still slows; nothing waits for the hint
    result = too_long;
    return;
  }
  // Throttled: the whole backend slows down, and waits for the server's hint.
  if (pace && result.error().retry_after_ms >= 0)
    pace->throttled(result.error().retry_after_ms);
}

} // namespace kiln::host
