#include "interrupt.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>

namespace kiln::host {

namespace {

// The one piece of process-wide state: a signal can only talk to the program through it.
std::atomic<bool> g_interrupted{false};

extern "C" void on_signal(int sig) {
  g_interrupted.store(true);
  std::signal(sig, SIG_DFL);
}

} // namespace

void install_interrupt_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

bool interrupted() {
  return g_interrupted.load();
}

bool sleep_unless_interrupted(uint32_t ms) {
  using namespace std::chrono;
  auto end = steady_clock::now() + milliseconds(ms);
  while (!interrupted()) {
    auto now = steady_clock::now();
    if (now >= end)
      return true;
    // A signal cannot wake a condition variable safely; 20 ms slices keep Ctrl-C prompt.
    std::this_thread::sleep_for(std::min<steady_clock::duration>(end - now, milliseconds(20)));
  }
  return false;
}

} // namespace kiln::host
