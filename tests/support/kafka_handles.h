#pragma once

// Owning pointers for the librdkafka C handles the test fixtures use (one owner per
// handle, shown by the type), and a client factory that frees the configuration when
// rd_kafka_new fails (librdkafka takes it over only on success).

#include <librdkafka/rdkafka.h>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>

namespace outbox::test {

template <typename T, void (*Destroy)(T*)>
struct KafkaDeleter {
  void operator()(T* p) const {
    if (p) Destroy(p);
  }
};

using KafkaPtr = std::unique_ptr<rd_kafka_t, KafkaDeleter<rd_kafka_t, rd_kafka_destroy>>;
using KafkaConfPtr = std::unique_ptr<rd_kafka_conf_t, KafkaDeleter<rd_kafka_conf_t, rd_kafka_conf_destroy>>;
using KafkaQueuePtr = std::unique_ptr<rd_kafka_queue_t, KafkaDeleter<rd_kafka_queue_t, rd_kafka_queue_destroy>>;
using KafkaEventPtr = std::unique_ptr<rd_kafka_event_t, KafkaDeleter<rd_kafka_event_t, rd_kafka_event_destroy>>;
using KafkaNewTopicPtr =
    std::unique_ptr<rd_kafka_NewTopic_t, KafkaDeleter<rd_kafka_NewTopic_t, rd_kafka_NewTopic_destroy>>;
using KafkaHeadersPtr =
    std::unique_ptr<rd_kafka_headers_t, KafkaDeleter<rd_kafka_headers_t, rd_kafka_headers_destroy>>;
using KafkaMessagePtr =
    std::unique_ptr<rd_kafka_message_t, KafkaDeleter<rd_kafka_message_t, rd_kafka_message_destroy>>;
using KafkaPartitionsPtr =
    std::unique_ptr<rd_kafka_topic_partition_list_t,
                    KafkaDeleter<rd_kafka_topic_partition_list_t, rd_kafka_topic_partition_list_destroy>>;

// A producer or consumer client with `settings`. Throws std::runtime_error naming the
// setting or the failure.
inline KafkaPtr NewKafkaClient(rd_kafka_type_t type, const std::map<std::string, std::string>& settings) {
  char err[512];
  KafkaConfPtr conf{rd_kafka_conf_new()};
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      throw std::runtime_error("kafka setting " + name + ": " + err);
    }
  }
  KafkaPtr rk{rd_kafka_new(type, conf.get(), err, sizeof err)};
  if (!rk) throw std::runtime_error(std::string("rd_kafka_new: ") + err);
  conf.release();  // owned by rk now
  return rk;
}

}  // namespace outbox::test
