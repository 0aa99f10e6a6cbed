#pragma once

#include <string>
#include <vector>

#include "common/config.h"

namespace spdlog { class logger; }

namespace outbox::relay {

// One numbered SQL file of schema/, e.g. version 1, name "0001_outbox.sql".
struct Migration {
  int version = 0;
  std::string name;
  std::string sql;
};

// The migrations built into the binary (schema/ at build time), in order.
std::vector<Migration> EmbeddedMigrations();

// Reads NNNN_name.sql files from dir, in order. Throws ConfigError on a bad directory,
// a bad file name or two files with one number.
std::vector<Migration> LoadMigrations(const std::string& dir);

struct MigrateResult {
  std::vector<std::string> applied;   // names applied by this call
  int already_applied = 0;            // names found applied with a matching checksum
};

// Applies the migrations not yet applied, each in its own transaction, under a session
// advisory lock (concurrent calls wait for each other; the second finds nothing to do).
// Throws ConfigError if an applied migration's checksum differs from `migrations`
// (nothing is applied then), RuntimeError if the database fails.
MigrateResult Migrate(const std::string& conninfo, const std::vector<Migration>& migrations,
                      spdlog::logger& log);

// `outbox-relay migrate`: applies config.schema_dir's migrations (or the embedded ones)
// and logs what it did. Returns the exit code; throws like Migrate.
int RunMigrate(const MigrateConfig& config, spdlog::logger& log);

}  // namespace outbox::relay
