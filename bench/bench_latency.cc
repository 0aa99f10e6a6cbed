// bench-latency: end-to-end latency, commit of outbox.publish -> receipt by a consumer.
//
//   bench-latency --db CONNINFO --brokers B --topic T --rate R --seconds S
//                 [--warmup 2] [--producers 4] [--payload 256] [--keys 1000]
//                 [--step-rate R2 --step-after-s T]
//
// `producers` threads (one connection each) publish R messages/s in total on a fixed
// schedule, one message per transaction unless a thread falls behind (then it publishes
// what is due in one transaction, as a real service would batch). A consumer in the same
// process (so one clock) assigned to every partition of T at its end offset reads the
// records the relay writes. Latency = receipt time - the moment just before COMMIT was
// sent (so it includes the commit itself). The first `warmup` seconds are not counted.
// Prints JSON: count, missing, p50/p90/p99/max in ms, the COMMIT round trip's p50/p99
// (the producer's share of the latency), achieved publish rate.
//
// Rate step (--step-rate R2 --step-after-s T, T < S): R msg/s for the first T seconds,
// then R2 msg/s until S seconds (S is the whole run). The keys above then cover both
// parts (after the warm-up); added keys: step_pre_p99_ms (messages due in [warmup, T)),
// step_p50/p99/max_ms (messages due at T or later), step_missing, and step_catch_up_ms:
// the post-step messages are bucketed by their commit moment (the latency's start) in
// 100 ms windows from the step; a window is slow when its p99 exceeds
// max(20 ms, 3 x step_pre_p99_ms) or one of its messages never arrived; step_catch_up_ms
// is the end of the last slow window, from the step (0 if none). A value close to
// step_post_ms means the relay had not caught up when the stage ended.
// step_window_p99_ms: each window's p99 in order (-1: no message received in it).
#include <endian.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "bench_common.h"

using namespace outbox::bench;

