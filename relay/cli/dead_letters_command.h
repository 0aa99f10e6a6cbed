#pragma once

#include <iosfwd>

#include "common/config.h"

namespace outbox::relay {

// `outbox-relay dead-letters list|retry|drop`. Returns the exit code (1 if an id given
// was not found; the others are still processed).
int RunDeadLetters(const DeadLettersConfig& config, std::ostream& out, std::ostream& err);

}  // namespace outbox::relay
