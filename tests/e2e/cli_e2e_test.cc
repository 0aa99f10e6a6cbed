// The outbox-relay binary as users run it: exit codes, help, secrets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>

#include "pg_cluster.h"
#include "process.h"
#include "wait.h"

namespace outbox {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using test::RelayBinary;
using test::RunProcess;
using namespace std::chrono_literals;

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

// Issue 14: problems that waiting cannot heal end `run` and `notify` at start-up with the
// fix named (exit 2), instead of a retry loop that looks healthy under systemd.
TEST(CliE2e, WhatWaitingCannotHealEndsTheCommandAtStartWithTheFix) {
  auto db = test::FreshDatabase();
  for (const char* cmd : {"run", "notify"}) {
    std::vector<std::string> argv = {RelayBinary(), cmd, "--db", db};
    if (std::string(cmd) == "run") argv.insert(argv.end(), {"--brokers", "127.0.0.1:9"});
    auto r = RunProcess(argv);
    EXPECT_EQ(r.code, 2) << cmd << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("run `outbox-relay migrate --db ...` as the schema owner")) << cmd;
  }
  ASSERT_EQ(RunProcess({RelayBinary(), "migrate", "--db", db}).code, 0);
  // A login without the relay role: named, with the GRANT to run.
  {
    pqxx::connection c{db};
    pqxx::nontransaction tx{c};
    tx.exec("DROP ROLE IF EXISTS nobody_special");
    tx.exec("CREATE ROLE nobody_special LOGIN");
  }
  auto plain = test::SharedCluster().ConninfoFor(pqxx::connection{db}.dbname(), "nobody_special");
  auto r = RunProcess({RelayBinary(), "run", "--db", plain, "--brokers", "127.0.0.1:9"});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("GRANT outbox_relay TO nobody_special"));
  auto n = RunProcess({RelayBinary(), "notify", "--db", plain});
  EXPECT_EQ(n.code, 2) << n.err;
  EXPECT_THAT(n.err, HasSubstr("GRANT outbox_relay TO nobody_special"));
  // A login that does not exist.
  auto ghost = test::SharedCluster().ConninfoFor(pqxx::connection{db}.dbname(), "no_such_login");
  auto g = RunProcess({RelayBinary(), "run", "--db", ghost, "--brokers", "127.0.0.1:9"});
  EXPECT_EQ(g.code, 2) << g.err;
  EXPECT_THAT(g.err, HasSubstr("the login in --db does not exist"));
}

// Issue 14: the one-shot operator commands end the same way as `run` (one logic,
// pg/startup_check.cc): exit 2 and one line naming the fix. A server that cannot be
// reached is exit 1 for them (nothing to wait for in a one-shot command: try again later).
TEST(CliE2e, OperatorCommandsEndWithTheFixWhenWaitingCannotHeal) {
  const std::vector<std::vector<std::string>> commands = {{"status"}, {"dead-letters", "list"}, {"prepared", "list"}};
  auto run = [](const std::vector<std::string>& command, const std::string& conninfo) {
    std::vector<std::string> argv = {RelayBinary()};
    argv.insert(argv.end(), command.begin(), command.end());
    argv.insert(argv.end(), {"--db", conninfo});
    return RunProcess(argv);
  };
  auto expect_fix = [&](const std::string& conninfo, const std::string& fix) {
    for (const auto& command : commands) {
      auto r = run(command, conninfo);
      EXPECT_EQ(r.code, 2) << command[0] << ": " << r.err;
      EXPECT_THAT(r.err, HasSubstr(fix)) << command[0];
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << command[0] << ": " << r.err;
      EXPECT_EQ(r.out, "") << command[0];
    }
  };
  auto db = test::FreshDatabase();
  const std::string dbname = pqxx::connection{db}.dbname();
  expect_fix(db, "the database has no outbox schema: run `outbox-relay migrate --db ...` as the schema owner");

  // Migrated by an older binary (the migrations before 0006).
  test::TempDir old_schema;
  for (const auto& f : std::filesystem::directory_iterator(test::SourceDir() + "/schema")) {
    if (f.path().filename().string() < "0006") {
      std::filesystem::copy_file(f.path(), old_schema.path() + "/" + f.path().filename().string());
    }
  }
  auto old = RunProcess({RelayBinary(), "migrate", "--db", db, "--schema-dir", old_schema.path()});
  ASSERT_EQ(old.code, 0) << old.err;
  expect_fix(db, "the outbox schema is older than this outbox-relay: run `outbox-relay migrate --db ...`");

  ASSERT_EQ(RunProcess({RelayBinary(), "migrate", "--db", db}).code, 0);
  // A producer login has none of what the operator commands read and call.
  const auto producer = test::As(test::Login::kProducer, db);
  expect_fix(producer, "GRANT outbox_relay TO " + test::LoginName(test::Login::kProducer));
  auto dl = run({"dead-letters", "list"}, producer);
  EXPECT_THAT(dl.err, HasSubstr("lacks SELECT on outbox.dead_letters"));
  // A login that does not exist.
  expect_fix(test::SharedCluster().ConninfoFor(dbname, "no_such_login"), "the login in --db does not exist");

  // The documented role passes the check and gets its answer.
  const auto relay = test::As(test::Login::kRelay, db);
  for (const auto& command : commands) {
    auto r = run(command, relay);
    EXPECT_EQ(r.code, 0) << command[0] << ": " << r.err;
  }
  // Unreachable: exit 1, not 2.
  for (const auto& command : commands) {
    auto r = run(command, "host=127.0.0.1 port=1 dbname=x user=y connect_timeout=5");
    EXPECT_EQ(r.code, 1) << command[0] << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("cannot connect to PostgreSQL")) << command[0];
  }
}

