#include "wal/wal_capture.h"

#include <poll.h>
#include <spdlog/spdlog.h>

#include <outbox/retry.h>

#include "kafka/kafka_producer.h"
#include "pg/pg.h"
#include "wal/pg_wal_source.h"
#include "wal/pgoutput.h"
#include "wal/wal_record.h"

namespace outbox::relay {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

// The stream lock: one relay per database streams the slot (a slot has one reader).
// (class, 0) in the two-int advisory namespace, class 0x6f727763 ('orwc').
constexpr const char* kStreamLockClass = "1869772643";

constexpr milliseconds kSettingsInterval{1000};
constexpr milliseconds kSessionCheckInterval{1000};

WalCaptureSettings ReadCapture(PgConnection& s) {
  WalCaptureSettings c;
  try {
    auto r = s.Exec("SELECT capture, slot_name, wal_draining, pg_current_wal_lsn()::text FROM outbox.settings");
    c.wal = TextValue(r, 0, 0) == "wal";
    c.slot = TextValue(r, 0, 1);
    c.draining = TextValue(r, 0, 2) == "t";
    c.wal_end = ParseLsn(TextValue(r, 0, 3));
  } catch (const PgError& e) {
    if (e.sqlstate() != "42703") throw;  // a schema before 0007: table mode only
  }
  return c;
}

constexpr const char* kRecoveryHint =
    "messages committed in capture mode wal after the slot's confirmed position cannot be read any more. "
    "To recover: as the schema owner run SELECT outbox.set_capture('table') (producers write rows again and "
    "this relay publishes them), find what was lost from the producers' side, and switch back with "
    "SELECT outbox.set_capture('wal') when ready (docs/relay.md, \"Capture mode\")";

}  // namespace

WalCapture::WalCapture(const RunConfig& config, std::shared_ptr<spdlog::logger> log, RelayObserver& observer,
                       std::function<void()> on_fatal)
    : config_(config), log_(std::move(log)), observer_(observer), on_fatal_(std::move(on_fatal)) {
  thread_ = std::thread([this] { Loop(); });
}

WalCapture::~WalCapture() {
  Stop();
  thread_.join();
}

void WalCapture::Stop() {
  {
    std::lock_guard lock{mu_};
    stopping_ = true;
  }
  cv_.notify_all();
  wake_.Poke();
}

bool WalCapture::Sleep(milliseconds d) {
  std::unique_lock lock{mu_};
  cv_.wait_for(lock, d, [this] { return stopping_.load(); });
  return !stopping_;
}

void WalCapture::Fatal(const std::string& what) {
  log_->critical("{}", what);
  failed_ = true;
  if (on_fatal_) on_fatal_();
}