namespace {

constexpr std::uint64_t kMagic = 0x6f75746265ULL;  // marks our payloads

// When message seq is due, in seconds from the epoch: `rate` msg/s for the first
// `step_after` seconds (n1 messages), then `step_rate` msg/s. Without a step, step_after
// covers the whole run and seq / rate is the schedule as before.
struct Schedule {
  double rate = 1000;
  double step_rate = 0;  // 0: no step
  double step_after = 0;
  long long n1 = 0;      // messages before the step
  double DueS(long long seq) const {
    if (step_rate <= 0 || seq < n1) return static_cast<double>(seq) / rate;
    return step_after + static_cast<double>(seq - n1) / step_rate;
  }
};

struct Shared {
  Clock::time_point epoch;
  std::vector<std::atomic<std::int64_t>> commit_ns;  // per seq: ns since epoch, 0 = not yet
  explicit Shared(size_t n) : commit_ns(n) {}
};

struct PgFinish {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct PgClear {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResultPtr = std::unique_ptr<PGresult, PgClear>;

struct KafkaDestroy {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
  void operator()(rd_kafka_topic_t* rkt) const { rd_kafka_topic_destroy(rkt); }
  void operator()(const rd_kafka_metadata_t* md) const { rd_kafka_metadata_destroy(md); }
  void operator()(rd_kafka_topic_partition_list_t* l) const { rd_kafka_topic_partition_list_destroy(l); }
  void operator()(rd_kafka_message_t* m) const { rd_kafka_message_destroy(m); }
};

// Owns r; exits on a failed statement.
PgResultPtr Must(PGconn* c, PGresult* raw) {
  PgResultPtr r{raw};
  auto s = PQresultStatus(r.get());
  if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) Die(PQerrorMessage(c));
  return r;
}

void Producer(const std::string& db, const std::string& topic, int index, int producers, long long total,
              const Schedule& sched, size_t payload_size, long long keys, double warmup, Shared& shared,
              std::atomic<long long>& published, std::vector<double>& commit_ms) {
  std::unique_ptr<PGconn, PgFinish> conn{PQconnectdb(db.c_str())};
  PGconn* c = conn.get();
  if (PQstatus(c) != CONNECTION_OK) Die(PQerrorMessage(c));
  Must(c, PQprepare(c, "pub", "SELECT outbox.publish($1::text, $2::text, $3::bytea)", 0, nullptr));
  std::string payload(payload_size, 'p');
  // Thread `index` owns seqs index, index+producers, ...; seq i is due at sched.DueS(i).
  auto due_at = [&](long long seq) {
    return shared.epoch + std::chrono::nanoseconds(static_cast<long long>(sched.DueS(seq) * 1e9));
  };
  long long next = index;
  while (next < total) {
    auto due = due_at(next);
    std::this_thread::sleep_until(due);
    auto now = Clock::now();
    Must(c, PQexec(c, "BEGIN"));
    std::vector<long long> seqs;
    do {
      std::uint64_t m = htobe64(kMagic), s = htobe64(static_cast<std::uint64_t>(next));
      std::memcpy(payload.data(), &m, 8);
      std::memcpy(payload.data() + 8, &s, 8);
      std::string key = "k" + std::to_string(next % keys);
      const char* params[] = {topic.c_str(), key.c_str(), payload.data()};
      int lengths[] = {0, 0, static_cast<int>(payload.size())};
      int formats[] = {0, 0, 1};
      Must(c, PQexecPrepared(c, "pub", 3, params, lengths, formats, 0));
      seqs.push_back(next);
      next += producers;
    } while (next < total && seqs.size() < 100 && due_at(next) <= now);
    auto t = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - shared.epoch).count();
    for (auto s : seqs) shared.commit_ns[static_cast<size_t>(s)].store(t, std::memory_order_relaxed);
    Must(c, PQexec(c, "COMMIT"));
    auto committed = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - shared.epoch).count();
    if (sched.DueS(seqs.front()) >= warmup) commit_ms.push_back(static_cast<double>(committed - t) / 1e6);
    published += static_cast<long long>(seqs.size());
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto db = Arg(argc, argv, "db");
  auto brokers = Arg(argc, argv, "brokers");
  auto topic = Arg(argc, argv, "topic", "bench");
  double rate = static_cast<double>(IntArg(argc, argv, "rate", 1000));
  double seconds = static_cast<double>(IntArg(argc, argv, "seconds", 10));
  double warmup = static_cast<double>(IntArg(argc, argv, "warmup", 2));
  int producers = static_cast<int>(IntArg(argc, argv, "producers", 4));
  auto payload_size = static_cast<size_t>(std::max<long long>(16, IntArg(argc, argv, "payload", 256)));
  long long keys = IntArg(argc, argv, "keys", 1000);
  Schedule sched;
  sched.rate = rate;
  sched.step_rate = static_cast<double>(IntArg(argc, argv, "step-rate", 0));
  sched.step_after = static_cast<double>(IntArg(argc, argv, "step-after-s", 0));
  bool step = sched.step_rate > 0;
  if (step && (sched.step_after <= 0 || sched.step_after >= seconds)) {
    Die("--step-after-s must be more than 0 and less than --seconds");
  }
  if (!step) sched.step_after = seconds;
  sched.n1 = static_cast<long long>(rate * sched.step_after);
  long long total = sched.n1 + (step ? static_cast<long long>(sched.step_rate * (seconds - sched.step_after)) : 0);

