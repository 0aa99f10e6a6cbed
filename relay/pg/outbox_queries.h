#pragma once

// Read-only queries about the outbox that operators and metrics share (`outbox-relay
// status`, the stats poller): one statement each, so both always agree.
// (OutboxStore keeps its own LiveRelays for the relay loop's session; see
// outbox_store.cc.)

#include <cstdint>
#include <string>
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
  // WAL capture (schema/0007_wal_capture.sql, docs/wal-capture.md). A schema migrated only
  // to 0006 has none of these columns: capture "table", no slot, not draining.
  std::string capture = "table";  // "table" or "wal"
  std::string slot_name;          // the logical replication slot of this database ("" if none)
  bool wal_draining = false;      // switched back to table, the slot not yet drained
  // The WAL slot matters: capture is "wal", or the relay still drains the slot.
  bool streams_wal() const { return capture == "wal" || wal_draining; }
};

// outbox.settings (tolerates a schema without the WAL capture columns). Throws PgError.
OutboxSettings ReadOutboxSettings(PgConnection& conn);

// The logical replication slot of WAL capture, as pg_replication_slots (readable by every
// login) and pg_stat_replication show it. pg_stat_replication's details (flush_lag among
// them) are NULL for a login without the privileges of pg_read_all_stats (or superuser),
// even for its own walsender: then lag_seconds is 0 and lag_seconds_visible false.
struct SlotLag {
  bool exists = false;
  bool active = false;          // a walsender (the streaming relay) reads it
  std::int64_t active_pid = 0;  // that walsender's pid (0: none)
  std::string wal_status;       // reserved, extended, unreserved or lost ("" if it does not exist)
  std::int64_t lag_bytes = 0;   // pg_current_wal_lsn() - confirmed_flush_lsn
  double lag_seconds = 0;       // the walsender's flush_lag; 0 when caught up or nobody streams
  bool lag_seconds_visible = true;  // false: a walsender streams, this login may not see its lag
};

// Throws PgError.
SlotLag ReadSlotLag(PgConnection& conn, const std::string& slot_name);

// Relays running against this database: the member slots held (session advisory locks
// of kMemberLockClass). Throws PgError.
std::int64_t LiveRelays(PgConnection& conn);

// Rows in outbox.dead_letters. Throws PgError.
std::int64_t DeadLetterCount(PgConnection& conn);

}  // namespace outbox::relay
