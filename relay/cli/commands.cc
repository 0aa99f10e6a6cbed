#include "cli/commands.h"

#include <iostream>
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

int RunRelay(const RunConfig& c, std::shared_ptr<spdlog::logger> log) {
  CheckConninfo(c.db);
  TerminationWatcher termination;  // first: outlives everything that polls its descriptor
  auto registry = std::make_shared<prometheus::Registry>();
  RelayMetrics metrics{*registry};
  log->info("outbox-relay run db={} brokers={} lanes={} batch_size={} metrics_listen={}", RedactConninfo(c.db),
            c.brokers, c.lanes == 0 ? std::string("fair share") : std::to_string(c.lanes), c.batch_size,
            c.metrics_listen.empty() ? std::string("off") : c.metrics_listen);
  Relay relay{c, log, metrics};
  std::unique_ptr<MetricsServer> server;
  if (!c.metrics_listen.empty()) {
    server = std::make_unique<MetricsServer>(c.metrics_listen, registry);
    server->SetReadyCheck([&relay] { return relay.ready(); });
    log->info("serving /metrics /healthz /readyz port={}", server->port());
  }
  StatsPoller stats{c.db, c.stats_interval, metrics, log};
  CheckBack check_back{c, log, metrics};  // half messages: own thread and session (issue 5)
  return relay.Run(termination.stop(), termination.wake_fd());
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
