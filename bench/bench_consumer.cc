// bench-consumer: throughput and end-to-end latency of outbox::Consumer (issue 17).
//
//   bench-consumer --db OWNER_CONNINFO --brokers B --mode records|batch|e2e
//                  [--count 50000] [--batch 500] [--payload 256] [--keys 1000]
//                  [--rate 1000] [--seconds 20] [--warmup 2]
//
// Sets up (as the owner) table bench_effects and login bench_consumer (granted
// outbox_consumer and INSERT on the table); the consumer runs as bench_consumer.
//  records: produces --count records (--keys keys, a message_id header) over 16 topics of
//           4 partitions (the mock cluster keeps only ~5 MiB per partition: 100,000
//           records on one topic would lose their oldest before they are consumed; a key
//           always goes to the same topic),
//           then a consumer whose handler INSERTs one row per record; msgs/s from its
//           first handler call to the last record's ack (group join excluded).
//  batch:   the same with a BatchHandler writing the batch with one multi-row INSERT.
//  e2e:     a relay must be running on the database: one thread publishes --rate msgs/s
//           with outbox.publish (one per transaction), the consumer (per-record handler)
//           handles them; latency = the consumer's Step() returning after the batch's
//           COMMIT and ack - the moment before the publishing COMMIT was sent. First
//           --warmup seconds not counted.
// --batch sets batch_max_records (1 = a transaction per record, as before issue 17).
// Prints one JSON line.
#include <outbox/consumer.h>
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <pqxx/pqxx>
#include <thread>
#include <unistd.h>
#include <vector>

#include "bench_common.h"

using namespace outbox::bench;

namespace {

void Setup(const std::string& db) {
  pqxx::connection c{db};
  pqxx::work tx{c};
  tx.exec("CREATE TABLE IF NOT EXISTS bench_effects (id bigserial PRIMARY KEY, message_id text NOT NULL, "
          "k text, payload text)");
  tx.exec("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_consumer') THEN "
          "CREATE ROLE bench_consumer LOGIN IN ROLE outbox_consumer; END IF; END $$");
  tx.exec("GRANT INSERT ON bench_effects TO bench_consumer");
  tx.exec("GRANT USAGE ON SEQUENCE bench_effects_id_seq TO bench_consumer");
  tx.commit();
}

constexpr int kTopics = 16;

// The topic of a key's records: one of kTopics named after `base`.
std::string TopicOf(const std::string& base, long long key) { return base + ".t" + std::to_string(key % kTopics); }

void ProduceRecords(const std::string& brokers, const std::string& base, long long count,
                    size_t payload_size, long long keys) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (auto [k, v] : {std::pair{"bootstrap.servers", brokers.c_str()}, {"linger.ms", "5"}, {"log_level", "3"}}) {
    if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) Die(err);
  }
  std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> rk{rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err),
                                                        &rd_kafka_destroy};
  if (!rk) Die(err);
  std::string payload(payload_size, 'p');
  for (long long i = 0; i < count; ++i) {
    std::string key = "k" + std::to_string(i % keys);
    std::string topic = TopicOf(base, i % keys);
    std::string id = base + "-" + std::to_string(i);
    while (true) {
      auto e = rd_kafka_producev(rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_KEY(key.data(), key.size()),
                                 RD_KAFKA_V_VALUE(payload.data(), payload.size()),
                                 RD_KAFKA_V_HEADER("message_id", id.data(), static_cast<ssize_t>(id.size())),
                                 RD_KAFKA_V_END);
      if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_poll(rk.get(), 10);
        continue;
      }
      if (e) Die(std::string("produce: ") + rd_kafka_err2str(e));
      break;
    }
    rd_kafka_poll(rk.get(), 0);
  }
  if (rd_kafka_flush(rk.get(), 60000)) Die("produce: not delivered");
}

