#include "kafka.h"

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "outbox/error.h"

namespace outbox::internal {
namespace {

using ConfPtr = std::unique_ptr<rd_kafka_conf_t, decltype(&rd_kafka_conf_destroy)>;
using PartitionList = std::unique_ptr<rd_kafka_topic_partition_list_t,
                                      decltype(&rd_kafka_topic_partition_list_destroy)>;

PartitionList OnePartition(const TopicPartition& tp,
                           std::int64_t offset = RD_KAFKA_OFFSET_INVALID) {
  PartitionList list{rd_kafka_topic_partition_list_new(1), &rd_kafka_topic_partition_list_destroy};
  rd_kafka_topic_partition_list_add(list.get(), tp.topic.c_str(), tp.partition)->offset = offset;
  return list;
}

std::string ErrorText(rd_kafka_error_t* error) {
  std::string text = rd_kafka_error_string(error);
  rd_kafka_error_destroy(error);
  return text;
}

LogLevel FromSyslog(int level) {
  if (level <= 3) return LogLevel::kError;
  if (level == 4) return LogLevel::kWarn;
  if (level <= 6) return LogLevel::kInfo;
  return LogLevel::kDebug;
}

// Sets one property; a refusal becomes a configuration problem naming where it came from.
void Set(rd_kafka_conf_t* conf, const std::string& origin, const std::string& key,
         const std::string& value, std::vector<std::string>& problems) {
  char err[512];
  if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
    problems.push_back(origin + "[" + key + "]: " + err);
  }
}

template <class Owner>
void LogCb(const rd_kafka_t* rk, int level, const char* fac, const char* buf) {
  auto* self = static_cast<Owner*>(rd_kafka_opaque(rk));
  if (self) self->Log(FromSyslog(level), std::string("librdkafka ") + fac + ": " + buf);
}

template <class Owner>
void ErrorCb(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
  auto* self = static_cast<Owner*>(opaque);
  // Most client errors are transient (broker down, reconnecting): librdkafka recovers.
  bool fatal = err == RD_KAFKA_RESP_ERR__FATAL;
  if (self) {
    self->Log(fatal ? LogLevel::kError : LogLevel::kWarn,
              std::string("kafka client error: ") +
                  rd_kafka_err2str(static_cast<rd_kafka_resp_err_t>(err)) + " reason=" + reason +
                  " client=" + rd_kafka_name(rk));
  }
}

void RebalanceCb(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts,
                 void* opaque) {
  auto* self = static_cast<KafkaConsumer*>(opaque);
  bool cooperative = std::strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
  std::vector<TopicPartition> tps;
  std::string names;
  for (int i = 0; i < parts->cnt; ++i) {
    tps.push_back({parts->elems[i].topic, parts->elems[i].partition});
    names += (i ? "," : "") + std::string(parts->elems[i].topic) + "/" +
             std::to_string(parts->elems[i].partition);
  }
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    self->Log(LogLevel::kInfo, "partitions assigned partitions=" + names);
    if (cooperative) {
      if (auto* e = rd_kafka_incremental_assign(rk, parts))
        self->Log(LogLevel::kError, "assign failed: " + ErrorText(e));
    } else {
      rd_kafka_assign(rk, parts);
    }
    // A partition coming back must not stay paused from an earlier assignment.
    rd_kafka_resume_partitions(rk, parts);
    return;
  }
  // Revoked (or lost, or an error): forget messages held for these partitions before
  // giving them up; their next owner starts at the last committed offset. Offsets stored
  // after a database commit but still in flight asynchronously are committed first, so
  // the next owner does not redeliver a batch that was handled (the inbox would skip it).
  bool lost = rd_kafka_assignment_lost(rk);
  self->Log(LogLevel::kInfo, std::string("partitions revoked partitions=") + names +
                                 " lost=" + (lost ? "true" : "false"));
  if (!lost) self->CommitStored();
  self->Revoked(tps);
  if (cooperative) {
    if (auto* e = rd_kafka_incremental_unassign(rk, parts))
      self->Log(LogLevel::kError, "unassign failed: " + ErrorText(e));
  } else {
    rd_kafka_assign(rk, nullptr);
  }
}

