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
//     The check-back endpoint: GET /check?gid=G answers {"status": "committed" |
//     "rolled_back" | "pending"} from outbox::QueryPrepared. Serves until killed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <outbox/error.h>
#include <outbox/producer.h>
#include <pqxx/pqxx>
#include <string>
#include <thread>

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

std::string PercentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

// The gid query parameter of a request target such as /check?gid=abc&x=1.
std::string GidOf(const std::string& target) {
  auto q = target.find('?');
  if (q == std::string::npos) return {};
  std::string query = target.substr(q + 1);
  size_t pos = 0;
  while (pos <= query.size()) {
    auto amp = query.find('&', pos);
    std::string kv = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    if (kv.rfind("gid=", 0) == 0) return PercentDecode(kv.substr(4));
    if (amp == std::string::npos) break;
    pos = amp + 1;
  }
  return {};
}

void Answer(int fd, int status, const std::string& body) {
  std::string head = "HTTP/1.1 " + std::to_string(status) + (status == 200 ? " OK" : " Error") +
                     "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\nConnection: close\r\n\r\n";
  std::string all = head + body;
  for (size_t off = 0; off < all.size();) {
    auto n = write(fd, all.data() + off, all.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
}

// One request per connection: read the head, answer, close.
void ServeOne(int fd, const std::string& business_db) {
  std::string head;
  char buf[4096];
  while (head.find("\r\n\r\n") == std::string::npos && head.size() < 16384) {
    auto n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    head.append(buf, static_cast<size_t>(n));
  }
  auto sp1 = head.find(' '), sp2 = head.find(' ', sp1 + 1);
  std::string target = sp1 == std::string::npos || sp2 == std::string::npos ? "" : head.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string gid = GidOf(target);
  if (head.rfind("GET ", 0) != 0 || gid.empty()) {
    Answer(fd, 400, R"({"error":"expected GET /check?gid=..."})");
    close(fd);
    return;
  }
  try {
    pqxx::connection conn{business_db};
    pqxx::work tx{conn};
    // A business transaction may hold the gid for a while: answer "pending" rather than
    // keep the relay waiting past its --check-timeout.
    tx.exec("SET LOCAL lock_timeout = '3s'");
    auto status = outbox::QueryPrepared(tx, gid);
    tx.commit();  // the answer is only true once the barrier row is committed
    Answer(fd, 200, outbox::CheckBackAnswer(status));
  } catch (const pqxx::sql_error& e) {
    if (e.sqlstate() == "55P03") {
      Answer(fd, 200, R"({"status":"pending"})");
    } else {
      std::cerr << "check-back gid=" << gid << " failed: " << e.what() << "\n";
      Answer(fd, 500, R"({"error":"database error"})");
    }
  } catch (const std::exception& e) {
    std::cerr << "check-back gid=" << gid << " failed: " << e.what() << "\n";
    Answer(fd, 500, R"({"error":"database error"})");
  }
  close(fd);
}

int Serve(const std::map<std::string, std::string>& f) {
  const std::string business_db = Need(f, "business-db");
  std::string listen_on = Need(f, "listen");
  auto colon = listen_on.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("--listen: expected HOST:PORT");
  {
    pqxx::connection conn{business_db};
    pqxx::work tx{conn};
    outbox::EnsureBarrierTable(tx);
    tx.commit();
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(listen_on.substr(colon + 1))));
  if (inet_pton(AF_INET, listen_on.substr(0, colon).c_str(), &addr.sin_addr) != 1) {
    throw std::runtime_error("--listen: expected an IPv4 address");
  }
  if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(lfd, 64) != 0) {
    throw std::runtime_error(std::string("cannot listen on ") + listen_on + ": " + std::strerror(errno));
  }
  std::cout << "listening on " << listen_on << std::endl;
  while (true) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::thread([fd, business_db] { ServeOne(fd, business_db); }).detach();
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string cmd = argc > 1 ? argv[1] : "";
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
