#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/record_sink.h"

struct rd_kafka_s;
struct rd_kafka_queue_s;
struct rd_kafka_topic_s;
struct rd_kafka_conf_s;
namespace spdlog { class logger; }

namespace outbox::relay {

// The Kafka adapter (core/record_sink.h): an idempotent librdkafka producer
// (enable.idempotence=true, acks=all) that writes outbox rows as records: key, value,
// headers + message_id. Records of one key go to one partition (murmur2, like the Java
// client) in produce order. The first record to a topic asks the cluster for the topic's
// metadata at once (one round trip before the topic's records can go). Not thread-safe:
// owned by the relay loop.
class KafkaProducer final : public RecordSink {
 public:
  // Throws ConfigError if a property is rejected by librdkafka, or would let records of
  // one key reach Kafka out of order (OrderingProblems).
  KafkaProducer(const std::string& brokers, const std::vector<std::pair<std::string, std::string>>& conf,
                std::shared_ptr<spdlog::logger> log);
  ~KafkaProducer() override;
  KafkaProducer(const KafkaProducer&) = delete;
  KafkaProducer& operator=(const KafkaProducer&) = delete;

  ProduceStatus Produce(const OutboxRow& row, std::uint64_t token, std::string* error,
                        DeliveryFailure* failure) override;
  // Serves delivery reports and logs without waiting.
  std::vector<Delivery> Poll() override;
  // Readable when reports are waiting; Poll drains it.
  int wait_fd() const override { return event_pipe_[0].get(); }
  // Drops what is queued (shutdown deadline) and serves the failed reports (up to 100 ms).
  void Purge() override;
  std::optional<std::string> FatalError() const override;
  // A new librdkafka handle with the same settings; the old one's records are purged and
  // their reports kept for the next Poll.
  void Reset() override;
  // Asks the cluster for metadata (one round trip, 2 s at most) on a background thread;
  // true once such a request succeeded.
  bool Reachable() override;
  // Records produced and not yet reported.
  int InFlight() const;

  // What librdkafka's callbacks reach through the handle's opaque.
  struct CallbackContext {
    spdlog::logger* log;
    std::vector<Delivery>* reports;
  };

 private:
  void Create();  // the handle, its main queue and the wake-up on the pipe
  // The topic's handle, created (and its metadata requested) on first use.
  rd_kafka_topic_s* Topic(const std::string& name);

  // One owner per resource: the handle, its main queue, the wake-up pipe.
  struct HandleDeleter {
    void operator()(rd_kafka_s* rk) const;
  };
  struct QueueDeleter {
    void operator()(rd_kafka_queue_s* q) const;
  };
  struct TopicDeleter {
    void operator()(rd_kafka_topic_s* rkt) const;
  };
  class Fd {
   public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
    Fd& operator=(Fd&& o) noexcept;
    ~Fd();
    int get() const { return fd_; }

   private:
    int fd_ = -1;
  };

  std::vector<std::pair<std::string, std::string>> conf_;  // DefaultKafkaConf + --kafka-conf
  std::shared_ptr<spdlog::logger> log_;
  std::vector<Delivery> reports_;  // filled by the delivery callback during Poll
  CallbackContext callbacks_{nullptr, nullptr};
  Fd event_pipe_[2];
  std::unique_ptr<rd_kafka_s, HandleDeleter> rk_;          // destroyed before the pipe
  std::unique_ptr<rd_kafka_queue_s, QueueDeleter> main_queue_;  // released before the handle
  // Topic handles of rk_, one per topic produced to (destroyed before the handle). Kept
  // for the handle's life: librdkafka keeps every topic it saw anyway.
  std::unordered_map<std::string, std::unique_ptr<rd_kafka_topic_s, TopicDeleter>> topics_;
  std::future<bool> probe_;  // Reachable's request in flight; waited for before the handle goes
};

// The producer settings the relay starts from (--kafka-conf entries come after and win,
// within OrderingProblems): bootstrap.servers excluded.
std::vector<std::pair<std::string, std::string>> DefaultKafkaConf();

// Settings (the defaults plus --kafka-conf) under which librdkafka may deliver a younger
// record of a key while an older one fails and is retried later: a finite
// message.timeout.ms / delivery.timeout.ms, a finite retries / message.send.max.retries,
// enable.gapless.guarantee=false, a partitioner that does not map a key to one partition. One line per problem; empty
// when the settings keep per-key order.
std::vector<std::string> OrderingProblems(const std::vector<std::pair<std::string, std::string>>& conf);

// The classifier: which Kafka errors make a record undeliverable for good.
DeliveryFailure ClassifyKafkaError(int rd_kafka_resp_err);

}  // namespace outbox::relay
