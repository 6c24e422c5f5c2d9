#include "log.hpp"

namespace kiln::host {

void Log::add_secret(std::string secret) {
  if (secret.size() < 4) // redacting one or two characters would shred every message
    return;
  std::lock_guard lock(m_mutex);
  m_secrets.push_back(std::move(secret));
}

std::string Log::redact(std::string_view text) const {
  std::string out(text);
  std::lock_guard lock(m_mutex);
  for (const auto& secret : m_secrets) {
    for (size_t pos = out.find(secret); pos != std::string::npos; pos = out.find(secret, pos + 10))
      out.replace(pos, secret.size(), "[REDACTED]");
  }
  return out;
}

void Log::write(kiln_log_level level, std::string_view message, std::string_view plugin_id) {
  if (!enabled(level))
    return;
  std::string line = "kiln: ";
  if (level == KILN_LOG_ERROR)
    line += "error: ";
  else if (level == KILN_LOG_WARNING)
    line += "warning: ";
  if (!plugin_id.empty())
    line += "[" + std::string(plugin_id) + "] ";
  line += message;
  line = redact(line);
  line += '\n';
  std::lock_guard lock(m_mutex);
  if (m_status) {
    m_status->print_above(m_out, line);
    return;
  }
  std::fwrite(line.data(), 1, line.size(), m_out);
  std::fflush(m_out);
}

void Log::set_status_line(StatusLine* status) {
  std::lock_guard lock(m_mutex);
  m_status = status;
}

} // namespace kiln::host
