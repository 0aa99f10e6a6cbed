#pragma once

// The Kafka adapter: the only place that sees librdkafka. A group consumer with manual
// offset commits and pause/resume, and the producer that writes dead-letter records.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "outbox/consumer.h"
#include "outbox/message.h"

struct rd_kafka_s;

namespace outbox::internal {

struct TopicPartition {
  std::string topic;
  std::int32_t partition = 0;
  bool operator<(const TopicPartition& o) const {
    return topic != o.topic ? topic < o.topic : partition < o.partition;
  }
  bool operator==(const TopicPartition& o) const {
    return topic == o.topic && partition == o.partition;
  }
};

using LogFn = std::function<void(LogLevel, const std::string&)>;
// Called from Poll() when partitions are taken away (revoked or lost).
using RevokeFn = std::function<void(const std::vector<TopicPartition>&)>;

struct KafkaHandleDeleter {
  void operator()(rd_kafka_s* rk) const;
};
using KafkaHandle = std::unique_ptr<rd_kafka_s, KafkaHandleDeleter>;

class KafkaConsumer {
 public:
  // Appends every configuration problem to `problems`; the object is usable only if
  // none were added.
  KafkaConsumer(const ConsumerOptions& options, LogFn log, RevokeFn on_revoke,
                std::vector<std::string>& problems);
  ~KafkaConsumer();
  KafkaConsumer(const KafkaConsumer&) = delete;
  KafkaConsumer& operator=(const KafkaConsumer&) = delete;

  // Waits up to `timeout` for one record. Transient errors are logged and yield nullopt;
  // a fatal client error throws outbox::Error.
  std::optional<Message> Poll(std::chrono::milliseconds timeout);
  // Stores `next_offset` for the partition and commits it synchronously. Returns the
  // error text, or nothing on success.
  std::optional<std::string> Commit(const TopicPartition& tp, std::int64_t next_offset);
  // Stores the offsets and commits them asynchronously in one request (a batch's ack).
  // A failure is logged when its result arrives (inside Poll). Returns the error text if
  // the request could not even be made.
  std::optional<std::string> CommitAsync(const std::map<TopicPartition, std::int64_t>& next_offsets);
  // Synchronously commits every stored offset not committed yet (Run() returning, revoke).
  void CommitStored();
  // The partition's high watermark as last seen by a fetch (no broker request); nothing
  // when not known yet.
  std::optional<std::int64_t> HighWatermark(const TopicPartition& tp);
  void Pause(const TopicPartition& tp);
  void Resume(const TopicPartition& tp);
  // Makes the next fetch of the (assigned) partition start at `offset`.
  void Seek(const TopicPartition& tp, std::int64_t offset);
  // Leaves the group (revokes run first). Idempotent.
  void Close();

  // For the librdkafka callbacks (kafka.cc) only.
  void Revoked(const std::vector<TopicPartition>& tps) { on_revoke_(tps); }
  void Log(LogLevel level, const std::string& line) { log_(level, line); }

 private:
  LogFn log_;
  RevokeFn on_revoke_;
  KafkaHandle rk_;
  bool closed_ = false;
};

class DlqProducer {
 public:
  DlqProducer(const ConsumerOptions& options, LogFn log, std::vector<std::string>& problems);
  ~DlqProducer();
  DlqProducer(const DlqProducer&) = delete;
  DlqProducer& operator=(const DlqProducer&) = delete;

  // Produces one record and waits for the broker's acknowledgement (or the configured
  // timeout). Returns the error text, or nothing once the record is acknowledged.
  std::optional<std::string> Send(const std::string& topic, const std::optional<std::string>& key,
                                  const std::optional<std::string>& value,
                                  const std::vector<std::pair<std::string, std::string>>& headers);

  // For the librdkafka callbacks (kafka.cc) only.
  void Log(LogLevel level, const std::string& line) { log_(level, line); }

 private:
  LogFn log_;
  std::chrono::milliseconds timeout_;
  KafkaHandle rk_;
};

}  // namespace outbox::internal
