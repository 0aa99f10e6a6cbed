#include "pg_cluster.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <sstream>
#include <stdexcept>

#include "process.h"
#include "wait.h"

namespace outbox::test {
namespace {

std::string Script() { return SourceDir() + "/ops/pg-tmp.sh"; }

}  // namespace

PgCluster::PgCluster(const PgClusterOptions& options) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "outbox-pg.XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  std::vector<std::string> argv = {Script(), "start", dir_, "--owner-pid", std::to_string(getpid())};
  if (!options.listen_address.empty()) argv.insert(argv.end(), {"--listen", options.listen_address});
  if (!options.trust_network.empty()) argv.insert(argv.end(), {"--trust", options.trust_network});
  auto r = RunProcess(argv);
  if (r.code != 0) {
    throw std::runtime_error("could not start a throwaway PostgreSQL: " + r.err);
  }
  conninfo_ = r.out.substr(0, r.out.find('\n'));
}

PgCluster::~PgCluster() { RunProcess({Script(), "stop", dir_}); }

std::string PgCluster::ConninfoFor(const std::string& dbname, const std::string& user) const {
  auto c = conninfo_;
  auto replace = [&c](const std::string& key, const std::string& value) {
    auto pos = c.find(key + "=");
    auto end = c.find(' ', pos);
    c.replace(pos, (end == std::string::npos ? c.size() : end) - pos, key + "=" + value);
  };
  replace("dbname", dbname);
  replace("user", user);
  return c;
}

std::string PgCluster::TcpConninfoFor(const std::string& dbname, const std::string& user,
                                      const std::string& host) const {
  auto c = ConninfoFor(dbname, user);
  auto pos = c.find("host=");
  auto end = c.find(' ', pos);
  return c.replace(pos, end - pos, "host=" + host);
}

std::string PgCluster::CreateDatabase(const std::string& name) {
  pqxx::connection c{conninfo_};
  pqxx::nontransaction tx{c};
  tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name));
  tx.exec("CREATE DATABASE " + tx.quote_name(name));
  return ConninfoFor(name);
}

void PgCluster::Restart(const std::string& mode) {
  auto r = RunProcess({Script(), "restart", dir_, mode});
  if (r.code != 0) throw std::runtime_error("restart failed: " + r.err);
}

void PgCluster::Down() {
  auto r = RunProcess({Script(), "down", dir_});
  if (r.code != 0) throw std::runtime_error("stopping the server failed: " + r.err);
}

void PgCluster::Up() {
  auto r = RunProcess({Script(), "up", dir_});
  if (r.code != 0) throw std::runtime_error("starting the server failed: " + r.err);
}

void PgCluster::RequirePasswordFor(const std::string& user) {
  const std::string hba = dir_ + "/data/pg_hba.conf";
  std::stringstream rules;
  {
    std::ifstream in{hba};
    if (!in) throw std::runtime_error("cannot read " + hba);
    rules << in.rdbuf();
  }
  {
    // First match wins: these lines go before the trust lines.
    std::ofstream out{hba, std::ios::trunc};
    out << "local all " << user << " scram-sha-256\n"
        << "host all " << user << " 127.0.0.1/32 scram-sha-256\n"
        << "host all " << user << " ::1/128 scram-sha-256\n"
        << rules.str();
    if (!out) throw std::runtime_error("cannot write " + hba);
  }
  {
    pqxx::connection c{conninfo_};
    pqxx::nontransaction(c).exec("SELECT pg_reload_conf()");
  }
  // The postmaster reads the file when the reload signal reaches it.
  const auto probe = ConninfoFor("postgres", user);
  bool applied = WaitUntil(
      [&] {
        try {
          pqxx::connection c{probe};
          return false;
        } catch (const std::exception& e) {
          return std::string(e.what()).find("no password supplied") != std::string::npos;
        }
      },
      std::chrono::seconds(30));
  if (!applied) throw std::runtime_error("the server did not start asking " + user + " for a password");
}

