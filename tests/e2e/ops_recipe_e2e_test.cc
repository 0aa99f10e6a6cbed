// The systemd recipe in ops/ works as written (issue 14): the unit file parses, the
// example config is loaded by the relay's own --config for every operator command.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "pg_cluster.h"
#include "process.h"

namespace outbox {
namespace {

using ::testing::HasSubstr;
using test::RelayBinary;
using test::RunProcess;

std::string Read(const std::string& path) {
  std::ifstream in{path};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// systemd-analyze verify's complaints about `file` (a unit in a fresh directory whose
// ExecStart points at the built binary: verify checks it exists); `instance` names the
// unit to verify (a template is verified through one of its instances).
std::string VerifyComplaints(const std::string& file, const std::string& instance) {
  test::TempDir dir;
  auto copy = std::regex_replace(Read(test::SourceDir() + "/ops/" + file), std::regex("/usr/local/bin/outbox-relay"),
                                 RelayBinary());
  std::ofstream{dir.path() + "/" + file} << copy;
  auto r = RunProcess({"/usr/bin/systemd-analyze", "verify", "--man=no", dir.path() + "/" + instance});
  // Lines about the unit itself would name it; other units' warnings on this host do not count.
  std::string mine;
  std::istringstream in{r.err + r.out};
  for (std::string line; std::getline(in, line);) {
    if (line.find("outbox-relay") != std::string::npos) mine += line + "\n";
  }
  return mine;
}

// The hardening issue 18 asks for, in both units.
void ExpectHardened(const std::string& unit) {
  for (const char* line : {"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                           "Restart=on-failure", "RestartPreventExitStatus=2", "KillSignal=SIGTERM",
                           "User=outbox-relay"}) {
    EXPECT_THAT(unit, HasSubstr(std::string("\n") + line + "\n")) << line;
  }
  // The SIGTERM drain (--shutdown-timeout, 30s by default) ends before systemd kills.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(unit, m, std::regex("\nTimeoutStopSec=(\\d+)\n")));
  EXPECT_GT(std::stoi(m[1]), 30 + 5);
}

TEST(OpsRecipe, UnitFileCreatesItsUserAndConfigReadableByItAndParses) {
  auto unit = Read(test::SourceDir() + "/ops/outbox-relay.service");
  // The recipe in its header creates what the unit needs.
  EXPECT_THAT(unit, HasSubstr("useradd --system"));
  EXPECT_THAT(unit, HasSubstr("-g outbox-relay ops/relay.conf.example /etc/outbox-relay/relay.conf"));
  EXPECT_THAT(unit, HasSubstr("ExecStart=/usr/local/bin/outbox-relay run --config /etc/outbox-relay/relay.conf"));
  EXPECT_THAT(unit, HasSubstr("\nEnvironmentFile=-/etc/outbox-relay/env\n"));
  ExpectHardened(unit);
  auto templ = Read(test::SourceDir() + "/ops/outbox-relay@.service");
  EXPECT_THAT(templ, HasSubstr("ExecStart=/usr/local/bin/outbox-relay run --config /etc/outbox-relay/%i.conf\n"));
  EXPECT_THAT(templ, HasSubstr("\nEnvironmentFile=-/etc/outbox-relay/%i.env\n"));
  ExpectHardened(templ);
  if (!std::filesystem::exists("/usr/bin/systemd-analyze")) {
    GTEST_SKIP() << "systemd-analyze is not installed: the unit files' syntax was not verified";
  }
  EXPECT_EQ(VerifyComplaints("outbox-relay.service", "outbox-relay.service"), "");
  EXPECT_EQ(VerifyComplaints("outbox-relay@.service", "outbox-relay@orders.service"), "");
}

TEST(OpsRecipe, ExampleConfigServesEveryOperatorCommand) {
  auto db = test::FreshDatabase();
  auto migrate = RunProcess({RelayBinary(), "migrate", "--db", db});
  ASSERT_EQ(migrate.code, 0) << migrate.err;
  auto config = test::SourceDir() + "/ops/relay.conf.example";
  EXPECT_THAT(Read(config), HasSubstr("\nbrokers = "));
  auto relay_db = test::As(test::Login::kRelay, db);
  for (std::vector<std::string> cmd : {std::vector<std::string>{"status"}, {"dead-letters", "list"},
                                       {"prepared", "list"}}) {
    std::vector<std::string> argv{RelayBinary()};
    argv.insert(argv.end(), cmd.begin(), cmd.end());
    for (const std::string& a : {std::string("--config"), config, std::string("--db"), relay_db}) argv.push_back(a);
    auto r = RunProcess(argv);
    EXPECT_EQ(r.code, 0) << cmd[0] << ": " << r.err;
  }
  // An unreadable config file names the reason.
  auto r = RunProcess({RelayBinary(), "status", "--config", "/nonexistent/relay.conf", "--db", relay_db});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("cannot read '/nonexistent/relay.conf': No such file or directory"));
}

}  // namespace
}  // namespace outbox
