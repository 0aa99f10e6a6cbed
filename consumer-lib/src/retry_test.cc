// The backoff schedule of outbox::RetryPolicy (pure functions, no I/O).
#include "outbox/retry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "outbox/error.h"

namespace outbox {
namespace {

using std::chrono::milliseconds;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

RetryPolicy Policy(int initial, double multiplier, int max, double jitter) {
  RetryPolicy p;
  p.initial_delay = milliseconds(initial);
  p.multiplier = multiplier;
  p.max_delay = milliseconds(max);
  p.jitter = jitter;
  return p;
}

TEST(ConsumerBackoff, GrowsExponentiallyUpToTheMaximum) {
  auto p = Policy(100, 2, 1000, 0);
  std::vector<long> delays;
  for (int n = 1; n <= 6; ++n) delays.push_back(BackoffDelay(p, n, 0.7).count());
  EXPECT_THAT(delays, ElementsAre(100, 200, 400, 800, 1000, 1000));
}

TEST(ConsumerBackoff, JitterOnlyShortensWithinItsFraction) {
  auto p = Policy(1000, 3, 60000, 0.25);
  EXPECT_EQ(BackoffDelay(p, 1, 0.0), milliseconds(1000));      // the base
  EXPECT_EQ(BackoffDelay(p, 1, 0.999999), milliseconds(750));  // base * (1 - jitter)
  EXPECT_EQ(BackoffDelay(p, 2, 0.5), milliseconds(2625));      // 3000 * (1 - 0.125)
}

TEST(ConsumerBackoff, HugeAttemptNumbersSaturateInsteadOfOverflowing) {
  auto p = Policy(100, 10, 5000, 0);
  EXPECT_EQ(BackoffDelay(p, 10000, 0), milliseconds(5000));
}

TEST(ConsumerBackoff, ValidateNamesEveryBadField) {
  EXPECT_THAT(Validate(RetryPolicy{}), IsEmpty());
  RetryPolicy bad = Policy(-1, 0.5, -2, 2);
  bad.max_attempts = 0;
  auto problems = Validate(bad, "r.");
  EXPECT_EQ(problems.size(), 5u);
  EXPECT_THAT(problems[0], ::testing::HasSubstr("r.initial_delay"));
}

TEST(ReconnectBackoff, DoublesPerFailureAndStartsOverAfterASuccess) {
  ReconnectBackoff b{Policy(100, 2, 1000, 0)};
  std::vector<long> delays;
  for (int n = 1; n <= 6; ++n) delays.push_back(b.Failed().count());
  EXPECT_THAT(delays, ElementsAre(100, 200, 400, 800, 1000, 1000));
  EXPECT_EQ(b.failures(), 6);
  b.Succeeded();
  EXPECT_EQ(b.failures(), 0);
  EXPECT_EQ(b.Failed(), milliseconds(100));
}

TEST(ReconnectBackoff, DefaultIsTenthOfASecondUpToFiveSecondsWithJitter) {
  ReconnectBackoff b;
  auto first = b.Failed();
  EXPECT_GE(first, milliseconds(80));
  EXPECT_LE(first, milliseconds(100));
  for (int n = 0; n < 20; ++n) b.Failed();
  auto late = b.Failed();
  EXPECT_GE(late, milliseconds(4000));
  EXPECT_LE(late, milliseconds(5000));
}

TEST(ReconnectBackoff, RejectsABadPolicy) {
  EXPECT_THROW(ReconnectBackoff{Policy(100, 0.5, 1000, 0)}, Error);
}

}  // namespace
}  // namespace outbox
