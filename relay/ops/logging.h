#pragma once

#include <spdlog/spdlog.h>

#include <memory>

#include "common/config.h"

namespace outbox::relay {

// The relay's logger: to stderr, text ("2026-11-22 10:00:00.123 info  message k=v") or
// one JSON object per line ({"ts":..,"level":..,"msg":..}). Messages carry their
// fields as key=value; callers never pass secrets.
std::shared_ptr<spdlog::logger> MakeLogger(const LogConfig& config);

}  // namespace outbox::relay
