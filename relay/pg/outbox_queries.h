#pragma once

// Read-only queries about the outbox that operators and metrics share (`outbox-relay
// status`, the stats poller): one statement each, so both always agree.
// (OutboxStore keeps its own LiveRelays for the relay loop's session; see
// outbox_store.cc.)

#include <cstdint>
#include <vector>

#include "pg/pg.h"

namespace outbox::relay {

struct LanePending {
  int lane = 0;
  std::int64_t pending = 0;              // rows waiting in outbox.messages
  double oldest_age_seconds = 0;         // age of the oldest of them
};

// Lanes that have pending rows, by lane number (lanes without rows are absent).
// Throws PgError.
std::vector<LanePending> PendingPerLane(PgConnection& conn);

struct OutboxSettings {
  int lane_count = 0;
  bool notify = false;  // the relay is woken by NOTIFY on insert
};

// outbox.settings. Throws PgError.
OutboxSettings ReadOutboxSettings(PgConnection& conn);

// Relays running against this database: the member slots held (session advisory locks
// of kMemberLockClass). Throws PgError.
std::int64_t LiveRelays(PgConnection& conn);

// Rows in outbox.dead_letters. Throws PgError.
std::int64_t DeadLetterCount(PgConnection& conn);

}  // namespace outbox::relay
