// The per-backend pace of new remote jobs, on a made-up clock.
#include "rate_limit.hpp"

#include <gtest/gtest.h>

namespace kiln::host {
namespace {

using namespace std::chrono_literals;

double ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

TEST(RateLimiter, ConfiguredRateAfterABurst) {
  auto t = Clock::now();
  RateLimiter limiter(8, 4, t);
  // A burst of 4 goes at once, then one slot every 125 ms, in order.
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(ms(limiter.reserve(t)), 0) << i;
  for (int i = 1; i <= 4; ++i)
    EXPECT_NEAR(ms(limiter.reserve(t)), 125.0 * i, 0.01) << i;
  // After a quiet second the bucket is full again, but never more than the burst.
  auto later = t + 3s;
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(ms(limiter.reserve(later)), 0) << i;
  EXPECT_NEAR(ms(limiter.reserve(later)), 125.0, 0.01);
}

TEST(RateLimiter, UnconfiguredIsUnlimitedUntilThrottled) {
  auto t = Clock::now();
  RateLimiter limiter(0, 4, t);
  for (int i = 0; i < 16; ++i)
    EXPECT_EQ(ms(limiter.reserve(t)), 0);
  limiter.throttled(1000, t);
  // Slowed to half of what was sent in the last second, and nothing before the hint.
  EXPECT_DOUBLE_EQ(limiter.rate(), 8.0);
  EXPECT_NEAR(ms(limiter.reserve(t)), 1000.0, 0.01);
  // The other refusals of the same burst do not slow it further.
  limiter.throttled(1000, t + 10ms);
  EXPECT_DOUBLE_EQ(limiter.rate(), 8.0);
}

TEST(RateLimiter, DecreasesOncePerWindowAndGrowsBackToTheCeiling) {
  auto t = Clock::now();
  RateLimiter limiter(8, 4, t);
  limiter.throttled(-1, t);
  EXPECT_DOUBLE_EQ(limiter.rate(), 8 * 0.85);
  limiter.throttled(-1, t + 500ms);
  EXPECT_DOUBLE_EQ(limiter.rate(), 8 * 0.85);
  limiter.throttled(-1, t + 1500ms);
  EXPECT_DOUBLE_EQ(limiter.rate(), 8 * 0.85 * 0.85);
  limiter.succeeded(t + 2500ms); // +0.25 per second since the last change
  EXPECT_DOUBLE_EQ(limiter.rate(), 8 * 0.85 * 0.85 + 0.25);
  limiter.succeeded(t + 60s);
  EXPECT_DOUBLE_EQ(limiter.rate(), 8.0); // never above the configured rate
}

} // namespace
} // namespace kiln::host
