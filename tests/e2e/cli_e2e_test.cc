// The outbox-relay binary as users run it: exit codes, help, secrets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "process.h"

namespace outbox {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using test::RelayBinary;
using test::RunProcess;

TEST(CliE2e, VersionAndHelpExitZero) {
  auto v = RunProcess({RelayBinary(), "--version"});
  EXPECT_EQ(v.code, 0);
  EXPECT_THAT(v.out, HasSubstr("outbox-relay 0."));
  auto h = RunProcess({RelayBinary(), "--help"});
  EXPECT_EQ(h.code, 0);
  for (const char* cmd : {"migrate", "run", "status", "notify", "dev-kafka", "dead-letters"}) {
    EXPECT_THAT(h.out, HasSubstr(cmd));
    auto sub = RunProcess({RelayBinary(), cmd, "--help"});
    EXPECT_EQ(sub.code, 0) << cmd;
    EXPECT_THAT(sub.out, HasSubstr("Usage: outbox-relay " + std::string(cmd)));
  }
}

TEST(CliE2e, NoCommandIsUsageOnStderrAndExitTwo) {
  auto r = RunProcess({RelayBinary()});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr("no command given: usage: outbox-relay <command>"));
}

TEST(CliE2e, BadUsageExitsTwoWithOneLinePerProblem) {
  auto r = RunProcess({RelayBinary(), "run", "--lanes", "x", "--batch-size", "-1"}, {{"OUTBOX_DB", ""}});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--db is required"));
  EXPECT_THAT(r.err, HasSubstr("--brokers is required"));
  EXPECT_THAT(r.err, HasSubstr("--lanes"));
  EXPECT_THAT(r.err, HasSubstr("--batch-size"));
  EXPECT_THAT(r.err, Not(HasSubstr("terminate called")));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 4);
}

TEST(CliE2e, UnknownCommandExitsTwo) {
  auto r = RunProcess({RelayBinary(), "frobnicate"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command 'frobnicate'"));
}

TEST(CliE2e, SecretsNeverPrinted) {
  auto r = RunProcess({RelayBinary(), "run", "--db", "host=127.0.0.1 port=1 password=hunter2 connect_timeout=1",
                "--brokers", "127.0.0.1:1", "--kafka-conf", "sasl.password=swordfish", "--lanes", "bad"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out + r.err, Not(HasSubstr("hunter2")));
  EXPECT_THAT(r.out + r.err, Not(HasSubstr("swordfish")));
}

}  // namespace
}  // namespace outbox
