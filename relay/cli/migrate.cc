#include "cli/migrate.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "pg/db.h"
#include "common/errors.h"

namespace outbox::relay {
namespace {

// pg_advisory_lock key shared by every `outbox-relay migrate` ("outbox-m").
constexpr long long kMigrateLockKey = 0x6f7574626f782d6dLL;

constexpr const char* kMetaSql = R"sql(
  CREATE SCHEMA IF NOT EXISTS outbox_meta;
  CREATE TABLE IF NOT EXISTS outbox_meta.migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
  );
)sql";

}  // namespace

std::vector<Migration> LoadMigrations(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> problems;
  std::vector<Migration> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw ConfigError({"--schema-dir: '" + dir + "' is not a directory"});
  static const std::regex kName{R"(^(\d{4})_[A-Za-z0-9_]+\.sql$)"};
  for (const auto& entry : fs::directory_iterator(dir)) {
    auto name = entry.path().filename().string();
    if (entry.path().extension() != ".sql") continue;
    std::smatch m;
    if (!std::regex_match(name, m, kName)) {
      problems.push_back("--schema-dir: '" + name + "' is not named NNNN_name.sql");
      continue;
    }
    std::ifstream in{entry.path()};
    std::stringstream buf;
    buf << in.rdbuf();
    out.push_back({std::stoi(m[1]), name, buf.str()});
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.version < b.version; });
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i].version == out[i - 1].version) {
      problems.push_back("--schema-dir: '" + out[i - 1].name + "' and '" + out[i].name +
                         "' have the same number");
    }
  }
  if (out.empty() && problems.empty()) problems.push_back("--schema-dir: no .sql files in '" + dir + "'");
  if (!problems.empty()) throw ConfigError(problems);
  return out;
}

MigrateResult Migrate(const std::string& conninfo, const std::vector<Migration>& migrations,
                      spdlog::logger& log) {
  auto conn = Connect(conninfo, "outbox-relay-migrate");
  MigrateResult result;
  try {
    {
      pqxx::nontransaction lock{*conn};
      lock.exec("SELECT pg_advisory_lock(" + std::to_string(kMigrateLockKey) + ")");
      lock.exec(kMetaSql);
    }
    // Verify everything before changing anything.
    std::map<int, std::pair<std::string, std::string>> applied;  // version -> name, checksum
    std::map<int, std::string> wanted;                           // version -> checksum
    {
      pqxx::work tx{*conn};
      for (const auto& row : tx.exec("SELECT version, name, checksum FROM outbox_meta.migrations")) {
        applied[row[0].as<int>()] = {row[1].as<std::string>(), row[2].as<std::string>()};
      }
      conn->prepare("outbox_checksum", "SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')");
      for (const auto& m : migrations) {
        wanted[m.version] = tx.exec_prepared1("outbox_checksum", m.sql)[0].as<std::string>();
      }
      tx.commit();
    }
    std::vector<std::string> problems;
    for (const auto& m : migrations) {
      auto it = applied.find(m.version);
      if (it == applied.end()) continue;
      if (it->second.second != wanted[m.version]) {
        problems.push_back("migration " + m.name + " was changed after it was applied (checksum " +
                           wanted[m.version].substr(0, 12) + ", applied " +
                           it->second.second.substr(0, 12) +
                           "); released migrations must never be edited: add a new file");
      } else {
        ++result.already_applied;
      }
    }
    for (const auto& [version, name_sum] : applied) {
      bool known = std::any_of(migrations.begin(), migrations.end(),
                               [&](const Migration& m) { return m.version == version; });
      if (!known) {
        log.warn("migration {} is applied but unknown to this outbox-relay (a newer version?)",
                 name_sum.first);
      }
    }
    if (!problems.empty()) throw ConfigError(problems);

    for (const auto& m : migrations) {
      if (applied.count(m.version)) continue;
      pqxx::work tx{*conn};
      try {
        tx.exec(m.sql);
      } catch (const pqxx::sql_error& e) {
        throw RuntimeError("migration " + m.name + " failed, nothing of it was applied: " +
                           SafeDbError(e.what(), conninfo));
      }
      tx.exec_params("INSERT INTO outbox_meta.migrations (version, name, checksum) VALUES ($1, $2, $3)",
                     m.version, m.name, wanted[m.version]);
      tx.commit();
      log.info("applied migration {}", m.name);
      result.applied.push_back(m.name);
    }
    pqxx::nontransaction unlock{*conn};
    unlock.exec("SELECT pg_advisory_unlock(" + std::to_string(kMigrateLockKey) + ")");
  } catch (const pqxx::broken_connection& e) {
    throw RuntimeError("lost the connection to PostgreSQL while migrating: " +
                       SafeDbError(e.what(), conninfo));
  } catch (const pqxx::sql_error& e) {
    throw RuntimeError("migrate failed: " + SafeDbError(e.what(), conninfo));
  }
  return result;
}

int RunMigrate(const MigrateConfig& c, spdlog::logger& log) {
  auto migrations = c.schema_dir.empty() ? EmbeddedMigrations() : LoadMigrations(c.schema_dir);
  auto result = Migrate(c.db, migrations, log);
  if (result.applied.empty()) {
    log.info("schema is up to date migrations={}", result.already_applied);
  } else {
    log.info("migrated applied={} already_applied={}", result.applied.size(), result.already_applied);
  }
  return kExitOk;
}

}  // namespace outbox::relay
