// bench-new-topic: how long the first record to a topic the relay has not produced to
// yet takes, against a record to a topic it knows (issue 16, item 2).
//
//   bench-new-topic --db CONNINFO [--rounds 10] [--gap-ms 300] [--known-topic bench]
//                   [--prefix new-topic]
//
// A relay must be running on the database (and its Kafka must create topics on first
// use, as dev-kafka does). Each round publishes one message (one transaction) to a topic
// never used before, `<prefix>-<pid>-<round>`, then one to --known-topic, and for each
// polls the outbox every millisecond until the row is gone. The relay deletes a row only
// after Kafka acknowledged it, so "commit -> row gone" is commit -> acknowledgement plus
// the relay's DELETE round trip and at most 1 ms of polling: an upper bound on commit ->
// acknowledgement. Latency starts just before COMMIT is sent. Rounds are --gap-ms plus a
// random 0-1000 ms apart, so that each new topic starts at a different point of
// librdkafka's 1 s topic scan.
// Prints JSON: p50/max (ms) of both, and every new-topic value.
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "bench_common.h"
#include "bench_pg.h"

using namespace outbox::bench;

namespace {

// Publishes one message to `topic` and returns commit -> row gone, in ms.
double OneRecord(PGconn* c, const std::string& topic) {
  Must(c, PQexec(c, "BEGIN"));
  const char* params[] = {topic.c_str()};
  auto r = Must(c, PQexecPrepared(c, "pub", 1, params, nullptr, nullptr, 0));
  std::string id = PQgetvalue(r.get(), 0, 0);
  auto t0 = Clock::now();
  Must(c, PQexec(c, "COMMIT"));
  const char* q[] = {id.c_str()};
  auto deadline = t0 + std::chrono::seconds(30);
  while (true) {
    auto left = Must(c, PQexecPrepared(c, "left", 1, q, nullptr, nullptr, 0));
    if (PQntuples(left.get()) == 0) break;
    if (Clock::now() > deadline) Die("row not published within 30 s (is a relay running?)");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return Seconds(Clock::now() - t0) * 1000.0;
}

double Median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  auto db = Arg(argc, argv, "db");
  int rounds = static_cast<int>(IntArg(argc, argv, "rounds", 10));
  if (rounds < 1) Die("--rounds must be at least 1");
  auto gap = std::chrono::milliseconds(IntArg(argc, argv, "gap-ms", 300));
  auto known = Arg(argc, argv, "known-topic", "bench");
  auto prefix = Arg(argc, argv, "prefix", "new-topic");

  std::unique_ptr<PGconn, PgFinish> conn{PQconnectdb(db.c_str())};
  PGconn* c = conn.get();
  if (PQstatus(c) != CONNECTION_OK) Die(PQerrorMessage(c));
  Must(c, PQprepare(c, "pub", "SELECT outbox.publish($1::text, 'k', decode(repeat('ab', 256), 'hex'))::text", 1,
                    nullptr));
  Must(c, PQprepare(c, "left", "SELECT 1 FROM outbox.messages WHERE message_id = $1::uuid", 1, nullptr));

  OneRecord(c, known);  // the known topic is known from here on
  std::vector<double> fresh, warm;
  std::mt19937 rng{static_cast<unsigned>(getpid())};
  std::uniform_int_distribution<int> jitter{0, 999};
  for (int i = 0; i < rounds; ++i) {
    std::this_thread::sleep_for(gap + std::chrono::milliseconds(jitter(rng)));
    fresh.push_back(OneRecord(c, prefix + "-" + std::to_string(getpid()) + "-" + std::to_string(i)));
    std::this_thread::sleep_for(gap);
    warm.push_back(OneRecord(c, known));
  }
  std::string all;
  for (double v : fresh) all += (all.empty() ? "" : ",") + std::to_string(v);
  std::printf("{\"rounds\":%d,\"new_topic_p50_ms\":%.2f,\"new_topic_max_ms\":%.2f,\"known_topic_p50_ms\":%.2f,"
              "\"known_topic_max_ms\":%.2f,\"new_topic_ms\":[%s]}\n",
              rounds, Median(fresh), *std::max_element(fresh.begin(), fresh.end()), Median(warm),
              *std::max_element(warm.begin(), warm.end()), all.c_str());
  return 0;
}
