#include "cli/commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <iostream>
#include <random>
#include <prometheus/registry.h>

#include "half_messages/check_back.h"
#include "pg/db.h"
#include "kafka/dev_kafka.h"
#include "common/errors.h"
#include "ops/metrics_server.h"
#include "cli/migrate.h"
#include "webhooks/notify_command.h"
#include "cli/prepared_command.h"
#include "common/redact.h"
#include "core/relay.h"
#include "kafka/kafka_producer.h"
#include "pg/outbox_store.h"
#include "ops/relay_metrics.h"
#include "ops/signals.h"
#include "ops/stats_poller.h"
#include "cli/dead_letters_command.h"
#include "cli/status_command.h"

namespace outbox::relay {
namespace {

int RunMigrate(const MigrateConfig& c, spdlog::logger& log) {
  auto migrations = c.schema_dir.empty() ? EmbeddedMigrations() : LoadMigrations(c.schema_dir);
  auto result = Migrate(c.db, migrations, log);
  if (result.applied.empty()) {
    log.info("schema is up to date migrations={}", result.already_applied);
  } else {
    log.info("migrated applied={} already_applied={}", result.applied.size(), result.already_applied);
  }
  return kExitOk;
}

// The relay core's metric hooks, onto the Prometheus families.
class MetricsObserver final : public RelayObserver {
 public:
  explicit MetricsObserver(RelayMetrics& m) : m_(m) {}
  void Published(int records) override { m_.published.Increment(static_cast<double>(records)); }
  void DeliveryFailed() override { m_.failed.Increment(); }
  void DeadLettered() override { m_.dead_lettered.Increment(); }
  void Reconnected() override { m_.db_reconnects.Increment(); }
  void DbConnected(bool connected) override { m_.db_connected.Set(connected ? 1 : 0); }
  void OwnedLanes(int lanes) override { m_.owned_lanes.Set(lanes); }
  void InFlight(int records) override { m_.inflight.Set(records); }
  void BatchLatency(double seconds) override { m_.batch_latency.Observe(seconds); }

 private:
  RelayMetrics& m_;
};

int RunRelay(const RunConfig& c, std::shared_ptr<spdlog::logger> log) {
  CheckConninfo(c.db);
  int wake[2];
  if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) throw RuntimeError("pipe2 failed");
  auto& stop = WatchTerminationSignals(wake[1]);
  auto registry = std::make_shared<prometheus::Registry>();
  RelayMetrics metrics{*registry};
  log->info("outbox-relay run db={} brokers={} lanes={} batch_size={} metrics_listen={}", RedactConninfo(c.db),
            c.brokers, c.lanes == 0 ? std::string("fair share") : std::to_string(c.lanes), c.batch_size,
            c.metrics_listen.empty() ? std::string("off") : c.metrics_listen);
  // The core state machine, wired to libpq, librdkafka and the steady clock.
  MetricsObserver observer{metrics};
  SteadyClock clock;
  KafkaProducer producer{c.brokers, c.kafka_conf, log};
  auto connect = [&c]() -> std::unique_ptr<OutboxStore> {
    return std::make_unique<PgOutboxStore>(c.db, "outbox-relay");
  };
  Relay relay{c, RelayLimits{}, clock, connect, producer, observer, log, std::random_device{}()};
  std::unique_ptr<MetricsServer> server;
  if (!c.metrics_listen.empty()) {
    server = std::make_unique<MetricsServer>(c.metrics_listen, registry);
    server->SetReadyCheck([&relay] { return relay.ready(); });
    log->info("serving /metrics /healthz /readyz port={}", server->port());
  }
  StatsPoller stats{c.db, c.stats_interval, metrics, log};
  CheckBack check_back{c, log, metrics};  // half messages: own thread and session (issue 5)
  return relay.Run(stop, wake[0]);
}

}  // namespace

int RunCommand(const Invocation& inv, std::shared_ptr<spdlog::logger> log) {
  switch (inv.command) {
    case Command::kMigrate:
      return RunMigrate(inv.migrate, *log);
    case Command::kDevKafka:
      return RunDevKafka(inv.dev_kafka, *log);
    case Command::kNotify:
      return RunNotifyCommand(inv.notify, *log);
    case Command::kRun:
      return RunRelay(inv.run, log);
    case Command::kStatus:
      return RunStatus(inv.status, std::cout);
    case Command::kDeadLetters:
      return RunDeadLetters(inv.dead_letters, std::cout, std::cerr);
    case Command::kPrepared:
      return RunPrepared(inv.prepared, std::cout, std::cerr);
    case Command::kHelp:
    case Command::kVersion:
      return kExitOk;
  }
  return kExitRuntime;
}

}  // namespace outbox::relay
