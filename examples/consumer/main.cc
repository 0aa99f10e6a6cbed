// outbox-example-consumer: applies "order placed" events to a local table exactly once.
//
//   outbox-example-consumer --db "host=... dbname=shop" --brokers localhost:9092
//                           --group billing --topic orders [--unordered]
//
// The database must have the outbox schema (`outbox-relay migrate --db ...`). Each record
// becomes one row of example_orders, in the same transaction as its inbox row; a record
// whose payload is "reject" is refused as permanent and ends up in orders.dlq.
// Run it as a consumer login (granted outbox_consumer): the schema owner creates
// example_orders and grants SELECT, INSERT on it; the program creates the table itself
// only when it is missing (which needs CREATE on the schema).
#include <outbox/consumer.h>
#include <signal.h>

#include <cstring>
#include <iostream>
#include <string>

namespace {

outbox::Consumer* g_consumer = nullptr;

void OnSignal(int) {
  if (g_consumer) g_consumer->Stop();  // only an atomic store: fine in a signal handler
}

int Usage(std::ostream& out, int code) {
  out << "usage: outbox-example-consumer --db CONNINFO --brokers HOST:PORT[,...] --group GROUP "
         "--topic TOPIC [--topic TOPIC...] [--unordered]\n";
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  outbox::ConsumerOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (arg == "--help" || arg == "-h") return Usage(std::cout, 0);
    if (arg == "--db") {
      options.conninfo = value();
    } else if (arg == "--brokers") {
      options.brokers = value();
    } else if (arg == "--group") {
      options.group = value();
    } else if (arg == "--topic") {
      options.topics.push_back(value());
    } else if (arg == "--unordered") {
      options.mode = outbox::RetryMode::kUnordered;
    } else {
      std::cerr << "unknown argument: " << arg << "\n";
      return Usage(std::cerr, 2);
    }
  }
  // The application owns logging; the library only hands us lines.
  options.log = [](outbox::LogLevel level, const std::string& line) {
    if (level != outbox::LogLevel::kDebug) std::clog << line << '\n';
  };
  options.retry.initial_delay = std::chrono::milliseconds(500);
  options.retry.max_attempts = 5;

  try {
    {
      pqxx::connection conn{options.conninfo};
      pqxx::work tx{conn};
      // Create the table only when it is missing: CREATE TABLE IF NOT EXISTS needs CREATE on
      // the schema even when the table exists, which a least-privilege consumer login lacks.
      if (tx.exec1("SELECT to_regclass('example_orders') IS NULL")[0].as<bool>()) {
        tx.exec(
            "CREATE TABLE example_orders (message_id text PRIMARY KEY, order_key text, "
            "body text, "
            "received_at timestamptz NOT NULL DEFAULT now())");
      }
      tx.commit();
    }
    outbox::Consumer consumer{options, [](const outbox::Message& m, pqxx::work& tx) {
                                if (m.payload && *m.payload == "reject") {
                                  throw outbox::PermanentError("order rejected by validation");
                                }
                                tx.exec_params(
                                    "INSERT INTO example_orders (message_id, order_key, body) "
                                    "VALUES ($1, $2, $3)",
                                    m.message_id, m.key, m.payload);
                              }};
    g_consumer = &consumer;
    struct sigaction sa {};
    sa.sa_handler = OnSignal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    consumer.Run();
    g_consumer = nullptr;
    auto s = consumer.stats();
    std::clog << "stopped handled=" << s.handled << " duplicates=" << s.duplicates
              << " dead_lettered=" << s.dead_lettered << '\n';
  } catch (const outbox::Error& e) {
    std::cerr << "outbox-example-consumer: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "outbox-example-consumer: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
