#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "core/clock.h"
#include "core/record_sink.h"
#include "core/relay_observer.h"
#include "core/wal_source.h"

namespace spdlog { class logger; }

namespace outbox::relay {

struct WalStreamLimits {
  std::int64_t max_inflight_bytes = 64ll << 20;  // decoded records produced, not acknowledged
  int max_inflight_records = 50000;
  // Status updates while records move: at once by default, so a crash republishes only
  // what was in flight (a status update is a few dozen bytes; Step batches them).
  std::chrono::milliseconds confirm_interval{0};
  std::chrono::milliseconds idle_wait{1000};  // the longest Step asks the caller to wait
  std::chrono::milliseconds heartbeat_interval{10000};  // status updates when idle
  std::chrono::milliseconds table_check_interval{100};  // while held behind a switch to wal
};

// One streaming session of capture mode `wal` (docs/wal-capture.md): reads transactions
// from the slot in commit order, produces their messages with the idempotent producer and
// confirms the slot only past transactions whose every record Kafka acknowledged. A
// failure of any record, a fatal producer or a lost stream ends the session (kRestart):
// the caller resets the producer and opens a new session, which resumes at the confirmed
// position, so only what was in flight is published twice. After a fatal producer or a
// refused record the records up to the failure are produced one at a time; a record Kafka
// then refuses for good is parked (only the guilty are parked).
//
// Reaches PostgreSQL, Kafka and time only through WalSource, RecordSink and Clock (no
// libpq, no librdkafka): unit tests drive it with models. Not thread-safe.
class WalStream {
 public:
  // Carries over between sessions: the confirmed position and the one-at-a-time bound.
  struct Carry {
    std::uint64_t solo_until = 0;       // message LSNs <= this are produced one at a time
    std::uint64_t next_token = 1;       // tokens stay unique across sessions (late reports)
    std::set<std::uint64_t> parked;     // LSNs of messages parked, not yet confirmed past
  };

  WalStream(WalSource& source, RecordSink& sink, const Clock& clock, RelayObserver& observer,
            std::shared_ptr<spdlog::logger> log, const WalStreamLimits& limits, Carry carry);

  enum class Outcome {
    kRunning,  // call Step again (after at most the returned wait)
    kRestart,  // a record failed, the producer is fatal: reset it and start a new session
    kDrained,  // the switch back to table mode is published and confirmed; stream closed
  };
  struct StepResult {
    Outcome outcome = Outcome::kRunning;
    std::chrono::milliseconds wait{0};
    std::string why;  // kRestart: what failed
  };
  // Serves delivery reports, confirms, reads and produces what it may. Exceptions of
  // WalSource (StoreError, WalSlotLost, WalDecodeError) pass through.
  StepResult Step();

  // While a switch back to table mode is drained: the server's end of WAL when the relay
  // read outbox.settings.wal_draining. The switch's marker lies before it, so once the
  // stream is confirmed this far with nothing pending, the marker was handled (perhaps by
  // an earlier session that could not end the draining): kDrained.
  void DrainedAt(std::uint64_t lsn) { drained_at_ = lsn; }

  // Stops reading; true once nothing is in flight (then it confirms what it can).
  bool DrainForStop();

  Carry carry() const { return carry_; }
  std::uint64_t confirmed() const { return confirmed_; }
  int inflight() const { return static_cast<int>(inflight_.size()); }
  // True while held behind a switch to wal until the table's older rows are published.
  bool held() const { return hold_max_id_.has_value(); }

 private:
  struct Txn {
    std::uint64_t seq = 0;
    int outstanding = 0;        // records produced, not acknowledged
    bool committed = false;     // its kCommit arrived
    std::uint64_t end_lsn = 0;  // set at kCommit
    bool to_table = false;      // carries the switch back to table mode
    bool holds = false;         // carries a switch to wal not yet cleared
  };
  struct InFlight {
    std::uint64_t txn_seq = 0;
    OutboxRow row;
    std::int64_t created_at_us = 0;
    std::uint64_t lsn = 0;
    std::int64_t bytes = 0;
    bool alone = false;  // produced one at a time (after a failure): a refusal is its own
  };

  void ServeDeliveries(StepResult& r);
  void Acknowledge(std::uint64_t txn_seq);
  bool AdvanceConfirmed();  // true if the switch back to table mode got confirmed
  bool MayRead() const;
  // Handles one event; false if it could not be produced now (kept in pending_).
  bool Handle(WalEvent& e, StepResult& r);
  bool ProduceMessage(WalEvent& e, StepResult& r);
  void SendConfirm(bool force);
  Txn* Find(std::uint64_t seq);
  static std::int64_t SizeOf(const OutboxRow& row);

  WalSource& source_;
  RecordSink& sink_;
  const Clock& clock_;
  RelayObserver& observer_;
  std::shared_ptr<spdlog::logger> log_;
  WalStreamLimits limits_;
  Carry carry_;

  std::deque<Txn> txns_;          // received, not yet confirmed, in commit order
  std::uint64_t next_txn_seq_ = 1;
  bool in_txn_ = false;           // between kBegin and kCommit
  std::map<std::uint64_t, InFlight> inflight_;  // by token
  std::uint64_t next_token_ = 1;
  std::int64_t inflight_bytes_ = 0;
  std::uint64_t max_produced_lsn_ = 0;
  std::optional<WalEvent> pending_;  // read but not yet produced (queue full, one at a time)
  std::optional<std::int64_t> hold_max_id_;
  Clock::TimePoint next_table_check_{};
  std::uint64_t confirmed_ = 0;     // what this session may confirm
  std::uint64_t sent_confirm_ = 0;  // what it told the server
  Clock::TimePoint last_confirm_sent_{};
  bool reply_due_ = false;
  bool failed_ = false;
  bool drained_ = false;
  bool to_table_seen_ = false;  // the switch back to table mode was read
  std::uint64_t drained_at_ = 0;
};

}  // namespace outbox::relay
