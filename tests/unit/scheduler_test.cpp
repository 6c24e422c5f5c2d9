#include "scheduler.hpp"
#include "test_support.hpp"

#include <atomic>
#include <gtest/gtest.h>
#include <thread>

namespace kiln::host {
namespace {

using test::eventually;

TEST(Scheduler, AnAssetStartsOnlyWithAFreeSlotOfItsBackend) {
  Scheduler s;
  s.set_limit("replicate", 2);
  for (size_t i = 0; i < 4; ++i)
    s.add(i, "replicate", "flux");
  auto a = s.next(), b = s.next();
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(a->holds_slot && b->holds_slot);
  EXPECT_EQ(std::pair(a->index, b->index), std::pair(size_t(0), size_t(1)));
  // Both slots are taken: the third waits (blocked in next(), its asset still pending) until
  // one is given back.
  std::optional<Scheduler::Job> c;
  std::thread waiter([&] { c = s.next(); });
  ASSERT_TRUE(eventually([&] { return s.waiting() == 1; }));
  EXPECT_EQ(s.pending(), 2u);
  s.release("replicate");
  waiter.join();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->index, 2u);
}

TEST(Scheduler, ASlowModelKeepsItsShareAndNoMore) {
  Scheduler s;
  s.set_limit("replicate", 4);
  for (size_t i = 0; i < 6; ++i)
    s.add(i, "replicate", "sdxl"); // declared first
  for (size_t i = 6; i < 12; ++i)
    s.add(i, "replicate", "flux");
  // The groups take turns: two each in the four slots.
  std::vector<size_t> started;
  for (int k = 0; k < 4; ++k)
    started.push_back(s.next()->index);
  EXPECT_EQ(started, (std::vector<size_t>{0, 6, 1, 7}));
  // sdxl is slow: its two stay in flight while flux's finish, and flux's slots go to flux.
  for (auto [index, group] : {std::pair<size_t, size_t>{6, 1}, {7, 1}}) {
    s.release("replicate");
    s.done(Scheduler::Job{index, group, true});
    EXPECT_EQ(s.next()->index, index + 2);
  }
}

TEST(Scheduler, BackendsHaveTheirOwnSlots) {
  Scheduler s;
  s.set_limit("replicate", 1);
  s.set_limit("placeholder", 2);
  s.add(0, "replicate", "flux");
  s.add(1, "replicate", "flux");
  s.add(2, "placeholder", "");
  s.add(3, "placeholder", "");
  std::vector<size_t> started;
  for (int k = 0; k < 3; ++k)
    started.push_back(s.next()->index);
  // replicate's only slot is busy: its second asset does not hold up the placeholder's.
  EXPECT_EQ(started, (std::vector<size_t>{0, 2, 3}));
  EXPECT_EQ(s.slots_in_use(), 3u);
  EXPECT_EQ(s.pending(), 1u);
}

TEST(Scheduler, ARetryWaitsForASlotLikeAnyJob) {
  Scheduler s;
  s.set_limit("replicate", 1);
  EXPECT_TRUE(s.acquire("replicate"));
  std::atomic<bool> got{false};
  std::thread waiter([&] { got = s.acquire("replicate"); });
  ASSERT_TRUE(eventually([&] { return s.waiting() == 1; }));
  EXPECT_FALSE(got);
  {
    SlotLease lease(s, "replicate", true); // given back when it goes out of scope
  }
  waiter.join();
  EXPECT_TRUE(got);
}

TEST(SlotLease, AHeldSlotGoesBackUnlessItIsHandedOver) {
  Scheduler s;
  s.set_limit("replicate", 1);
  for (size_t i = 0; i < 3; ++i)
    s.add(i, "replicate", "flux");
  auto first = s.next();
  ASSERT_TRUE(first && first->holds_slot);
  {
    SlotLease lease(s, "replicate", true);
    SlotLease taker(s, "replicate", lease.hand_over()); // the first attempt takes it over
    EXPECT_FALSE(lease.hand_over());
  } // given back once, by the taker
  // The second starts without waiting (a leaked slot would hold it back for ever).
  std::optional<Scheduler::Job> second;
  std::atomic<bool> started{false};
  std::thread starter([&] {
    second = s.next();
    started = true;
  });
  ASSERT_TRUE(eventually([&] { return started || s.waiting() == 1; }));
  const bool leaked = !started;
  if (leaked)
    s.release("replicate"); // it waits: the slot leaked; unblock it so the test can end
  starter.join();
  ASSERT_FALSE(leaked);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->index, 1u);
  // Given back once, not twice: the one slot is the second asset's now, the third waits.
  std::optional<Scheduler::Job> third;
  std::thread waiter([&] { third = s.next(); });
  ASSERT_TRUE(eventually([&] { return s.waiting() == 1; }));
  EXPECT_EQ(s.pending(), 1u);
  { SlotLease never_used(s, "replicate", true); } // the second never got to its first attempt
  waiter.join();
  ASSERT_TRUE(third);
  EXPECT_EQ(third->index, 2u);
}

} // namespace
} // namespace kiln::host
