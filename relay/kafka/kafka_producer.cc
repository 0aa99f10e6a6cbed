#include "kafka/kafka_producer.h"

#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

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
  d.opaque = m->_private;
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

KafkaProducer::KafkaProducer(const std::string& brokers,
                             const std::vector<std::pair<std::string, std::string>>& user_conf,
                             std::shared_ptr<spdlog::logger> log)
    : log_(std::move(log)) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  std::vector<std::string> problems;
  char err[512];
  auto set = [&](const std::string& k, const std::string& v, bool secret) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      problems.push_back("--kafka-conf " + k + ": " + (secret ? RedactSecret(err, v) : std::string(err)));
    }
  };
  // Defaults chosen for the outbox: never drop a record on our own (message.timeout.ms=0
  // waits through broker outages), keep order under retries (idempotence), and batch.
  // User settings come after and win, except the guarantees cli.cc refuses to weaken.
  set("bootstrap.servers", brokers, false);
  set("enable.idempotence", "true", false);
  set("acks", "all", false);
  set("message.timeout.ms", "0", false);
  set("linger.ms", "5", false);
  set("batch.num.messages", "10000", false);
  set("partitioner", "murmur2_random", false);
  set("client.id", "outbox-relay", false);
  for (const auto& [k, v] : user_conf) set(k, v, IsSecretKafkaProperty(k));
  if (!problems.empty()) {
    rd_kafka_conf_destroy(conf);
    throw ConfigError(problems);
  }
  rd_kafka_conf_set_dr_msg_cb(conf, &OnDelivery);
  rd_kafka_conf_set_log_cb(conf, &OnLog);
  rd_kafka_conf_set_error_cb(conf, &OnError);
  callbacks_ = {log_.get(), &reports_};
  rd_kafka_conf_set_opaque(conf, &callbacks_);
  rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!rk_) {
    rd_kafka_conf_destroy(conf);
    throw ConfigError({std::string("kafka: ") + err});
  }
  if (pipe2(event_pipe_, O_NONBLOCK | O_CLOEXEC) != 0) throw RuntimeError("pipe2 failed");
  main_queue_ = rd_kafka_queue_get_main(rk_);
  rd_kafka_queue_io_event_enable(main_queue_, event_pipe_[1], "1", 1);
}

KafkaProducer::~KafkaProducer() {
  if (main_queue_) rd_kafka_queue_destroy(main_queue_);
  if (rk_) {
    rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(rk_, 1000);
    rd_kafka_destroy(rk_);
  }
  for (int fd : event_pipe_) {
    if (fd >= 0) close(fd);
  }
}

KafkaProducer::ProduceStatus KafkaProducer::Produce(const OutboxRow& row, void* opaque, std::string* error,
                                                    DeliveryFailure* failure) {
  rd_kafka_headers_t* headers = rd_kafka_headers_new(row.headers.size() + 1);
  for (const auto& [k, v] : row.headers) {
    rd_kafka_header_add(headers, k.data(), static_cast<ssize_t>(k.size()), v.data(), static_cast<ssize_t>(v.size()));
  }
  rd_kafka_header_add(headers, "message_id", -1, row.message_id.data(), static_cast<ssize_t>(row.message_id.size()));
  // RD_KAFKA_MSG_F_COPY: the row's buffers die with the batch; librdkafka keeps a copy.
  const void* key = row.key ? row.key->data() : nullptr;
  size_t key_len = row.key ? row.key->size() : 0;
  void* value = row.payload ? const_cast<char*>(row.payload->data()) : nullptr;
  size_t value_len = row.payload ? row.payload->size() : 0;
  rd_kafka_resp_err_t err = rd_kafka_producev(
      rk_, RD_KAFKA_V_TOPIC(row.topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE(value, value_len), RD_KAFKA_V_HEADERS(headers),
      RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return ProduceStatus::kQueued;  // headers now owned by the record
  rd_kafka_headers_destroy(headers);
  if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) return ProduceStatus::kQueueFull;
  *error = rd_kafka_err2str(err);
  *failure = ClassifyKafkaError(err);
  return ProduceStatus::kRejected;
}

std::vector<Delivery> KafkaProducer::Poll(std::chrono::milliseconds timeout) {
  reports_.clear();
  rd_kafka_poll(rk_, static_cast<int>(timeout.count()));
  // Keep serving whatever else is ready without waiting.
  while (rd_kafka_poll(rk_, 0) > 0) {
  }
  std::vector<Delivery> out;
  out.swap(reports_);
  return out;
}

void KafkaProducer::ClearEventFd() {
  char buf[256];
  while (read(event_pipe_[0], buf, sizeof buf) > 0) {
  }
}

int KafkaProducer::InFlight() const { return rd_kafka_outq_len(rk_); }

void KafkaProducer::Purge() { rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT); }

std::optional<std::string> KafkaProducer::FatalError() const {
  char buf[512];
  if (rd_kafka_fatal_error(rk_, buf, sizeof buf) != RD_KAFKA_RESP_ERR_NO_ERROR) return std::string(buf);
  return std::nullopt;
}

}  // namespace outbox::relay