void OffsetCommitCb(rd_kafka_t*, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* offsets,
                    void* opaque) {
  auto* self = static_cast<KafkaConsumer*>(opaque);
  if (err == RD_KAFKA_RESP_ERR__NO_OFFSET) return;  // nothing new to commit
  std::string failed;
  for (int i = 0; offsets && i < offsets->cnt; ++i) {
    const auto& e = offsets->elems[i];
    if (e.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      failed += (failed.empty() ? "" : ",") + std::string(e.topic) + "/" +
                std::to_string(e.partition) + "@" + std::to_string(e.offset) + ":" +
                rd_kafka_err2str(e.err);
    }
  }
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR || !failed.empty()) {
    // The records are delivered again (to this or the next owner) and the inbox skips them.
    self->Log(LogLevel::kWarn, std::string("offset commit failed error=") + rd_kafka_err2str(err) +
                                   (failed.empty() ? "" : " partitions=" + failed));
  }
}

struct Delivery {
  std::atomic<bool> done{false};
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
};

void DeliveryCb(rd_kafka_t*, const rd_kafka_message_t* rkm, void*) {
  auto* d = static_cast<Delivery*>(rkm->_private);
  d->err = rkm->err;
  d->done = true;
}

}  // namespace

void KafkaHandleDeleter::operator()(rd_kafka_s* rk) const { rd_kafka_destroy(rk); }

KafkaConsumer::KafkaConsumer(const ConsumerOptions& options, LogFn log, RevokeFn on_revoke,
                             std::vector<std::string>& problems)
    : log_(std::move(log)), on_revoke_(std::move(on_revoke)) {
  ConfPtr conf{rd_kafka_conf_new(), &rd_kafka_conf_destroy};
  Set(conf.get(), "defaults", "bootstrap.servers", options.brokers, problems);
  Set(conf.get(), "defaults", "group.id", options.group, problems);
  Set(conf.get(), "defaults", "auto.offset.reset", "earliest", problems);
  // Log lines and errors are served by Poll() on the consumer's thread.
  Set(conf.get(), "defaults", "log.queue", "true", problems);
  for (const auto& [k, v] : options.kafka) Set(conf.get(), "kafka", k, v, problems);
  for (const auto& [k, v] : options.kafka_consumer) {
    if (k == "enable.auto.commit" || k == "enable.auto.offset.store" || k == "group.id") {
      problems.push_back(
          "kafka_consumer[" + k +
          "]: owned by the library (offsets are committed after the database commit)");
      continue;
    }
    Set(conf.get(), "kafka_consumer", k, v, problems);
  }
  // After the user's settings: these are what makes "ack after commit" true.
  Set(conf.get(), "defaults", "enable.auto.commit", "false", problems);
  Set(conf.get(), "defaults", "enable.auto.offset.store", "false", problems);
  if (!problems.empty()) return;  // create nothing from a configuration with problems
  rd_kafka_conf_set_opaque(conf.get(), this);
  rd_kafka_conf_set_rebalance_cb(conf.get(), &RebalanceCb);
  rd_kafka_conf_set_offset_commit_cb(conf.get(), &OffsetCommitCb);
  rd_kafka_conf_set_log_cb(conf.get(), &LogCb<KafkaConsumer>);
  rd_kafka_conf_set_error_cb(conf.get(),
                             [](rd_kafka_t* rk, int err, const char* reason, void* opaque) {
                               ErrorCb<KafkaConsumer>(rk, err, reason, opaque);
                             });
  char err[512];
  rk_.reset(rd_kafka_new(RD_KAFKA_CONSUMER, conf.get(), err, sizeof err));
  if (!rk_) {
    problems.push_back(std::string("kafka consumer: ") + err);
    return;
  }
  conf.release();  // owned by rk_ now
  rd_kafka_set_log_queue(rk_.get(), nullptr);
  rd_kafka_poll_set_consumer(rk_.get());
  PartitionList topics{rd_kafka_topic_partition_list_new(static_cast<int>(options.topics.size())),
                       &rd_kafka_topic_partition_list_destroy};
  for (const auto& t : options.topics)
    rd_kafka_topic_partition_list_add(topics.get(), t.c_str(), RD_KAFKA_PARTITION_UA);
  if (auto e = rd_kafka_subscribe(rk_.get(), topics.get()); e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    problems.push_back(std::string("subscribe: ") + rd_kafka_err2str(e));
  }
}

KafkaConsumer::~KafkaConsumer() { Close(); }

