#pragma once

#include <spdlog/logger.h>

#include <memory>

#include "cli/cli.h"

namespace outbox::relay {

// Runs the subcommand of a parsed command line; returns the exit code. Throws
// ConfigError (exit 2) or other exceptions (exit 1); main maps them.
int RunCommand(const Invocation& inv, std::shared_ptr<spdlog::logger> log);

}  // namespace outbox::relay
