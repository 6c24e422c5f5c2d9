#include "progress.hpp"

#include <cstdio>
#include <gtest/gtest.h>

namespace kiln::host {
namespace {

TEST(Progress, TheStatusLineCountsAndCutsTheNameNotTheCounts) {
  Log log(KILN_LOG_ERROR);
  Progress p(log, 10, KILN_LOG_ERROR, Progress::Mode::Lines);
  p.started("icons/sword");
  p.started("icons/shield");
  p.finished(Progress::Outcome::Generated, "generated icons/sword (new; replicate, $0.0030)", 0.003,
             true);
  p.finished(Progress::Outcome::Cached, "cached icons/potion (new)");
  p.finished(Progress::Outcome::Failed, "icons/axe: refused", 0, false);
  std::string line = p.status(200);
  EXPECT_EQ(line.rfind("[3/10] icons/axe: refused · 1 running · 1 cached · 1 failed · $0.0030 · "
                       "ETA ",
                       0),
            0u)
      << line;
  // A narrow terminal: the event is cut, the counts stay; no line is wider than asked.
  std::string narrow = p.status(60);
  EXPECT_NE(narrow.find("· 1 running · 1 cached · 1 failed · $0.0030 · ETA"), std::string::npos)
      << narrow;
  size_t columns = narrow.size() - size_t(std::count(narrow.begin(), narrow.end(), '\xC2'));
  EXPECT_LE(columns, 60u) << narrow;
}

TEST(Progress, AllDoneShowsNoEta) {
  Log log(KILN_LOG_ERROR);
  Progress p(log, 1, KILN_LOG_ERROR, Progress::Mode::Lines);
  p.finished(Progress::Outcome::Cached, "cached icons/potion (new)");
  EXPECT_EQ(p.status(80), "[1/1] cached icons/potion · 0 running · 1 cached · $0.00");
}

// Text from servers and files reaches the terminal with its control characters escaped; line
// breaks and UTF-8 stay; tokens are redacted first (issue 16).
TEST(Log, ControlCharactersAreEscapedForTheTerminal) {
  EXPECT_EQ(escape_controls("a\x1b[2Jb\rc\x07"
                            "d\x7f\xc2\x9b e\nf\tg \xc2\xb7 \xe2\x9c\x93"),
            "a\\x1b[2Jb\\x0dc\\x07d\\x7f\\x9b e\nf\tg \xc2\xb7 \xe2\x9c\x93");
  // Bytes that are no UTF-8 (a lone 0x9b is CSI to some terminals), cut or overlong sequences.
  EXPECT_EQ(escape_controls("a\x9b"
                            "31m b\xff c\xe2\x9c d\xc0\xaf e\xed\xa0\x80 f\xf0\x9f\x98\x80"),
            "a\\x9b31m b\\xff c\\xe2\\x9c d\\xc0\\xaf e\\xed\\xa0\\x80 f\xf0\x9f\x98\x80");
  std::FILE* out = std::tmpfile();
  Log log(KILN_LOG_INFO, out);
  log.add_secret("r8_secret_token");
  log.error("server said \x1b]0;title\x07 with r8_secret_token");
  std::rewind(out);
  char buf[256] = {};
  std::fread(buf, 1, sizeof buf - 1, out);
  std::fclose(out);
  EXPECT_STREQ(buf, "kiln: error: server said \\x1b]0;title\\x07 with [REDACTED]\n");
  Progress p(log, 2, KILN_LOG_ERROR, Progress::Mode::Lines);
  p.finished(Progress::Outcome::Generated, "generated \x1b[31mred (x)", 0, false);
  EXPECT_EQ(p.status(200).find('\x1b'), std::string::npos);
}

} // namespace
} // namespace kiln::host