void CreatePasswordLogin(const std::string& owner_conninfo, const std::string& login, const std::string& password,
                         const std::string& role) {
  {
    pqxx::connection c{owner_conninfo};
    pqxx::nontransaction tx{c};
    tx.exec("DROP ROLE IF EXISTS " + tx.quote_name(login));
    tx.exec("CREATE ROLE " + tx.quote_name(login) + " LOGIN PASSWORD " + tx.quote(password) + " IN ROLE " +
            tx.quote_name(role));
  }
  SharedCluster().RequirePasswordFor(login);
}

long long ScalarOf(const std::string& conninfo, const std::string& sql) {
  pqxx::connection c{conninfo};
  pqxx::work tx{c};
  auto v = tx.exec1(sql)[0];
  return v.is_null() ? 0 : v.as<long long>();
}

std::map<int, int> LaneLockHolders(const std::string& conninfo) {
  constexpr int kLaneLockClass = 0x6f72656c;  // relay/pg/outbox_store.h
  pqxx::connection c{conninfo};
  pqxx::work tx{c};
  std::map<int, int> holders;
  for (const auto& row : tx.exec("SELECT pid, count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                                 "AND objsubid = 2 AND classid = " + std::to_string(kLaneLockClass) +
                                 " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                                 "GROUP BY pid")) {
    holders[row[0].as<int>()] = row[1].as<int>();
  }
  return holders;
}

bool TwoHoldEightLanesEach(const std::map<int, int>& holders) {
  return holders.size() == 2 && holders.begin()->second == 8 && holders.rbegin()->second == 8;
}

PgCluster& SharedCluster() {
  static PgCluster cluster;
  return cluster;
}

std::string FreshDatabase() {
  static std::atomic<int> n{0};
  std::string name = "t";
  if (auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
    name = std::string(info->test_suite_name()) + "_" + info->name();
  }
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) {
    return std::isalnum(ch) ? static_cast<char>(std::tolower(ch)) : '_';
  });
  name = name.substr(0, 50) + "_" + std::to_string(++n);
  return SharedCluster().CreateDatabase(name);
}

std::string LoginName(Login login) {
  switch (login) {
    case Login::kRelay:
      return "outbox_test_relay";
    case Login::kProducer:
      return "outbox_test_producer";
    case Login::kProducer2:
      return "outbox_test_producer2";
    case Login::kConsumer:
      return "outbox_test_consumer";
    case Login::kConsumer2:
      return "outbox_test_consumer2";
  }
  return "";
}

std::string As(Login login, const std::string& conninfo) {
  std::string group;
  switch (login) {
    case Login::kRelay:
      group = "outbox_relay";
      break;
    case Login::kProducer:
    case Login::kProducer2:
      group = "outbox_producer";
      break;
    case Login::kConsumer:
    case Login::kConsumer2:
      group = "outbox_consumer";
      break;
  }
  auto name = LoginName(login);
  {
    pqxx::connection c{conninfo};
    pqxx::nontransaction tx{c};
    // Roles are cluster-wide; several test processes never share a cluster, but a test
    // may ask twice: create only what is missing.
    tx.exec("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = " + tx.quote(name) +
            ") THEN CREATE ROLE " + tx.quote_name(name) + " LOGIN; END IF; END $$");
    tx.exec("GRANT " + tx.quote_name(group) + " TO " + tx.quote_name(name));
  }
  auto c = conninfo;
  auto pos = c.find("user=");
  if (pos == std::string::npos) return c + " user=" + name;
  auto end = c.find(' ', pos);
  c.replace(pos, (end == std::string::npos ? c.size() : end) - pos, "user=" + name);
  return c;
}

void GrantReplication(const std::string& owner_conninfo, Login login) {
  pqxx::connection c{owner_conninfo};
  pqxx::nontransaction tx{c};
  tx.exec("ALTER ROLE " + tx.quote_name(LoginName(login)) + " REPLICATION");
}

}  // namespace outbox::test
