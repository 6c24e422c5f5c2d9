#include "log.hpp"

#include <cstdio>

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

std::string escape_controls(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  auto hex = [&](unsigned c) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n' || c == '\t') {
      out += char(c);
    } else if (c < 0x20 || c == 0x7f) {
      hex(c);
    } else if (c == 0xc2 && i + 1 < text.size() &&
               static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
      hex(static_cast<unsigned char>(text[++i])); // a C1 control, UTF-8 encoded
    } else {
      out += char(c);
    }
  }
  return out;
}

std::string Log::for_terminal(std::string_view text) const {
  return escape_controls(redact(text));
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
  line = for_terminal(line);
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
