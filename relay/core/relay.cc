#include "core/relay.h"

#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>
#include <unordered_set>

#include "core/lane_plan.h"

namespace outbox::relay {
namespace {

using std::chrono::milliseconds;

// Records produced and not acknowledged, over all lanes: bounds memory.
constexpr int kMaxInflightRecords = 50000;
// A lane whose delivery failed (transient) waits this long before re-claiming.
constexpr milliseconds kRetryPause{1000};
// Not ready if a batch waits this long for Kafka.
constexpr milliseconds kStuckAfter{30000};
constexpr milliseconds kMaxConnectBackoff{5000};

milliseconds Jitter(milliseconds d) {
  static thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_real_distribution<double> f{0.8, 1.2};
  return milliseconds(static_cast<long long>(d.count() * f(rng)));
}

}  // namespace

Relay::Relay(const RunConfig& config, std::shared_ptr<spdlog::logger> log, RelayMetrics& metrics)
    : config_(config), log_(std::move(log)), metrics_(metrics), producer_(config.brokers, config.kafka_conf, log_) {}

Relay::~Relay() = default;

void Relay::Connect() {
  auto now = Clock::now();
  try {
    auto store = std::make_unique<OutboxStore>(config_.db, "outbox-relay");
    member_slot_ = store->JoinGroup();
    lane_count_ = store->lane_count();
    store_ = std::move(store);
    metrics_.db_connected.Set(1);
    connect_backoff_ = milliseconds{100};
    next_rebalance_ = now;
    log_->info("connected to PostgreSQL lanes={} member_slot={}", lane_count_, member_slot_);
  } catch (const PgError& e) {
    next_connect_ = now + Jitter(connect_backoff_);
    log_->warn("cannot use PostgreSQL, retrying in {}ms error={}", connect_backoff_.count(), e.what());
    connect_backoff_ = std::min(connect_backoff_ * 2, kMaxConnectBackoff);
  }
}

void Relay::OnConnectionLost(const std::string& why) {
  log_->error("lost the PostgreSQL session; lanes are free until it is back error={}", why);
  store_.reset();
  for (auto& [id, lane] : lanes_) {
    lane.owned = false;
    lane.releasing = false;
    lane.at_head = true;
  }
  metrics_.db_connected.Set(0);
  metrics_.owned_lanes.Set(0);
  metrics_.db_reconnects.Increment();
  next_connect_ = Clock::now();
}

void Relay::Rebalance() {
  int live = store_->LiveRelays();
  std::set<int> owned;
  for (const auto& [id, lane] : lanes_) {
    if (lane.owned && !lane.releasing) owned.insert(id);
  }
  auto plan = PlanLanes(lane_count_, live, config_.lanes, member_slot_, owned);
  if (!plan.try_acquire.empty()) {
    int need = plan.target - static_cast<int>(owned.size());
    auto got = store_->TryLockLanes(plan.try_acquire, need);
    for (int id : got) {
      auto& lane = lanes_[id];
      lane.owned = true;
      lane.releasing = false;
      lane.at_head = true;
      lane.wake = true;
    }
    if (!got.empty()) {
      log_->info("lanes acquired count={} owned={} target={} relays={}", got.size(), owned.size() + got.size(),
                 plan.target, live);
    }
  }
  for (int id : plan.release) {
    lanes_[id].releasing = true;
    log_->info("lane releasing lane={} target={} relays={}", id, plan.target, live);
  }
  int count = 0;
  for (const auto& [id, lane] : lanes_) count += lane.owned ? 1 : 0;
  metrics_.owned_lanes.Set(count);
}

int Relay::InFlightRecords() const {
  int n = 0;
  for (const auto& [id, lane] : lanes_) {
    for (const auto& b : lane.inflight) n += b->pending;
  }
  return n;
}

void Relay::ClaimAndProduce() {
  // Every claim reads a lane from its lowest id, so a row whose transaction committed
  // late (with an id below rows already claimed) is never skipped. The lane's rows in
  // flight come back too (without payload) and are passed over; any other row at or
  // below the highest id in flight is such a late commit. It is fetched whole and
  // produced at once, before the lane's new rows: in id order, as always. No row of its
  // key in flight can be younger — for writers that serialise on a key, id order is
  // commit order, and every row in flight was visible before the late row committed.
  auto now = Clock::now();
  int budget = kMaxInflightRecords - InFlightRecords();
  std::vector<OutboxStore::LaneClaim> claims;
  for (auto& [id, lane] : lanes_) {
    if (!lane.owned || lane.releasing || now < lane.resume_at) continue;
    if (static_cast<int>(lane.inflight.size()) >= config_.max_inflight_batches) continue;
    if (lane.reset_pending) {
      if (!lane.inflight.empty()) continue;
      lane.reset_pending = false;
      lane.at_head = false;  // claim at once
    }
    if (lane.at_head && !lane.wake) continue;
    if (budget < config_.batch_size) break;
    budget -= config_.batch_size;
    int in_flight_rows = 0;
    std::int64_t highest = 0;  // batches may start with late rows: take the maximum
    for (const auto& b : lane.inflight) {
      in_flight_rows += static_cast<int>(b->entries.size());
      for (const auto& e : b->entries) highest = std::max(highest, e.id);
    }
    claims.push_back({id, highest, config_.batch_size + in_flight_rows});
  }
  if (claims.empty()) return;

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
    std::unordered_set<std::int64_t> in_flight;
    for (const auto& b : lane.inflight) {
      for (const auto& e : b->entries) in_flight.insert(e.id);
    }
    auto& list = to_produce[claim.lane];
    known_up_to[claim.lane] = claim.known_up_to;
    for (auto* row : by_lane[claim.lane]) {
      if (static_cast<int>(list.size()) >= config_.batch_size) break;
      if (row->id > claim.known_up_to) {
        list.push_back(row);
      } else if (!in_flight.count(row->id)) {
        late_ids.push_back(row->id);
        list.push_back(row);
      }
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
  for (const auto& claim : claims) {
    auto& lane = lanes_[claim.lane];
    const auto& fresh = to_produce[claim.lane];
    lane.at_head = static_cast<int>(fresh.size()) < config_.batch_size;
    if (fresh.empty() || queue_full) continue;
    auto batch = std::make_unique<Batch>();
    batch->lane = claim.lane;
    batch->claimed_at = now;
    batch->entries.reserve(fresh.size());  // addresses handed to Kafka must not move
    for (auto* row : fresh) {
      batch->entries.push_back({batch.get(), row->id});
      std::string error;
      DeliveryFailure failure = DeliveryFailure::kTransient;
      auto status = producer_.Produce(*row, &batch->entries.back(), &error, &failure);
      if (status == KafkaProducer::ProduceStatus::kQueued) {
        ++batch->pending;
      } else if (status == KafkaProducer::ProduceStatus::kRejected && failure == DeliveryFailure::kPermanent) {
        batch->rejected.emplace_back(row->id, error);
      } else {
        // Queue full or a transient refusal: stop this lane here. The row and those after
        // it stay in the table; the lane claims again once nothing of it is in flight.
        batch->entries.pop_back();
        if (status == KafkaProducer::ProduceStatus::kQueueFull) {
          queue_full = true;
        } else {
          log_->warn("produce refused lane={} id={} error={}", claim.lane, row->id, error);
          lane.resume_at = now + kRetryPause;
        }
        lane.reset_pending = true;
        break;
      }
    }
    if (!batch->entries.empty()) lane.inflight.push_back(std::move(batch));
  }
  metrics_.inflight.Set(InFlightRecords());
}

void Relay::HandleDeliveries(std::vector<Delivery> deliveries) {
  for (auto& d : deliveries) {
    auto* entry = static_cast<Entry*>(d.opaque);
    Batch* batch = entry->batch;
    --batch->pending;
    if (d.ok) {
      batch->delivered.push_back(entry->id);
    } else if (d.failure == DeliveryFailure::kPermanent) {
      batch->rejected.emplace_back(entry->id, d.error);
    } else {
      batch->retry_needed = true;
      metrics_.failed.Increment();
      log_->warn("delivery failed, will retry lane={} id={} error={}", batch->lane, entry->id, d.error);
    }
  }
}

void Relay::CollectCompleted() {
  auto now = Clock::now();
  for (auto& [id, lane] : lanes_) {
    for (auto it = lane.inflight.begin(); it != lane.inflight.end();) {
      Batch& b = **it;
      if (b.pending > 0) {
        ++it;
        continue;
      }
      to_delete_.insert(to_delete_.end(), b.delivered.begin(), b.delivered.end());
      to_dead_letter_.insert(to_dead_letter_.end(), b.rejected.begin(), b.rejected.end());
      metrics_.published.Increment(static_cast<double>(b.delivered.size()));
      metrics_.batch_latency.Observe(std::chrono::duration<double>(now - b.claimed_at).count());
      if (b.retry_needed) {
        // Rows that failed stay in the table; the lane starts again from its lowest id
        // once nothing of it is in flight.
        lane.reset_pending = true;
        lane.resume_at = now + kRetryPause;
      }
      it = lane.inflight.erase(it);
    }
  }
  metrics_.inflight.Set(InFlightRecords());
}

void Relay::FlushToDatabase() {
  while (!to_dead_letter_.empty()) {
    const auto& [id, error] = to_dead_letter_.back();
    store_->DeadLetter(id, error);
    metrics_.dead_lettered.Increment();
    log_->error("message parked in outbox.dead_letters id={} error={}", id, error);
    to_dead_letter_.pop_back();
  }
  if (!to_delete_.empty()) {
    store_->Delete(to_delete_);
    to_delete_.clear();
  }
}

void Relay::ReleaseIdleLanes() {
  for (auto& [id, lane] : lanes_) {
    if (!lane.releasing || !lane.inflight.empty()) continue;
    store_->UnlockLane(id);
    lane.owned = false;
    lane.releasing = false;
    lane.at_head = true;
    log_->info("lane released lane={}", id);
  }
}

bool Relay::CanClaimNow() const {
  if (!store_ || draining_) return false;
  auto now = Clock::now();
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

int Relay::Run(const std::atomic<bool>& stop, int stop_fd) {
  Clock::time_point drain_deadline{};
  int exit_code = 0;
  log_->info("relay starting brokers={} batch_size={} max_inflight_batches={} poll_interval={}ms",
             config_.brokers, config_.batch_size, config_.max_inflight_batches, config_.poll_interval.count());
  while (true) {
    auto now = Clock::now();
    if (stop.load() && !draining_) {
      draining_ = true;
      drain_deadline = now + config_.shutdown_timeout;
      log_->info("stopping: no new claims in_flight={}", InFlightRecords());
    }
    producer_.ClearEventFd();
    HandleDeliveries(producer_.Poll(milliseconds{0}));
    CollectCompleted();
    if (auto fatal = producer_.FatalError(); fatal && exit_code == 0) {
      log_->critical("fatal Kafka producer error, stopping (undelivered rows stay in the outbox) error={}", *fatal);
      exit_code = 1;
      draining_ = true;
      drain_deadline = now;
    }

    if (!store_ && now >= next_connect_) Connect();
    if (store_) {
      try {
        if (store_->TakeNotifications()) {
          for (auto& [id, lane] : lanes_) lane.wake = true;
        }
        if (now >= next_poll_) {
          for (auto& [id, lane] : lanes_) lane.wake = true;
          next_poll_ = now + config_.poll_interval;
        }
        FlushToDatabase();
        ReleaseIdleLanes();
        if (!draining_ && now >= next_rebalance_) {
          Rebalance();
          next_rebalance_ = now + config_.rebalance_interval;
        }
        if (!draining_) ClaimAndProduce();
      } catch (const PgError& e) {
        if (e.connection_lost()) {
          OnConnectionLost(e.what());
        } else {
          // A statement failed on a live session (e.g. privileges): retry after a pause.
          log_->error("database statement failed, retrying error={} sqlstate={}", e.what(), e.sqlstate());
          next_connect_ = now + kRetryPause;
          next_poll_ = now + kRetryPause;
        }
      }
    }

    bool stuck = false;
    for (const auto& [id, lane] : lanes_) {
      if (!lane.inflight.empty() && now - lane.inflight.front()->claimed_at > kStuckAfter) stuck = true;
    }
    ready_.store(store_ != nullptr && !stuck);

    if (draining_) {
      bool done = InFlightRecords() == 0 && to_delete_.empty() && to_dead_letter_.empty();
      if (done) break;
      if (now >= drain_deadline) {
        log_->warn("shutdown timeout: records still in flight will be published again in_flight={} undeleted={}",
                   InFlightRecords(), to_delete_.size());
        producer_.Purge();
        HandleDeliveries(producer_.Poll(milliseconds{100}));
        CollectCompleted();
        if (store_) {
          try {
            FlushToDatabase();
          } catch (const PgError& e) {
            log_->warn("could not delete delivered rows at shutdown error={}", e.what());
          }
        }
        break;
      }
    }

    // Wait for Kafka reports, a NOTIFY, the stop signal or the next timer.
    milliseconds wait{0};
    if (!CanClaimNow()) {
      auto until = std::min(next_poll_, next_rebalance_);
      if (!store_) until = std::min(until, next_connect_);
      for (const auto& [id, lane] : lanes_) {
        if (lane.owned && lane.resume_at > now) until = std::min(until, lane.resume_at);
      }
      wait = std::chrono::duration_cast<milliseconds>(until - Clock::now());
      if (draining_) wait = std::min(wait, milliseconds{50});
      wait = std::clamp(wait, milliseconds{0}, config_.poll_interval);
    }
    if (wait.count() > 0) {
      pollfd fds[3];
      int n = 0;
      fds[n++] = {producer_.event_fd(), POLLIN, 0};
      if (store_) fds[n++] = {store_->socket(), POLLIN, 0};
      if (!draining_ && stop_fd >= 0) fds[n++] = {stop_fd, POLLIN, 0};
      ::poll(fds, static_cast<nfds_t>(n), static_cast<int>(wait.count()));
    }
  }
  log_->info("relay stopped");
  return exit_code;
}

}  // namespace outbox::relay
