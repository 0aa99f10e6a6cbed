// RepeatLog: an error that repeats is logged once per interval, with its count.
#include "core/repeat_log.h"

#include <gtest/gtest.h>

namespace outbox::relay {
namespace {

using namespace std::chrono_literals;

TEST(RepeatLog, FirstOccurrenceAtOnceThenOneLinePerIntervalWithTheCount) {
  RepeatLog log{10s};
  Clock::TimePoint t{};
  auto first = log.Note("connect", t);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(*first, "");
  int lines = 0;
  std::string last;
  // 1,000 failures over 100 s: one line per 10 s, not one per failure.
  for (int i = 1; i <= 1000; ++i) {
    if (auto s = log.Note("connect", t + i * 100ms)) {
      ++lines;
      last = *s;
    }
  }
  EXPECT_EQ(lines, 10);
  EXPECT_EQ(last, " (failed 100 times in the last 10 s)");
}

TEST(RepeatLog, KindsAreCountedApartAndClearLogsTheNextFailureAtOnce) {
  RepeatLog log{10s};
  Clock::TimePoint t{};
  EXPECT_TRUE(log.Note("a", t).has_value());
  EXPECT_TRUE(log.Note("b", t).has_value());  // another kind: its own first line
  EXPECT_FALSE(log.Note("a", t + 1s).has_value());
  EXPECT_FALSE(log.Note("a", t + 2s).has_value());
  EXPECT_EQ(log.Clear("a"), 3);
  EXPECT_EQ(log.Clear("a"), 0);
  auto again = log.Note("a", t + 3s);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, "");
  EXPECT_FALSE(log.Note("b", t + 3s).has_value());  // b still within its interval
}

}  // namespace
}  // namespace outbox::relay
