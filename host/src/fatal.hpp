// Configuration and start-up errors: thrown anywhere, caught only in main, which prints the
// message and returns the exit code.
#pragma once

#include <stdexcept>
#include <string>

namespace kiln::host {

// Exit codes are a contract with build scripts: never renumber.
enum ExitCode : int {
  k_exit_ok = 0,
  k_exit_assets_failed = 1,
  k_exit_usage = 2, // usage, manifest or plugin error
  k_exit_budget = 3,
  k_exit_needs_person = 4,  // credit or billing: no new work was started after it
  k_exit_busy = 5,          // another build holds the output folder and --no-wait was given
  k_exit_locked = 6,        // --locked: some asset would need generating (kiln.lock lacks it)
  k_exit_interrupted = 130, // SIGINT/SIGTERM, as shells report a Ctrl-C
};

class Fatal : public std::runtime_error {
public:
  // `located`: the message already starts with `file:line:col:` and prints as it is.
  explicit Fatal(const std::string& message, int exit_code = k_exit_usage, bool located = false)
      : std::runtime_error(message), m_exit_code(exit_code), m_located(located) {}
  int exit_code() const { return m_exit_code; }
  bool located() const { return m_located; }

private:
  int m_exit_code;
  bool m_located;
};

} // namespace kiln::host
