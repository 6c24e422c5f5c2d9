#include "progress.hpp"

#include "util.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sys/ioctl.h>
#include <unistd.h>

namespace kiln::host {

namespace {

size_t terminal_width() {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return ws.ws_col;
  return 80;
}

std::string duration_text(double s) {
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else
    std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, int(s) / 60 % 60);
  return buf;
}

// Cuts `text` to `width` bytes, keeping whole UTF-8 characters (the middle dot is two bytes but
// one column, so the line may end up a little narrower than the terminal, never wider).
std::string fit(std::string text, size_t width) {
  if (text.size() <= width)
    return text;
  size_t cut = width;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
    --cut;
  text.resize(cut);
  return text;
}

} // namespace

Progress::Progress(Log& log, size_t total, kiln_log_level verbosity, Mode mode)
    : m_log(log), m_verbosity(verbosity), m_mode(mode), m_total(total) {
  if (m_mode == Mode::Terminal && m_verbosity <= KILN_LOG_INFO) {
    m_log.set_status_line(this);
    m_ticker = std::thread([this] { tick(); });
  } else {
    m_mode = Mode::Lines;
  }
}

Progress::~Progress() {
  close();
}

Progress::Mode Progress::detect() {
  const char* term = std::getenv("TERM");
  if (isatty(STDOUT_FILENO) && !(term && std::strcmp(term, "dumb") == 0))
    return Mode::Terminal;
  return Mode::Lines;
}

void Progress::add_work(size_t n) {
  std::lock_guard lock(m_mutex);
  m_total += n;
  draw_locked();
}

void Progress::started(const std::string& name) {
  std::lock_guard lock(m_mutex);
  ++m_running;
  if (m_done == 0 && m_last.empty())
    m_last = "generating " + name;
  draw_locked();
}

void Progress::finished(Outcome outcome, const std::string& text, double cost_usd, bool ran) {
  std::string line;
  {
    std::lock_guard lock(m_mutex);
    ++m_done;
    if (ran)
      --m_running;
    m_cached += outcome == Outcome::Cached;
    m_failed += outcome == Outcome::Failed;
    m_spent += cost_usd;
    m_last = escape_controls(m_log.redact(text.substr(0, text.find(" ("))));
    if (outcome != Outcome::Failed && m_verbosity <= KILN_LOG_INFO &&
        (m_mode == Mode::Lines || m_verbosity <= KILN_LOG_DEBUG)) {
      char head[48];
      std::snprintf(head, sizeof head, "[%zu/%zu] ", m_done, m_total);
      line = head + text;
    }
    draw_locked();
  }
  // Outside the lock: the log comes back through print_above().
  if (outcome == Outcome::Failed)
    m_log.error(text);
  else if (!line.empty())
    print_above(stdout, m_log.for_terminal(line) + "\n");
}

void Progress::note(const std::string& text) {
  print_above(stdout, m_log.for_terminal(text) + "\n");
}

void Progress::print_above(std::FILE* stream, std::string_view line) {
  std::lock_guard lock(m_mutex);
  clear_locked();
  std::fwrite(line.data(), 1, line.size(), stream);
  std::fflush(stream);
  draw_locked();
}

std::string Progress::status(size_t width) const {
  double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - m_start).count();
  char head[64];
  std::snprintf(head, sizeof head, "[%zu/%zu] ", m_done, m_total);
  std::string tail = " · " + std::to_string(m_running) + " running";
  if (m_cached)
    tail += " · " + std::to_string(m_cached) + " cached";
  if (m_failed)
    tail += " · " + std::to_string(m_failed) + " failed";
  tail += " · " + format_usd(m_spent);
  if (m_done > 0 && m_done < m_total)
    tail += " · ETA " + duration_text(elapsed / double(m_done) * double(m_total - m_done));
  else if (m_done < m_total)
    tail += " · " + duration_text(elapsed);
  // The counts matter more than the event's name: the name is what gets cut. Each '·' is two
  // bytes but one column.
  size_t tail_cols = tail.size() - size_t(std::count(tail.begin(), tail.end(), '\xC2'));
  if (tail_cols >= width)
    return fit(head, width);
  return fit(head + m_last, width - tail_cols) + tail;
}

void Progress::draw_locked() {
  if (m_mode != Mode::Terminal || m_closed)
    return;
  std::string line = "\r" + status(terminal_width() - 1) + "\x1b[K";
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
  m_drawn = true;
}

void Progress::clear_locked() {
  if (m_mode != Mode::Terminal || !m_drawn || m_closed)
    return;
  std::fputs("\r\x1b[K", stdout);
  std::fflush(stdout);
  m_drawn = false;
}

void Progress::tick() {
  std::unique_lock lock(m_mutex);
  while (!m_closed) {
    m_wake.wait_for(lock, std::chrono::milliseconds(500));
    draw_locked();
  }
}

void Progress::close() {
  {
    std::lock_guard lock(m_mutex);
    if (m_closed)
      return;
    if (m_mode == Mode::Terminal) {
      draw_locked();
      if (m_drawn)
        std::fputs("\n", stdout);
      std::fflush(stdout);
    }
    m_closed = true;
  }
  m_wake.notify_all();
  if (m_ticker.joinable())
    m_ticker.join();
  if (m_mode == Mode::Terminal)
    m_log.set_status_line(nullptr);
}

} // namespace kiln::host
