#include "webhooks/notify_command.h"

#include <poll.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cerrno>
#include <memory>
#include <optional>
#include "webhooks/notifier.h"
#include <thread>

#include "pg/db.h"
#include "pg/startup_check.h"
#include "common/errors.h"
#include "ops/metrics_server.h"
#include "ops/signals.h"

namespace outbox::relay {
namespace {

// The worker's Prometheus metrics (names prefixed outbox_notify_). Thread-safe.
struct NotifyMetrics {
  explicit NotifyMetrics(prometheus::Registry& r)
      : delivered(prometheus::BuildCounter()
                      .Name("outbox_notify_delivered_total")
                      .Help("Notifications delivered (answered 2xx)")
                      .Register(r)
                      .Add({})),
        failed_attempts(prometheus::BuildCounter()
                            .Name("outbox_notify_failed_attempts_total")
                            .Help("Attempts that got no 2xx answer (timeouts, errors, other statuses)")
                            .Register(r)
                            .Add({})),
        exhausted(prometheus::BuildCounter()
                      .Name("outbox_notify_exhausted_total")
                      .Help("Notifications given up after their last scheduled attempt")
                      .Register(r)
                      .Add({})),
        lost_leases(prometheus::BuildCounter()
                        .Name("outbox_notify_lost_leases_total")
                        .Help("Results dropped because the attempt's lease had passed to another worker")
                        .Register(r)
                        .Add({})),
        db_errors(prometheus::BuildCounter()
                      .Name("outbox_notify_db_errors_total")
                      .Help("PostgreSQL errors (the worker reconnects and goes on)")
                      .Register(r)
                      .Add({})),
        attempt_latency(prometheus::BuildHistogram()
                            .Name("outbox_notify_attempt_duration_seconds")
                            .Help("Duration of one delivery attempt (request start to answer or error)")
                            .Register(r)
                            .Add({}, prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                                             0.5, 1, 2.5, 5, 10, 30})),
        due(prometheus::BuildGauge()
                .Name("outbox_notify_due")
                .Help("Notifications due now and not in flight (backlog)")
                .Register(r)
                .Add({})),
        pending(prometheus::BuildGauge()
                    .Name("outbox_notify_pending")
                    .Help("Notifications neither delivered nor exhausted")
                    .Register(r)
                    .Add({})),
        oldest_due(prometheus::BuildGauge()
                       .Name("outbox_notify_oldest_due_seconds")
                       .Help("How late the oldest due notification is")
                       .Register(r)
                       .Add({})),
        in_flight(prometheus::BuildGauge()
                      .Name("outbox_notify_in_flight")
                      .Help("Requests this worker has in flight")
                      .Register(r)
                      .Add({})) {}

  prometheus::Counter& delivered;
  prometheus::Counter& failed_attempts;
  prometheus::Counter& exhausted;
  prometheus::Counter& lost_leases;
  prometheus::Counter& db_errors;
  prometheus::Histogram& attempt_latency;
  prometheus::Gauge& due;
  prometheus::Gauge& pending;
  prometheus::Gauge& oldest_due;
  prometheus::Gauge& in_flight;
};

void CheckSchema(const NotifyConfig& config) {
  auto conn = Connect(config.db, "outbox-relay-notify", config.session_timeout);
  pqxx::nontransaction tx{*conn};
  bool ok = tx.exec1("SELECT to_regclass('inbox.notifications') IS NOT NULL AND "
                     "to_regprocedure('inbox.claim_notifications(integer,interval,integer,text[],integer[])') "
                     "IS NOT NULL")[0]
                .as<bool>();
  if (!ok) {
    throw RuntimeError("notify: inbox.notifications is missing or not visible to this role: run "
                       "`outbox-relay migrate` first and grant the role outbox_relay");
  }
}

}  // namespace

