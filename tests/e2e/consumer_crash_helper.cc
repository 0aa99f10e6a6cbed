// Test program for consumer_crash_test: runs an outbox::Consumer whose handler records
// each message in table `effects`, printing the library's log lines to stdout.
//   consumer_crash_helper DB BROKERS TOPIC GROUP [KILL_AFTER_COMMIT_N [BATCH [KILL_IN_HANDLER_N]]]
// With KILL_AFTER_COMMIT_N (0 = never), the process raises SIGKILL right after the N-th
// message's database commit, before its offset commit. BATCH sets batch_max_records
// (batches wait up to 1 s to fill). KILL_IN_HANDLER_N raises SIGKILL inside the N-th
// handler call, before its transaction commits. SIGTERM stops it cleanly (exit 0).
#include <outbox/consumer.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "consumer_test_access.h"

namespace {

outbox::Consumer* g_consumer = nullptr;

void OnTerm(int) {
  if (g_consumer) g_consumer->Stop();  // async-signal-safe: an atomic store
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::cerr << "usage: consumer_crash_helper DB BROKERS TOPIC GROUP [KILL_AFTER_COMMIT_N [BATCH "
                 "[KILL_IN_HANDLER_N]]]\n";
    return 2;
  }
  int kill_after = argc > 5 ? std::atoi(argv[5]) : 0;
  int batch = argc > 6 ? std::atoi(argv[6]) : 1;
  int kill_in_handler = argc > 7 ? std::atoi(argv[7]) : 0;
  outbox::ConsumerOptions o;
  o.conninfo = argv[1];
  o.brokers = argv[2];
  o.topics = {argv[3]};
  o.group = argv[4];
  o.kafka_consumer = {{"session.timeout.ms", "6000"},
                      {"heartbeat.interval.ms", "500"},
                      {"fetch.wait.max.ms", "10"}};
  o.poll_timeout = std::chrono::milliseconds(50);
  o.log = [](outbox::LogLevel, const std::string& line) { std::cout << line << std::endl; };
  o.batch_max_records = batch;
  if (batch > 1) o.batch_max_wait = std::chrono::milliseconds(1000);
  int commits = 0;
  int calls = 0;
  try {
    outbox::Consumer consumer{o, [&](const outbox::Message& m, pqxx::work& tx) {
                                if (kill_in_handler > 0 && ++calls == kill_in_handler) {
                                  std::cout << "killed in handler message_id=" << m.message_id << std::endl;
                                  raise(SIGKILL);
                                }
                                tx.exec_params(
                                    "INSERT INTO effects (message_id, payload) VALUES ($1, $2)",
                                    m.message_id, m.payload);
                              }};
    outbox::internal::ConsumerTestAccess::SetAfterCommit(consumer, [&](const outbox::Message& m) {
      std::cout << "committed message_id=" << m.message_id << std::endl;
      if (kill_after > 0 && ++commits == kill_after) raise(SIGKILL);
    });
    g_consumer = &consumer;
    struct sigaction sa {};
    sa.sa_handler = OnTerm;
    sigaction(SIGTERM, &sa, nullptr);
    std::cout << "running" << std::endl;
    consumer.Run();
    g_consumer = nullptr;
  } catch (const std::exception& e) {
    std::cerr << "consumer_crash_helper: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
