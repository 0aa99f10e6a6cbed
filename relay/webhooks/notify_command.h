#pragma once

#include <spdlog/logger.h>

#include "common/config.h"

namespace outbox::relay {

// `outbox-relay notify`: the best-effort notification worker (issue 6). Returns the
// exit code; SIGTERM/SIGINT stop it after the deliveries in hand.
int RunNotifyCommand(const NotifyConfig& config, spdlog::logger& log);

}  // namespace outbox::relay
