#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace outbox::relay {

// The relay's Prometheus metrics (names prefixed outbox_relay_). Thread-safe (the
// prometheus-cpp types are).
struct RelayMetrics {
  explicit RelayMetrics(prometheus::Registry& registry);

  prometheus::Counter& published;        // records acknowledged by Kafka and deleted
  prometheus::Counter& failed;           // deliveries that failed and will be retried
  prometheus::Counter& dead_lettered;    // records parked in outbox.dead_letters
  prometheus::Counter& db_reconnects;    // PostgreSQL connections re-established
  prometheus::Gauge& owned_lanes;
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
};

}  // namespace outbox::relay
