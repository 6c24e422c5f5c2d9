// What a build prints while it runs. On a terminal: one line that updates in place, in Ninja's
// style — `[done/total] last event · N running · cached · failed · spend · ETA` — with errors and
// warnings printed above it. Elsewhere (CI logs, pipes): one plain line per finished asset.
#pragma once

#include "log.hpp"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace kiln::host {

class Progress : public StatusLine {
public:
  enum class Mode { Lines, Terminal };

  // `Terminal` redraws the line in place and ticks the ETA twice a second. `verbosity` as the
  // log's: ERROR (-q) prints only errors, DEBUG (-v) also a line per finished asset on a terminal.
  Progress(Log& log, size_t total, kiln_log_level verbosity, Mode mode);
  ~Progress() override;
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Terminal when stdout is one and TERM is not "dumb"; Lines otherwise (CI, pipes, files).
  static Mode detect();

  void add_work(size_t n);
  void started(const std::string& name);
  enum class Outcome { Generated, Cached, Failed, Skipped };
  // An asset is done; `text` says how ("generated icons/sword (new; replicate, $0.0030, 2.1 s)").
  // Failed ones print as errors. `cost_usd` is what it spent; `ran`: started() was called for it.
  void finished(Outcome outcome, const std::string& text, double cost_usd = 0, bool ran = false);
  // A line that is not an asset's end (up to date, under -v).
  void note(const std::string& text);
  // Leaves the last status on screen and stops updating.
  void close();

  // StatusLine: prints a log line above the status line.
  void print_above(std::FILE* stream, std::string_view line) override;

  // The status line as it would be drawn now (tests), at most `width` columns.
  std::string status(size_t width) const;

private:
  void draw_locked(); // m_mutex held
  void clear_locked();
  void tick();

  Log& m_log;
  kiln_log_level m_verbosity;
  Mode m_mode;
  mutable std::mutex m_mutex;
  std::condition_variable m_wake;
  std::chrono::steady_clock::time_point m_start = std::chrono::steady_clock::now();
  size_t m_total;
  size_t m_done = 0, m_running = 0, m_cached = 0, m_failed = 0;
  double m_spent = 0;
  std::string m_last; // the last event, e.g. "generated icons/sword"
  bool m_drawn = false;
  bool m_closed = false;
  std::thread m_ticker;
};

} // namespace kiln::host
