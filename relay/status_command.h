#pragma once

#include <iosfwd>

#include "config.h"

namespace outbox::relay {

// `outbox-relay status`: pending rows and oldest age per lane, dead letters, live relays,
// and — when their tables exist — half messages and notifications by state.
// Writes a table (or JSON with config.json) to out; returns the exit code.
int RunStatus(const StatusConfig& config, std::ostream& out);

// `outbox-relay dead-letters list|retry|drop`. Returns the exit code (1 if an id given
// was not found; the others are still processed).
int RunDeadLetters(const DeadLettersConfig& config, std::ostream& out, std::ostream& err);

}  // namespace outbox::relay
