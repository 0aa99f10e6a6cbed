#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/config.h"
#include "kafka/kafka_producer.h"
#include "pg/outbox_store.h"
#include "ops/relay_metrics.h"

namespace spdlog { class logger; }

namespace outbox::relay {

// The relay loop (`outbox-relay run`). One thread owns it. Per owned lane it claims rows
// in id order, produces them, waits for Kafka's acknowledgements and only then deletes
// them; rows Kafka refuses for good move to outbox.dead_letters. Lanes are owned through
// advisory locks on the relay's one PostgreSQL session and shared fairly with the other
// relays on the database. See docs/relay.md for the design and its guarantees.
class Relay {
 public:
  Relay(const RunConfig& config, std::shared_ptr<spdlog::logger> log, RelayMetrics& metrics);
  ~Relay();

  // Runs until `stop` becomes true (stop_fd becomes readable at the same time), then
  // stops claiming, waits for in-flight records up to shutdown_timeout, deletes what was
  // delivered and returns the exit code: 0, or 1 after a fatal Kafka producer error.
  int Run(const std::atomic<bool>& stop, int stop_fd);

  // True while the relay has its database session and Kafka acknowledges in time.
  bool ready() const { return ready_.load(); }

 private:
  using Clock = std::chrono::steady_clock;
  struct Batch;
  struct Entry {
    Batch* batch;
    std::int64_t id;
  };
  struct Batch {
    int lane = 0;
    Clock::time_point claimed_at;
    std::vector<Entry> entries;                                   // addresses given to Kafka
    int pending = 0;                                              // not yet reported
    std::vector<std::int64_t> delivered;
    std::vector<std::pair<std::int64_t, std::string>> rejected;   // permanent failures
    bool retry_needed = false;                                    // a transient failure
  };
  struct Lane {
    bool owned = false;
    bool releasing = false;          // stop claiming, unlock once nothing is in flight
    bool at_head = true;             // last claim was short: claim again when woken
    Clock::time_point resume_at;     // no claims before (after a transient failure)
    bool reset_pending = false;      // a failure or a late commit: claim again once idle
    bool wake = true;                // a NOTIFY or the poll timer asks for a claim
    std::deque<std::unique_ptr<Batch>> inflight;
  };

  void Connect();
  void OnConnectionLost(const std::string& why);
  void Rebalance();
  void ClaimAndProduce();
  void HandleDeliveries(std::vector<Delivery> deliveries);
  void CollectCompleted();
  void FlushToDatabase();
  void ReleaseIdleLanes();
  bool CanClaimNow() const;
  int InFlightRecords() const;

  const RunConfig& config_;
  std::shared_ptr<spdlog::logger> log_;
  RelayMetrics& metrics_;
  KafkaProducer producer_;
  std::unique_ptr<OutboxStore> store_;   // null while disconnected
  int member_slot_ = 0;
  int lane_count_ = 0;
  std::map<int, Lane> lanes_;
  std::vector<std::int64_t> to_delete_;
  std::vector<std::pair<std::int64_t, std::string>> to_dead_letter_;
  bool draining_ = false;
  Clock::time_point next_rebalance_{};
  Clock::time_point next_poll_{};
  Clock::time_point next_connect_{};
  std::chrono::milliseconds connect_backoff_{100};
  std::atomic<bool> ready_{false};
};

}  // namespace outbox::relay
