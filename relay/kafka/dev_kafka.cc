#include "kafka/dev_kafka.h"

// rdkafka.h must come before rdkafka_mock.h.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "common/errors.h"
#include "ops/signals.h"

namespace outbox::relay {

int RunDevKafka(const DevKafkaConfig& config, spdlog::logger& log) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // The handle only hosts the mock cluster; keep it quiet.
  rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
  std::unique_ptr<rd_kafka_t, decltype(&rd_kafka_destroy)> rk{
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err), &rd_kafka_destroy};
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    throw RuntimeError(std::string("dev-kafka: cannot create the Kafka handle: ") + err);
  }
  std::unique_ptr<rd_kafka_mock_cluster_t, decltype(&rd_kafka_mock_cluster_destroy)> cluster{
      rd_kafka_mock_cluster_new(rk.get(), config.brokers), &rd_kafka_mock_cluster_destroy};
  if (!cluster) throw RuntimeError("dev-kafka: cannot start the mock cluster");
  std::string bootstrap = rd_kafka_mock_cluster_bootstraps(cluster.get());

  if (!config.brokers_file.empty()) {
    std::string tmp = config.brokers_file + ".tmp";
    {
      std::ofstream out{tmp};
      out << bootstrap << "\n";
      if (!out.flush()) throw RuntimeError("dev-kafka: cannot write " + config.brokers_file);
    }
    std::filesystem::rename(tmp, config.brokers_file);
  }
  std::printf("BOOTSTRAP=%s\n", bootstrap.c_str());
  std::fflush(stdout);
  log.info("dev-kafka serving brokers={} bootstrap={}", config.brokers, bootstrap);

  int sig = WaitForTerminationSignal();
  log.info("dev-kafka stopping signal={}", sig);
  if (!config.brokers_file.empty()) {
    std::error_code ec;
    std::filesystem::remove(config.brokers_file, ec);
  }
  return kExitOk;
}

}  // namespace outbox::relay
