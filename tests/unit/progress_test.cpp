#include "progress.hpp"

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

} // namespace
} // namespace kiln::host
