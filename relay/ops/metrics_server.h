#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <memory>
#include <string>
#include <thread>

namespace prometheus { class Registry; }

namespace outbox::relay {

// A small HTTP/1.1 server on HOST:PORT for operations:
//   GET /metrics  the registry in Prometheus text format
//   GET /healthz  200 "ok" while the process serves
//   GET /readyz   200 "ready" once SetReady(true), else 503 "not ready"
// One thread serves requests one at a time (scrapes are rare and tiny).
// Throws RuntimeError if the address cannot be bound.
class MetricsServer {
 public:
  MetricsServer(const std::string& host_port, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  void SetReady(bool ready) { ready_.store(ready); }
  // Alternatively, asks `check` at each /readyz request (must be thread-safe).
  void SetReadyCheck(std::function<bool()> check);
  // The port actually bound (useful with port 0).
  int port() const { return port_; }

 private:
  void Serve();

  std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> ready_{false};
  std::mutex mu_;
  std::function<bool()> ready_check_;  // Guarded by mu_.
  std::atomic<bool> stopping_{false};
  int listen_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace outbox::relay
