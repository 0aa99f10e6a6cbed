// Half messages end to end, for a service whose business data is NOT in the outbox
// database (docs/half-messages.md).
//
//   outbox-example-half-message order --outbox-db C1 --business-db C2 --gid G
//       --topic T --check-url http://127.0.0.1:8080/check [--amount N]
//       [--stop-before-commit] [--fail-local]
//     1. outbox.prepare (outbox database), 2. the local transaction that inserts the
//     order and the commit barrier row (business database), 3. outbox.commit_prepared.
//     --stop-before-commit exits after step 2 (a crash: the relay's check-back decides);
//     --fail-local rolls step 2 back and exits without step 3 (a crash after a failure).
//
//   outbox-example-half-message serve --business-db C2 --listen 127.0.0.1:8080
//     The check-back endpoint (cpp-httplib): GET /check?gid=G answers {"status":
//     "committed" | "rolled_back" | "pending"} from outbox::AnswerCheckBack. Port 0 picks
//     a free port; prints "listening on HOST:PORT". Serves until killed.
#include <httplib.h>

#include <iostream>
#include <map>
#include <outbox/error.h>
#include <outbox/producer.h>
#include <pqxx/pqxx>
#include <string>

namespace {

std::map<std::string, std::string> ParseFlags(int argc, char** argv, int first) {
  std::map<std::string, std::string> flags;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) throw std::runtime_error("unexpected argument " + a);
    if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
      flags[a.substr(2)] = argv[++i];
    } else {
      flags[a.substr(2)] = "true";
    }
  }
  return flags;
}

std::string Need(const std::map<std::string, std::string>& f, const std::string& name) {
  auto it = f.find(name);
  if (it == f.end() || it->second.empty()) throw std::runtime_error("--" + name + " is required");
  return it->second;
}

int Order(const std::map<std::string, std::string>& f) {
  const std::string gid = Need(f, "gid");
  const int amount = f.count("amount") ? std::stoi(f.at("amount")) : 100;
  pqxx::connection outbox{Need(f, "outbox-db")};
  pqxx::connection business{Need(f, "business-db")};
  {
    pqxx::work tx{business};
    outbox::EnsureBarrierTable(tx);
    tx.exec("CREATE TABLE IF NOT EXISTS orders (gid text PRIMARY KEY, amount integer NOT NULL)");
    tx.commit();
  }
  // 1. The half message: stored, not published.
  {
    pqxx::work tx{outbox};
    outbox::Prepare(tx, gid, Need(f, "topic"), gid, "order " + gid + " amount " + std::to_string(amount),
                    {{"type", "order_created"}}, Need(f, "check-url"));
    tx.commit();
  }
  // 2. The local transaction, with the barrier row that check-backs read.
  try {
    pqxx::work tx{business};
    tx.exec_params("INSERT INTO orders (gid, amount) VALUES ($1, $2)", gid, amount);
    outbox::WriteCommitBarrier(tx, gid);
    if (f.count("fail-local")) throw std::runtime_error("simulated business failure");
    tx.commit();
  } catch (const std::exception& e) {
    std::cerr << "local transaction failed: " << e.what() << "\n";
    if (f.count("fail-local")) return 0;  // a crash right here: check-back answers rolled_back
    pqxx::work tx{outbox};
    outbox::RollbackPrepared(tx, gid);
    tx.commit();
    return 1;
  }
  if (f.count("stop-before-commit")) return 0;  // a crash right here: check-back answers committed
  // 3. Publish.
  pqxx::work tx{outbox};
  std::cout << "published message_id=" << outbox::CommitPrepared(tx, gid) << "\n";
  tx.commit();
  return 0;
}

int Serve(const std::map<std::string, std::string>& f) {
  const std::string business_db = Need(f, "business-db");
  const std::string listen_on = Need(f, "listen");
  auto colon = listen_on.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("--listen: expected HOST:PORT");
  const std::string host = listen_on.substr(0, colon);
  const int port = std::stoi(listen_on.substr(colon + 1));
  {
    pqxx::connection conn{business_db};
    pqxx::work tx{conn};
    outbox::EnsureBarrierTable(tx);
    tx.commit();
  }
  httplib::Server server;
  // One request per connection, on more threads than the relay sends checks at once
  // (--check-concurrency, 16): an answer may wait up to lock_timeout (3 s) for a lock.
  server.new_task_queue = [] { return new httplib::ThreadPool(32); };
  server.set_keep_alive_max_count(1);
  server.Get("/check", [&business_db](const httplib::Request& req, httplib::Response& res) {
    // A connection per request keeps the example short; a busy service keeps a pool.
    auto reply = outbox::AnswerCheckBack(business_db, req.get_param_value("gid"));
    if (reply.http_status == 500) std::cerr << "check-back failed: " << reply.error << "\n";
    res.status = reply.http_status;
    res.set_content(reply.body, "application/json");
  });
  const int bound = port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) throw std::runtime_error("cannot listen on " + listen_on);
  std::cout << "listening on " << host << ":" << bound << std::endl;
  return server.listen_after_bind() ? 0 : 1;  // serves until killed
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      std::cout << "usage: outbox-example-half-message order --outbox-db C1 --business-db C2 --gid G --topic T\n"
                   "         --check-url URL [--amount N] [--stop-before-commit] [--fail-local]\n"
                   "       outbox-example-half-message serve --business-db C2 --listen HOST:PORT\n"
                   "(docs/half-messages.md; the top of examples/half_message/main.cc explains each step)\n";
      return 0;
    }
    auto flags = ParseFlags(argc, argv, 2);
    if (cmd == "order") return Order(flags);
    if (cmd == "serve") return Serve(flags);
    std::cerr << "usage: outbox-example-half-message order|serve [options] (see the top of main.cc)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "outbox-example-half-message: " << e.what() << "\n";
    return 1;
  }
}
