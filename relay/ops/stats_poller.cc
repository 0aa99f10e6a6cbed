#include "ops/stats_poller.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

#include "pg/outbox_queries.h"
#include "pg/pg.h"

namespace outbox::relay {

StatsPoller::StatsPoller(std::string conninfo, std::chrono::milliseconds interval,
                         std::chrono::milliseconds session_timeout, RelayMetrics& metrics, const OwnedLaneSet& owned,
                         std::shared_ptr<spdlog::logger> log)
    : conninfo_(std::move(conninfo)),
      interval_(interval),
      session_timeout_(session_timeout),
      metrics_(metrics),
      owned_(owned),
      log_(std::move(log)) {
  thread_ = std::thread([this] { Loop(); });
}

StatsPoller::~StatsPoller() {
  {
    std::lock_guard lock{mu_};
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StatsPoller::Loop() {
  while (true) {
    try {
      RefreshOnce();
    } catch (const std::exception& e) {
      conn_.reset();
      log_->debug("stats refresh failed error={}", e.what());
    }
    std::unique_lock lock{mu_};
    if (cv_.wait_for(lock, interval_, [this] { return stopping_; })) return;
  }
}

void StatsPoller::RefreshOnce() {
  if (!conn_) conn_ = std::make_unique<PgConnection>(conninfo_, "outbox-relay-stats", session_timeout_);
  auto& conn = *conn_;
  std::map<int, LanePending> by_lane;
  for (const auto& l : PendingPerLane(conn)) by_lane[l.lane] = l;
  auto owned = owned_.Get();
  // Lanes that moved to another relay: their series go (the new owner exports them).
  for (auto it = exported_.begin(); it != exported_.end();) {
    if (std::find(owned.begin(), owned.end(), it->first) == owned.end()) {
      metrics_.pending.Remove(it->second.first);
      metrics_.oldest_pending.Remove(it->second.second);
      it = exported_.erase(it);
    } else {
      ++it;
    }
  }
  for (int lane : owned) {
    auto it = by_lane.find(lane);
    LanePending l = it == by_lane.end() ? LanePending{lane, 0, 0} : it->second;
    auto& g = exported_[lane];
    if (!g.first) {
      g.first = &metrics_.pending.Add({{"lane", std::to_string(lane)}});
      g.second = &metrics_.oldest_pending.Add({{"lane", std::to_string(lane)}});
    }
    g.first->Set(static_cast<double>(l.pending));
    g.second->Set(std::max(0.0, l.oldest_age_seconds));
  }
  metrics_.dead_letters.Set(static_cast<double>(DeadLetterCount(conn)));
  auto settings = ReadOutboxSettings(conn);
  if (!lane_count_) lane_count_ = &metrics_.lane_count.Add({});
  lane_count_->Set(static_cast<double>(settings.lane_count));
  metrics_.capture_wal.Set(settings.capture == "wal" ? 1 : 0);
  // The slot's lag in any mode: a slot left in table mode pins WAL just the same.
  SlotLag lag;
  if (!settings.slot_name.empty()) lag = ReadSlotLag(conn, settings.slot_name);
  metrics_.wal_slot_lag_bytes.Set(static_cast<double>(lag.lag_bytes));
  metrics_.wal_slot_lag_seconds.Set(lag.lag_seconds);
}

}  // namespace outbox::relay
