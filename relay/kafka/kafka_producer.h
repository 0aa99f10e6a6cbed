#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/outbox_row.h"

struct rd_kafka_s;
struct rd_kafka_queue_s;
namespace spdlog { class logger; }

namespace outbox::relay {

// What a failed delivery means for the row (the one classifier; see kafka_producer.cc).
enum class DeliveryFailure {
  kPermanent,  // Kafka will never take this record: park it in outbox.dead_letters
  kTransient,  // try again later: keep the row
};

struct Delivery {
  void* opaque = nullptr;           // what Produce was given
  bool ok = true;
  DeliveryFailure failure = DeliveryFailure::kTransient;
  std::string error;                // when !ok
};

// The Kafka adapter: an idempotent producer (enable.idempotence=true, acks=all) that
// writes outbox rows as records: key, value, headers + message_id. Records of one key go
// to one partition (murmur2, like the Java client) in produce order.
// Not thread-safe: owned by the relay loop.
class KafkaProducer {
 public:
  // Throws ConfigError if a property is rejected by librdkafka.
  KafkaProducer(const std::string& brokers, const std::vector<std::pair<std::string, std::string>>& conf,
                std::shared_ptr<spdlog::logger> log);
  ~KafkaProducer();
  KafkaProducer(const KafkaProducer&) = delete;
  KafkaProducer& operator=(const KafkaProducer&) = delete;

  enum class ProduceStatus { kQueued, kQueueFull, kRejected };
  // Enqueues a record; its Delivery comes from Poll. On kRejected, *error says why and
  // *failure whether it is permanent; no Delivery will come.
  ProduceStatus Produce(const OutboxRow& row, void* opaque, std::string* error, DeliveryFailure* failure);

  // Serves delivery reports and logs; waits at most timeout for the first one.
  std::vector<Delivery> Poll(std::chrono::milliseconds timeout);

  // A file descriptor that becomes readable when reports are waiting (for poll(2)).
  int event_fd() const { return event_pipe_[0]; }
  // Drains event_fd after a wake-up.
  void ClearEventFd();
  // Records produced and not yet reported.
  int InFlight() const;
  // Drops what is queued (shutdown deadline): each gets a failed Delivery via Poll.
  void Purge();
  // A fatal producer error (idempotence broken beyond repair), if any.
  std::optional<std::string> FatalError() const;

 private:
  rd_kafka_s* rk_ = nullptr;
  rd_kafka_queue_s* main_queue_ = nullptr;
  int event_pipe_[2] = {-1, -1};
  std::shared_ptr<spdlog::logger> log_;
  std::vector<Delivery> reports_;  // filled by the delivery callback during Poll
 public:
  // What librdkafka's callbacks reach through the handle's opaque.
  struct CallbackContext {
    spdlog::logger* log;
    std::vector<Delivery>* reports;
  };

 private:
  CallbackContext callbacks_{nullptr, nullptr};
};

// The classifier: which Kafka errors make a record undeliverable for good.
DeliveryFailure ClassifyKafkaError(int rd_kafka_resp_err);

}  // namespace outbox::relay