  // Consumer: assigned to every partition at its current end, fetches answered at once.
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  auto set = [&](const char* k, const char* v) {
    if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) Die(err);
  };
  set("bootstrap.servers", brokers.c_str());
  set("group.id", "bench-latency");
  set("enable.auto.commit", "false");
  set("fetch.wait.max.ms", "2");
  set("fetch.error.backoff.ms", "2");
  set("log_level", "3");
  std::unique_ptr<rd_kafka_t, KafkaDestroy> consumer{rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err)};
  if (!consumer) Die(err);  // on success the handle owns conf
  rd_kafka_t* rk = consumer.get();
  rd_kafka_poll_set_consumer(rk);
  const rd_kafka_metadata_t* raw_md = nullptr;
  std::unique_ptr<rd_kafka_topic_t, KafkaDestroy> rkt{rd_kafka_topic_new(rk, topic.c_str(), nullptr)};
  auto metadata_err = rd_kafka_metadata(rk, 0, rkt.get(), &raw_md, 10000);
  std::unique_ptr<const rd_kafka_metadata_t, KafkaDestroy> md{raw_md};
  if (metadata_err || md->topic_cnt != 1 || md->topics[0].partition_cnt == 0) {
    Die("topic " + topic + " not found (run the drain first)");
  }
  std::unique_ptr<rd_kafka_topic_partition_list_t, KafkaDestroy> parts{
      rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt)};
  for (int p = 0; p < md->topics[0].partition_cnt; ++p) {
    int64_t lo = 0, hi = 0;
    int id = md->topics[0].partitions[p].id;
    if (rd_kafka_query_watermark_offsets(rk, topic.c_str(), id, &lo, &hi, 10000)) Die("watermarks failed");
    rd_kafka_topic_partition_list_add(parts.get(), topic.c_str(), id)->offset = hi;
  }
  md.reset();
  rkt.reset();
  if (rd_kafka_assign(rk, parts.get())) Die("assign failed");
  parts.reset();

  Shared shared{static_cast<size_t>(total)};
  shared.epoch = Clock::now() + std::chrono::milliseconds(500);
  std::atomic<long long> published{0};
  std::vector<std::thread> threads;
  std::vector<std::vector<double>> commit_ms(static_cast<size_t>(producers));
  for (int i = 0; i < producers; ++i) {
    threads.emplace_back(Producer, db, topic, i, producers, total, std::cref(sched), payload_size, keys, warmup,
                         std::ref(shared), std::ref(published), std::ref(commit_ms[static_cast<size_t>(i)]));
  }

  std::vector<double> lat_ms;
  std::vector<double> lat_of_seq(step ? static_cast<size_t>(total) : 0, -1.0);  // step mode: per message
  std::vector<char> seen(static_cast<size_t>(total), 0);
  long long received = 0, early = 0;
  bool producers_done = false;
  Clock::time_point give_up{};
  while (received < total) {
    std::unique_ptr<rd_kafka_message_t, KafkaDestroy> m{rd_kafka_consumer_poll(rk, 20)};
    auto now = Clock::now();
    if (!producers_done && published.load() == total) {
      producers_done = true;
      give_up = now + std::chrono::seconds(20);
    }
    if (producers_done && now > give_up) break;
    if (!m) continue;
    if (!m->err && m->len >= 16) {
      std::uint64_t magic, seq;
      std::memcpy(&magic, m->payload, 8);
      std::memcpy(&seq, static_cast<const char*>(m->payload) + 8, 8);
      seq = be64toh(seq);
      if (be64toh(magic) == kMagic && seq < static_cast<std::uint64_t>(total) && !seen[seq]) {
        seen[seq] = 1;
        ++received;
        auto t0 = shared.commit_ns[seq].load(std::memory_order_relaxed);
        auto recv = std::chrono::duration_cast<std::chrono::nanoseconds>(now - shared.epoch).count();
        if (t0 == 0) ++early;  // cannot happen (recorded before COMMIT is sent)
        double ms = static_cast<double>(recv - t0) / 1e6;
        if (sched.DueS(static_cast<long long>(seq)) >= warmup) lat_ms.push_back(ms);
        if (step) lat_of_seq[seq] = ms;
      }
    }
  }
  for (auto& t : threads) t.join();
  double achieved = static_cast<double>(total) /
                    Seconds(Clock::now() - shared.epoch);  // upper bound on elapsed: rate lower bound
  std::vector<double> commits;
  for (auto& v : commit_ms) commits.insert(commits.end(), v.begin(), v.end());
  std::sort(commits.begin(), commits.end());
  std::sort(lat_ms.begin(), lat_ms.end());
  auto pct_of = [](const std::vector<double>& v, double p) {
    if (v.empty()) return -1.0;
    return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
  };
  auto pct = [&](double p) { return pct_of(lat_ms, p); };
  std::printf(
      "{\"rate\":%.0f,\"count\":%zu,\"missing\":%lld,\"p50_ms\":%.2f,\"p90_ms\":%.2f,\"p99_ms\":%.2f,"
      "\"max_ms\":%.2f,\"commit_p50_ms\":%.2f,\"commit_p99_ms\":%.2f,\"transactions\":%zu,"
      "\"achieved_rate_lower_bound\":%.0f,\"early\":%lld",
      rate, lat_ms.size(), total - received, pct(0.5), pct(0.9), pct(0.99), lat_ms.empty() ? -1.0 : lat_ms.back(),
      pct_of(commits, 0.5), pct_of(commits, 0.99), commits.size(), achieved, early);
  if (step) {
    // Pre-step: due in [warmup, step). Post-step: due at the step or later, bucketed by
    // commit moment (ns since the epoch; >= its due time, so >= the step) in 100 ms windows.
    constexpr double kWindowMs = 100;
    const double step_ns = sched.step_after * 1e9;
    std::vector<double> pre, post;
    std::vector<std::vector<double>> windows;
    std::vector<char> window_missing;
    long long post_missing = 0;
    for (long long seq = 0; seq < total; ++seq) {
      double ms = lat_of_seq[static_cast<size_t>(seq)];
      if (seq < sched.n1) {
        if (ms >= 0 && sched.DueS(seq) >= warmup) pre.push_back(ms);
        continue;
      }
      auto t0 = shared.commit_ns[static_cast<size_t>(seq)].load(std::memory_order_relaxed);
      auto w = static_cast<size_t>(std::max(0.0, (static_cast<double>(t0) - step_ns) / 1e6 / kWindowMs));
      if (w >= windows.size()) {
        windows.resize(w + 1);
        window_missing.resize(w + 1, 0);
      }
      if (ms < 0) {
        ++post_missing;
        window_missing[w] = 1;
      } else {
        post.push_back(ms);
        windows[w].push_back(ms);
      }
    }
    std::sort(pre.begin(), pre.end());
    std::sort(post.begin(), post.end());
    double pre_p99 = pct_of(pre, 0.99);
    double threshold = std::max(20.0, 3 * pre_p99);
    double catch_up_ms = 0;
    long long slow_windows = 0;
    for (size_t w = 0; w < windows.size(); ++w) {
      std::sort(windows[w].begin(), windows[w].end());
      if (window_missing[w] || (!windows[w].empty() && pct_of(windows[w], 0.99) > threshold)) {
        catch_up_ms = static_cast<double>(w + 1) * kWindowMs;
        ++slow_windows;
      }
    }
    std::printf(
        ",\"step_rate\":%.0f,\"step_after_s\":%.0f,\"step_post_ms\":%.0f,\"step_pre_count\":%zu,"
        "\"step_pre_p99_ms\":%.2f,\"step_count\":%zu,\"step_missing\":%lld,\"step_p50_ms\":%.2f,"
        "\"step_p99_ms\":%.2f,\"step_max_ms\":%.2f,\"step_threshold_ms\":%.2f,\"step_slow_windows\":%lld,"
        "\"step_catch_up_ms\":%.0f",
        sched.step_rate, sched.step_after, (seconds - sched.step_after) * 1e3, pre.size(), pre_p99, post.size(),
        post_missing, pct_of(post, 0.5), pct_of(post, 0.99), post.empty() ? -1.0 : post.back(), threshold,
        slow_windows, catch_up_ms);
    std::printf(",\"step_window_p99_ms\":[");
    for (size_t w = 0; w < windows.size(); ++w) {
      std::printf("%s%.1f", w ? "," : "", windows[w].empty() ? -1.0 : pct_of(windows[w], 0.99));
    }
    std::printf("]");
  }
  std::printf("}\n");
  rd_kafka_consumer_close(rk);
  consumer.reset();
  return received == total ? 0 : 1;
}
