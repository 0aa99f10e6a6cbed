#pragma once

#include <vector>

namespace outbox::relay {

// What the relay core reports for metrics (ops/relay_metrics.h in production, wired in
// cli/commands.cc). Every hook defaults to doing nothing. Called on the relay thread (WalStreaming and the counters also on the WAL capture thread:
// implementations must be thread-safe).
class RelayObserver {
 public:
  virtual ~RelayObserver() = default;
  virtual void Published(int /*records*/) {}         // acknowledged by Kafka, to be deleted
  virtual void DeliveryFailed() {}                   // a delivery that will be retried
  virtual void DeadLettered() {}                     // a row parked in outbox.dead_letters
  virtual void Reconnected() {}                      // the PostgreSQL session was lost
  virtual void DbConnected(bool /*connected*/) {}
  virtual void OwnedLanes(const std::vector<int>& /*lanes*/) {}  // the lanes this relay owns now
  virtual void InFlight(int /*records*/) {}
  virtual void BatchLatency(double /*seconds*/) {}   // claim -> every record reported
  virtual void ConnectFailed() {}                    // an attempt to open the session failed
  virtual void StatementFailed() {}                  // a statement failed on a live session
  virtual void KafkaStalled(bool /*stalled*/) {}     // lanes handed over: Kafka acknowledged nothing
  virtual void WalStreaming(bool /*streaming*/) {}   // this relay streams the slot (capture mode wal)
};

}  // namespace outbox::relay
