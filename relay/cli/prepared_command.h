#pragma once

#include <iosfwd>

#include "common/config.h"

namespace outbox::relay {

// `outbox-relay prepared list|resume|drop`: operator commands for half messages that are
// neither committed nor rolled back (states prepared and parked; docs/half-messages.md).
//   list    one line (or JSON object) per such half message, oldest first
//   resume  check it back at once with a fresh --check-max count; a running relay
//           publishes it when the producer answers "committed"
//   drop    discard it without publishing (a later commit_prepared is refused)
// resume/drop --all act on every parked half message. Returns the exit code: 1 if a gid
// given is unknown or already finished (the others are still processed).
int RunPrepared(const PreparedConfig& config, std::ostream& out, std::ostream& err);

}  // namespace outbox::relay
