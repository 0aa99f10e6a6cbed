#pragma once

// Shared by the consumer tests: a fresh migrated database, a Kafka (mock or
// OUTBOX_TEST_BROKERS), and plain librdkafka clients to produce records and read them back.

#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <outbox/consumer.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <stdexcept>
#include <string>
#include <vector>

#include "kafka_cluster.h"
#include "kafka_handles.h"
#include "cli/migrate.h"
#include "pg_cluster.h"
#include "wait.h"

namespace outbox::test {

// A record read back by ReadTopic.
struct Record {
  std::optional<std::string> key;
  std::optional<std::string> value;
  std::vector<std::pair<std::string, std::string>> headers;
  std::int64_t offset = 0;
  std::string Header(const std::string& name) const {
    for (const auto& [k, v] : headers) {
      if (k == name) return v;
    }
    return "<missing " + name + ">";
  }
};

inline void Produce(const std::string& bootstrap, const std::string& topic, std::int32_t partition,
                    const std::optional<std::string>& key, const std::string& value,
                    const std::vector<std::pair<std::string, std::string>>& headers) {
  auto rk = NewKafkaClient(RD_KAFKA_PRODUCER, {{"bootstrap.servers", bootstrap}, {"log_level", "3"}});
  KafkaHeadersPtr hdrs{rd_kafka_headers_new(headers.size())};
  for (const auto& [k, v] : headers)
    rd_kafka_header_add(hdrs.get(), k.data(), -1, v.data(), static_cast<ssize_t>(v.size()));
  void* key_ptr = key ? const_cast<char*>(key->data()) : nullptr;
  size_t key_len = key ? key->size() : 0;
  auto e =
      rd_kafka_producev(rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(partition),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key_ptr, key_len),
                        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                        RD_KAFKA_V_HEADERS(hdrs.get()), RD_KAFKA_V_END);
  if (e) throw std::runtime_error(std::string("produce: ") + rd_kafka_err2str(e));
  hdrs.release();  // owned by the produced message now
  auto flushed = rd_kafka_flush(rk.get(), static_cast<int>(Scaled(std::chrono::seconds(30)).count()));
  if (flushed) throw std::runtime_error("produce: not delivered");
}

// Reads partition `partition` of `topic` from the beginning until `count` records arrived
// or the deadline passed.
inline std::vector<Record> ReadTopic(
    const std::string& bootstrap, const std::string& topic, size_t count,
    std::int32_t partition = 0, std::chrono::milliseconds deadline = std::chrono::seconds(30)) {
  auto rk = NewKafkaClient(RD_KAFKA_CONSUMER, {{"bootstrap.servers", bootstrap},
                                                {"group.id", "outbox-test-reader"},
                                                {"enable.auto.commit", "false"},
                                                {"fetch.wait.max.ms", "10"},
                                                {"log_level", "3"}});
  rd_kafka_poll_set_consumer(rk.get());
  {
    KafkaPartitionsPtr list{rd_kafka_topic_partition_list_new(1)};
    rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), partition)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk.get(), list.get());
  }
  std::vector<Record> out;
  WaitUntil(
      [&] {
        KafkaMessagePtr message{rd_kafka_consumer_poll(rk.get(), 50)};
        if (!message) return out.size() >= count;
        const rd_kafka_message_t* m = message.get();
        if (!m->err) {
          Record r;
          if (m->key) r.key = std::string(static_cast<const char*>(m->key), m->key_len);
          if (m->payload) r.value = std::string(static_cast<const char*>(m->payload), m->len);
          r.offset = m->offset;
          rd_kafka_headers_t* hdrs = nullptr;  // owned by the message
          if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            const char* name;
            const void* val;
            size_t size;
            for (size_t i = 0;
                 rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
                 ++i) {
              r.headers.emplace_back(name,
                                     val ? std::string(static_cast<const char*>(val), size) : "");
            }
          }
          out.push_back(std::move(r));
        }
        return out.size() >= count;
      },
      deadline);
  rd_kafka_consumer_close(rk.get());
  return out;
}

// The offset committed by `group` for the partition (-1001 = none).
inline std::int64_t CommittedOffset(const std::string& bootstrap, const std::string& group,
                                    const std::string& topic, std::int32_t partition) {
  auto rk = NewKafkaClient(RD_KAFKA_CONSUMER,
                           {{"bootstrap.servers", bootstrap}, {"group.id", group}, {"log_level", "3"}});
  KafkaPartitionsPtr list{rd_kafka_topic_partition_list_new(1)};
  rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), partition);
  auto e = rd_kafka_committed(rk.get(), list.get(), static_cast<int>(Scaled(std::chrono::seconds(10)).count()));
  return e ? -2 : list->elems[0].offset;
}

