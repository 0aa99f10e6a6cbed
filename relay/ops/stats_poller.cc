#include "ops/stats_poller.h"

#include <spdlog/spdlog.h>

#include <map>

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
  auto lanes = conn.Exec("SELECT lane_count FROM outbox.settings");
  int lane_count = std::stoi(PQgetvalue(lanes.get(), 0, 0));
  auto r = conn.Exec(
      "SELECT lane, count(*), extract(epoch FROM now() - min(created_at)) FROM outbox.messages GROUP BY lane");
  std::map<int, std::pair<double, double>> by_lane;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    by_lane[std::stoi(PQgetvalue(r.get(), i, 0))] = {std::stod(PQgetvalue(r.get(), i, 1)),
                                                     std::stod(PQgetvalue(r.get(), i, 2))};
  }
  for (int lane = 0; lane < lane_count; ++lane) {
    auto it = by_lane.find(lane);
    auto [count, age] = it == by_lane.end() ? std::pair{0.0, 0.0} : it->second;
    metrics_.pending.Add({{"lane", std::to_string(lane)}}).Set(count);
    metrics_.oldest_pending.Add({{"lane", std::to_string(lane)}}).Set(std::max(0.0, age));
  }
  auto d = conn.Exec("SELECT count(*) FROM outbox.dead_letters");
  metrics_.dead_letters.Set(std::stod(PQgetvalue(d.get(), 0, 0)));
}

}  // namespace outbox::relay