outbox::ConsumerOptions Options(const std::string& db, const std::string& brokers, const std::string& topic,
                                int batch, bool spread = false) {
  outbox::ConsumerOptions o;
  o.brokers = brokers;
  o.group = "bench-" + topic;
  o.topics = {topic};
  if (spread) {
    o.topics.clear();
    for (int t = 0; t < kTopics; ++t) o.topics.push_back(TopicOf(topic, t));
  }
  o.conninfo = db + " user=bench_consumer";
  o.kafka_consumer = {{"session.timeout.ms", "6000"},
                      {"fetch.wait.max.ms", "5"},
                      {"topic.metadata.refresh.interval.ms", "1000"}};
  o.poll_timeout = std::chrono::milliseconds(50);
  o.log = [](outbox::LogLevel level, const std::string& line) {
    if (level == outbox::LogLevel::kWarn || level == outbox::LogLevel::kError)
      std::fprintf(stderr, "consumer: %s\n", line.c_str());
  };
#ifndef OUTBOX_BENCH_PER_RECORD_API
  o.batch_max_records = batch;
#else
  if (batch != 1) Die("--batch needs the batched consumer (issue 17)");
#endif
  return o;
}

void InsertOne(const outbox::Message& m, pqxx::work& tx) {
  tx.exec_params("INSERT INTO bench_effects (message_id, k, payload) VALUES ($1, $2, $3)", m.message_id,
                 m.key, m.payload);
}

