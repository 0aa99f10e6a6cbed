#include "cli/commands.h"

#include <iostream>

#include "cli/dead_letters_command.h"
#include "cli/doctor_command.h"
#include "cli/migrate.h"
#include "cli/prepared_command.h"
#include "cli/run_command.h"
#include "cli/status_command.h"
#include "common/errors.h"
#include "kafka/dev_kafka.h"
#include "webhooks/notify_command.h"

namespace outbox::relay {

int RunCommand(const Invocation& inv, std::shared_ptr<spdlog::logger> log) {
  switch (inv.command) {
    case Command::kMigrate:
      return RunMigrate(inv.migrate, *log);
    case Command::kDevKafka:
      return RunDevKafka(inv.dev_kafka, *log);
    case Command::kNotify:
      return RunNotifyCommand(inv.notify, *log);
    case Command::kRun:
      return RunRelay(inv.run, log);
    case Command::kStatus:
      return RunStatus(inv.status, std::cout);
    case Command::kDeadLetters:
      return RunDeadLetters(inv.dead_letters, std::cout, std::cerr);
    case Command::kPrepared:
      return RunPrepared(inv.prepared, std::cout, std::cerr);
    case Command::kDoctor:
      return RunDoctor(inv.doctor, inv.warnings, std::cout);
    case Command::kHelp:
    case Command::kVersion:
      return kExitOk;
  }
  return kExitRuntime;
}

}  // namespace outbox::relay
