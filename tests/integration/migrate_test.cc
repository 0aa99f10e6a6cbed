// `outbox-relay migrate` against a real PostgreSQL 15.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>

#include "common/errors.h"
#include "cli/migrate.h"
#include "pg_cluster.h"
#include "process.h"

namespace outbox::relay {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

spdlog::logger& NullLog() {
  static spdlog::logger log{"null", std::make_shared<spdlog::sinks::null_sink_mt>()};
  return log;
}

int CountMigrations(const std::string& db) {
  pqxx::connection c{db};
  pqxx::work tx{c};
  return tx.exec1("SELECT count(*) FROM outbox_meta.migrations")[0].as<int>();
}

TEST(Migrate, AppliesEverythingToAnEmptyDatabase) {
  auto db = test::FreshDatabase();
  auto result = Migrate(db, EmbeddedMigrations(), NullLog());
  EXPECT_EQ(result.applied.size(), EmbeddedMigrations().size());
  pqxx::connection c{db};
  pqxx::work tx{c};
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM pg_tables WHERE schemaname = 'outbox'")[0].as<int>(), 4);
  EXPECT_EQ(CountMigrations(db), static_cast<int>(EmbeddedMigrations().size()));
}

TEST(Migrate, SecondRunIsANoOp) {
  auto db = test::FreshDatabase();
  Migrate(db, EmbeddedMigrations(), NullLog());
  auto again = Migrate(db, EmbeddedMigrations(), NullLog());
  EXPECT_TRUE(again.applied.empty());
  EXPECT_EQ(again.already_applied, static_cast<int>(EmbeddedMigrations().size()));
}

TEST(Migrate, TwoConcurrentProcessesBothSucceedOnce) {
  auto db = test::FreshDatabase();
  test::Process a{{test::RelayBinary(), "migrate", "--db", db}};
  test::Process b{{test::RelayBinary(), "migrate", "--db", db}};
  EXPECT_EQ(a.Wait(std::chrono::seconds(60)), 0) << a.Stderr();
  EXPECT_EQ(b.Wait(std::chrono::seconds(60)), 0) << b.Stderr();
  EXPECT_EQ(CountMigrations(db), static_cast<int>(EmbeddedMigrations().size()));
  // Exactly one of them applied the files.
  int applied_lines = 0;
  for (const auto* p : {&a, &b}) {
    if (p->Stderr().find("applied migration 0001_outbox.sql") != std::string::npos) ++applied_lines;
  }
  EXPECT_EQ(applied_lines, 1);
}

TEST(Migrate, TamperedAppliedFileIsAClearErrorWithExitCode2) {
  auto db = test::FreshDatabase();
  test::TempDir dir;
  for (const auto& m : EmbeddedMigrations()) std::ofstream{dir.path() + "/" + m.name} << m.sql;
  auto first = test::RunProcess({test::RelayBinary(), "migrate", "--db", db, "--schema-dir", dir.path()});
  ASSERT_EQ(first.code, 0) << first.err;
  std::ofstream{dir.path() + "/0001_outbox.sql", std::ios::app} << "\n-- edited\n";
  auto second = test::RunProcess({test::RelayBinary(), "migrate", "--db", db, "--schema-dir", dir.path()});
  EXPECT_EQ(second.code, 2);
  EXPECT_THAT(second.err, HasSubstr("0001_outbox.sql was changed after it was applied"));
}

TEST(Migrate, NewFileInDirectoryIsAppliedAfterTheOthers) {
  auto db = test::FreshDatabase();
  test::TempDir dir;
  for (const auto& m : EmbeddedMigrations()) std::ofstream{dir.path() + "/" + m.name} << m.sql;
  Migrate(db, LoadMigrations(dir.path()), NullLog());
  std::ofstream{dir.path() + "/9001_extra.sql"} << "CREATE TABLE outbox.extra (x int);";
  auto result = Migrate(db, LoadMigrations(dir.path()), NullLog());
  ASSERT_EQ(result.applied, std::vector<std::string>{"9001_extra.sql"});
}

TEST(Migrate, FailingFileLeavesNothingHalfApplied) {
  auto db = test::FreshDatabase();
  test::TempDir dir;
  std::ofstream{dir.path() + "/0001_half.sql"} << "CREATE TABLE public.half (x int); SELECT 1/0;";
  EXPECT_THROW(Migrate(db, LoadMigrations(dir.path()), NullLog()), RuntimeError);
  pqxx::connection c{db};
  pqxx::work tx{c};
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM pg_tables WHERE tablename = 'half'")[0].as<int>(), 0);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM outbox_meta.migrations")[0].as<int>(), 0);
}

TEST(Migrate, BadSchemaDirectoryIsAConfigError) {
  test::TempDir dir;
  std::ofstream{dir.path() + "/one.sql"} << "SELECT 1;";
  std::ofstream{dir.path() + "/0001_a.sql"} << "SELECT 1;";
  std::ofstream{dir.path() + "/0001_b.sql"} << "SELECT 1;";
  try {
    LoadMigrations(dir.path());
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.problems().size(), 2u);
  }
  EXPECT_THROW(LoadMigrations(dir.path() + "/nope"), ConfigError);
}

TEST(Migrate, UnreachableDatabaseExitsWith1AndHidesThePassword) {
  auto r = test::RunProcess({test::RelayBinary(), "migrate", "--db",
                      "host=127.0.0.1 port=1 user=x password=hunter2 connect_timeout=2"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("cannot connect to PostgreSQL"));
  EXPECT_THAT(r.err, HasSubstr("password=***"));
  EXPECT_THAT(r.err + r.out, Not(HasSubstr("hunter2")));
}

TEST(Migrate, MalformedConninfoExitsWith2) {
  auto r = test::RunProcess({test::RelayBinary(), "migrate", "--db", "host=x hunter2"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("invalid PostgreSQL conninfo"));
  EXPECT_THAT(r.err, Not(HasSubstr("hunter2")));
}

}  // namespace
}  // namespace outbox::relay