void KafkaConsumer::Close() {
  if (closed_ || !rk_) return;
  closed_ = true;
  if (auto e = rd_kafka_consumer_close(rk_.get()); e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    log_(LogLevel::kWarn, std::string("consumer close: ") + rd_kafka_err2str(e));
  }
}

std::optional<Message> KafkaConsumer::Poll(std::chrono::milliseconds timeout) {
  std::unique_ptr<rd_kafka_message_t, decltype(&rd_kafka_message_destroy)> rkm{
      rd_kafka_consumer_poll(rk_.get(), static_cast<int>(timeout.count())),
      &rd_kafka_message_destroy};
  if (!rkm) return std::nullopt;
  if (rkm->err) {
    if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return std::nullopt;
    char reason[512];
    if (rd_kafka_fatal_error(rk_.get(), reason, sizeof reason) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw Error(std::string("fatal Kafka consumer error: ") + reason);
    }
    log_(LogLevel::kWarn,
         std::string("consume error: ") + rd_kafka_message_errstr(rkm.get()) +
             (rkm->rkt ? std::string(" topic=") + rd_kafka_topic_name(rkm->rkt) : std::string()));
    return std::nullopt;
  }
  Message m;
  m.topic = rd_kafka_topic_name(rkm->rkt);
  m.partition = rkm->partition;
  m.offset = rkm->offset;
  if (rkm->key) m.key = std::string(static_cast<const char*>(rkm->key), rkm->key_len);
  if (rkm->payload) m.payload = std::string(static_cast<const char*>(rkm->payload), rkm->len);
  rd_kafka_headers_t* hdrs = nullptr;
  if (rd_kafka_message_headers(rkm.get(), &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* name;
    const void* value;
    size_t size;
    for (size_t i = 0;
         rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
         ++i) {
      m.headers[name] = value ? std::string(static_cast<const char*>(value), size) : std::string();
    }
  }
  return m;
}

std::optional<std::string> KafkaConsumer::Commit(const TopicPartition& tp,
                                                 std::int64_t next_offset) {
  auto list = OnePartition(tp, next_offset);
  // Stored too, so a later commit of the stored offsets (revoke) never goes backwards.
  rd_kafka_offsets_store(rk_.get(), list.get());
  auto e = rd_kafka_commit(rk_.get(), list.get(), 0 /* synchronous */);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) return std::string(rd_kafka_err2str(e));
  if (list->elems[0].err != RD_KAFKA_RESP_ERR_NO_ERROR)
    return std::string(rd_kafka_err2str(list->elems[0].err));
  return std::nullopt;
}

std::optional<std::string> KafkaConsumer::CommitAsync(
    const std::map<TopicPartition, std::int64_t>& next_offsets) {
  if (next_offsets.empty()) return std::nullopt;
  PartitionList list{rd_kafka_topic_partition_list_new(static_cast<int>(next_offsets.size())),
                     &rd_kafka_topic_partition_list_destroy};
  for (const auto& [tp, offset] : next_offsets)
    rd_kafka_topic_partition_list_add(list.get(), tp.topic.c_str(), tp.partition)->offset = offset;
  // A partition revoked meanwhile is refused by the store (not ours any more): its next
  // owner redelivers and the inbox skips.
  rd_kafka_offsets_store(rk_.get(), list.get());
  auto e = rd_kafka_commit(rk_.get(), list.get(), 1 /* asynchronous */);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) return std::string(rd_kafka_err2str(e));
  return std::nullopt;
}

void KafkaConsumer::CommitStored() {
  if (!rk_) return;
  auto e = rd_kafka_commit(rk_.get(), nullptr, 0 /* synchronous */);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR__NO_OFFSET) {
    log_(LogLevel::kWarn, std::string("offset commit failed error=") + rd_kafka_err2str(e));
  }
}

std::optional<std::int64_t> KafkaConsumer::HighWatermark(const TopicPartition& tp) {
  std::int64_t low = 0, high = 0;
  if (rd_kafka_get_watermark_offsets(rk_.get(), tp.topic.c_str(), tp.partition, &low, &high) !=
          RD_KAFKA_RESP_ERR_NO_ERROR ||
      high < 0) {
    return std::nullopt;
  }
  return high;
}

void KafkaConsumer::Pause(const TopicPartition& tp) {
  auto list = OnePartition(tp);
  rd_kafka_pause_partitions(rk_.get(), list.get());
}