void WalCapture::Loop() {
  outbox::ReconnectBackoff backoff;
  std::unique_ptr<PgConnection> session;
  std::unique_ptr<KafkaProducer> producer;
  bool locked = false;
  while (!stopping_) {
    try {
      if (!session) {
        locked = false;
        session = std::make_unique<PgConnection>(config_.db, "outbox-relay wal", config_.session_timeout);
      }
      auto settings = ReadCapture(*session);
      if (!settings.wal && !settings.draining) {
        if (locked) {
          session->Exec("SELECT pg_advisory_unlock($1::int, 0)", {kStreamLockClass});
          locked = false;
        }
        observer_.WalStreaming(false);
        backoff.Succeeded();
        Sleep(kSettingsInterval);
        continue;
      }
      if (!locked) {
        auto r = session->Exec("SELECT pg_try_advisory_lock($1::int, 0)", {kStreamLockClass});
        locked = TextValue(r, 0, 0) == "t";
        if (!locked) {
          Sleep(kSettingsInterval);  // another relay streams; take over when its lock goes
          continue;
        }
        log_->info("this relay streams the WAL of capture mode wal slot={}", settings.slot);
      }
      // The slot: present, readable, and not held by a walsender of a relay that lost its
      // session (we hold the stream lock, so that relay is gone or cut off).
      auto r = session->Exec(
          "SELECT wal_status, coalesce(active_pid, 0) FROM pg_replication_slots "
          "WHERE slot_name = $1 AND database = current_database()",
          {settings.slot});
      if (PQntuples(r.get()) == 0) {
        throw WalSlotLost(fmt::format("replication slot \"{}\" does not exist but outbox.settings.capture is {}",
                                      settings.slot, settings.wal ? "wal" : "table (draining the WAL)"));
      }
      if (TextValue(r, 0, 0) == "lost") {
        throw WalSlotLost(fmt::format("replication slot \"{}\" was invalidated (wal_status lost: "
                                      "max_slot_wal_keep_size removed WAL it still needed)",
                                      settings.slot));
      }
      if (TextValue(r, 0, 1) != "0") {
        log_->warn("replication slot {} is held by backend {} of a relay that lost its stream lock: ending it",
                   settings.slot, TextValue(r, 0, 1));
        session->Exec("SELECT pg_terminate_backend($1::int, 5000)", {TextValue(r, 0, 1)});
      }
      if (!producer) {
        // The stream produces transactions one by one as they commit: with linger.ms=0
        // every record of a busy stream went in its own produce request (p99 58 ms and
        // 1.5x the CPU at 5,000 msg/s); 1 ms batches them (p99 8 ms) for 1.7 ms more at
        // 100 msg/s (docs/performance.md). A --kafka-conf linger.ms wins.
        std::vector<std::pair<std::string, std::string>> conf = {{"linger.ms", "1"}};
        conf.insert(conf.end(), config_.kafka_conf.begin(), config_.kafka_conf.end());
        producer = std::make_unique<KafkaProducer>(config_.brokers, conf, log_);
      }
      observer_.WalStreaming(true);
      Stream(*session, settings, *producer);
      backoff.Succeeded();
    } catch (const WalSlotLost& e) {
      Fatal(std::string(e.what()) + ": " + kRecoveryHint);
      break;
    } catch (const WalDecodeError& e) {
      Fatal(fmt::format("capture mode wal: {}; the relay stops rather than skip it", e.what()));
      break;
    } catch (const StoreError& e) {
      observer_.WalStreaming(false);
      auto wait = backoff.Failed();
      if (auto suffix = repeat_.Note("wal", steady_clock::now())) {
        log_->warn("wal capture: {}{}; retrying in {} ms", e.what(), *suffix, wait.count());
      }
      if (e.connection_lost()) {
        session.reset();
        locked = false;
      }
      Sleep(wait);
    } catch (const std::exception& e) {
      observer_.WalStreaming(false);
      auto wait = backoff.Failed();
      if (auto suffix = repeat_.Note("wal", steady_clock::now())) {
        log_->warn("wal capture: {}{}; retrying in {} ms", e.what(), *suffix, wait.count());
      }
      session.reset();
      locked = false;
      Sleep(wait);
    }
  }
  observer_.WalStreaming(false);
}

void WalCapture::Stream(PgConnection& session, const WalCaptureSettings& settings, KafkaProducer& producer) {
  const std::string& slot = settings.slot;
  SteadyClock clock;
  PgWalSource source{config_.db, session, slot, config_.session_timeout};
  source.Open();
  if (repeat_.Clear("wal") > 0) log_->info("wal capture: streaming again slot={}", slot);
  // The stream is one lane: at most batch-size x max-inflight-batches records in flight.
  WalStreamLimits limits;
  limits.max_inflight_records = std::max(1, config_.batch_size * config_.max_inflight_batches);
  WalStream stream{source, producer, clock, observer_, log_, limits, carry_};
  if (settings.draining) stream.DrainedAt(settings.wal_end);
  auto next_session_check = steady_clock::now() + kSessionCheckInterval;
  while (true) {
    if (stopping_) {
      auto deadline = steady_clock::now() + config_.shutdown_timeout;
      while (!stream.DrainForStop() && steady_clock::now() < deadline) {
        pollfd p{producer.wait_fd(), POLLIN, 0};
        ::poll(&p, 1, 50);
      }
      carry_ = stream.carry();
      source.Close();
      return;
    }
    auto r = stream.Step();
    carry_ = stream.carry();
    if (r.outcome == WalStream::Outcome::kRestart) {
      log_->warn("wal capture: {}; restarting the stream from the slot's confirmed position {}", r.why,
                 LsnText(stream.confirmed()));
      source.Close();
      producer.Reset();
      Sleep(milliseconds{200});
      return;
    }
    if (r.outcome == WalStream::Outcome::kDrained) {
      log_->info("capture switched to table: the WAL stream is published and slot {} dropped", slot);
      return;
    }
    if (steady_clock::now() >= next_session_check) {
      // The stream lock lives in this session: reading the settings on it also proves it
      // is alive (a lost session throws, and another relay may take over).
      auto settings = ReadCapture(session);
      if (!settings.wal && !settings.draining) {
        source.Close();
        return;
      }
      next_session_check = steady_clock::now() + kSessionCheckInterval;
    }
    if (r.wait.count() > 0) {
      pollfd fds[3] = {{source.wait_fd(), POLLIN, 0}, {producer.wait_fd(), POLLIN, 0}, {wake_.read_fd(), POLLIN, 0}};
      ::poll(fds, 3, static_cast<int>(std::min<long long>(r.wait.count(), kSessionCheckInterval.count())));
    }
  }
}

}  // namespace outbox::relay
