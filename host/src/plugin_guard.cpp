#include "plugin_guard.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

namespace kiln::host {

namespace {

// What the thread runs now ("" outside plugins): written only by its own thread, read by the
// signal handler on that thread.
thread_local char t_current[512] = "";

// The load being watched: its description and when it started (0: none).
std::atomic<long long> g_load_started_ms{0};
char g_load_what[512] = "";

long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void write_all(const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0)
      return;
    s += w;
    n -= size_t(w);
  }
}

void on_fatal_signal(int sig) {
  if (t_current[0]) {
    write_all("\nkiln: error: fatal signal ");
    write_all(sig == SIGSEGV  ? "SIGSEGV"
              : sig == SIGBUS ? "SIGBUS"
              : sig == SIGILL ? "SIGILL"
              : sig == SIGFPE ? "SIGFPE"
                              : "SIGABRT");
    write_all(" in ");
    write_all(t_current);
    write_all(": the plugin crashed Kiln (remove it, or report it to its author)\n");
  }
  // Die of the signal, as without this handler: the exit status and a core dump stay true.
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

// Control characters of a path or id as '?': this text is printed by the signal handler.
std::string printable(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f ||
        (static_cast<unsigned char>(c) >= 0x80 && static_cast<unsigned char>(c) < 0xa0))
      c = '?';
  return out;
}

void format(char* out, size_t size, std::string_view file_raw, std::string_view id_raw,
            std::string_view what) {
  std::string file = printable(file_raw), id = printable(id_raw);
  if (id.empty())
    std::snprintf(out, size, "plugin %.*s (during %.*s)", int(file.size()), file.data(),
                  int(what.size()), what.data());
  else
    std::snprintf(out, size, "plugin %.*s ('%.*s', during %.*s)", int(file.size()), file.data(),
                  int(id.size()), id.data(), int(what.size()), what.data());
}

} // namespace

void install_plugin_crash_reporting() {
  static bool installed = false;
  if (installed)
    return;
  installed = true;
  // Its own stack: a plugin that overflowed its stack still gets a message out.
  static char alt_stack[64 * 1024];
  stack_t ss{};
  ss.ss_sp = alt_stack;
  ss.ss_size = sizeof alt_stack;
  ::sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_handler = on_fatal_signal;
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT})
    ::sigaction(sig, &sa, nullptr);
  // The watchdog: a load that has not returned after a generous time is named, once.
  std::thread([] {
    long long warned_for = 0;
    for (;;) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      long long started = g_load_started_ms.load();
      if (started && started != warned_for && now_ms() - started > 30000) {
        warned_for = started;
        char line[700];
        std::snprintf(line, sizeof line,
                      "kiln: warning: %s has not returned for 30 s; it may hang (Ctrl-C stops "
                      "Kiln)\n",
                      g_load_what);
        write_all(line);
      }
    }
  }).detach();
}

PluginCall::PluginCall(std::string_view file, std::string_view id, std::string_view what) {
  std::memcpy(m_previous, t_current, sizeof m_previous);
  format(t_current, sizeof t_current, file, id, what);
  // Loads and instance creation happen on the main thread, one at a time: those are watched.
  m_watched = what == "load" || what == "create";
  if (m_watched) {
    std::memcpy(g_load_what, t_current, sizeof g_load_what);
    g_load_started_ms.store(now_ms());
  }
}

PluginCall::~PluginCall() {
  if (m_watched)
    g_load_started_ms.store(0);
  std::memcpy(t_current, m_previous, sizeof t_current);
}

} // namespace kiln::host

// exit_guard.c's exit(), _exit(), _Exit() and quick_exit(): only a plugin (or a thread it
// started) calls them, since Kiln returns from main. The run did not finish: say who, and end
// with exit code 2 (a plugin error), never the plugin's 0. No atexit handlers, no stdio: the
// plugin may have left the process in any state, and the journal is already on disk.
extern "C" [[noreturn]] void kiln_unexpected_exit(const char* how, int status) {
  using namespace kiln::host;
  char line[900];
  if (t_current[0])
    std::snprintf(line, sizeof line,
                  "\nkiln: error: %s called %s(%d) before Kiln finished; stopping with exit code "
                  "2 (remove the plugin, or report it to its author)\n",
                  t_current, how, status);
  else
    std::snprintf(line, sizeof line,
                  "\nkiln: error: %s(%d) was called outside Kiln's own code (by a plugin's "
                  "thread?) before Kiln finished; stopping with exit code 2\n",
                  how, status);
  write_all(line);
  ::syscall(SYS_exit_group, 2);
  for (;;)
    ::pause();
}
