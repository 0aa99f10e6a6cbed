#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace outbox::test {

// One request as the server received it.
struct RecordedRequest {
  std::string method;
  std::string target;                          // path and query
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
  std::chrono::steady_clock::time_point arrived;  // when its head was read
  int index = 0;                                  // 0-based arrival order

  // The header's value, or "" when absent (name in any case).
  std::string Header(const std::string& name) const;
};

// How to answer one request.
struct Reply {
  int status = 200;
  std::string body = "ok";
  // Keep the request open (no answer) until ReleaseHeld(), the server's destruction, or
  // the client going away; then answer with status/body.
  bool hold = false;
};

using Policy = std::function<Reply(const RecordedRequest&)>;

// A tiny scriptable HTTP/1.1 server on 127.0.0.1 for tests: one thread per connection,
// one request per connection (answers carry Connection: close). Records every request.
class HttpServer {
 public:
  explicit HttpServer(Policy policy = Always(200));
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  // http://127.0.0.1:PORT + path
  std::string Url(const std::string& path = "/") const;

  void SetPolicy(Policy policy);
  std::vector<RecordedRequest> Requests() const;
  int RequestCount() const;
  // Requests held open right now (clients that went away are not counted).
  int Held() const;
  // Most requests open at the same time so far.
  int MaxConcurrent() const;
  // Answers every request held now.
  void ReleaseHeld();

  // Policies.
  static Policy Always(int status);
  // The first n requests get fail_status, later ones 200.
  static Policy FailFirst(int n, int fail_status = 500);
  // Holds every request open.
  static Policy HoldAll(int status_on_release = 200);

 private:
  void AcceptLoop();
  void Serve(int fd);

  int listen_fd_ = -1;
  int port_ = 0;
  mutable std::mutex mu_;
  std::condition_variable released_cv_;
  // Guarded by mu_: policy_, requests_, held_, open_, max_open_, release_generation_,
  // stopping_, workers_.
  Policy policy_;
  std::vector<RecordedRequest> requests_;
  int held_ = 0;
  int open_ = 0;
  int max_open_ = 0;
  unsigned release_generation_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  std::thread acceptor_;
};

}  // namespace outbox::test
