#pragma once

#include <spdlog/logger.h>

#include "common/config.h"

namespace outbox::relay {

// `outbox-relay dev-kafka`: librdkafka's in-memory mock cluster (the real Kafka protocol
// on 127.0.0.1, random ports). Prints exactly one line `BOOTSTRAP=host:port,...` on
// stdout, writes the list to config.brokers_file (atomically) when set, then serves
// until SIGTERM/SIGINT. For development and tests only: no persistence, no
// read_committed filtering, no producer fencing. Returns the exit code.
int RunDevKafka(const DevKafkaConfig& config, spdlog::logger& log);

}  // namespace outbox::relay
