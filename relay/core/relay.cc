#include "core/relay.h"

#include <poll.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <unordered_set>

#include "core/lane_plan.h"

namespace outbox::relay {
namespace {

using std::chrono::milliseconds;

// A lane whose delivery failed (transient) waits this long before re-claiming.
constexpr milliseconds kRetryPause{1000};
// A fatal producer error with no refused record reported yet: how long to wait for the
// refused batch's reports before taking it as idempotence broken beyond repair.
constexpr milliseconds kFatalGrace{2000};
constexpr milliseconds kFatalRecheck{20};
// Not ready when rows wait and nothing moved for this long.
constexpr milliseconds kNoProgressAfter{10000};
// Not ready after this many statements failed in a row on a live session.
constexpr int kFailingStatements = 3;
constexpr milliseconds kMaxConnectBackoff{5000};
constexpr milliseconds kMaxStatementBackoff{30000};

// The ids of a lane that its claims may return and the relay already has: its batches in
// flight and the acknowledged rows whose DELETE is not known done.
template <typename Lane, typename F>
void ForEachKnownIds(const Lane& lane, F&& f) {
  for (const auto& b : lane.inflight) f(b.ids);
  for (const auto& [ticket, ids] : lane.deleting) f(ids);
}
// While the lanes are handed over (Kafka stalled): how often to ask whether Kafka answers.
constexpr milliseconds kProbeInterval{1000};

std::int64_t RowBytes(const OutboxRow& row) {
  std::int64_t n = static_cast<std::int64_t>(row.topic.size() + row.message_id.size());
  if (row.key) n += static_cast<std::int64_t>(row.key->size());
  if (row.payload) n += static_cast<std::int64_t>(row.payload->size());
  for (const auto& [k, v] : row.headers) n += static_cast<std::int64_t>(k.size() + v.size());
  return n;
}

}  // namespace

Relay::Relay(const RunConfig& config, const RelayLimits& limits, const Clock& clock, OutboxStoreFactory connect,
             RecordSink& sink, RelayObserver& observer, std::shared_ptr<spdlog::logger> log, std::uint64_t seed)
    : config_(config),
      limits_(limits),
      clock_(clock),
      connect_(std::move(connect)),
      sink_(sink),
      observer_(observer),
      log_(std::move(log)),
      rng_(seed) {
  auto now = clock_.Now();
  next_rebalance_ = next_poll_ = next_connect_ = drain_deadline_ = progress_at_ = statement_retry_at_ = now;
  readiness_.reason = "starting: no PostgreSQL session yet";
  if (config_.batch_size > limits_.max_inflight_records) {
    log_->warn("--batch-size is above the in-flight cap; claiming at most the cap batch_size={} cap={}",
               config_.batch_size, limits_.max_inflight_records);
  }
}

Relay::~Relay() = default;

milliseconds Relay::Jitter(milliseconds d) {
  std::uniform_real_distribution<double> f{0.8, 1.2};
  return milliseconds(static_cast<long long>(static_cast<double>(d.count()) * f(rng_)));
}

void Relay::Connect() {
  auto now = clock_.Now();
  try {
    auto store = connect_();
    // A relay whose lanes are handed over (Kafka stalled) joins the group again only
    // when Kafka answers: DatabaseTurn joins.
    if (!standby_) member_slot_ = store->JoinGroup();
    in_group_ = !standby_;
    lane_count_ = store->LaneCount();
    store_ = std::move(store);
    observer_.DbConnected(true);
    connect_backoff_ = milliseconds{100};
    next_rebalance_ = now;
    long long failed = repeat_log_.Clear("connect");
    log_->info("connected to PostgreSQL lanes={} member_slot={}{}", lane_count_, member_slot_,
               failed > 0 ? fmt::format(" (after {} failed attempts)", failed) : std::string());
  } catch (const StoreError& e) {
    auto wait = Jitter(connect_backoff_);
    next_connect_ = now + wait;
    last_connect_error_ = e.what();
    observer_.ConnectFailed();
    if (auto suffix = repeat_log_.Note("connect", now)) {
      log_->warn("cannot use PostgreSQL, retrying in {}ms error={}{}", wait.count(), e.what(), *suffix);
    }
    connect_backoff_ = std::min(connect_backoff_ * 2, kMaxConnectBackoff);
  }
}

void Relay::OnConnectionLost(const std::string& why) {
  log_->error("lost the PostgreSQL session; lanes are free until it is back error={}", why);
  store_.reset();
  in_group_ = false;
  statement_failures_ = 0;
  statement_backoff_ = milliseconds{1000};
  suspects_.clear();  // the lanes are free now: their next owners produce these rows
  for (auto& [id, lane] : lanes_) {
    lane.owned = false;
    lane.releasing = false;
    lane.at_head = true;
    lane.short_claim = false;
    // The old session's tickets: its deletes may or may not have run. Rows left behind
    // are published again by the lane's next owner (duplicates, never losses).
    lane.deleting.clear();
  }
  observer_.DbConnected(false);
  observer_.OwnedLanes({});
  observer_.Reconnected();
  next_connect_ = clock_.Now();
}

void Relay::Rebalance() {
  int live = store_->LiveRelays();
  // The lane count can change while relays run (outbox.set_lane_count, between drains):
  // read it every time. Lanes beyond it are released once nothing of them is in flight.
  int lanes_now = store_->LaneCount();
  if (lanes_now != lane_count_) {
    log_->info("lane count changed from={} to={}", lane_count_, lanes_now);
    lane_count_ = lanes_now;
  }
  for (auto it = lanes_.begin(); it != lanes_.end();) {
    auto& [id, lane] = *it;
    if (id < lane_count_) {
      ++it;
    } else if (lane.owned) {
      if (!lane.releasing) log_->info("lane releasing lane={} (beyond the lane count {})", id, lane_count_);
      lane.releasing = true;
      ++it;
    } else if (lane.inflight.empty() && lane.deleting.empty()) {
      it = lanes_.erase(it);
    } else {
      ++it;
    }
  }
  // held: lanes whose lock this session holds (releasing ones included); active: held
  // and not being released. A releasing lane is still locked by us: taking it "again"
  // with pg_try_advisory_lock would succeed and stack the lock, and the single unlock of
  // a later release would leave it locked but unowned (nobody publishes it until this
  // relay restarts). So a releasing lane that is wanted again is just kept.
  std::set<int> held, active;
  for (const auto& [id, lane] : lanes_) {
    if (!lane.owned) continue;
    held.insert(id);
    if (!lane.releasing) active.insert(id);
  }
  int target = FairShare(lane_count_, live, config_.lanes);
  for (int id : held) {
    if (static_cast<int>(active.size()) >= target) break;
    if (active.count(id) || id >= lane_count_) continue;
    lanes_[id].releasing = false;
    active.insert(id);
    log_->info("lane kept, release cancelled lane={} target={} relays={}", id, target, live);
  }
  auto plan = PlanLanes(lane_count_, live, config_.lanes, member_slot_, active);
  std::vector<int> candidates;
  for (int id : plan.try_acquire) {
    if (!held.count(id)) candidates.push_back(id);
  }
  if (!candidates.empty()) {
    int need = plan.target - static_cast<int>(active.size());
    auto got = store_->TryLockLanes(candidates, need);
    for (int id : got) {
      auto& lane = lanes_[id];
      ++lane.epoch;
      lane.owned = true;
      lane.releasing = false;
      lane.at_head = true;
      lane.short_claim = false;  // its backlog is unknown: a full batch, within the budget
      lane.wake = true;
    }
    if (!got.empty()) {
      log_->info("lanes acquired count={} owned={} target={} relays={}", got.size(), active.size() + got.size(),
                 plan.target, live);
    }
  }
  for (int id : plan.release) {
    if (lanes_[id].releasing) continue;
    lanes_[id].releasing = true;
    log_->info("lane releasing lane={} target={} relays={}", id, plan.target, live);
  }
  std::vector<int> owned_now;
  for (const auto& [id, lane] : lanes_) {
    if (lane.owned) owned_now.push_back(id);
  }
  observer_.OwnedLanes(owned_now);
}

int Relay::InFlightRecords() const {
  int n = 0;
  for (const auto& [id, lane] : lanes_) {
    for (const auto& b : lane.inflight) n += b.pending;
  }
  return n;
}

std::int64_t Relay::InFlightBytes() const {
  std::int64_t n = 0;
  for (const auto& [id, lane] : lanes_) {
    for (const auto& b : lane.inflight) n += b.pending > 0 ? b.bytes : 0;
  }
  return n;
}

std::vector<int> Relay::OwnedLanes() const {
  std::vector<int> out;
  for (const auto& [id, lane] : lanes_) {
    if (lane.owned && !lane.releasing) out.push_back(id);
  }
  return out;
}

void Relay::ClaimAndProduce() {
  // Every claim reads a lane from its lowest id, so a row whose transaction committed
  // late (with an id below rows already claimed) is never skipped. The lane's rows in
  // flight come back too (without payload) and are passed over; any other row at or
  // below the highest id in flight is such a late commit. It is fetched whole and
  // produced at once, before the lane's new rows: in id order, as always. No row of its
  // key in flight can be younger — for writers that serialise on a key, id order is
  // commit order, and every row in flight was visible before the late row committed.
  if (!suspects_.empty()) {
    Isolate();
    return;
  }
  if (IsolatedInFlight()) return;  // e.g. suspects dropped with a lost session: still alone
  auto now = clock_.Now();
  if (InFlightRecords() == 0) bytes_full_ = false;
  // The in-flight caps bound what this turn may claim, and max_claim_rows what one claim
  // reads for lanes with a backlog. A --batch-size above the record cap claims at most the
  // cap; lanes take turns (round robin from where the last turn stopped) so that, with a
  // cap binding, low lanes cannot starve high lanes.
  int budget = limits_.max_inflight_records - InFlightRecords();
  int batch_size = std::min(config_.batch_size, limits_.max_inflight_records);
  int backlog_budget = std::max(limits_.max_claim_rows, batch_size);
  std::vector<OutboxStore::LaneClaim> claims;
  std::map<int, int> claim_limit;
  std::vector<int> order;
  for (auto it = lanes_.lower_bound(next_lane_); it != lanes_.end(); ++it) order.push_back(it->first);
  for (auto it = lanes_.begin(); it != lanes_.end() && it->first < next_lane_; ++it) order.push_back(it->first);
  for (int id : order) {
    auto& lane = lanes_[id];
    if (!lane.owned || lane.releasing || now < lane.resume_at) continue;
    if (static_cast<int>(lane.inflight.size()) >= config_.max_inflight_batches) continue;
    if (lane.reset_pending) {
      if (!lane.inflight.empty()) continue;
      lane.reset_pending = false;
      lane.drop_suspects = false;
      lane.at_head = false;  // claim at once
    }
    if (lane.at_head && !lane.wake) continue;
    if (budget <= 0) break;
    // A lane at its head after a short claim is woken for a few new rows: it joins every
    // claim (one round trip for all lanes at low rates) without counting to the backlog's.
    bool backlog = !(lane.at_head && lane.short_claim);
    if (backlog && backlog_budget <= 0) continue;
    int limit = std::min(batch_size, budget);
    if (backlog) {
      limit = std::min(limit, backlog_budget);
      backlog_budget -= limit;
      next_lane_ = id + 1;
    }
    budget -= limit;
    int in_flight_rows = 0;
    std::int64_t highest = 0;  // batches may start with late rows: take the maximum
    ForEachKnownIds(lane, [&](const std::vector<std::int64_t>& ids) {
      in_flight_rows += static_cast<int>(ids.size());
      for (auto rid : ids) highest = std::max(highest, rid);
    });
    claims.push_back({id, highest, limit + in_flight_rows});
    claim_limit[id] = limit;
  }
  if (claims.empty()) return;
  // Bytes: what the in-flight cap leaves, at most max_claim_bytes, shared by the lanes.
  // The first lane gets at least one row, however large, so large rows move one claim at
  // a time; a lane cut before its first row comes first next turn.
  std::int64_t claim_bytes = std::min(limits_.max_inflight_bytes - InFlightBytes(), limits_.max_claim_bytes);
  for (auto& c : claims) c.max_bytes = std::max<std::int64_t>(0, claim_bytes / static_cast<std::int64_t>(claims.size()));
  claims.front().take_one = true;

  auto rows = store_->Claim(claims);
  log_->debug("claimed lanes={} rows={} in_flight={}", claims.size(), rows.size(), InFlightRecords());
  std::map<int, std::vector<OutboxRow*>> by_lane;
  for (auto& row : rows) by_lane[row.lane].push_back(&row);

  // Sort each lane's rows: in flight (skip), late (fetch whole), new.
  std::map<int, std::vector<OutboxRow*>> to_produce;
  std::map<int, std::int64_t> known_up_to;
  std::vector<std::int64_t> late_ids;
  for (const auto& claim : claims) {
    auto& lane = lanes_[claim.lane];
    lane.wake = false;
    std::unordered_set<std::int64_t> in_flight;  // and being deleted
    ForEachKnownIds(lane, [&](const std::vector<std::int64_t>& ids) { in_flight.insert(ids.begin(), ids.end()); });
    auto& list = to_produce[claim.lane];
    known_up_to[claim.lane] = claim.known_up_to;
    for (auto* row : by_lane[claim.lane]) {
      if (static_cast<int>(list.size()) >= claim_limit[claim.lane]) break;
      if (row->id > claim.known_up_to) {
        list.push_back(row);
      } else if (!in_flight.count(row->id)) {
        late_ids.push_back(row->id);
        list.push_back(row);
      }
    }
  }
  for (const auto& claim : claims) {
    if (claim.cut && to_produce[claim.lane].empty()) {
      next_lane_ = claim.lane;
      break;
    }
  }
  std::vector<OutboxRow> late_rows;
  if (!late_ids.empty()) {
    late_rows = store_->Fetch(late_ids);
    std::map<std::int64_t, OutboxRow*> whole;
    for (auto& r : late_rows) whole[r.id] = &r;
    for (auto& [lane_id, list] : to_produce) {
      std::vector<OutboxRow*> kept;
      for (auto* row : list) {
        if (row->id > known_up_to[lane_id]) {
          kept.push_back(row);
        } else if (auto it = whole.find(row->id); it != whole.end()) {
          kept.push_back(it->second);
        }  // else gone meanwhile (a former owner delivered and deleted it): skip
      }
      list.swap(kept);
    }
    log_->debug("late commits below rows in flight, produced first count={}", late_rows.size());
  }

  bool queue_full = false;
  std::int64_t bytes_budget = limits_.max_inflight_bytes - InFlightBytes();
  for (const auto& claim : claims) {
    auto& lane = lanes_[claim.lane];
    const auto& fresh = to_produce[claim.lane];
    lane.at_head = static_cast<int>(fresh.size()) < claim_limit[claim.lane] && !claim.cut;
    lane.short_claim = lane.at_head;
    if (fresh.empty() || queue_full || bytes_full_) continue;
    Batch batch;
    batch.seq = next_batch_++;
    batch.claimed_at = now;
    batch.epoch = lane.epoch;
    for (auto* row : fresh) {
      // The byte cap: stop here (the rest stays in the table, claimed again once
      // acknowledgements free room). A row larger than the cap goes alone.
      std::int64_t bytes = RowBytes(*row);
      if (bytes > bytes_budget && (InFlightRecords() > 0 || batch.pending > 0)) {
        bytes_full_ = true;
        lane.at_head = false;
        break;
      }
      bytes_budget -= bytes;
      std::uint64_t token = next_token_++;
      std::string error;
      DeliveryFailure failure = DeliveryFailure::kTransient;
      auto status = sink_.Produce(*row, token, &error, &failure);
      if (status == RecordSink::ProduceStatus::kQueued) {
        batch.ids.push_back(row->id);
        batch.bytes += bytes;
        ++batch.pending;
        tokens_[token] = {claim.lane, batch.seq, row->id};
      } else if (status == RecordSink::ProduceStatus::kRejected && failure == DeliveryFailure::kPermanent) {
        batch.ids.push_back(row->id);
        batch.rejected.emplace_back(row->id, error);
      } else {
        // Queue full or a transient refusal: stop this lane here. The row and those after
        // it stay in the table; the lane claims again once nothing of it is in flight.
        if (status == RecordSink::ProduceStatus::kQueueFull) {
          queue_full = true;
        } else {
          if (auto suffix = repeat_log_.Note("produce", now)) {
            log_->warn("produce refused lane={} id={} error={}{}", claim.lane, row->id, error, *suffix);
          }
          lane.resume_at = now + kRetryPause;
        }
        lane.reset_pending = true;
        break;
      }
    }
    if (!batch.ids.empty()) lane.inflight.push_back(std::move(batch));
  }
  observer_.InFlight(InFlightRecords());
}

void Relay::HandleDeliveries(std::vector<Delivery> deliveries) {
  if (!deliveries.empty()) bytes_full_ = false;  // room again: try the next rows
  for (auto& d : deliveries) {
    auto t = tokens_.find(d.token);
    if (t == tokens_.end()) {
      log_->error("delivery report for an unknown record token={}", d.token);
      continue;
    }
    InFlightRecord rec = t->second;
    tokens_.erase(t);
    auto& lane = lanes_[rec.lane];
    auto b = std::find_if(lane.inflight.begin(), lane.inflight.end(),
                          [&](const Batch& x) { return x.seq == rec.batch_seq; });
    if (b == lane.inflight.end()) continue;
    --b->pending;
    if (d.ok) {
      b->delivered.push_back(rec.id);
      progress_at_ = clock_.Now();
    } else if (d.failure == DeliveryFailure::kPermanent) {
      ++refusals_;
      if (b->isolated) {
        b->rejected.emplace_back(rec.id, d.error);
      } else {
        // Kafka refuses whole record batches (too large for the topic, policy, invalid
        // record) and librdkafka fails every record in it with the batch's error: this
        // row may be innocent. It is produced again alone before anything else (Isolate).
        b->suspects.push_back(rec.id);
        if (auto suffix = repeat_log_.Note("suspect", clock_.Now())) {
          log_->warn("record in a refused record batch, will be tried alone lane={} id={} error={}{}", rec.lane,
                     rec.id, d.error, *suffix);
        }
      }
    } else {
      b->retry_needed = true;
      observer_.DeliveryFailed();
      if (auto suffix = repeat_log_.Note("delivery", clock_.Now())) {
        log_->warn("delivery failed, will retry lane={} id={} error={}{}", rec.lane, rec.id, d.error, *suffix);
      }
    }
  }
}

void Relay::CollectCompleted() {
  auto now = clock_.Now();
  for (auto& [id, lane] : lanes_) {
    for (auto it = lane.inflight.begin(); it != lane.inflight.end();) {
      Batch& b = *it;
      if (b.pending > 0) {
        ++it;
        continue;
      }
      if (!b.delivered.empty()) {
        auto& acked = to_delete_[id];
        acked.insert(acked.end(), b.delivered.begin(), b.delivered.end());
      }
      to_dead_letter_.insert(to_dead_letter_.end(), b.rejected.begin(), b.rejected.end());
      observer_.Published(static_cast<int>(b.delivered.size()));
      observer_.BatchLatency(std::chrono::duration<double>(now - b.claimed_at).count());
      if (b.isolated) {
        // Settled (published or parked) unless it failed transiently: then again later.
        for (auto rid : b.delivered) suspects_.erase(rid);
        for (const auto& [rid, error] : b.rejected) suspects_.erase(rid);
        if (b.retry_needed) isolation_resume_ = now + kRetryPause;
      } else if (!b.suspects.empty() && lane.owned && !lane.releasing && b.epoch == lane.epoch &&
                 !lane.drop_suspects) {
        for (auto rid : b.suspects) suspects_[rid] = id;
        lane.reset_pending = true;  // the rest of the lane again from its lowest id, after
      } else if (!b.suspects.empty()) {
        // Claimed before the lane was lost (and maybe taken again): younger suspects of
        // the lane must not go alone before these older rows. Drop them all; the lane is
        // claimed again from its lowest id, where refused rows become suspects again.
        DropSuspects(id);
        lane.reset_pending = true;
        lane.drop_suspects = true;  // until that claim: later batches' suspects are younger
      }
      if (b.retry_needed) {
        // Rows that failed stay in the table; the lane starts again from its lowest id
        // once nothing of it is in flight.
        lane.reset_pending = true;
        lane.resume_at = now + kRetryPause;
      }
      it = lane.inflight.erase(it);
    }
  }
  observer_.InFlight(InFlightRecords());
}

void Relay::FlushToDatabase() {
  while (!to_dead_letter_.empty()) {
    const auto& [id, error] = to_dead_letter_.back();
    store_->DeadLetter(id, error);
    observer_.DeadLettered();
    log_->error("message parked in outbox.dead_letters id={} error={}", id, error);
    to_dead_letter_.pop_back();
  }
  if (!to_delete_.empty()) {
    // One statement for every lane; it may still run when this returns (the lanes keep
    // its rows as known until ForgetDeleted sees it done).
    std::vector<std::int64_t> ids;
    for (const auto& [lane, acked] : to_delete_) ids.insert(ids.end(), acked.begin(), acked.end());
    auto ticket = store_->Delete(ids);
    for (auto& [lane, acked] : to_delete_) lanes_[lane].deleting.emplace_back(ticket, std::move(acked));
    to_delete_.clear();
  }
}

void Relay::ForgetDeleted() {
  // Deletes done before the next claim starts are seen by it: their rows are no longer
  // known. Those finishing later stay known for that claim (it may still see them).
  auto done = store_->DeletedUpTo();
  for (auto& [id, lane] : lanes_) {
    while (!lane.deleting.empty() && lane.deleting.front().first <= done) lane.deleting.pop_front();
  }
}

bool Relay::DeletesPending() const {
  if (!to_delete_.empty()) return true;
  for (const auto& [id, lane] : lanes_) {
    if (!lane.deleting.empty()) return true;
  }
  return false;
}

bool Relay::IsolatedInFlight() const {
  for (const auto& [id, lane] : lanes_) {
    for (const auto& b : lane.inflight) {
      if (b.isolated && b.pending > 0) return true;
    }
  }
  return false;
}

void Relay::DropSuspects(int lane) {
  for (auto it = suspects_.begin(); it != suspects_.end();) {
    it = it->second == lane ? suspects_.erase(it) : std::next(it);
  }
}

void Relay::Isolate() {
  // Only with nothing else in flight: then the suspect is alone in its record batch (and
  // nothing younger of its key can land before it).
  auto now = clock_.Now();
  if (InFlightRecords() > 0 || now < isolation_resume_) return;
  while (!suspects_.empty()) {
    auto [id, lane_id] = *suspects_.begin();
    auto lane_it = lanes_.find(lane_id);
    if (lane_it == lanes_.end() || !lane_it->second.owned || lane_it->second.releasing) {
      // No longer ours: its next owner claims the lane from its lowest id. All of the
      // lane's suspects go, or a younger one would be published before an older one.
      DropSuspects(lane_id);
      continue;
    }
    auto rows = store_->Fetch({id});
    if (rows.empty()) {
      suspects_.erase(id);  // gone meanwhile
      continue;
    }
    const auto& row = rows.front();
    Batch batch;
    batch.seq = next_batch_++;
    batch.claimed_at = now;
    batch.isolated = true;
    batch.epoch = lane_it->second.epoch;
    batch.ids.push_back(id);
    std::uint64_t token = next_token_++;
    std::string error;
    DeliveryFailure failure = DeliveryFailure::kTransient;
    auto status = sink_.Produce(row, token, &error, &failure);
    if (status == RecordSink::ProduceStatus::kQueued) {
      batch.bytes = RowBytes(row);
      batch.pending = 1;
      tokens_[token] = {row.lane, batch.seq, id};
      log_->info("producing a row of a refused record batch alone lane={} id={}", row.lane, id);
    } else if (status == RecordSink::ProduceStatus::kRejected && failure == DeliveryFailure::kPermanent) {
      batch.rejected.emplace_back(id, error);
    } else {
      isolation_resume_ = now + kRetryPause;
      return;
    }
    lane_it->second.inflight.push_back(std::move(batch));
    return;
  }
}

void Relay::ResetProducer(const std::string& why, bool give_up) {
  // With enable.gapless.guarantee a refused record batch makes the producer fatal, so no
  // later record of its partition lands; the refused rows become suspects (Poll reported
  // them) and everything else comes back as a transient failure of the old producer.
  HandleDeliveries(sink_.Poll());
  if (refusals_ == 0 && !give_up) {
    // The refused batch's reports may still be on their way (RelayE2e showed the fatal
    // error first, the reports a moment later): look again shortly.
    next_reset_ = clock_.Now() + kFatalRecheck;
    return;
  }
  if (refusals_ == 0) {
    // Not a refused record batch: idempotence broken beyond repair. Stop as before.
    log_->critical("fatal Kafka producer error, stopping (undelivered rows stay in the outbox) error={}", why);
    exit_code_ = 1;
    draining_ = true;
    drain_deadline_ = clock_.Now();
    next_reset_ = TimePoint::max();
    return;
  }
  log_->error("Kafka refused a record batch; starting a new producer error={}", why);
  sink_.Reset();
  HandleDeliveries(sink_.Poll());
  CollectCompleted();
  refusals_ = 0;
  fatal_since_.reset();
  next_reset_ = clock_.Now() + kRetryPause;
}

void Relay::ReleaseIdleLanes() {
  for (auto& [id, lane] : lanes_) {
    // Not before its deletes are done: the next owner would publish those rows again.
    if (!lane.releasing || !lane.inflight.empty() || !lane.deleting.empty()) continue;
    store_->UnlockLane(id);
    DropSuspects(id);
    lane.owned = false;
    lane.releasing = false;
    lane.at_head = true;
    lane.short_claim = false;
    log_->info("lane released lane={}", id);
  }
}

bool Relay::CanClaimNow() const {
  if (!store_ || draining_ || standby_ || clock_.Now() < statement_retry_at_) return false;
  // At a cap: wait for acknowledgements, do not spin.
  if (!suspects_.empty()) return InFlightRecords() == 0 && clock_.Now() >= isolation_resume_;
  if (IsolatedInFlight()) return false;
  if (bytes_full_ || InFlightRecords() >= limits_.max_inflight_records) return false;
  auto now = clock_.Now();
  for (const auto& [id, lane] : lanes_) {
    if (!lane.owned || lane.releasing || now < lane.resume_at) continue;
    if (static_cast<int>(lane.inflight.size()) >= config_.max_inflight_batches) continue;
    if (lane.reset_pending) {
      if (lane.inflight.empty()) return true;
      continue;
    }
    if (!lane.at_head || lane.wake) return true;
  }
  return false;
}

void Relay::Stop() { stopping_ = true; }

// One turn with the database: wake-ups, deletes and dead letters, lane ownership, claims.
void Relay::DatabaseTurn(TimePoint now) {
  try {
    if (!in_group_ && !standby_) {
      member_slot_ = store_->JoinGroup();
      in_group_ = true;
      log_->info("joined the relay group member_slot={}", member_slot_);
    }
    if (store_->TakeWakeups()) {
      for (auto& [id, lane] : lanes_) lane.wake = true;
    }
    if (now >= next_poll_) {
      for (auto& [id, lane] : lanes_) lane.wake = true;
      next_poll_ = now + config_.poll_interval;
    }
    FlushToDatabase();
    ForgetDeleted();
    ReleaseIdleLanes();
    if (standby_ && in_group_) {
      // Every lane is released (EnterStandby emptied them): the other relays' fair share
      // now counts without this one.
      store_->LeaveGroup(member_slot_);
      in_group_ = false;
      observer_.OwnedLanes({});
      log_->info("left the relay group until Kafka answers");
    }
    if (!draining_ && !standby_ && now >= next_rebalance_) {
      Rebalance();
      next_rebalance_ = now + config_.rebalance_interval;
    }
    if (!draining_ && !standby_) ClaimAndProduce();
    // A NOTIFY that arrived while this turn's statements ran was read by the client
    // library with their results, so poll(2) would not see it: the rows it announces
    // would wait for the next acknowledgement or the poll timer. Claim again at once.
    if (store_->TakeBufferedWakeups()) {
      for (auto& [id, lane] : lanes_) lane.wake = true;
    }
    if (statement_failures_ > 0) {
      repeat_log_.Clear("statement");
      log_->info("database statements succeed again after {} failures in a row", statement_failures_);
      statement_failures_ = 0;
      statement_backoff_ = milliseconds{1000};
    }
  } catch (const StoreError& e) {
    if (e.connection_lost()) {
      OnConnectionLost(e.what());
      return;
    }
    // A statement failed on a live session (a privilege, a constraint, a bug): it will
    // likely fail again. Back off (capped exponential with jitter), log repeats once
    // per interval with their count, and say so in /readyz.
    ++statement_failures_;
    last_statement_error_ = e.what();
    observer_.StatementFailed();
    auto wait = Jitter(statement_backoff_);
    statement_retry_at_ = now + wait;
    statement_backoff_ = std::min(statement_backoff_ * 2, kMaxStatementBackoff);
    if (auto suffix = repeat_log_.Note("statement", now)) {
      log_->error("database statement failed, retrying in {}ms error={} sqlstate={}{}", wait.count(), e.what(),
                  e.sqlstate(), *suffix);
    }
  }
}

void Relay::EnterStandby(TimePoint now) {
  log_->error("Kafka acknowledged nothing for {}s while {} records wait: handing this relay's lanes to relays "
              "that reach Kafka, asking again every {}ms",
              std::chrono::duration_cast<std::chrono::seconds>(now - progress_at_).count(), InFlightRecords(),
              kProbeInterval.count());
  standby_ = true;
  next_probe_ = now + kProbeInterval;
  observer_.KafkaStalled(true);
  // A new producer: every record the old one held fails (transient) and its rows stay in
  // the table; some may still land later, only as duplicates of what the lanes' next
  // owners publish from each lane's lowest id (docs/relay.md, "Kafka out of reach").
  sink_.Reset();
  HandleDeliveries(sink_.Poll());
  CollectCompleted();
  refusals_ = 0;
  fatal_since_.reset();
  suspects_.clear();
  for (auto& [id, lane] : lanes_) {
    if (lane.owned) lane.releasing = true;
  }
}

void Relay::UpdateReadiness(TimePoint now) {
  Readiness r;
  auto seconds = [&](TimePoint since) {
    return std::chrono::duration_cast<std::chrono::seconds>(now - since).count();
  };
  bool rows_wait = InFlightRecords() > 0 || !suspects_.empty();
  for (const auto& [id, lane] : lanes_) {
    if (lane.owned && (!lane.at_head || lane.reset_pending)) rows_wait = true;
  }
  if (!rows_wait && !standby_) progress_at_ = now;  // nothing known to wait: nothing to move
  if (!store_) {
    r.reason = "no PostgreSQL session: " + (last_connect_error_.empty() ? std::string("connecting") : last_connect_error_);
  } else if (statement_failures_ >= kFailingStatements) {
    r.reason = fmt::format("database statements failing ({} in a row), last error: {}", statement_failures_,
                           last_statement_error_);
  } else if (standby_) {
    r.reason = "Kafka acknowledged nothing for --kafka-stall-timeout: lanes handed to other relays, waiting for "
               "Kafka to answer";
  } else if (auto fatal = sink_.FatalError()) {
    r.reason = "fatal Kafka producer error: " + *fatal;
  } else if (rows_wait && now - progress_at_ >= kNoProgressAfter) {
    r.reason = fmt::format("rows of owned lanes are not moving: Kafka acknowledged nothing for {}s ({} records in "
                           "flight)", seconds(progress_at_), InFlightRecords());
  } else {
    r.ready = true;
  }
  std::lock_guard lock{readiness_mu_};
  readiness_ = std::move(r);
}

Relay::Readiness Relay::readiness() const {
  std::lock_guard lock{readiness_mu_};
  return readiness_;
}

milliseconds Relay::Step() {
  if (done_) return milliseconds{0};
  auto now = clock_.Now();
  if (stopping_ && !draining_) {
    draining_ = true;
    drain_deadline_ = now + config_.shutdown_timeout;
    log_->info("stopping: no new claims in_flight={}", InFlightRecords());
  }
  HandleDeliveries(sink_.Poll());
  CollectCompleted();
  if (auto fatal = sink_.FatalError(); fatal && now >= next_reset_) {
    if (!fatal_since_) fatal_since_ = now;
    ResetProducer(*fatal, /*give_up=*/now - *fatal_since_ >= kFatalGrace);
  }

  // Kafka acknowledged nothing for --kafka-stall-timeout while records wait: another
  // relay may reach it. Hand the lanes over; ask Kafka now and then; rejoin when it answers.
  if (!standby_ && !draining_ && store_ && config_.kafka_stall_timeout > milliseconds::zero() &&
      InFlightRecords() > 0 && now - progress_at_ >= config_.kafka_stall_timeout) {
    EnterStandby(now);
  }
  if (standby_ && !draining_ && now >= next_probe_) {
    next_probe_ = now + kProbeInterval;
    if (sink_.Reachable()) {
      standby_ = false;
      progress_at_ = now;
      next_rebalance_ = now;
      observer_.KafkaStalled(false);
      log_->info("Kafka answers again: competing for lanes");
    }
  }

  if (!store_ && now >= next_connect_) Connect();
  if (store_ && now >= statement_retry_at_) DatabaseTurn(now);
  UpdateReadiness(now);

  if (draining_) {
    bool drained = InFlightRecords() == 0 && !DeletesPending() && to_dead_letter_.empty();
    if (drained) {
      done_ = true;
      return milliseconds{0};
    }
    if (now >= drain_deadline_) {
      std::size_t undeleted = 0;
      for (const auto& [lane, acked] : to_delete_) undeleted += acked.size();
      log_->warn("shutdown timeout: records still in flight will be published again in_flight={} undeleted={}",
                 InFlightRecords(), undeleted);
      sink_.Purge();
      HandleDeliveries(sink_.Poll());
      CollectCompleted();
      if (store_) {
        try {
          FlushToDatabase();
        } catch (const StoreError& e) {
          log_->warn("could not delete delivered rows at shutdown error={}", e.what());
        }
      }
      done_ = true;
      return milliseconds{0};
    }
  }

  // Wait for Kafka reports, a wake-up, the stop signal or the next timer.
  if (draining_) {
    // Reports end the wait early; the deadline (or a reconnection) is checked every 50 ms.
    auto left = std::chrono::duration_cast<milliseconds>(drain_deadline_ - now);
    return std::clamp(left, milliseconds{1}, milliseconds{50});
  }
  if (CanClaimNow()) return milliseconds{0};
  // Disconnected, only the next connection attempt matters: the poll and rebalance
  // timers lie in the past and would make this loop spin until then.
  auto until = store_ ? next_poll_ : next_connect_;
  if (store_ && !standby_) until = std::min(until, next_rebalance_);  // no rebalancing while handed over
  for (const auto& [id, lane] : lanes_) {
    if (lane.owned && lane.resume_at > now) until = std::min(until, lane.resume_at);
  }
  if (store_ && !suspects_.empty() && isolation_resume_ > now) until = std::min(until, isolation_resume_);
  if (store_ && statement_retry_at_ > now) until = std::max(until, statement_retry_at_);
  if (standby_) until = std::min(until, next_probe_);
  if (sink_.FatalError() && next_reset_ > now) until = std::min(until, next_reset_);
  auto wait = std::chrono::duration_cast<milliseconds>(until - clock_.Now());
  return std::clamp(wait, milliseconds{0}, config_.poll_interval);
}

int Relay::Run(const std::atomic<bool>& stop, int stop_fd) {
  log_->info("relay starting brokers={} batch_size={} max_inflight_batches={} poll_interval={}ms",
             config_.brokers, config_.batch_size, config_.max_inflight_batches, config_.poll_interval.count());
  while (true) {
    if (stop.load()) Stop();
    auto wait = Step();
    if (done_) break;
    if (wait.count() > 0) {
      pollfd fds[4];
      int n = 0;
      if (sink_.wait_fd() >= 0) fds[n++] = {sink_.wait_fd(), POLLIN, 0};
      if (store_ && store_->wait_fd() >= 0) fds[n++] = {store_->wait_fd(), POLLIN, 0};
      // A finished delete lets a releasing lane go (or a shutdown end) without waiting
      // for the poll timer. Not while statements back off: the result would stay unread
      // and poll(2) return at once until then.
      if (store_ && store_->delete_wait_fd() >= 0 && DeletesPending() && clock_.Now() >= statement_retry_at_) {
        fds[n++] = {store_->delete_wait_fd(), POLLIN, 0};
      }
      if (!draining_ && stop_fd >= 0) fds[n++] = {stop_fd, POLLIN, 0};
      ::poll(fds, static_cast<nfds_t>(n), static_cast<int>(wait.count()));
    }
  }
  log_->info("relay stopped");
  return exit_code_;
}

}  // namespace outbox::relay
