#include "kafka/kafka_producer.h"

#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdint>

#include "common/errors.h"
#include "common/redact.h"

namespace outbox::relay {

DeliveryFailure ClassifyKafkaError(int code) {
  // librdkafka's error enum has well over a hundred members and grows with each
  // release, so this lists the permanent ones and treats everything else (timeouts,
  // broker down, leader changes, throttling, ...) as worth another try.
  switch (static_cast<rd_kafka_resp_err_t>(code)) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:       // too large (broker, or message.max.bytes)
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:          // invalid topic name
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:    // topic missing, auto-create off
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
      return DeliveryFailure::kPermanent;
    default:
      return DeliveryFailure::kTransient;
  }
}

namespace {

using Context = KafkaProducer::CallbackContext;

void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  auto* reports = static_cast<Context*>(opaque)->reports;
  Delivery d;
  d.token = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(m->_private));
  d.ok = m->err == RD_KAFKA_RESP_ERR_NO_ERROR;
  if (!d.ok) {
    d.failure = ClassifyKafkaError(m->err);
    d.error = rd_kafka_err2str(m->err);
  }
  reports->push_back(std::move(d));
}

void OnLog(const rd_kafka_t* rk, int level, const char* fac, const char* buf) {
  auto* log = static_cast<Context*>(rd_kafka_opaque(rk))->log;
  auto lvl = level <= 3 ? spdlog::level::err : level <= 4 ? spdlog::level::warn
           : level <= 6 ? spdlog::level::info : spdlog::level::debug;
  log->log(lvl, "kafka {}: {}", fac, buf);
}

void OnError(rd_kafka_t*, int err, const char* reason, void* opaque) {
  auto* log = static_cast<Context*>(opaque)->log;
  // Broker connection errors are expected during outages; librdkafka reconnects with
  // backoff by itself and keeps the queued records.
  log->warn("kafka error code={} reason={}", rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err)), reason);
}

}  // namespace

void KafkaProducer::HandleDeleter::operator()(rd_kafka_s* rk) const {
  rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  rd_kafka_flush(rk, 1000);
  rd_kafka_destroy(rk);
}

void KafkaProducer::QueueDeleter::operator()(rd_kafka_queue_s* q) const { rd_kafka_queue_destroy(q); }

void KafkaProducer::TopicDeleter::operator()(rd_kafka_topic_s* rkt) const { rd_kafka_topic_destroy(rkt); }

KafkaProducer::Fd& KafkaProducer::Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

KafkaProducer::Fd::~Fd() {
  if (fd_ >= 0) close(fd_);
}

std::vector<std::pair<std::string, std::string>> DefaultKafkaConf() {
  // Chosen for the outbox: never drop a record on our own (message.timeout.ms=0 waits
  // through broker outages), keep order under retries (idempotence), batch, and let no
  // record overtake a refused record batch of its partition (enable.gapless.guarantee:
  // the producer turns fatal instead, and the relay starts a new one; see relay.cc).
  // linger.ms=0 adapts batching to the load: a record goes at once when the partition
  // has nothing queued, and whatever the relay produces while requests are in flight
  // (up to 5 per broker with idempotence) goes in the next request's record batch.
  // Measured (docs/performance.md, issue 16): p50 at 100 msg/s 8 -> 3 ms, no drain cost.
  return {{"enable.idempotence", "true"},
          {"enable.gapless.guarantee", "true"},
          {"acks", "all"},
          {"message.timeout.ms", "0"},
          {"linger.ms", "0"},
          {"batch.num.messages", "10000"},
          {"partitioner", "murmur2_random"},
          {"client.id", "outbox-relay"}};
}

