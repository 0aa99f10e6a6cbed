#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "common/config.h"

namespace outbox::relay {

// `outbox-relay doctor`: checks a setup the way `run` would use it — the database (reached,
// server version, schema version, the login's privileges for `run` and `notify`, lanes and
// live relays, the capture mode and, in WAL mode, what streaming needs), Kafka (reached,
// the idempotent producer's id, topics of pending messages), the egress policy, and
// `warnings` (unknown OUTBOX_* variables, from the command line's parse). Writes one line
// per check, with the fix when it fails (JSON with config.json); returns 0 when every check
// passes, 1 otherwise. Never prints the password.
int RunDoctor(const DoctorConfig& config, const std::vector<std::string>& warnings, std::ostream& out);

}  // namespace outbox::relay
