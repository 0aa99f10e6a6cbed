#include "ops/stats_poller.h"

#include <spdlog/spdlog.h>

#include <map>

#include "pg/outbox_queries.h"
#include "pg/pg.h"

namespace outbox::relay {

StatsPoller::StatsPoller(std::string conninfo, std::chrono::milliseconds interval, RelayMetrics& metrics,
                         std::shared_ptr<spdlog::logger> log)
    : conninfo_(std::move(conninfo)), interval_(interval), metrics_(metrics), log_(std::move(log)) {
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
  if (!conn_) conn_ = std::make_unique<PgConnection>(conninfo_, "outbox-relay-stats");
  auto& conn = *conn_;
  int lane_count = ReadOutboxSettings(conn).lane_count;
  std::map<int, LanePending> by_lane;
  for (const auto& l : PendingPerLane(conn)) by_lane[l.lane] = l;
  for (int lane = 0; lane < lane_count; ++lane) {
    auto it = by_lane.find(lane);
    LanePending l = it == by_lane.end() ? LanePending{lane, 0, 0} : it->second;
    metrics_.pending.Add({{"lane", std::to_string(lane)}}).Set(static_cast<double>(l.pending));
    metrics_.oldest_pending.Add({{"lane", std::to_string(lane)}}).Set(std::max(0.0, l.oldest_age_seconds));
  }
  metrics_.dead_letters.Set(static_cast<double>(DeadLetterCount(conn)));
}

}  // namespace outbox::relay
