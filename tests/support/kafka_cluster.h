#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct rd_kafka_s;
struct rd_kafka_mock_cluster_s;

namespace outbox::test {

// The Kafka a test talks to: the broker list in OUTBOX_TEST_BROKERS if set, otherwise
// an in-process librdkafka mock cluster (the real protocol on 127.0.0.1, random ports).
class KafkaCluster {
 public:
  explicit KafkaCluster(int brokers = 1);
  ~KafkaCluster();
  KafkaCluster(const KafkaCluster&) = delete;
  KafkaCluster& operator=(const KafkaCluster&) = delete;

  const std::string& bootstrap() const { return bootstrap_; }
  bool is_mock() const { return mock_ != nullptr; }
  // host:port of every broker as its metadata advertises it (what clients connect to).
  std::vector<std::string> AdvertisedBrokers() const;

  // Creates a topic (mock: at once; real broker: via the admin API, waits for it).
  void CreateTopic(const std::string& topic, int partitions);
  // Mock only: take a broker (ids from 1) down or up. Tests call these only when
  // is_mock() (a real broker cannot be stopped from here).
  void SetBrokerDown(std::int32_t broker_id);
  void SetBrokerUp(std::int32_t broker_id);
  // Mock only: delay every response of a broker by rtt_ms (0 = no delay). Holds records
  // in flight without closing the broker's listener.
  void SetBrokerRtt(std::int32_t broker_id, int rtt_ms);
  // Mock only: the next `count` Produce requests (any broker) fail with Kafka error code
  // `error` (e.g. 87 INVALID_RECORD): the whole record batch is refused.
  void FailNextProduceRequests(int count, int error);

 private:
  struct HandleDeleter {
    void operator()(rd_kafka_s* rk) const;
  };
  struct MockDeleter {
    void operator()(rd_kafka_mock_cluster_s* mock) const;
  };

  std::string bootstrap_;
  std::unique_ptr<rd_kafka_s, HandleDeleter> handle_;             // the mock's host client
  std::unique_ptr<rd_kafka_mock_cluster_s, MockDeleter> mock_;    // destroyed before handle_
};

// A topic name unique to the running test (Kafka topics outlive tests on real brokers).
std::string UniqueTopic(const std::string& prefix);

}  // namespace outbox::test
