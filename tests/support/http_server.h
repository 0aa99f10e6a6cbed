#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace httplib { class Server; }

namespace outbox::test {

class Process;

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
  // Keep the request open (no answer) until ReleaseHeld() or the server's destruction;
  // then answer with status/body (to nobody if the client went away meanwhile).
  bool hold = false;
};

using Policy = std::function<Reply(const RecordedRequest&)>;

// A scriptable HTTP server (cpp-httplib) on 127.0.0.1, port chosen by the kernel (no
// free-port race): one thread per connection, one request per connection (answers carry
// Connection: close). Records every request, whatever its method and path.
class HttpServer {
 public:
  explicit HttpServer(Policy policy = Always(200));
  // Answers the requests still held, stops accepting and joins every thread.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  // http://127.0.0.1:PORT + path
  std::string Url(const std::string& path = "/") const;

  void SetPolicy(Policy policy);
  std::vector<RecordedRequest> Requests() const;
  int RequestCount() const;
  // Requests held open right now.
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
  Reply Handle(RecordedRequest req);

  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  mutable std::mutex mu_;
  std::condition_variable released_cv_;
  // Guarded by mu_: policy_, requests_, held_, open_, max_open_, release_generation_,
  // stopping_.
  Policy policy_;
  std::vector<RecordedRequest> requests_;
  int held_ = 0;
  int open_ = 0;
  int max_open_ = 0;
  unsigned release_generation_ = 0;
  bool stopping_ = false;
  std::atomic<bool> serving_done_{false};  // the listen loop returned
  std::thread listener_;                   // last: starts after every member above exists
};

// What an HTTP GET got: status 0 when nothing answered (error says why).
struct HttpAnswer {
  int status = 0;
  std::string body;
  std::string error;
};
// GET http://127.0.0.1:port + path (cpp-httplib's client), 5 s timeouts.
HttpAnswer HttpGet(int port, const std::string& path);

// A sample without labels in a Prometheus text exposition (`name value`); -1 if absent.
double MetricSample(const std::string& metrics, const std::string& name);

// The port an outbox-relay process bound for --metrics-listen HOST:0, read from its log
// line "serving /metrics /healthz /readyz port=N"; 0 if it did not appear within
// `deadline` (scaled).
int WaitForMetricsPort(const Process& process, std::chrono::milliseconds deadline = std::chrono::seconds(30));

}  // namespace outbox::test
