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
  auto byte = [&](size_t i) {
    return static_cast<unsigned char>(text[i]);
  };
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char c = byte(i);
    if (c == '\n' || c == '\t') {
      out += char(c);
    } else if (c < 0x20 || c == 0x7f) {
      hex(c);
    } else if (c < 0x80) {
      out += char(c);
    } else {
      // A valid UTF-8 sequence is kept, but for the C1 controls (U+0080..U+009F); any other
      // byte from 0x80 up (a lone 0x9b is CSI to some terminals) is shown as \xNN.
      size_t len = c >= 0xc2 && c <= 0xdf   ? 2
                   : c >= 0xe0 && c <= 0xef ? 3
                   : c >= 0xf0 && c <= 0xf4 ? 4
                                            : 0;
      bool valid = len > 0 && i + len <= text.size();
      for (size_t k = 1; valid && k < len; ++k)
        valid = (byte(i + k) & 0xc0) == 0x80;
      if (valid && len == 3) // no overlong forms, no surrogates
        valid = !(c == 0xe0 && byte(i + 1) < 0xa0) && !(c == 0xed && byte(i + 1) >= 0xa0);
      if (valid && len == 4)
        valid = !(c == 0xf0 && byte(i + 1) < 0x90) && !(c == 0xf4 && byte(i + 1) >= 0x90);
      if (!valid) {
        hex(c);
      } else if (c == 0xc2 && byte(i + 1) <= 0x9f) {
        hex(byte(++i)); // a C1 control, UTF-8 encoded
      } else {
        out.append(text.substr(i, len));
        i += len - 1;
      }
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
