// bench-kafka: the Kafka ceiling and Kafka-side checks for bench/run.sh.
//
//   bench-kafka ceiling --brokers B --topic T --count N [--payload 256] [--keys 10000]
//                       [--conf KEY=VALUE ...]
//     A bare librdkafka producer with the relay's settings (idempotent, acks=all,
//     linger.ms=0, batch.num.messages=10000, murmur2_random, RD_KAFKA_MSG_F_COPY, a
//     message_id header) pushes N records; prints {"msgs":..,"seconds":..,"msgs_per_s":..}.
//     Time runs from the first produce to the last delivery report.
//   bench-kafka offsets --brokers B --topic T
//     Prints the sum of the partitions' high watermarks (records ever appended: the
//     mock cluster drops old records, so volumes are checked by offsets, not reads).
#include <librdkafka/rdkafka.h>

#include <cinttypes>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.h"

using namespace outbox::bench;

namespace {

struct Counts {
  long long ok = 0;
  long long failed = 0;
};

void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  auto* c = static_cast<Counts*>(opaque);
  if (m->err) {
    ++c->failed;
  } else {
    ++c->ok;
  }
}

struct KafkaDestroy {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
  void operator()(rd_kafka_topic_t* rkt) const { rd_kafka_topic_destroy(rkt); }
  void operator()(const rd_kafka_metadata_t* md) const { rd_kafka_metadata_destroy(md); }
};
using KafkaPtr = std::unique_ptr<rd_kafka_t, KafkaDestroy>;

KafkaPtr NewHandle(rd_kafka_type_t type, const std::string& brokers, const std::vector<std::string>& extra,
                      Counts* counts) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  auto set = [&](const std::string& k, const std::string& v) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) Die(k + ": " + err);
  };
  set("bootstrap.servers", brokers);
  set("log_level", "3");
  if (type == RD_KAFKA_PRODUCER) {
    set("enable.idempotence", "true");
    set("acks", "all");
    set("message.timeout.ms", "0");
    set("linger.ms", "0");
    set("batch.num.messages", "10000");
    set("partitioner", "murmur2_random");
    rd_kafka_conf_set_dr_msg_cb(conf, &OnDelivery);
    rd_kafka_conf_set_opaque(conf, counts);
  }
  for (const auto& kv : extra) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) Die("--conf expects KEY=VALUE");
    set(kv.substr(0, eq), kv.substr(eq + 1));
  }
  KafkaPtr rk{rd_kafka_new(type, conf, err, sizeof err)};
  if (!rk) Die(std::string("rd_kafka_new: ") + err);
  return rk;  // owns conf now
}

std::vector<std::string> Confs(int argc, char** argv) {
  std::vector<std::string> out;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--conf") == 0) out.emplace_back(argv[i + 1]);
  }
  return out;
}

long long SumHighWatermarks(rd_kafka_t* rk, const std::string& topic) {
  const rd_kafka_metadata_t* raw_md = nullptr;
  std::unique_ptr<rd_kafka_topic_t, KafkaDestroy> rkt{rd_kafka_topic_new(rk, topic.c_str(), nullptr)};
  if (rd_kafka_metadata(rk, 0, rkt.get(), &raw_md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) Die("metadata failed");
  std::unique_ptr<const rd_kafka_metadata_t, KafkaDestroy> md{raw_md};
  long long sum = 0;
  for (int t = 0; t < md->topic_cnt; ++t) {
    for (int p = 0; p < md->topics[t].partition_cnt; ++p) {
      int64_t lo = 0, hi = 0;
      if (rd_kafka_query_watermark_offsets(rk, topic.c_str(), md->topics[t].partitions[p].id, &lo, &hi, 10000) !=
          RD_KAFKA_RESP_ERR_NO_ERROR) {
        Die("watermarks failed");
      }
      sum += hi;
    }
  }
  return sum;
}

int Ceiling(int argc, char** argv) {
  auto brokers = Arg(argc, argv, "brokers");
  auto topic = Arg(argc, argv, "topic", "bench.ceiling");
  long long count = IntArg(argc, argv, "count", 100000);
  auto payload_size = static_cast<size_t>(IntArg(argc, argv, "payload", 256));
  long long keys = IntArg(argc, argv, "keys", 10000);
  Counts counts;
  KafkaPtr producer = NewHandle(RD_KAFKA_PRODUCER, brokers, Confs(argc, argv), &counts);
  rd_kafka_t* rk = producer.get();
  std::string payload(payload_size, 'x');
  // Warm up: metadata and producer id, so the timed part measures throughput only.
  rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_VALUE(payload.data(), payload.size()),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
  rd_kafka_flush(rk, 30000);
  counts = {};
  char mid[37] = "00000000-0000-4000-8000-000000000000";
  auto start = Clock::now();
  for (long long i = 0; i < count; ++i) {
    std::string key = "key-" + std::to_string(i % keys);
    std::snprintf(mid + 24, 13, "%012lld", i % 1000000000000LL);
    rd_kafka_headers_t* h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, "message_id", -1, mid, 36);
    while (true) {
      auto err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                   RD_KAFKA_V_KEY(key.data(), key.size()),
                                   RD_KAFKA_V_VALUE(payload.data(), payload.size()), RD_KAFKA_V_HEADERS(h),
                                   RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) Die(std::string("produce: ") + rd_kafka_err2str(err));
      rd_kafka_poll(rk, 1);
    }
    if ((i & 1023) == 0) rd_kafka_poll(rk, 0);
  }
  while (counts.ok + counts.failed < count) rd_kafka_poll(rk, 10);
  double secs = Seconds(Clock::now() - start);
  std::printf("{\"msgs\":%lld,\"failed\":%lld,\"seconds\":%.3f,\"msgs_per_s\":%.0f}\n", counts.ok, counts.failed,
              secs, static_cast<double>(counts.ok) / secs);
  producer.reset();
  return counts.failed == 0 ? 0 : 1;
}

int Offsets(int argc, char** argv) {
  KafkaPtr consumer = NewHandle(RD_KAFKA_CONSUMER, Arg(argc, argv, "brokers"), Confs(argc, argv), nullptr);
  std::printf("%lld\n", SumHighWatermarks(consumer.get(), Arg(argc, argv, "topic")));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (Arg(argc, argv, "brokers").empty()) Die("--brokers is required");
  if (mode == "ceiling") return Ceiling(argc, argv);
  if (mode == "offsets") return Offsets(argc, argv);
  Die("usage: bench-kafka ceiling|offsets --brokers B --topic T ...");
}
