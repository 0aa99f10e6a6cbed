#include "kafka/kafka_probe.h"

#include <librdkafka/rdkafka.h>

#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>

#include "common/errors.h"
#include "common/redact.h"
#include "kafka/kafka_producer.h"

namespace outbox::relay {
namespace {

// What librdkafka's threads tell the probe. Guarded by mu: assigned.
struct ProbeEvents {
  std::mutex mu;
  std::condition_variable changed;
  bool assigned = false;
};

// librdkafka reports the idempotent producer's states only as debug lines (facility
// IDEMPSTATE, "... -> Assigned" once the cluster gave a producer id).
void OnLog(const rd_kafka_t* rk, int, const char* fac, const char* buf) {
  if (std::strcmp(fac, "IDEMPSTATE") != 0 || std::strstr(buf, "-> Assigned") == nullptr) return;
  auto* events = static_cast<ProbeEvents*>(rd_kafka_opaque(rk));
  std::lock_guard lock{events->mu};
  events->assigned = true;
  events->changed.notify_all();
}

// A fatal error (e.g. the cluster refused the producer id) ends the wait at once.
void OnError(rd_kafka_t*, int err, const char*, void* opaque) {
  if (err != RD_KAFKA_RESP_ERR__FATAL) return;
  auto* events = static_cast<ProbeEvents*>(opaque);
  std::lock_guard lock{events->mu};
  events->changed.notify_all();
}

struct HandleDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
struct QueueDeleter {
  void operator()(rd_kafka_queue_t* q) const { rd_kafka_queue_destroy(q); }
};
struct EventDeleter {
  void operator()(rd_kafka_event_t* e) const { rd_kafka_event_destroy(e); }
};

// The brokers' auto.create.topics.enable (DescribeConfigs on the first broker); nothing
// if the cluster does not say within the timeout.
std::optional<bool> AutoCreate(rd_kafka_t* rk, int broker_id, std::chrono::milliseconds timeout) {
  std::unique_ptr<rd_kafka_queue_t, QueueDeleter> queue{rd_kafka_queue_new(rk)};
  rd_kafka_ConfigResource_t* resource =
      rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_BROKER, std::to_string(broker_id).c_str());
  std::unique_ptr<rd_kafka_AdminOptions_t, void (*)(rd_kafka_AdminOptions_t*)> options{
      rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS), &rd_kafka_AdminOptions_destroy};
  char err[256];
  rd_kafka_AdminOptions_set_request_timeout(options.get(), static_cast<int>(timeout.count()), err, sizeof err);
  rd_kafka_DescribeConfigs(rk, &resource, 1, options.get(), queue.get());
  rd_kafka_ConfigResource_destroy(resource);
  std::unique_ptr<rd_kafka_event_t, EventDeleter> event{
      rd_kafka_queue_poll(queue.get(), static_cast<int>(timeout.count()) + 1000)};
  if (!event || rd_kafka_event_error(event.get()) != RD_KAFKA_RESP_ERR_NO_ERROR) return std::nullopt;
  const rd_kafka_DescribeConfigs_result_t* result = rd_kafka_event_DescribeConfigs_result(event.get());
  if (result == nullptr) return std::nullopt;
  size_t n = 0;
  const rd_kafka_ConfigResource_t** resources = rd_kafka_DescribeConfigs_result_resources(result, &n);
  for (size_t i = 0; i < n; ++i) {
    if (rd_kafka_ConfigResource_error(resources[i]) != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
    size_t m = 0;
    const rd_kafka_ConfigEntry_t** entries = rd_kafka_ConfigResource_configs(resources[i], &m);
    for (size_t j = 0; j < m; ++j) {
      if (std::strcmp(rd_kafka_ConfigEntry_name(entries[j]), "auto.create.topics.enable") != 0) continue;
      const char* value = rd_kafka_ConfigEntry_value(entries[j]);
      if (value != nullptr) return std::strcmp(value, "true") == 0;
    }
  }
  return std::nullopt;
}

}  // namespace

KafkaProbe ProbeKafka(const std::string& brokers, const std::vector<std::pair<std::string, std::string>>& conf,
                      const std::vector<std::string>& topics, std::chrono::milliseconds timeout) {
  KafkaProbe probe;
  ProbeEvents events;
  std::unique_ptr<rd_kafka_conf_t, void (*)(rd_kafka_conf_t*)> c{rd_kafka_conf_new(), &rd_kafka_conf_destroy};
  std::vector<std::pair<std::string, std::string>> settings{{"bootstrap.servers", brokers}};
  for (auto& kv : DefaultKafkaConf()) settings.push_back(std::move(kv));
  settings.insert(settings.end(), conf.begin(), conf.end());
  settings.emplace_back("debug", "eos");  // the producer id's state changes (OnLog)
  settings.emplace_back("log_level", "7");
  std::vector<std::string> problems;
  char err[512];
  for (const auto& [k, v] : settings) {
    if (rd_kafka_conf_set(c.get(), k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      problems.push_back("--kafka-conf " + k + ": " + (IsSecretKafkaProperty(k) ? RedactSecret(err, v) : err));
    }
  }
  if (!problems.empty()) throw ConfigError(problems);
  rd_kafka_conf_set_log_cb(c.get(), &OnLog);
  rd_kafka_conf_set_error_cb(c.get(), &OnError);
  rd_kafka_conf_set_opaque(c.get(), &events);
  std::unique_ptr<rd_kafka_t, HandleDeleter> rk{rd_kafka_new(RD_KAFKA_PRODUCER, c.get(), err, sizeof err)};
  if (!rk) throw ConfigError({std::string("kafka: ") + err});
  c.release();  // rd_kafka_new owns it now

  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t e = rd_kafka_metadata(rk.get(), 1, nullptr, &md, static_cast<int>(timeout.count()));
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    probe.unreachable = std::string(rd_kafka_err2str(e));
    return probe;
  }
  std::unique_ptr<const rd_kafka_metadata_t, void (*)(const rd_kafka_metadata_t*)> metadata{
      md, &rd_kafka_metadata_destroy};
  probe.brokers = md->broker_cnt;
  std::set<std::string> present;
  for (int i = 0; i < md->topic_cnt; ++i) {
    if (md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) present.insert(md->topics[i].topic);
  }
  bool missing = false;
  for (const auto& t : topics) {
    probe.topics[t] = present.count(t) > 0;
    missing = missing || !probe.topics[t];
  }
  if (missing && md->broker_cnt > 0) probe.auto_create = AutoCreate(rk.get(), md->brokers[0].id, timeout);

  {
    std::unique_lock lock{events.mu};
    events.changed.wait_for(lock, timeout, [&] {
      return events.assigned || rd_kafka_fatal_error(rk.get(), nullptr, 0) != RD_KAFKA_RESP_ERR_NO_ERROR;
    });
    probe.producer_id_assigned = events.assigned;
  }
  if (rd_kafka_fatal_error(rk.get(), err, sizeof err) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    probe.idempotence_error = std::string(err);
  }
  return probe;
}

}  // namespace outbox::relay
