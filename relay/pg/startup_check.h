#pragma once

// What waiting cannot heal, found at start-up (issue 14): a command that would only
// retry for ever — against a database that was never migrated, with a login that does
// not exist or cannot authenticate, or that lacks the role the command needs — ends at
// once with one line naming the fix (ConfigError: exit 2, which systemd does not restart
// in a loop). An unreachable server is not such a problem: the command starts and
// retries with backoff, as outages heal.

#include <chrono>
#include <string>

#include "common/config.h"

namespace outbox::relay {

enum class StartupRole {
  kRelay,     // `run`: the outbox_relay role, the schema up to date
  kNotifier,  // `notify`: the worker functions of inbox.notifications (outbox_relay)
};

// Throws ConfigError naming the fix; returns normally when the setup is usable or the
// server cannot be reached right now (within session_timeout on a silent network). Never
// prints the password.
void CheckStartup(const std::string& conninfo, StartupRole role,
                  std::chrono::milliseconds session_timeout = kDefaultSessionTimeout);

}  // namespace outbox::relay
