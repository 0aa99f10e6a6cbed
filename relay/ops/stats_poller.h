#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "pg/pg.h"
#include "ops/relay_metrics.h"

namespace spdlog { class logger; }

namespace outbox::relay {

// Refreshes the pending-depth, oldest-age and dead-letter gauges from the database on
// its own connection and thread, so counting a large backlog never stalls the relay loop.
class StatsPoller {
 public:
  StatsPoller(std::string conninfo, std::chrono::milliseconds interval, RelayMetrics& metrics,
              std::shared_ptr<spdlog::logger> log);
  ~StatsPoller();  // stops and joins

 private:
  void Loop();
  void RefreshOnce();

  std::string conninfo_;
  std::chrono::milliseconds interval_;
  RelayMetrics& metrics_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<PgConnection> conn_;  // only the poller thread uses it; reopened after errors
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // Guarded by mu_.
  std::thread thread_;
};

}  // namespace outbox::relay