KafkaProducer::KafkaProducer(const std::string& brokers,
                             const std::vector<std::pair<std::string, std::string>>& user_conf,
                             std::shared_ptr<spdlog::logger> log)
    : log_(std::move(log)) {
  // Settings under which a younger record of a key can land before an older one that
  // failed are refused at start-up (exit 2 with the reason), not handled at run time.
  if (auto problems = OrderingProblems(user_conf); !problems.empty()) throw ConfigError(problems);
  conf_.emplace_back("bootstrap.servers", brokers);
  for (auto& kv : DefaultKafkaConf()) conf_.push_back(std::move(kv));
  conf_.insert(conf_.end(), user_conf.begin(), user_conf.end());
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) throw RuntimeError("pipe2 failed");
  event_pipe_[0] = Fd{fds[0]};
  event_pipe_[1] = Fd{fds[1]};
  callbacks_ = {log_.get(), &reports_};
  Create();
}

void KafkaProducer::Create() {
  std::unique_ptr<rd_kafka_conf_t, void (*)(rd_kafka_conf_t*)> conf{rd_kafka_conf_new(), &rd_kafka_conf_destroy};
  std::vector<std::string> problems;
  char err[512];
  // User settings come after the defaults and win, except the guarantees cli.cc and
  // OrderingProblems refuse to weaken.
  for (const auto& [k, v] : conf_) {
    if (rd_kafka_conf_set(conf.get(), k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      bool secret = IsSecretKafkaProperty(k);
      problems.push_back("--kafka-conf " + k + ": " + (secret ? RedactSecret(err, v) : std::string(err)));
    }
  }
  if (!problems.empty()) throw ConfigError(problems);
  rd_kafka_conf_set_dr_msg_cb(conf.get(), &OnDelivery);
  rd_kafka_conf_set_log_cb(conf.get(), &OnLog);
  rd_kafka_conf_set_error_cb(conf.get(), &OnError);
  rd_kafka_conf_set_opaque(conf.get(), &callbacks_);
  // rd_kafka_new owns the configuration once it succeeds.
  rk_.reset(rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err));
  if (!rk_) throw ConfigError({std::string("kafka: ") + err});
  conf.release();
  main_queue_.reset(rd_kafka_queue_get_main(rk_.get()));
  rd_kafka_queue_io_event_enable(main_queue_.get(), event_pipe_[1].get(), "1", 1);
}

void KafkaProducer::Reset() {
  if (probe_.valid()) probe_.wait();
  topics_.clear();
  main_queue_.reset();
  rk_.reset();  // purges and serves the failed reports into reports_ (HandleDeleter)
  Create();
}

KafkaProducer::~KafkaProducer() {
  topics_.clear();  // before the handle (members go in reverse order, but say it)
}

rd_kafka_topic_s* KafkaProducer::Topic(const std::string& name) {
  if (auto it = topics_.find(name); it != topics_.end()) return it->second.get();
  // Why a handle: rd_kafka_producev with a topic *name* creates the topic inside
  // librdkafka without asking for its metadata; its records then wait in the unassigned
  // queue until the 1-second topic scan asks (180-970 ms measured). rd_kafka_topic_new
  // of a topic librdkafka does not know sends the metadata request at once (librdkafka
  // 2.0.2, rdkafka_topic.c: rd_kafka_topic_leader_query). Returns null only for an
  // invalid name: producev then reports the error for the record.
  std::unique_ptr<rd_kafka_topic_s, TopicDeleter> rkt{rd_kafka_topic_new(rk_.get(), name.c_str(), nullptr)};
  if (!rkt) return nullptr;
  return topics_.emplace(name, std::move(rkt)).first->second.get();
}