// Issue 13: the database password can live in libpq's password file only (PGPASSFILE or
// the passfile keyword), never on the command line. A login that must give a password and
// has none, or a wrong one, ends the command at once with the fix (exit 2, one line), and
// the password is never printed (issue 14).
TEST(CliE2e, ThePasswordComesFromLibpqsPasswordFile) {
  auto db = test::FreshDatabase();
  ASSERT_EQ(RunProcess({RelayBinary(), "migrate", "--db", db}).code, 0);
  const std::string login = "outbox_test_password_relay";
  test::CreatePasswordLogin(db, login, "pw-in-file-7", "outbox_relay");
  const std::string dbname = pqxx::connection{db}.dbname();
  const auto conninfo = test::SharedCluster().ConninfoFor(dbname, login);  // no password in it
  test::TempDir dir;
  auto passfile = [&](const std::string& name, const std::string& password) {
    const auto path = dir.path() + "/" + name;
    std::ofstream{path} << "*:*:" << dbname << ":" << login << ":" << password << "\n";
    // libpq ignores a password file that group or others may read.
    std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    return path;
  };
  const auto good = passfile("pgpass", "pw-in-file-7");
  const auto wrong = passfile("pgpass-wrong", "not-the-password");
  auto one_line = [](const test::RunResult& r) { return std::count(r.err.begin(), r.err.end(), '\n') == 1; };

  auto status = RunProcess({RelayBinary(), "status", "--db", conninfo}, {{"PGPASSFILE", good}});
  EXPECT_EQ(status.code, 0) << status.err;
  EXPECT_THAT(status.out, HasSubstr("outbox: 0 pending"));
  auto list = RunProcess({RelayBinary(), "dead-letters", "list", "--db", conninfo + " passfile=" + good});
  EXPECT_EQ(list.code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr("no dead letters"));
  {
    test::Process relay{{RelayBinary(), "run", "--db", conninfo, "--brokers", "127.0.0.1:9"}, {{"PGPASSFILE", good}}};
    ASSERT_TRUE(test::WaitUntil(
        [&] { return relay.Stderr().find("connected to PostgreSQL") != std::string::npos || !relay.Running(); }, 30s))
        << relay.Stderr();
    EXPECT_TRUE(relay.Running()) << relay.Stderr();
    relay.Signal(SIGTERM);
    EXPECT_EQ(relay.Wait(30s), 0) << relay.Stderr();
  }

  // No password anywhere: the daemon and the operator commands end with the fix.
  for (const std::vector<std::string>& argv :
       {std::vector<std::string>{RelayBinary(), "run", "--db", conninfo, "--brokers", "127.0.0.1:9"},
        std::vector<std::string>{RelayBinary(), "status", "--db", conninfo}}) {
    auto r = RunProcess(argv);
    EXPECT_EQ(r.code, 2) << argv[1] << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("PostgreSQL asks this login for a password and none was given: put it in libpq's "
                                 "password file"))
        << argv[1];
    EXPECT_TRUE(one_line(r)) << r.err;
  }
  // A wrong one.
  auto r = RunProcess({RelayBinary(), "prepared", "list", "--db", conninfo}, {{"PGPASSFILE", wrong}});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("PostgreSQL refused the login (authentication failed)"));
  EXPECT_TRUE(one_line(r)) << r.err;
  for (const auto* out : {&status, &list, &r}) {
    EXPECT_THAT(out->out + out->err, Not(HasSubstr("pw-in-file-7")));
    EXPECT_THAT(out->out + out->err, Not(HasSubstr("not-the-password")));
  }
}

}  // namespace
}  // namespace outbox
