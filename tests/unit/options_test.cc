// The option table's typed values: what is accepted, how problems and defaults read.
#include "cli/options.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace outbox::relay {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using std::chrono::milliseconds;

struct Sample {
  int count = 7;                           // an int
  milliseconds wait{60000};                // a duration
  bool verbose = false;                    // a flag
  std::string mode = "fast";               // a choice
};

TEST(Options, FormatsDurationsAsUsersWriteThem) {
  EXPECT_EQ(FormatDuration(milliseconds{0}), "0s");
  EXPECT_EQ(FormatDuration(milliseconds{200}), "200ms");
  EXPECT_EQ(FormatDuration(milliseconds{1500}), "1500ms");
  EXPECT_EQ(FormatDuration(milliseconds{6000}), "6s");
  EXPECT_EQ(FormatDuration(milliseconds{60000}), "60s");
  EXPECT_EQ(FormatDuration(milliseconds{600000}), "10m");
  EXPECT_EQ(FormatDuration(milliseconds{7 * 24 * 3600 * 1000LL}), "168h");
}

TEST(Options, ParsesDurationsIntegersAndBooleans) {
  Problems problems;
  EXPECT_EQ(ParseDuration("d", "250ms", milliseconds{0}, milliseconds{1000}, problems), milliseconds{250});
  EXPECT_EQ(ParseDuration("d", "2h", milliseconds{0}, milliseconds{7200000}, problems), milliseconds{7200000});
  EXPECT_EQ(ParseInt("n", "-3", -5, 5, problems), -3);
  EXPECT_EQ(ParseBool("b", "On", problems), true);
  EXPECT_THAT(problems, IsEmpty());
  EXPECT_FALSE(ParseDuration("d", "100", milliseconds{0}, milliseconds{1000}, problems));
  EXPECT_FALSE(ParseDuration("d", "2s", milliseconds{0}, milliseconds{1000}, problems));
  EXPECT_FALSE(ParseInt("n", "6", -5, 5, problems));
  EXPECT_FALSE(ParseBool("b", "maybe", problems));
  EXPECT_THAT(problems, ElementsAre(HasSubstr("--d: expected a duration like 250ms"),
                                    HasSubstr("--d: must be from 0s to 1s, got '2s'"),
                                    HasSubstr("--n: expected an integer from -5 to 5, got '6'"),
                                    HasSubstr("--b: expected true or false, got 'maybe'")));
}

TEST(Options, HelpIsRenderedFromTheInClassDefault) {
  EXPECT_EQ(Int("count", &Sample::count, 1, 9, "how many").help, "how many, 1..9 (default 7)");
  EXPECT_EQ(Duration("wait", &Sample::wait, milliseconds{1}, milliseconds{3600000}, "how long").help,
            "how long, 1ms..60m (default 60s)");
  EXPECT_EQ(Flag("verbose", &Sample::verbose, "say more").help, "say more");
  EXPECT_EQ(Choice("mode", &Sample::mode, {{"fast", "fast"}, {"safe", "safe"}}, "MODE", "how").help,
            "how: fast or safe (default fast)");
}

TEST(Options, SetValidatesAndStores) {
  Sample s;
  Problems problems;
  Int("count", &Sample::count, 1, 9, "").set({"5"}, s, problems);
  Duration("wait", &Sample::wait, milliseconds{1}, milliseconds{3600000}, "").set({"2m"}, s, problems);
  Flag("verbose", &Sample::verbose, "").set({"true"}, s, problems);
  Choice("mode", &Sample::mode, {{"fast", "fast"}, {"safe", "safe"}}, "MODE", "").set({"slow"}, s, problems);
  EXPECT_EQ(s.count, 5);
  EXPECT_EQ(s.wait, milliseconds{120000});
  EXPECT_TRUE(s.verbose);
  EXPECT_EQ(s.mode, "fast");
  EXPECT_THAT(problems, ElementsAre("--mode: expected fast or safe, got 'slow'"));
}

}  // namespace
}  // namespace outbox::relay