inline void MigrateDb(const std::string& db) {
  spdlog::logger log{"null", std::make_shared<spdlog::sinks::null_sink_mt>()};
  relay::Migrate(db, relay::EmbeddedMigrations(), log);
}

// Log lines of a consumer, kept for assertions and printed when a test fails.
class LogCapture {
 public:
  LogSink Sink() {
    return [this](LogLevel, const std::string& line) {
      std::lock_guard lock{mu_};
      lines_.push_back(line);
    };
  }
  std::string All() const {
    std::lock_guard lock{mu_};
    std::string s;
    for (const auto& l : lines_) s += l + "\n";
    return s;
  }
  bool Contains(const std::string& text) const { return All().find(text) != std::string::npos; }

 private:
  mutable std::mutex mu_;  // Guards lines_.
  std::vector<std::string> lines_;
};

// Fixture: fresh database with the schema and an `effects` table, a Kafka, one topic.
class ConsumerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = FreshDatabase();
    MigrateDb(db_);
    pqxx::connection c{db_};
    pqxx::work tx{c};
    tx.exec(
        "CREATE TABLE effects (id bigserial PRIMARY KEY, message_id text NOT NULL, key text, "
        "payload text, "
        "  done_at timestamptz NOT NULL DEFAULT clock_timestamp())");
    // The application's own table, created by its owner and granted to the consumer login
    // (as deployed: the consumer cannot create tables).
    tx.exec("GRANT SELECT, INSERT, UPDATE, DELETE ON effects TO outbox_consumer");
    tx.exec("GRANT USAGE ON SEQUENCE effects_id_seq TO outbox_consumer");
    tx.commit();
    topic_ = UniqueTopic("orders");
    kafka_.CreateTopic(topic_, 1);
    kafka_.CreateTopic(topic_ + ".dlq", 1);
  }

  ConsumerOptions Options() {
    ConsumerOptions o;
    o.brokers = kafka_.bootstrap();
    o.group = UniqueTopic("group");
    o.topics = {topic_};
    o.conninfo = As(Login::kConsumer, db_);  // the documented role, not the owner
    // Mock cluster: a re-join takes about session.timeout.ms; empty fetches wait the
    // full fetch.wait.max.ms.
    o.kafka_consumer = {{"session.timeout.ms", "6000"},
                        {"heartbeat.interval.ms", "500"},
                        {"fetch.wait.max.ms", "10"}};
    o.poll_timeout = std::chrono::milliseconds(50);
    o.retry_scan_interval = std::chrono::milliseconds(50);
    o.log = log_.Sink();
    return o;
  }

  // Writes the effect of a message (what a handler does).
  static void Effect(const Message& m, pqxx::work& tx) {
    tx.exec_params("INSERT INTO effects (message_id, key, payload) VALUES ($1, $2, $3)",
                   m.message_id, m.key, m.payload);
  }

  // Steps the consumer until pred holds (or the deadline passes); returns pred().
  bool StepUntil(Consumer& c, const std::function<bool()>& pred,
                 std::chrono::milliseconds deadline = std::chrono::seconds(60)) {
    return WaitUntil(
        [&] {
          c.Step(std::chrono::milliseconds(50));
          return pred();
        },
        deadline);
  }

  std::int64_t Count(const std::string& sql) {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    return tx.exec1(sql)[0].as<std::int64_t>();
  }

  std::vector<std::string> Column(const std::string& sql) {
    pqxx::connection c{db_};
    pqxx::work tx{c};
    std::vector<std::string> out;
    for (const auto& row : tx.exec(sql))
      out.push_back(row[0].is_null() ? "NULL" : row[0].as<std::string>());
    return out;
  }

  void Send(const std::optional<std::string>& key, const std::string& value,
            const std::string& message_id,
            std::vector<std::pair<std::string, std::string>> headers = {}) {
    if (!message_id.empty()) headers.emplace_back("message_id", message_id);
    Produce(kafka_.bootstrap(), topic_, 0, key, value, headers);
  }

  std::string db_;
  KafkaCluster kafka_;
  std::string topic_;
  LogCapture log_;
};

}  // namespace outbox::test
