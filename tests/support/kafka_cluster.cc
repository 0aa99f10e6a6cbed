#include "kafka_cluster.h"

// rdkafka.h must come before rdkafka_mock.h.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <vector>
#include <unistd.h>

#include "kafka_handles.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>
#include <stdexcept>

namespace outbox::test {

KafkaCluster::KafkaCluster(int brokers) {
  if (const char* real = std::getenv("OUTBOX_TEST_BROKERS"); real && *real) {
    bootstrap_ = real;
    return;
  }
  handle_.reset(NewKafkaClient(RD_KAFKA_PRODUCER, {{"log_level", "3"}}).release());
  mock_.reset(rd_kafka_mock_cluster_new(handle_.get(), brokers));
  if (!mock_) throw std::runtime_error("rd_kafka_mock_cluster_new failed");
  bootstrap_ = rd_kafka_mock_cluster_bootstraps(mock_.get());
}

KafkaCluster::~KafkaCluster() = default;

void KafkaCluster::HandleDeleter::operator()(rd_kafka_s* rk) const { rd_kafka_destroy(rk); }
void KafkaCluster::MockDeleter::operator()(rd_kafka_mock_cluster_s* mock) const {
  rd_kafka_mock_cluster_destroy(mock);
}

void KafkaCluster::CreateTopic(const std::string& topic, int partitions) {
  if (mock_) {
    if (rd_kafka_mock_topic_create(mock_.get(), topic.c_str(), partitions, 1) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw std::runtime_error("mock topic create failed: " + topic);
    }
    return;
  }
  char err[512];
  auto rk = NewKafkaClient(RD_KAFKA_PRODUCER, {{"bootstrap.servers", bootstrap_}});
  KafkaNewTopicPtr nt{rd_kafka_NewTopic_new(topic.c_str(), partitions, -1, err, sizeof err)};
  if (!nt) throw std::runtime_error("create topic " + topic + ": " + err);
  KafkaQueuePtr q{rd_kafka_queue_new(rk.get())};
  rd_kafka_NewTopic_t* topics[] = {nt.get()};
  rd_kafka_CreateTopics(rk.get(), topics, 1, nullptr, q.get());
  KafkaEventPtr ev{rd_kafka_queue_poll(q.get(), 30000)};
  std::string failure;
  if (!ev) {
    failure = "timeout";
  } else {
    size_t n = 0;
    const rd_kafka_topic_result_t** res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev.get()), &n);
    if (n == 1 && rd_kafka_topic_result_error(res[0]) != RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_topic_result_error(res[0]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
      failure = rd_kafka_topic_result_error_string(res[0]);
    }
  }
  if (!failure.empty()) throw std::runtime_error("create topic " + topic + ": " + failure);
}

std::vector<std::string> KafkaCluster::AdvertisedBrokers() const {
  auto rk = NewKafkaClient(RD_KAFKA_PRODUCER, {{"bootstrap.servers", bootstrap_}, {"log_level", "3"}});
  const rd_kafka_metadata_t* md = nullptr;
  auto err = rd_kafka_metadata(rk.get(), 0, nullptr, &md, 30000);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    throw std::runtime_error(std::string("kafka metadata: ") + rd_kafka_err2str(err));
  }
  std::vector<std::string> out;
  for (int i = 0; i < md->broker_cnt; ++i) {
    out.push_back(std::string(md->brokers[i].host) + ":" + std::to_string(md->brokers[i].port));
  }
  rd_kafka_metadata_destroy(md);
  return out;
}

void KafkaCluster::SetBrokerDown(std::int32_t broker_id) {
  if (!mock_) throw std::logic_error("SetBrokerDown needs the mock cluster");
  rd_kafka_mock_broker_set_down(mock_.get(), broker_id);
}

void KafkaCluster::SetBrokerUp(std::int32_t broker_id) {
  if (!mock_) throw std::logic_error("SetBrokerUp needs the mock cluster");
  rd_kafka_mock_broker_set_up(mock_.get(), broker_id);
}

void KafkaCluster::FailNextProduceRequests(int count, int error) {
  if (!mock_) throw std::logic_error("FailNextProduceRequests needs the mock cluster");
  std::vector<rd_kafka_resp_err_t> errors(static_cast<size_t>(count), static_cast<rd_kafka_resp_err_t>(error));
  constexpr std::int16_t kProduceApiKey = 0;  // RD_KAFKAP_Produce (not in the public headers)
  rd_kafka_mock_push_request_errors_array(mock_.get(), kProduceApiKey, errors.size(), errors.data());
}

void KafkaCluster::SetBrokerRtt(std::int32_t broker_id, int rtt_ms) {
  if (!mock_) throw std::logic_error("SetBrokerRtt needs the mock cluster");
  rd_kafka_mock_broker_set_rtt(mock_.get(), broker_id, rtt_ms);
}

std::string UniqueTopic(const std::string& prefix) {
  static std::atomic<int> n{0};
  std::random_device rd;
  return prefix + "-" + std::to_string(getpid()) + "-" + std::to_string(++n) + "-" +
         std::to_string(rd() % 100000);
}

}  // namespace outbox::test