double Pct(std::vector<double>& v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  auto db = Arg(argc, argv, "db");
  auto brokers = Arg(argc, argv, "brokers");
  auto mode = Arg(argc, argv, "mode", "records");
  long long count = IntArg(argc, argv, "count", 50000);
  int batch = static_cast<int>(IntArg(argc, argv, "batch", 500));
  auto payload_size = static_cast<size_t>(std::max<long long>(32, IntArg(argc, argv, "payload", 256)));
  long long keys = IntArg(argc, argv, "keys", 1000);
  if (db.empty() || brokers.empty()) Die("usage: bench-consumer --db CONNINFO --brokers B --mode records|batch|e2e");
  Setup(db);
  std::string topic = "bench.consumer." + mode + "." + std::to_string(getpid());

  if (mode == "records" || mode == "batch") {
    ProduceRecords(brokers, topic, count, payload_size, keys);
    auto options = Options(db, brokers, topic, batch, /*spread=*/true);
    Clock::time_point first{};
    auto mark = [&] {
      if (first == Clock::time_point{}) first = Clock::now();
    };
    std::unique_ptr<outbox::Consumer> consumer;
    if (mode == "records") {
      consumer = std::make_unique<outbox::Consumer>(options, [&](const outbox::Message& m, pqxx::work& tx) {
        mark();
        InsertOne(m, tx);
      });
    } else {
#ifndef OUTBOX_BENCH_PER_RECORD_API
      consumer = std::make_unique<outbox::Consumer>(
          options, outbox::BatchHandler{[&](const std::vector<outbox::Message>& ms, pqxx::work& tx) {
            mark();
            std::string sql = "INSERT INTO bench_effects (message_id, k, payload) VALUES ";
            for (size_t i = 0; i < ms.size(); ++i) {
              sql += (i ? ",(" : "(") + tx.quote(ms[i].message_id) + "," + tx.quote(*ms[i].key) + "," +
                     tx.quote(*ms[i].payload) + ")";
            }
            tx.exec(sql);
          }});
#else
      Die("--mode batch needs the batched consumer (issue 17)");
#endif
    }
    auto deadline = Clock::now() + std::chrono::minutes(10);
    while (consumer->stats().handled + consumer->stats().duplicates < static_cast<std::uint64_t>(count)) {
      consumer->Step(std::chrono::milliseconds(50));
      if (Clock::now() > deadline) Die("timed out");
    }
    double s = Seconds(Clock::now() - first);
#ifndef OUTBOX_BENCH_PER_RECORD_API
    auto st = consumer->stats();
    std::printf("{\"mode\":\"%s\",\"batch\":%d,\"count\":%lld,\"seconds\":%.3f,\"msgs_per_s\":%.0f,"
                "\"batches\":%llu,\"handler_ms\":%.1f,\"commit_ms\":%.1f}\n",
                mode.c_str(), batch, count, s, static_cast<double>(count) / s,
                static_cast<unsigned long long>(st.batches), static_cast<double>(st.handler_us) / 1000.0,
                static_cast<double>(st.commit_us) / 1000.0);
#else
    std::printf("{\"mode\":\"%s\",\"batch\":1,\"count\":%lld,\"seconds\":%.3f,\"msgs_per_s\":%.0f}\n",
                mode.c_str(), count, s, static_cast<double>(count) / s);
#endif
    return 0;
  }

  if (mode != "e2e") Die("unknown --mode " + mode);
  double rate = static_cast<double>(IntArg(argc, argv, "rate", 1000));
  double seconds = static_cast<double>(IntArg(argc, argv, "seconds", 20));
  double warmup = static_cast<double>(IntArg(argc, argv, "warmup", 2));
  long long total = static_cast<long long>(rate * seconds);
  std::vector<std::atomic<std::int64_t>> commit_ns(static_cast<size_t>(total) + 1);
  std::vector<std::int64_t> seen_ns(static_cast<size_t>(total) + 1, 0);
  Clock::time_point epoch{};
  std::vector<long long> in_step;
  auto options = Options(db, brokers, topic, batch);
  outbox::Consumer consumer{options, [&](const outbox::Message& m, pqxx::work& tx) {
                              InsertOne(m, tx);
                              in_step.push_back(std::atoll(m.payload->c_str()));  // "<seq>:ppp..."
                            }};
  pqxx::connection pub{db};
  pub.prepare("pub", "SELECT outbox.publish($1::text, $2::text, convert_to($3::text, 'UTF8'))");
  auto publish = [&](long long seq) {
    std::string payload = std::to_string(seq) + ":";
    payload.resize(payload_size, 'p');
    pqxx::work tx{pub};
    tx.exec_prepared("pub", topic, "k" + std::to_string(seq % keys), payload);
    if (seq > 0)
      commit_ns[static_cast<size_t>(seq)] =
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - epoch).count();
    tx.commit();
  };
  // Seq 0 first: the relay creates the topic, the consumer joins and handles it.
  epoch = Clock::now();
  publish(0);
  auto step = [&] {
    consumer.Step(std::chrono::milliseconds(5));
    auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - epoch).count();
    for (auto s : in_step) {
      if (s >= 0 && s <= total && seen_ns[static_cast<size_t>(s)] == 0) seen_ns[static_cast<size_t>(s)] = now;
    }
    in_step.clear();
  };
  auto deadline = Clock::now() + std::chrono::seconds(120);
  while (seen_ns[0] == 0) {
    step();
    if (Clock::now() > deadline) Die("the consumer never got the first message (is a relay running?)");
  }
  std::atomic<bool> publishing{true};
  epoch = Clock::now() + std::chrono::milliseconds(100);
  std::thread publisher{[&] {
    for (long long seq = 1; seq <= total; ++seq) {
      std::this_thread::sleep_until(epoch + std::chrono::nanoseconds(static_cast<long long>(
                                                static_cast<double>(seq - 1) * 1e9 / rate)));
      publish(seq);
    }
    publishing = false;
  }};
  long long received = 0;
  Clock::time_point give_up = Clock::time_point::max();
  while (received < total && Clock::now() < give_up) {
    step();
    received = static_cast<long long>(std::count_if(seen_ns.begin() + 1, seen_ns.end(), [](auto v) { return v != 0; }));
    if (!publishing && give_up == Clock::time_point::max()) give_up = Clock::now() + std::chrono::seconds(20);
  }
  publisher.join();
  std::vector<double> lat;
  for (long long s = 1; s <= total; ++s) {
    if (seen_ns[static_cast<size_t>(s)] == 0 || static_cast<double>(s - 1) / rate < warmup) continue;
    lat.push_back(static_cast<double>(seen_ns[static_cast<size_t>(s)] - commit_ns[static_cast<size_t>(s)]) / 1e6);
  }
  double max = lat.empty() ? -1 : *std::max_element(lat.begin(), lat.end());
  double p50 = Pct(lat, 0.5), p99 = Pct(lat, 0.99);
  std::printf("{\"mode\":\"e2e\",\"batch\":%d,\"rate\":%.0f,\"count\":%zu,\"missing\":%lld,\"p50_ms\":%.2f,"
              "\"p99_ms\":%.2f,\"max_ms\":%.2f}\n",
              batch, rate, lat.size(), total - received, p50, p99, max);
  return received == total ? 0 : 1;
}
