#include "commands.h"

#include <iostream>

#include "dev_kafka.h"
#include "errors.h"
#include "migrate.h"
#include "notify_command.h"

namespace outbox::relay {
namespace {

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

}  // namespace

int RunCommand(const Invocation& inv, spdlog::logger& log) {
  switch (inv.command) {
    case Command::kMigrate:
      return RunMigrate(inv.migrate, log);
    case Command::kDevKafka:
      return RunDevKafka(inv.dev_kafka, log);
    case Command::kNotify:
      return RunNotifyCommand(inv.notify, log);
    case Command::kRun:
    case Command::kStatus:
    case Command::kDeadLetters:
      throw RuntimeError("this command is not built yet");
    case Command::kHelp:
    case Command::kVersion:
      return kExitOk;
  }
  return kExitRuntime;
}

}  // namespace outbox::relay
