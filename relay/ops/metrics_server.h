#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace httplib { class Server; }
namespace prometheus { class Registry; }

namespace outbox::relay {

// The operations endpoint on HOST:PORT (cpp-httplib):
//   GET /metrics  the registry in Prometheus text format
//   GET /healthz  200 "ok" while the process serves
//   GET /readyz   200 "ready" once SetReady(true), else 503 "not ready[: reason]"
//   anything else 404
// HOST may be a name, an IPv4 address, [IPv6] or empty (every interface); PORT 0 picks a
// free port (see port()). Two threads serve (scrapes are rare and tiny), one request per
// connection. Throws RuntimeError if the address cannot be resolved or bound.
class MetricsServer {
 public:
  MetricsServer(const std::string& host_port, std::shared_ptr<prometheus::Registry> registry);
  // Stops serving and joins its threads.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  void SetReady(bool ready) { ready_.store(ready); }
  struct ReadyState {
    bool ready = false;
    std::string reason;  // why not, for the response body
  };
  // Alternatively, asks `check` at each /readyz request (must be thread-safe).
  void SetReadyCheck(std::function<ReadyState()> check);
  // The port actually bound (useful with port 0).
  int port() const { return port_; }

 private:
  ReadyState Ready();

  std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> ready_{false};
  std::mutex mu_;
  std::function<ReadyState()> ready_check_;  // Guarded by mu_.
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::atomic<bool> serving_done_{false};  // the listen loop returned
  std::thread thread_;                     // last: starts after every member above exists
};

}  // namespace outbox::relay