void KafkaConsumer::Resume(const TopicPartition& tp) {
  auto list = OnePartition(tp);
  rd_kafka_resume_partitions(rk_.get(), list.get());
}

void KafkaConsumer::Seek(const TopicPartition& tp, std::int64_t offset) {
  auto list = OnePartition(tp, offset);
  if (auto* e = rd_kafka_seek_partitions(rk_.get(), list.get(), 10000)) {
    log_(LogLevel::kWarn, "seek failed topic=" + tp.topic + " partition=" +
                              std::to_string(tp.partition) + " error=" + ErrorText(e));
  }
}

DlqProducer::DlqProducer(const ConsumerOptions& options, LogFn log,
                         std::vector<std::string>& problems)
    : log_(std::move(log)), timeout_(options.dlq_timeout) {
  ConfPtr conf{rd_kafka_conf_new(), &rd_kafka_conf_destroy};
  Set(conf.get(), "defaults", "bootstrap.servers", options.brokers, problems);
  Set(conf.get(), "defaults", "enable.idempotence", "true", problems);
  Set(conf.get(), "defaults", "acks", "all", problems);
  Set(conf.get(), "defaults", "linger.ms", "0", problems);
  Set(conf.get(), "defaults", "log.queue", "true", problems);
  Set(conf.get(), "dlq_timeout", "message.timeout.ms", std::to_string(timeout_.count()), problems);
  for (const auto& [k, v] : options.kafka) Set(conf.get(), "kafka", k, v, problems);
  if (!problems.empty()) return;  // create nothing from a configuration with problems
  rd_kafka_conf_set_opaque(conf.get(), this);
  rd_kafka_conf_set_dr_msg_cb(conf.get(), &DeliveryCb);
  rd_kafka_conf_set_log_cb(conf.get(), &LogCb<DlqProducer>);
  rd_kafka_conf_set_error_cb(conf.get(),
                             [](rd_kafka_t* rk, int err, const char* reason, void* opaque) {
                               ErrorCb<DlqProducer>(rk, err, reason, opaque);
                             });
  char err[512];
  rk_.reset(rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err));
  if (!rk_) {
    problems.push_back(std::string("kafka dead-letter producer: ") + err);
    return;
  }
  conf.release();
  rd_kafka_set_log_queue(rk_.get(), nullptr);
}

DlqProducer::~DlqProducer() {
  if (rk_) rd_kafka_flush(rk_.get(), 5000);
}

std::optional<std::string> DlqProducer::Send(
    const std::string& topic, const std::optional<std::string>& key,
    const std::optional<std::string>& value,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  rd_kafka_headers_t* hdrs = rd_kafka_headers_new(headers.size());
  for (const auto& [k, v] : headers) {
    rd_kafka_header_add(hdrs, k.data(), static_cast<ssize_t>(k.size()), v.data(),
                        static_cast<ssize_t>(v.size()));
  }
  Delivery delivery;
  // RD_KAFKA_V_* are macros: plain variables, no conditionals, as their arguments.
  void* key_ptr = key ? const_cast<char*>(key->data()) : nullptr;
  size_t key_len = key ? key->size() : 0;
  void* value_ptr = value ? const_cast<char*>(value->data()) : nullptr;
  size_t value_len = value ? value->size() : 0;
  auto e = rd_kafka_producev(
      rk_.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_KEY(key_ptr, key_len), RD_KAFKA_V_VALUE(value_ptr, value_len),
      RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(&delivery), RD_KAFKA_V_END);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_headers_destroy(hdrs);  // not taken over on failure
    return std::string(rd_kafka_err2str(e));
  }
  // message.timeout.ms = timeout_ makes librdkafka report every record within it. The
  // purge below is a backstop so `delivery` never outlives this frame.
  auto deadline = std::chrono::steady_clock::now() + timeout_ + std::chrono::seconds(5);
  while (!delivery.done) {
    rd_kafka_poll(rk_.get(), 50);
    if (!delivery.done && std::chrono::steady_clock::now() > deadline) {
      rd_kafka_purge(rk_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
      deadline = std::chrono::steady_clock::time_point::max();
    }
  }
  if (delivery.err != RD_KAFKA_RESP_ERR_NO_ERROR)
    return std::string(rd_kafka_err2str(delivery.err));
  return std::nullopt;
}

}  // namespace outbox::internal
