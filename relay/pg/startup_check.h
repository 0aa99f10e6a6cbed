#pragma once

// What waiting cannot heal, found at start-up (issue 14): a command that would only
// retry for ever — against a database that was never migrated, with a login that does
// not exist or cannot authenticate, or that lacks the role the command needs — ends at
// once with one line naming the fix (ConfigError: exit 2, which systemd does not restart
// in a loop). An unreachable server is not such a problem: the daemons (`run`, `notify`)
// start and retry with backoff, as outages heal; the one-shot operator commands
// (`status`, `dead-letters`, `prepared`) end with exit 1, so a script may try again.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "common/config.h"

namespace outbox::relay {

class PgConnection;

// What a command needs from the database: the schema this binary carries and the
// privileges of the role it runs as (all of them come with `GRANT outbox_relay`).
enum class StartupRole {
  kRelay,               // `run`: read and delete queue rows, park dead letters, check back
  kNotifier,            // `notify`: the worker functions of inbox.notifications
  kStatusReader,        // `status`: read the queue, settings, dead letters, half messages,
                        // notifications
  kDeadLetterOperator,  // `dead-letters`: list, retry and drop dead letters
  kPreparedOperator,    // `prepared`: list, resume and drop half messages
};

// For the daemons. Throws ConfigError naming the fix; returns normally when the setup
// is usable or the server cannot be reached right now (within session_timeout on a
// silent network). Never prints the password.
void CheckStartup(const std::string& conninfo, StartupRole role,
                  std::chrono::milliseconds session_timeout = kDefaultSessionTimeout);

// For the one-shot operator commands: the same checks on the session the command then
// uses. Throws ConfigError naming the fix, RuntimeError (exit 1) if the server cannot be
// reached. Never prints the password.
std::unique_ptr<PgConnection> OpenCheckedSession(const std::string& conninfo, StartupRole role);

// The same checks one by one, as values, for `outbox-relay doctor` (which reports every
// problem instead of ending at the first). Each returns the problem with its fix, or
// nothing when that part is fine.

// A connection failure (PgError text from PgConnection) that the same attempt later will
// meet again (authentication, pg_hba.conf, unknown login or database), with its fix; ""
// for one that may heal (the server is down or unreachable).
std::string PermanentConnectProblem(const std::string& raw);
// The outbox schema is missing or older than the migrations this binary carries. Throws
// PgError.
std::optional<std::string> SchemaProblem(PgConnection& conn);
// What the session's login lacks for `role`, with the GRANT that fixes it. Throws PgError.
std::optional<std::string> PrivilegeProblem(PgConnection& conn, StartupRole role);
// Capture mode wal (or a switch back being drained) and the login lacks REPLICATION,
// which `run`'s WAL stream needs; with the ALTER ROLE that fixes it. Throws PgError.
std::optional<std::string> CaptureProblem(PgConnection& conn);

}  // namespace outbox::relay
