#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "core/outbox_row.h"

namespace outbox::relay {

// One item of the logical replication stream as the relay core sees it (decoded from
// pgoutput by wal/pgoutput.h). LSNs are byte positions in the WAL.
struct WalEvent {
  enum class Kind {
    kBegin,      // a transaction starts (messages and switches follow, then kCommit)
    kMessage,    // an outbox message: row
    kSwitch,     // outbox.set_capture switched mode: switch_mode, max_id
    kCommit,     // the transaction committed; lsn = its end (what the slot confirms)
    kKeepalive,  // the server's end of WAL (lsn); reply_requested: answer at once
  };
  Kind kind = Kind::kKeepalive;
  std::uint64_t lsn = 0;
  OutboxRow row;                 // kMessage
  std::int64_t created_at_us = 0;  // kMessage: microseconds since 2000-01-01 UTC
  char switch_mode = 0;          // kSwitch: 'w' or 't'
  std::int64_t max_id = 0;       // kSwitch
  bool reply_requested = false;  // kKeepalive
};

// The slot is gone or can no longer serve changes (dropped, invalidated by
// max_slot_wal_keep_size). Waiting cannot heal it: the relay stops.
class WalSlotLost : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The relay core's view of the WAL stream of one database (production: wal/wal_capture.cc
// over a libpq replication connection and a normal session; tests: a model). Every call
// may throw StoreError (core/outbox_store.h: the stream or session is gone; the caller
// restarts from the confirmed position), WalSlotLost, or WalDecodeError (wal/wal_record.h).
class WalSource {
 public:
  virtual ~WalSource() = default;
  // Starts streaming from the slot's confirmed position (transactions that end at or
  // before it are not sent again).
  virtual void Open() = 0;
  // The next event, or nullopt when none has arrived. Non-blocking.
  virtual std::optional<WalEvent> Next() = 0;
  // Tells the server that everything up to `lsn` is done (standby status update): the slot
  // keeps no WAL before it, and a restart resumes after it.
  virtual void Confirm(std::uint64_t lsn) = 0;
  virtual void Close() = 0;
  // Whether outbox.messages still holds a row with id <= max_id (rows committed before a
  // switch to wal, which go first).
  virtual bool TableHasRowsUpTo(std::int64_t max_id) = 0;
  // Parks a message Kafka refused for good in outbox.dead_letters.
  virtual void Park(const OutboxRow& row, std::int64_t created_at_us, const std::string& error) = 0;
  // Everything up to the switch back to table mode is published and confirmed: ends
  // draining (outbox.wal_drained drops the slot). The stream must be closed first.
  virtual void Drained() = 0;
  // A descriptor readable when the stream may have data (poll(2)), or -1.
  virtual int wait_fd() const { return -1; }
};

}  // namespace outbox::relay
