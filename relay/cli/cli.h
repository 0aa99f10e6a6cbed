#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/config.h"

namespace outbox::relay {

enum class Command { kHelp, kVersion, kMigrate, kRun, kStatus, kNotify, kDevKafka, kDeadLetters, kPrepared };

// What the command line asked for, fully validated. Only the config of `command` is set.
struct Invocation {
  Command command = Command::kHelp;
  std::string help_text;        // for kHelp: what to print
  LogConfig log;
  MigrateConfig migrate;
  RunConfig run;
  StatusConfig status;
  NotifyConfig notify;
  DevKafkaConfig dev_kafka;
  DeadLettersConfig dead_letters;
  PreparedConfig prepared;
};

using Environment = std::map<std::string, std::string>;

// Parses `outbox-relay <command> [options]`. Sources, highest precedence first: flags,
// OUTBOX_<NAME> environment variables (e.g. OUTBOX_BATCH_SIZE), the --config file
// (INI style, `name = value`, repeatable options on several lines).
// Throws ConfigError listing every problem at once; messages never contain secrets.
Invocation ParseCommandLine(const std::vector<std::string>& args, const Environment& env);

// The process environment as a map (for ParseCommandLine).
Environment ProcessEnvironment();

}  // namespace outbox::relay
