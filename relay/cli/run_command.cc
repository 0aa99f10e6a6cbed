#include "cli/run_command.h"

#include <prometheus/registry.h>

#include "common/errors.h"
#include "common/redact.h"
#include "core/relay.h"
#include "half_messages/check_back.h"
#include "ops/metrics_server.h"
#include "ops/relay_metrics.h"
#include "ops/signals.h"
#include "ops/stats_poller.h"
#include "pg/db.h"

namespace outbox::relay {

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

}  // namespace outbox::relay
