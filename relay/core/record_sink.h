#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/outbox_row.h"

namespace outbox::relay {

// What a failed delivery means for the row (decided by the sink's one classifier).
enum class DeliveryFailure {
  kPermanent,  // Kafka refused the record (or the whole record batch it was in) for good
  kTransient,  // try again later: keep the row
};

// The outcome of one record, reported once per record the sink queued.
struct Delivery {
  std::uint64_t token = 0;  // what Produce was given
  bool ok = true;
  DeliveryFailure failure = DeliveryFailure::kTransient;
  std::string error;        // when !ok
};

// The relay core's view of Kafka: an idempotent producer that writes outbox rows as
// records (key, value, headers + message_id); records of one key go to one partition in
// produce order. Production: kafka/kafka_producer.h (librdkafka); tests/sim: a model.
// Not thread-safe: owned by the relay loop.
class RecordSink {
 public:
  virtual ~RecordSink() = default;

  enum class ProduceStatus { kQueued, kQueueFull, kRejected };
  // Enqueues a record; its Delivery comes from Poll with `token`. On kRejected, *error
  // says why and *failure whether it is permanent (the record itself is at fault); no
  // Delivery will come.
  virtual ProduceStatus Produce(const OutboxRow& row, std::uint64_t token, std::string* error,
                                DeliveryFailure* failure) = 0;
  // Reports that arrived since the last call. Non-blocking.
  virtual std::vector<Delivery> Poll() = 0;
  // Drops what is queued or in flight (shutdown deadline): each gets a failed Delivery.
  virtual void Purge() = 0;
  // A fatal producer error, if any. With enable.gapless.guarantee (the relay's setting)
  // a record batch Kafka refused for good makes the producer fatal before any later
  // record of the partition can land: nothing overtakes the refused records.
  virtual std::optional<std::string> FatalError() const = 0;
  // Replaces a fatal producer with a new one. What the old one still held is reported
  // failed (transient) by the next Poll; some of it may have reached Kafka.
  virtual void Reset() = 0;
  // Whether Kafka answers now (the relay asks while its lanes are handed over because
  // nothing was acknowledged for --kafka-stall-timeout). Non-blocking: may start a check
  // in the background and answer false until it completes.
  virtual bool Reachable() = 0;
  // A file descriptor readable when reports may be waiting (poll(2)), or -1.
  virtual int wait_fd() const { return -1; }
};

}  // namespace outbox::relay
