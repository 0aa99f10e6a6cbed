#pragma once

#include <map>
#include <string>
#include <vector>

#include "cli/options.h"
#include "common/config.h"

namespace outbox::relay {

enum class Command { kHelp, kVersion, kMigrate, kRun, kStatus, kNotify, kDevKafka, kDeadLetters, kPrepared,
                     kDoctor };

// What the command line asked for, fully validated. Only the config of `command` is set.
struct Invocation {
  Command command = Command::kHelp;
  std::string help_text;        // for kHelp: what to print
  // Said at start-up, not fatal: unknown OUTBOX_* variables with the closest known name.
  std::vector<std::string> warnings;
  std::string config_file;      // --config: the lowest source of options; empty = none
  LogConfig log;
  MigrateConfig migrate;
  RunConfig run;
  StatusConfig status;
  NotifyConfig notify;
  DevKafkaConfig dev_kafka;
  DeadLettersConfig dead_letters;
  PreparedConfig prepared;
  DoctorConfig doctor;
};

// Parses `outbox-relay <command> [options]`. Sources, highest precedence first: flags,
// OUTBOX_<NAME> variables of `env` (e.g. OUTBOX_BATCH_SIZE; list options separated by
// ';'), the --config file (INI style, `name = value`, repeatable options on several
// lines; one file serves every subcommand: options of other subcommands are ignored).
// Throws ConfigError listing every problem at once; messages never contain secrets.
Invocation ParseCommandLine(const std::vector<std::string>& args, const Environment& env);

// The process environment as a map (for ParseCommandLine).
Environment ProcessEnvironment();

}  // namespace outbox::relay
