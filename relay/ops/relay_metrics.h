#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <mutex>
#include <vector>

namespace outbox::relay {

// The lanes this relay owns, as the relay loop last reported them; read by the stats
// poller so that per-lane gauges come from each lane's owner only (sums across relays
// are then right). Thread-safe.
class OwnedLaneSet {
 public:
  void Set(std::vector<int> lanes) {
    std::lock_guard lock{mu_};
    lanes_ = std::move(lanes);
  }
  std::vector<int> Get() const {
    std::lock_guard lock{mu_};
    return lanes_;
  }

 private:
  mutable std::mutex mu_;  // Guards lanes_.
  std::vector<int> lanes_;
};

// The relay's Prometheus metrics (names prefixed outbox_relay_). Thread-safe (the
// prometheus-cpp types are).
struct RelayMetrics {
  explicit RelayMetrics(prometheus::Registry& registry);

  prometheus::Counter& published;        // records acknowledged by Kafka and deleted
  prometheus::Counter& failed;           // deliveries that failed and will be retried
  prometheus::Counter& dead_lettered;    // records parked in outbox.dead_letters
  prometheus::Counter& db_reconnects;    // PostgreSQL connections re-established
  prometheus::Counter& db_connect_failures;  // session attempts that failed
  prometheus::Counter& statement_failures;   // statements failed on a live session
  prometheus::Counter& kafka_stalls;         // lanes handed over: Kafka acknowledged nothing
  prometheus::Gauge& kafka_stalled;          // 1 while handed over
  prometheus::Gauge& owned_lanes;
  // outbox.settings.lane_count, set by the stats poller (every relay: take max()). No
  // sample until the first read: a relay restarted without PostgreSQL must not report 0
  // (OutboxLanesUnowned keeps the last value seen, ops/prometheus/alerts.yml).
  prometheus::Family<prometheus::Gauge>& lane_count;
  prometheus::Gauge& inflight;           // records produced, not yet acknowledged
  prometheus::Gauge& db_connected;       // 1 while the relay has its session
  prometheus::Gauge& dead_letters;       // rows in outbox.dead_letters
  prometheus::Histogram& batch_latency;  // claim -> every record of the batch acknowledged
  prometheus::Family<prometheus::Gauge>& pending;         // rows waiting, by lane
  prometheus::Family<prometheus::Gauge>& oldest_pending;  // age of the oldest row, by lane
  // Half messages (check_back.h).
  prometheus::Family<prometheus::Counter>& checkbacks;  // check-backs by result (see CheckResultName)
  prometheus::Counter& prepared_parked;                 // half messages parked after --check-max checks
  prometheus::Gauge& checkbacks_in_flight;              // check-back requests of this relay in flight
  prometheus::Family<prometheus::Gauge>& prepared;      // rows of outbox.prepared, by state
  // WAL capture (docs/wal-capture.md). The stats poller sets the database's figures (every
  // relay reports them: take max(), not sum()); the streamer sets wal_streaming.
  prometheus::Gauge& capture_wal;        // 1 while outbox.settings.capture = 'wal'
  prometheus::Gauge& wal_slot_lag_bytes;    // WAL the slot holds past its confirmed position
  prometheus::Gauge& wal_slot_lag_seconds;  // the streaming walsender's flush_lag (0: caught up)
  prometheus::Gauge& wal_streaming;      // 1 while this relay streams the slot
};

}  // namespace outbox::relay
