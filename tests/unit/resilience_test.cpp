// The run-wide limits over every asset's strategy chain.
#include "resilience.hpp"

#include <gtest/gtest.h>

namespace kiln::host {
namespace {

using namespace std::chrono_literals;

TEST(CircuitBreakers, OpenAfterAStreakCoolDownThenHalfOpen) {
  CircuitBreakers b(3, 10s);
  auto t = Clock::now();
  EXPECT_FALSE(b.failure("m", t));
  EXPECT_FALSE(b.failure("m", t));
  b.success("m"); // a success ends the streak
  EXPECT_FALSE(b.failure("m", t));
  EXPECT_FALSE(b.failure("m", t));
  EXPECT_EQ(b.open_for("m", t), 0);
  EXPECT_TRUE(b.failure("m", t)); // the third in a row opens it
  EXPECT_NEAR(b.open_for("m", t + 4s), 6.0, 1e-6);
  EXPECT_EQ(b.open_for("other", t), 0); // per model
  EXPECT_FALSE(b.failure("m", t + 1s)); // late failures of attempts already under way
  EXPECT_EQ(b.open_for("m", t + 10s), 0);
  EXPECT_TRUE(b.failure("m", t + 11s)); // half-open: one more failure re-opens
}

TEST(RetryBudget, AllowsMinPlusRatioOfAssets) {
  RetryBudget budget(0.5, 2);
  for (int i = 0; i < 4; ++i)
    budget.first_attempt();
  int granted = 0;
  while (budget.try_retry())
    ++granted;
  EXPECT_EQ(granted, 4); // 2 + 0.5 x 4
  budget.first_attempt();
  budget.first_attempt();
  EXPECT_TRUE(budget.try_retry()); // more assets, more room
  EXPECT_FALSE(budget.try_retry());
  EXPECT_EQ(budget.retries(), 5u);
}

} // namespace
} // namespace kiln::host
