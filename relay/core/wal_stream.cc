#include "core/wal_stream.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "wal/wal_record.h"

namespace outbox::relay {

using std::chrono::milliseconds;

WalStream::WalStream(WalSource& source, RecordSink& sink, const Clock& clock, RelayObserver& observer,
                     std::shared_ptr<spdlog::logger> log, const WalStreamLimits& limits, Carry carry)
    : source_(source),
      sink_(sink),
      clock_(clock),
      observer_(observer),
      log_(std::move(log)),
      limits_(limits),
      carry_(std::move(carry)) {
  last_confirm_sent_ = clock_.Now();
}

std::int64_t WalStream::SizeOf(const OutboxRow& row) {
  std::int64_t n = static_cast<std::int64_t>(row.topic.size() + row.message_id.size()) + 64;
  if (row.key) n += static_cast<std::int64_t>(row.key->size());
  if (row.payload) n += static_cast<std::int64_t>(row.payload->size());
  for (const auto& [k, v] : row.headers) n += static_cast<std::int64_t>(k.size() + v.size());
  return n;
}

WalStream::Txn* WalStream::Find(std::uint64_t seq) {
  if (txns_.empty() || seq < txns_.front().seq) return nullptr;
  auto i = seq - txns_.front().seq;
  return i < txns_.size() ? &txns_[i] : nullptr;
}

void WalStream::Acknowledge(std::uint64_t txn_seq) {
  if (auto* t = Find(txn_seq)) --t->outstanding;
}

void WalStream::ServeDeliveries(StepResult& r) {
  for (auto& d : sink_.Poll()) {
    auto it = inflight_.find(d.token);
    if (it == inflight_.end()) continue;  // a report of an earlier session's producer
    InFlight f = std::move(it->second);
    inflight_.erase(it);
    inflight_bytes_ -= f.bytes;
    if (d.ok) {
      Acknowledge(f.txn_seq);
      observer_.Published(1);
    } else if (f.alone && !failed_ && d.failure == DeliveryFailure::kPermanent) {
      // Alone in flight: Kafka refused this record itself.
      source_.Park(f.row, f.created_at_us, d.error);
      carry_.parked.insert(f.lsn);
      observer_.DeadLettered();
      log_->warn("wal message parked in outbox.dead_letters id={} topic={} error={}", f.row.id, f.row.topic, d.error);
      Acknowledge(f.txn_seq);
    } else {
      observer_.DeliveryFailed();
      if (!failed_) r.why = "delivery failed: " + d.error;
      failed_ = true;
      if (d.failure == DeliveryFailure::kPermanent) carry_.solo_until = std::max(carry_.solo_until, max_produced_lsn_);
    }
  }
}

bool WalStream::AdvanceConfirmed() {
  bool to_table = false;
  while (!txns_.empty()) {
    const Txn& t = txns_.front();
    if (!t.committed || t.outstanding > 0 || t.holds) break;
    confirmed_ = std::max(confirmed_, t.end_lsn);
    to_table = to_table || t.to_table;
    txns_.pop_front();
  }
  carry_.parked.erase(carry_.parked.begin(), carry_.parked.upper_bound(confirmed_));
  return to_table;
}

bool WalStream::MayRead() const {
  if (drained_ || failed_ || hold_max_id_) return false;
  if (to_table_seen_ && !in_txn_) return false;  // nothing comes after the switch back
  if (inflight_bytes_ >= limits_.max_inflight_bytes) return false;
  if (static_cast<int>(inflight_.size()) >= limits_.max_inflight_records) return false;
  // One at a time up to the last failure: wait for the record in flight.
  if (carry_.solo_until != 0 && !inflight_.empty()) return false;
  return true;
}

bool WalStream::ProduceMessage(WalEvent& e, StepResult& r) {
  if (carry_.parked.count(e.lsn) != 0) return true;  // parked in an earlier session
  Txn& t = txns_.back();
  std::string error;
  DeliveryFailure failure = DeliveryFailure::kTransient;
  std::uint64_t token = carry_.next_token++;
  switch (sink_.Produce(e.row, token, &error, &failure)) {
    case RecordSink::ProduceStatus::kQueued: {
      auto bytes = SizeOf(e.row);
      bool alone = carry_.solo_until != 0 && e.lsn <= carry_.solo_until && inflight_.empty();
      ++t.outstanding;
      inflight_bytes_ += bytes;
      max_produced_lsn_ = std::max(max_produced_lsn_, e.lsn);
      if (carry_.solo_until != 0 && e.lsn > carry_.solo_until) carry_.solo_until = 0;
      inflight_.emplace(token, InFlight{t.seq, std::move(e.row), e.created_at_us, e.lsn, bytes, alone});
      return true;
    }
    case RecordSink::ProduceStatus::kQueueFull:
      pending_ = std::move(e);
      return false;
    case RecordSink::ProduceStatus::kRejected:
      if (failure == DeliveryFailure::kPermanent) {
        source_.Park(e.row, e.created_at_us, error);
        carry_.parked.insert(e.lsn);
        observer_.DeadLettered();
        log_->warn("wal message parked in outbox.dead_letters id={} topic={} error={}", e.row.id, e.row.topic, error);
        return true;
      }
      failed_ = true;
      r.why = "produce failed: " + error;
      return false;
  }
  return false;
}

bool WalStream::Handle(WalEvent& e, StepResult& r) {
  switch (e.kind) {
    case WalEvent::Kind::kBegin:
      if (in_txn_) throw WalDecodeError("replication stream: BEGIN inside a transaction");
      in_txn_ = true;
      txns_.push_back(Txn{next_txn_seq_++});
      return true;
    case WalEvent::Kind::kMessage: {
      if (!in_txn_) throw WalDecodeError("replication stream: outbox message outside a transaction");
      bool solo = carry_.solo_until != 0 && e.lsn <= carry_.solo_until;
      if (solo && !inflight_.empty()) {
        pending_ = std::move(e);
        return false;
      }
      return ProduceMessage(e, r);
    }
    case WalEvent::Kind::kSwitch:
      if (!in_txn_) throw WalDecodeError("replication stream: capture switch outside a transaction");
      if (e.switch_mode == 'w') {
        // Rows committed to the table before the switch go first: hold everything after
        // it until none with id <= max_id is left.
        txns_.back().holds = true;
        hold_max_id_ = e.max_id;
        next_table_check_ = clock_.Now();
        log_->info("capture switched to wal: publishing the table's rows up to id {} first", e.max_id);
      } else {
        txns_.back().to_table = true;
        to_table_seen_ = true;
        log_->info("capture switched to table: publishing the rest of the WAL stream, then the table");
      }
      return true;
    case WalEvent::Kind::kCommit:
      if (!in_txn_) throw WalDecodeError("replication stream: COMMIT outside a transaction");
      in_txn_ = false;
      txns_.back().committed = true;
      txns_.back().end_lsn = e.lsn;
      return true;
    case WalEvent::Kind::kKeepalive:
      // Nothing received is pending: everything before the server's end of WAL is done
      // (an idle database must not pin WAL).
      if (!in_txn_ && txns_.empty() && !pending_ && !hold_max_id_ && !to_table_seen_) {
        confirmed_ = std::max(confirmed_, e.lsn);
      }
      if (e.reply_requested) reply_due_ = true;
      return true;
  }
  return true;
}

void WalStream::SendConfirm(bool force) {
  auto now = clock_.Now();
  bool moved = confirmed_ > sent_confirm_;
  if (!(reply_due_ || (moved && (force || now - last_confirm_sent_ >= limits_.confirm_interval)) ||
        now - last_confirm_sent_ >= limits_.heartbeat_interval)) {
    return;
  }
  source_.Confirm(confirmed_);
  sent_confirm_ = std::max(sent_confirm_, confirmed_);
  last_confirm_sent_ = now;
  reply_due_ = false;
}

WalStream::StepResult WalStream::Step() {
  StepResult r;
  if (drained_) {
    r.outcome = Outcome::kDrained;
    return r;
  }
  ServeDeliveries(r);
  if (auto fatal = sink_.FatalError(); fatal && !failed_) {
    failed_ = true;
    r.why = "Kafka producer fatal: " + *fatal;
    carry_.solo_until = std::max(carry_.solo_until, max_produced_lsn_);
  }
  if (!failed_ && hold_max_id_ && clock_.Now() >= next_table_check_) {
    if (!source_.TableHasRowsUpTo(*hold_max_id_)) {
      log_->info("the table's rows up to id {} are published: streaming the WAL", *hold_max_id_);
      hold_max_id_.reset();
      for (auto& t : txns_) t.holds = false;
    } else {
      next_table_check_ = clock_.Now() + limits_.table_check_interval;
    }
  }
  bool to_table = AdvanceConfirmed();  // before reading: a keepalive may then confirm more
  int budget = 20000;
  while (!failed_ && MayRead() && budget > 0) {
    std::optional<WalEvent> e;
    if (pending_) {
      e = std::move(pending_);
      pending_.reset();
    } else {
      e = source_.Next();
    }
    if (!e) break;
    --budget;
    if (!Handle(*e, r)) break;
  }
  to_table = AdvanceConfirmed() || to_table;
  if (failed_) {
    // Confirm what is done (parked records included) so the next session does not redo it.
    SendConfirm(true);
    r.outcome = Outcome::kRestart;
    return r;
  }
  bool caught_up = drained_at_ != 0 && confirmed_ >= drained_at_ && txns_.empty() && !in_txn_ && !pending_;
  if ((to_table || caught_up) && txns_.empty() && !in_txn_) {
    SendConfirm(true);
    source_.Close();
    source_.Drained();
    drained_ = true;
    r.outcome = Outcome::kDrained;
    return r;
  }
  SendConfirm(false);
  if (budget == 0 || (pending_ && MayRead())) {
    r.wait = milliseconds{0};
  } else if (hold_max_id_) {
    r.wait = limits_.table_check_interval;
  } else {
    r.wait = limits_.idle_wait;
  }
  return r;
}

bool WalStream::DrainForStop() {
  StepResult ignored;
  ServeDeliveries(ignored);
  AdvanceConfirmed();
  SendConfirm(true);
  return inflight_.empty() || failed_ || sink_.FatalError().has_value();
}

}  // namespace outbox::relay
