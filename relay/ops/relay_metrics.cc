#include "ops/relay_metrics.h"

namespace outbox::relay {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

RelayMetrics::RelayMetrics(prometheus::Registry& r)
    : published(BuildCounter().Name("outbox_relay_published_total")
                    .Help("Records acknowledged by Kafka and deleted from the outbox").Register(r).Add({})),
      failed(BuildCounter().Name("outbox_relay_delivery_failures_total")
                 .Help("Deliveries that failed and will be retried").Register(r).Add({})),
      dead_lettered(BuildCounter().Name("outbox_relay_dead_lettered_total")
                        .Help("Records Kafka refused for good, parked in outbox.dead_letters").Register(r).Add({})),
      db_reconnects(BuildCounter().Name("outbox_relay_db_reconnects_total")
                        .Help("PostgreSQL sessions re-established after a loss").Register(r).Add({})),
      db_connect_failures(BuildCounter().Name("outbox_relay_db_connect_failures_total")
                              .Help("Attempts to open the PostgreSQL session that failed").Register(r).Add({})),
      statement_failures(BuildCounter().Name("outbox_relay_statement_failures_total")
                             .Help("Statements that failed on a live PostgreSQL session (retried with backoff)")
                             .Register(r).Add({})),
      kafka_stalls(BuildCounter().Name("outbox_relay_kafka_stalls_total")
                       .Help("Times the relay handed its lanes over because Kafka acknowledged nothing for "
                             "--kafka-stall-timeout").Register(r).Add({})),
      kafka_stalled(BuildGauge().Name("outbox_relay_kafka_stalled")
                        .Help("1 while the lanes are handed over, waiting for Kafka to answer").Register(r).Add({})),
      owned_lanes(BuildGauge().Name("outbox_relay_owned_lanes").Help("Lanes owned by this relay").Register(r).Add({})),
      lane_count(BuildGauge().Name("outbox_relay_lane_count")
                     .Help("Lanes of the database (outbox.settings.lane_count; absent until first read)")
                     .Register(r)),
      inflight(BuildGauge().Name("outbox_relay_inflight_messages")
                   .Help("Records produced and not yet acknowledged").Register(r).Add({})),
      db_connected(BuildGauge().Name("outbox_relay_db_connected")
                       .Help("1 while the relay holds its PostgreSQL session").Register(r).Add({})),
      dead_letters(BuildGauge().Name("outbox_relay_dead_letters")
                       .Help("Rows in outbox.dead_letters").Register(r).Add({})),
      batch_latency(BuildHistogram().Name("outbox_relay_batch_latency_seconds")
                        .Help("From claiming a batch to the last acknowledgement of it").Register(r)
                        .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                                        0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30})),
      pending(BuildGauge().Name("outbox_relay_pending_messages")
                  .Help("Rows waiting in outbox.messages, by lane").Register(r)),
      oldest_pending(BuildGauge().Name("outbox_relay_oldest_pending_age_seconds")
                         .Help("Age of the oldest waiting row, by lane").Register(r)),
      checkbacks(BuildCounter().Name("outbox_relay_checkbacks_total")
                     .Help("Half-message check-backs by result: committed, rolled_back, pending, "
                           "http_error, malformed, unreachable").Register(r)),
      prepared_parked(BuildCounter().Name("outbox_relay_prepared_parked_total")
                          .Help("Half messages parked after --check-max inconclusive check-backs")
                          .Register(r).Add({})),
      checkbacks_in_flight(BuildGauge().Name("outbox_relay_checkbacks_in_flight")
                               .Help("Check-back requests of this relay in flight").Register(r).Add({})),
      prepared(BuildGauge().Name("outbox_relay_prepared")
                   .Help("Half messages in outbox.prepared, by state").Register(r)),
      capture_wal(BuildGauge().Name("outbox_relay_capture_wal")
                      .Help("1 while the database's capture mode is wal (outbox.settings.capture)")
                      .Register(r).Add({})),
      wal_slot_lag_bytes(BuildGauge().Name("outbox_relay_wal_slot_lag_bytes")
                             .Help("WAL bytes between the server's current position and the capture slot's "
                                   "confirmed position (0 when there is no slot)").Register(r).Add({})),
      wal_slot_lag_seconds(BuildGauge().Name("outbox_relay_wal_slot_lag_seconds")
                               .Help("flush_lag of the walsender streaming the capture slot (0 when caught up "
                                     "or nobody streams)").Register(r).Add({})),
      wal_streaming(BuildGauge().Name("outbox_relay_wal_streaming")
                        .Help("1 while this relay streams the WAL capture slot").Register(r).Add({})) {}

}  // namespace outbox::relay
