#include "cli/run_command.h"

#include <prometheus/registry.h>

#include <random>

#include "common/errors.h"
#include "common/redact.h"
#include "core/relay.h"
#include "kafka/kafka_producer.h"
#include "half_messages/check_back.h"
#include "ops/metrics_server.h"
#include "ops/relay_metrics.h"
#include "ops/signals.h"
#include "ops/stats_poller.h"
#include "pg/db.h"
#include "pg/outbox_store.h"
#include "pg/startup_check.h"
#include "wal/wal_capture.h"

namespace outbox::relay {
namespace {

// The relay core's metric hooks, onto the Prometheus families.
class MetricsObserver final : public RelayObserver {
 public:
  MetricsObserver(RelayMetrics& m, OwnedLaneSet& owned) : m_(m), owned_(owned) {}
  void Published(int records) override { m_.published.Increment(static_cast<double>(records)); }
  void DeliveryFailed() override { m_.failed.Increment(); }
  void DeadLettered() override { m_.dead_lettered.Increment(); }
  void Reconnected() override { m_.db_reconnects.Increment(); }
  void DbConnected(bool connected) override { m_.db_connected.Set(connected ? 1 : 0); }
  void OwnedLanes(const std::vector<int>& lanes) override {
    m_.owned_lanes.Set(static_cast<double>(lanes.size()));
    owned_.Set(lanes);
  }
  void InFlight(int records) override { m_.inflight.Set(records); }
  void BatchLatency(double seconds) override { m_.batch_latency.Observe(seconds); }
  void ConnectFailed() override { m_.db_connect_failures.Increment(); }
  void StatementFailed() override { m_.statement_failures.Increment(); }
  void WalStreaming(bool streaming) override { m_.wal_streaming.Set(streaming ? 1 : 0); }
  void KafkaStalled(bool stalled) override {
    if (stalled) m_.kafka_stalls.Increment();
    m_.kafka_stalled.Set(stalled ? 1 : 0);
  }

 private:
  RelayMetrics& m_;
  OwnedLaneSet& owned_;
};

}  // namespace

int RunRelay(const RunConfig& c, std::shared_ptr<spdlog::logger> log) {
  CheckConninfo(c.db);
  CheckStartup(c.db, StartupRole::kRelay, c.session_timeout);  // what waiting cannot heal ends here, exit 2
  TerminationWatcher termination;  // first: outlives everything that polls its descriptor
  auto registry = std::make_shared<prometheus::Registry>();
  RelayMetrics metrics{*registry};
  log->info("outbox-relay run db={} brokers={} lanes={} batch_size={} metrics_listen={}", RedactConninfo(c.db),
            c.brokers, c.lanes == 0 ? std::string("fair share") : std::to_string(c.lanes), c.batch_size,
            c.metrics_listen.empty() ? std::string("off") : c.metrics_listen);
  // The core state machine, wired to libpq, librdkafka and the steady clock.
  OwnedLaneSet owned_lanes;
  MetricsObserver observer{metrics, owned_lanes};
  SteadyClock clock;
  KafkaProducer producer{c.brokers, c.kafka_conf, log};
  auto connect = [&c]() -> std::unique_ptr<OutboxStore> {
    return std::make_unique<PgOutboxStore>(c.db, "outbox-relay", c.session_timeout);
  };
  Relay relay{c, RelayLimits{}, clock, connect, producer, observer, log, std::random_device{}()};
  std::unique_ptr<MetricsServer> server;
  if (!c.metrics_listen.empty()) {
    server = std::make_unique<MetricsServer>(c.metrics_listen, registry);
    server->SetReadyCheck([&relay] {
      auto r = relay.readiness();
      return MetricsServer::ReadyState{r.ready, r.reason};
    });
    log->info("serving /metrics /healthz /readyz port={}", server->port());
  }
  StatsPoller stats{c.db, c.stats_interval, c.session_timeout, metrics, owned_lanes, log};
  CheckBack check_back{c, log, metrics};  // half messages: own thread and session (issue 5)
  // Capture mode wal (issue 15): own thread, session and producer. A lost slot stops the
  // daemon (exit 1) instead of skipping messages.
  WalCapture wal{c, log, observer, [&termination] { termination.RequestStop(); }};
  int rc = relay.Run(termination.stop(), termination.wake_fd());
  wal.Stop();
  return wal.failed() ? 1 : rc;
}

}  // namespace outbox::relay