RecordSink::ProduceStatus KafkaProducer::Produce(const OutboxRow& row, std::uint64_t token, std::string* error,
                                                 DeliveryFailure* failure) {
  rd_kafka_headers_t* headers = rd_kafka_headers_new(row.headers.size() + 1);
  for (const auto& [k, v] : row.headers) {
    rd_kafka_header_add(headers, k.data(), static_cast<ssize_t>(k.size()), v.data(), static_cast<ssize_t>(v.size()));
  }
  rd_kafka_header_add(headers, "message_id", -1, row.message_id.data(), static_cast<ssize_t>(row.message_id.size()));
  // RD_KAFKA_MSG_F_COPY: the row's buffers die with the batch; librdkafka keeps a copy.
  // The opaque carries the relay's record token, not an address.
  const void* key = row.key ? row.key->data() : nullptr;
  size_t key_len = row.key ? row.key->size() : 0;
  void* value = row.payload ? const_cast<char*>(row.payload->data()) : nullptr;
  size_t value_len = row.payload ? row.payload->size() : 0;
  void* opaque = reinterpret_cast<void*>(static_cast<std::uintptr_t>(token));
  rd_kafka_resp_err_t err;
  if (rd_kafka_topic_s* rkt = Topic(row.topic)) {
    err = rd_kafka_producev(rk_.get(), RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE(value, value_len),
                            RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
  } else {
    err = rd_kafka_producev(rk_.get(), RD_KAFKA_V_TOPIC(row.topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE(value, value_len),
                            RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
  }
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return ProduceStatus::kQueued;  // headers now owned by the record
  rd_kafka_headers_destroy(headers);
  if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) return ProduceStatus::kQueueFull;
  *error = rd_kafka_err2str(err);
  *failure = ClassifyKafkaError(err);
  return ProduceStatus::kRejected;
}

std::vector<Delivery> KafkaProducer::Poll() {
  char buf[256];
  while (read(event_pipe_[0].get(), buf, sizeof buf) > 0) {
  }
  while (rd_kafka_poll(rk_.get(), 0) > 0) {
  }
  std::vector<Delivery> out;
  out.swap(reports_);
  return out;
}

bool KafkaProducer::Reachable() {
  if (!probe_.valid()) {
    rd_kafka_t* rk = rk_.get();
    probe_ = std::async(std::launch::async, [rk] {
      const rd_kafka_metadata_t* md = nullptr;
      if (rd_kafka_metadata(rk, 0, nullptr, &md, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
      bool brokers = md->broker_cnt > 0;
      rd_kafka_metadata_destroy(md);
      return brokers;
    });
    return false;
  }
  if (probe_.wait_for(std::chrono::seconds{0}) != std::future_status::ready) return false;
  return probe_.get();  // the next call starts a new request
}

int KafkaProducer::InFlight() const { return rd_kafka_outq_len(rk_.get()); }

void KafkaProducer::Purge() {
  rd_kafka_purge(rk_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  rd_kafka_poll(rk_.get(), 100);
}

std::optional<std::string> KafkaProducer::FatalError() const {
  char buf[512];
  if (rd_kafka_fatal_error(rk_.get(), buf, sizeof buf) != RD_KAFKA_RESP_ERR_NO_ERROR) return std::string(buf);
  return std::nullopt;
}

std::vector<std::string> OrderingProblems(const std::vector<std::pair<std::string, std::string>>& conf) {
  std::vector<std::string> problems;
  auto is_max_retries = [](const std::string& v) {
    try {
      return std::stoll(v) >= 2147483647LL;
    } catch (const std::exception&) {
      return false;
    }
  };
  for (const auto& [k, v] : conf) {
    if ((k == "message.timeout.ms" || k == "delivery.timeout.ms") && v != "0") {
      problems.push_back("--kafka-conf " + k + "=" + v +
                         ": must stay 0 (a record that times out is retried later, after younger records "
                         "of its key were delivered: per-key order would break)");
    } else if ((k == "retries" || k == "message.send.max.retries") && !is_max_retries(v)) {
      problems.push_back("--kafka-conf " + k + "=" + v +
                         ": must stay 2147483647 (a record that runs out of retries fails while younger "
                         "records of its key are delivered: per-key order would break)");
    } else if (k == "enable.gapless.guarantee" && v != "true") {
      problems.push_back("--kafka-conf enable.gapless.guarantee=" + v +
                         ": must stay true (without it a record batch Kafka refuses is skipped and the "
                         "partition's later records are sent: younger records of a key would land first)");
    } else if (k == "partitioner" && v == "random") {
      problems.push_back("--kafka-conf partitioner=random: records of one key must go to one partition; use "
                         "murmur2_random (the default), murmur2, consistent, consistent_random, fnv1a or "
                         "fnv1a_random");
    }
  }
  return problems;
}

}  // namespace outbox::relay
