#pragma once

// What `outbox-relay doctor` asks of Kafka, with the producer settings `run` would use
// (DefaultKafkaConf + --kafka-conf): one short-lived producer, nothing produced.

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace outbox::relay {

struct KafkaProbe {
  // Why no metadata came back within the timeout; nothing when the cluster answered.
  std::optional<std::string> unreachable;
  int brokers = 0;                           // brokers in the metadata answer
  // The producer id: librdkafka's idempotent producer asks the cluster for one at
  // start-up (InitProducerId); a broker without idempotence (< 0.11) or a login without
  // the IdempotentWrite permission never gives one.
  bool producer_id_assigned = false;
  std::optional<std::string> idempotence_error;  // the fatal error librdkafka raised, if any
  // For each topic asked about: whether the cluster has it.
  std::map<std::string, bool> topics;
  // The brokers' auto.create.topics.enable, when some topic is missing and the cluster
  // answers DescribeConfigs (librdkafka's mock cluster does not).
  std::optional<bool> auto_create;
};

// Creates an idempotent producer for `brokers` with `conf` and asks for metadata (one
// request, at most `timeout`), the broker configuration if a topic is missing (at most
// `timeout` more) and the producer id (at most `timeout` more). Problems are values; throws ConfigError only if librdkafka rejects a
// setting. Secret values never appear in the result.
KafkaProbe ProbeKafka(const std::string& brokers, const std::vector<std::pair<std::string, std::string>>& conf,
                      const std::vector<std::string>& topics, std::chrono::milliseconds timeout);

}  // namespace outbox::relay
