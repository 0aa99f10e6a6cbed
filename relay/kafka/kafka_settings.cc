#include "kafka/kafka_settings.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <memory>

#include "common/host_port.h"
#include "common/redact.h"

namespace outbox::relay {

bool IsSecretKafkaProperty(std::string_view key) {
  std::string k;
  for (char c : key) k += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static constexpr std::array<std::string_view, 5> kMarks = {"password", "secret", "key.pem",
                                                             "sasl.oauthbearer.config", "token"};
  return std::any_of(kMarks.begin(), kMarks.end(),
                     [&](std::string_view m) { return k.find(m) != std::string::npos; });
}

KafkaSettings ParseKafkaSettings(const std::vector<std::string>& entries,
                                 std::vector<std::string>& problems) {
  // A scratch configuration, only so librdkafka validates names and values itself.
  std::unique_ptr<rd_kafka_conf_t, decltype(&rd_kafka_conf_destroy)> conf{rd_kafka_conf_new(),
                                                                           &rd_kafka_conf_destroy};
  KafkaSettings out;
  for (const auto& e : entries) {
    auto eq = e.find('=');
    if (eq == std::string::npos || eq == 0) {
      // The entry may be (part of) a secret: never show it.
      problems.push_back("--kafka-conf: expected KEY=VALUE, got an entry without '=' (not shown: it may be "
                         "part of a secret; put secrets in --kafka-conf-file)");
      continue;
    }
    std::string key = e.substr(0, eq), value = e.substr(eq + 1);
    if (key == "bootstrap.servers" || key == "metadata.broker.list") {
      problems.push_back("--kafka-conf " + key + ": use --brokers instead");
      continue;
    }
    // The guarantees the relay depends on; users may not weaken them.
    if (key == "enable.idempotence" && value != "true") {
      problems.push_back("--kafka-conf enable.idempotence: must stay true (per-key order and "
                         "no duplicates on retries depend on it)");
      continue;
    }
    if ((key == "acks" || key == "request.required.acks") && value != "all" && value != "-1") {
      problems.push_back("--kafka-conf " + key + ": must stay all (a message is deleted from "
                         "the outbox only once every in-sync replica has it)");
      continue;
    }
    char err[512];
    if (rd_kafka_conf_set(conf.get(), key.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      std::string msg = err;
      if (IsSecretKafkaProperty(key)) msg = RedactSecret(msg, value);
      problems.push_back("--kafka-conf " + key + ": " + msg);
      continue;
    }
    bool seen = std::any_of(out.begin(), out.end(), [&](const auto& kv) { return kv.first == key; });
    if (!seen) out.emplace_back(key, value);  // the first (highest precedence) wins
  }
  return out;
}

std::vector<std::string> CheckBrokerList(std::string_view brokers) {
  std::vector<std::string> problems;
  size_t start = 0;
  while (start <= brokers.size()) {
    auto comma = brokers.find(',', start);
    if (comma == std::string_view::npos) comma = brokers.size();
    std::string_view one = brokers.substr(start, comma - start);
    // librdkafka accepts an optional protocol prefix such as SSL:// or PLAINTEXT://.
    auto scheme = one.find("://");
    if (!IsHostPort(scheme == std::string_view::npos ? one : one.substr(scheme + 3))) {
      problems.push_back("--brokers: '" + std::string(one) + "' is not host:port");
    }
    start = comma + 1;
  }
  return problems;
}

}  // namespace outbox::relay