int RunNotifyCommand(const NotifyConfig& config, spdlog::logger& log) {
  CheckConninfo(config.db);
  CheckStartup(config.db, StartupRole::kNotifier, config.session_timeout);  // what waiting cannot heal ends here, exit 2
  try {
    CheckSchema(config);
  } catch (const pqxx::failure& e) {
    throw RuntimeError("notify: " + SafeDbError(e.what(), config.db));
  }

  auto registry = std::make_shared<prometheus::Registry>();
  NotifyMetrics metrics{*registry};
  std::optional<MetricsServer> server;
  if (!config.metrics_listen.empty()) {
    server.emplace(config.metrics_listen, registry);
    log.info("serving /metrics /healthz /readyz port={}", server->port());
  }

  NotifierOptions opt;
  opt.conninfo = config.db;
  opt.max_in_flight = config.max_in_flight;
  opt.max_per_host = config.max_per_host;
  opt.connect_timeout = config.connect_timeout;
  opt.request_timeout = config.request_timeout;
  opt.lease = config.lease;
  opt.poll_interval = config.poll_interval;
  opt.stats_interval = config.stats_interval;
  opt.session_timeout = config.session_timeout;
  opt.retention = config.retention;
  opt.retention_interval = config.retention_interval;
  opt.user_agent = "outbox-relay-notify";
  opt.egress_allow = config.egress_allow;
  opt.store_replies = config.store_replies;
  // URLs and header values may hold secrets: logs show the id and host:port only.
  opt.on_attempt = [&](const NotificationAttempt& a) {
    metrics.attempt_latency.Observe(static_cast<double>(a.latency.count()) / 1e6);
    auto latency_ms = a.latency.count() / 1000;
    if (!a.state) {
      metrics.lost_leases.Increment();
      log.warn("notification result dropped, lease lost id={} attempt={} host={} status={}", a.id, a.attempt,
               a.host, a.status_code);
      return;
    }
    switch (*a.state) {
      case NotificationState::kDelivered:
        metrics.delivered.Increment();
        log.info("notification delivered id={} attempt={} status={} host={} latency_ms={}", a.id, a.attempt,
                 a.status_code, a.host, latency_ms);
        break;
      case NotificationState::kPending:
        metrics.failed_attempts.Increment();
        log.warn("notification attempt failed id={} attempt={}/{} host={} status={} error={} latency_ms={}", a.id,
                 a.attempt, a.max_attempts, a.host, a.status_code, a.error, latency_ms);
        break;
      case NotificationState::kExhausted:
        metrics.failed_attempts.Increment();
        metrics.exhausted.Increment();
        log.error("notification exhausted id={} attempts={} host={} status={} error={}", a.id, a.attempt, a.host,
                  a.status_code, a.error);
        break;
    }
  };
  opt.on_stats = [&](const NotifierStats& s) {
    metrics.due.Set(static_cast<double>(s.due));
    metrics.pending.Set(static_cast<double>(s.pending));
    metrics.oldest_due.Set(s.oldest_due_seconds);
    metrics.in_flight.Set(s.in_flight);
    if (server) server->SetReady(true);
  };
  opt.on_error = [&](const std::string& what) {
    metrics.db_errors.Increment();
    if (server) server->SetReady(false);
    log.error("notify worker: {}", SafeDbError(what, config.db));
  };

  Notifier notifier{std::move(opt)};
  TerminationWatcher termination;
  // Turns the watcher's wake-up (a signal, or ours below) into Notifier::Stop().
  std::thread stopper([&] {
    pollfd p{termination.wake_fd(), POLLIN, 0};
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    notifier.Stop();
  });
  struct JoinStopper {
    const TerminationWatcher& termination;
    std::thread& t;
    ~JoinStopper() {
      termination.Wake();
      t.join();
    }
  } join_stopper{termination, stopper};

  if (termination.stop().load()) notifier.Stop();
  if (server) server->SetReady(true);
  log.info("notify worker started max_in_flight={} max_per_host={} request_timeout_ms={} lease_ms={} "
           "store_replies={}",
           config.max_in_flight, config.max_per_host, config.request_timeout.count(), config.lease.count(),
           config.store_replies);
  try {
    notifier.Run();
  } catch (const outbox::Error& e) {
    throw RuntimeError(std::string("notify: ") + SafeDbError(e.what(), config.db));
  }
  log.info("notify worker stopped");
  return kExitOk;
}

}  // namespace outbox::relay
