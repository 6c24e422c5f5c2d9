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
  // Refused at 6.8, below the configured 8: the provider's limit is lower than configured.
  // Growth (10 % of the configured rate per second) stops at 95 % of 6.8...
  limiter.succeeded(t + 2500ms);
  EXPECT_DOUBLE_EQ(limiter.rate(), 8 * 0.85 * 0.95);
  limiter.succeeded(t + 12500ms); // ...and then only probes, at 0.02 per second
  EXPECT_NEAR(limiter.rate(), 8 * 0.85 * 0.95 + 0.2, 1e-9);
  limiter.succeeded(t + 600s);
  EXPECT_DOUBLE_EQ(limiter.rate(), 8.0); // never above the configured rate
}

TEST(RateLimiter, AConfiguredRateComesBackQuicklyAfterOneRefusal) {
  auto t = Clock::now();
  RateLimiter limiter(8, 4, t);
  limiter.throttled(-1, t); // at the configured rate: jitter, not a lower limit
  limiter.succeeded(t + 1s);
  EXPECT_DOUBLE_EQ(limiter.rate(), 8 * 0.85 + 0.8);
  limiter.succeeded(t + 2s);
  EXPECT_DOUBLE_EQ(limiter.rate(), 8.0);
}

TEST(RateLimiter, SuccessesInBetweenDoNotCancelTheDecrease) {
  // Requests keep succeeding while one is refused: the refusal still slows the backend.
  auto t = Clock::now();
  RateLimiter limiter(8, 4, t);
  for (int i = 1; i <= 20; ++i)
    limiter.succeeded(t + i * 100ms);
  limiter.throttled(-1, t + 2050ms);
  EXPECT_DOUBLE_EQ(limiter.rate(), 8 * 0.85);
}

TEST(RateLimiter, ALearnedLimitIsApproachedSlowly) {
  auto t = Clock::now();
  RateLimiter limiter(0, 1, t);
  for (int i = 0; i < 16; ++i)
    limiter.reserve(t); // an unpaced start: 16 at once
  limiter.throttled(1000, t);
  EXPECT_DOUBLE_EQ(limiter.rate(), 8.0); // half of what went in the last second
  limiter.succeeded(t + 4s);             // no ceiling known: +0.25 per second
  EXPECT_DOUBLE_EQ(limiter.rate(), 9.0);
  limiter.throttled(-1, t + 4s); // refused at 9: the provider's limit is below
  EXPECT_DOUBLE_EQ(limiter.rate(), 9 * 0.85);
  limiter.succeeded(t + 14s); // back up to 95 % of 9, no further
  EXPECT_DOUBLE_EQ(limiter.rate(), 9 * 0.95);
  limiter.succeeded(t + 24s); // then only probing: +0.02 per second
  EXPECT_NEAR(limiter.rate(), 9 * 0.95 + 0.2, 1e-9);
}

} // namespace
} // namespace kiln::host
