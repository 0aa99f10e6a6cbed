#pragma once

#include <iosfwd>

#include "common/config.h"

namespace outbox::relay {

// `outbox-relay status`: pending rows and oldest age per lane, dead letters, live relays,
// and — when their tables exist — half messages and notifications by state.
// Writes a table (or JSON with config.json) to out; returns the exit code.
int RunStatus(const StatusConfig& config, std::ostream& out);

}  // namespace outbox::relay
