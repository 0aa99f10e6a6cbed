#pragma once

#include <spdlog/logger.h>

#include <memory>

#include "common/config.h"

namespace outbox::relay {

// `outbox-relay run`: the relay with its metrics endpoint, stats poller and half-message
// check-back, until SIGTERM/SIGINT (then in-flight messages finish). Returns the exit
// code; throws ConfigError (exit 2) or RuntimeError (exit 1).
int RunRelay(const RunConfig& config, std::shared_ptr<spdlog::logger> log);

}  // namespace outbox::relay
