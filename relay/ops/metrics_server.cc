#include "ops/metrics_server.h"

#include <httplib.h>
#include <netdb.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "common/errors.h"

namespace outbox::relay {
namespace {

// Read/write deadline of a request: a client that connects and stalls holds a thread
// this long, no longer.
constexpr time_t kReadTimeoutSeconds = 2;
constexpr time_t kWriteTimeoutSeconds = 2;
// Connections served at once: dozens of slow or idle clients (a port scan, a stuck
// scraper) must not delay /healthz; idle threads cost almost nothing.
constexpr size_t kServingThreads = 64;

}  // namespace

MetricsServer::MetricsServer(const std::string& host_port, std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)), server_(std::make_unique<httplib::Server>()) {
  auto colon = host_port.rfind(':');
  if (colon == std::string::npos) throw RuntimeError("--metrics-listen: expected HOST:PORT, got '" + host_port + "'");
  std::string host = host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    port = std::stoi(host_port.substr(colon + 1));
  } catch (const std::exception&) {
    throw RuntimeError("--metrics-listen: bad port in '" + host_port + "'");
  }

  server_->new_task_queue = [] { return new httplib::ThreadPool(kServingThreads); };
  // Plain SO_REUSEADDR (httplib's default adds SO_REUSEPORT, which would let a second
  // process bind the same port silently instead of failing).
  server_->set_socket_options([](int fd) {
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  });
  server_->set_keep_alive_max_count(1);  // answers carry Connection: close
  server_->set_read_timeout(kReadTimeoutSeconds, 0);
  server_->set_write_timeout(kWriteTimeoutSeconds, 0);
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    prometheus::TextSerializer serializer;
    res.set_content(serializer.Serialize(registry_->Collect()), "text/plain; version=0.0.4");
  });
  server_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
  server_->Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    auto state = Ready();
    res.status = state.ready ? 200 : 503;
    res.set_content(state.ready ? std::string("ready\n")
                                : "not ready" + (state.reason.empty() ? "" : ": " + state.reason) + "\n",
                    "text/plain");
  });
  server_->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404) res.set_content("not found\n", "text/plain");
  });

  errno = 0;
  // AI_PASSIVE: an empty HOST means every interface. Port 0: the kernel picks one.
  if (port == 0) {
    port_ = server_->bind_to_any_port(host, AI_PASSIVE);
  } else {
    port_ = server_->bind_to_port(host, port, AI_PASSIVE) ? port : -1;
  }
  if (port_ <= 0) {
    throw RuntimeError("--metrics-listen: cannot listen on " + host_port +
                       (errno != 0 ? std::string(": ") + std::strerror(errno) : std::string()));
  }
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    serving_done_.store(true);
  });
}

MetricsServer::~MetricsServer() {
  // httplib's stop() acts only once the listen loop runs: wait for it to start (it does
  // at once), unless it has already ended.
  while (!server_->is_running() && !serving_done_.load()) std::this_thread::yield();
  server_->stop();
  thread_.join();
}

void MetricsServer::SetReadyCheck(std::function<ReadyState()> check) {
  std::lock_guard lock{mu_};
  ready_check_ = std::move(check);
}

MetricsServer::ReadyState MetricsServer::Ready() {
  std::lock_guard lock{mu_};
  if (ready_check_) return ready_check_();
  return {ready_.load(), ""};
}

}  // namespace outbox::relay
