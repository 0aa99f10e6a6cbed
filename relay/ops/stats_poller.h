#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "pg/pg.h"
#include "ops/relay_metrics.h"

namespace spdlog { class logger; }

namespace outbox::relay {

// Refreshes the pending-depth, oldest-age, dead-letter and WAL capture (mode, slot lag)
// gauges from the database on its own connection and thread, so counting a large backlog
// never stalls the relay loop.
// Per-lane gauges are exported for the lanes in `owned` only (a lane's owner reports it;
// a lane that moved away loses its series here), so sum() across relays counts each
// pending row once.
class StatsPoller {
 public:
  // session_timeout bounds its session like the relay's (pg/session_timeout.h).
  StatsPoller(std::string conninfo, std::chrono::milliseconds interval, std::chrono::milliseconds session_timeout,
              RelayMetrics& metrics, const OwnedLaneSet& owned, std::shared_ptr<spdlog::logger> log);
  ~StatsPoller();  // stops and joins

 private:
  void Loop();
  void RefreshOnce();

  std::string conninfo_;
  std::chrono::milliseconds interval_;
  std::chrono::milliseconds session_timeout_;
  RelayMetrics& metrics_;
  const OwnedLaneSet& owned_;
  prometheus::Gauge* lane_count_ = nullptr;  // added at the first read (poller thread)
  std::map<int, std::pair<prometheus::Gauge*, prometheus::Gauge*>> exported_;  // lane -> gauges (poller thread)
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<PgConnection> conn_;  // only the poller thread uses it; reopened after errors
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // Guarded by mu_.
  std::thread thread_;
};

}  // namespace outbox::relay
