// The host's one place for human-readable output: levels, a lock so lines from worker threads
// never interleave, and redaction of every secret registered (API tokens) before anything prints.
#pragma once

#include <cstdio>
#include <kiln/plugin.h>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::host {

// A line kept at the bottom of the terminal (the build's progress): log lines print above it.
class StatusLine {
public:
  virtual ~StatusLine() = default;
  virtual void print_above(std::FILE* stream, std::string_view line) = 0;
};

// Control characters but '\n' and '\t' as \xNN (C1 codes too, as UTF-8 encodes them).
std::string escape_controls(std::string_view text);

class Log {
public:
  explicit Log(kiln_log_level level = KILN_LOG_INFO, std::FILE* out = stderr)
      : m_level(level), m_out(out) {}

  void set_level(kiln_log_level level) { m_level = level; }
  kiln_log_level level() const { return m_level; }
  bool enabled(kiln_log_level level) const { return level >= m_level; }

  // Registers a secret: it is replaced by "[REDACTED]" in everything this log prints and in
  // every string passed through redact().
  void add_secret(std::string secret);
  std::string redact(std::string_view text) const;
  // What may reach a terminal: redacted, and every control character but a line break (ESC,
  // CR, BEL, a C1 code) shown as \xNN, so text from a server or a file cannot drive the
  // terminal, move the cursor or fake a line.
  std::string for_terminal(std::string_view text) const;

  // One line: "kiln: message" or "kiln: [plugin] message", with "warning:"/"error:" prefixes.
  void write(kiln_log_level level, std::string_view message, std::string_view plugin_id = {});
  void error(std::string_view message) { write(KILN_LOG_ERROR, message); }
  void warning(std::string_view message) { write(KILN_LOG_WARNING, message); }
  void debug(std::string_view message) { write(KILN_LOG_DEBUG, message); }

  // While set, every line goes through `status` so it lands above the status line; null to
  // unset. The status line must outlive its registration.
  void set_status_line(StatusLine* status);

private:
  kiln_log_level m_level;
  std::FILE* m_out;
  mutable std::mutex m_mutex;
  std::vector<std::string> m_secrets;
  StatusLine* m_status = nullptr;
};

} // namespace kiln::host
