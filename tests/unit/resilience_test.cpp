// The run-wide limits over every asset's strategy chain.
#include "resilience.hpp"
#include "test_support.hpp"

#include <atomic>
#include <gtest/gtest.h>
#include <thread>

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

TEST(MoneyBudget, ReservationsThatCannotFitWithNothingInFlightAreRefused) {
  MoneyBudget money(0.03, 0);
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(money.reserve(0.003)) << i; // 10 x $0.003: exactly the budget
  // Settled at the same price: the float sums leave a residue, which must not read as a
  // reservation still held (the 11th would wait for ever).
  for (int i = 0; i < 10; ++i)
    money.settle(0.003, 0.003);
  EXPECT_FALSE(money.reserve(0.003));
  EXPECT_FALSE(money.reserve(0.003));
  EXPECT_TRUE(money.reserve(0)); // free work is never refused
  EXPECT_EQ(money.refused(), 2u);
  EXPECT_NEAR(money.needed(), 0.006, 1e-12);
  EXPECT_NEAR(money.spent(), 0.03, 1e-12);
}

TEST(MoneyBudget, AWaitingReservationGoesAheadWhenAnotherComesBackSmaller) {
  MoneyBudget money(0.01, 0.004); // $0.004 spent by a killed run
  ASSERT_TRUE(money.reserve(0.005));
  // The second does not fit while the first is held: it waits (blocked in reserve()), and
  // goes ahead once the first settles for less: 0.004 + 0.001 + 0.005 fits.
  std::atomic<int> second{-1};
  std::thread reserver([&] { second = money.reserve(0.005) ? 1 : 0; });
  ASSERT_TRUE(test::eventually([&] { return money.waiting() == 1; }));
  EXPECT_EQ(second, -1);
  money.settle(0.005, 0.001); // cost less than predicted
  reserver.join();
  EXPECT_EQ(second, 1);
  EXPECT_EQ(money.refused(), 0u);
  EXPECT_FALSE(MoneyBudget(std::nullopt, 0).needed() > 0);
}

} // namespace
} // namespace kiln::host
