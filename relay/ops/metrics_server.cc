#include "ops/metrics_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "common/errors.h"

namespace outbox::relay {
namespace {

void SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

std::string Response(int code, const char* reason, const std::string& type, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(code) + " " + reason + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

MetricsServer::MetricsServer(const std::string& host_port, std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)) {
  auto colon = host_port.rfind(':');
  std::string host = host_port.substr(0, colon);
  std::string port = host_port.substr(colon + 1);
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res) != 0 || !res) {
    throw RuntimeError("--metrics-listen: cannot resolve '" + host_port + "'");
  }
  listen_fd_ = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (listen_fd_ < 0 || bind(listen_fd_, res->ai_addr, res->ai_addrlen) != 0 || listen(listen_fd_, 16) != 0) {
    std::string why = std::strerror(errno);
    freeaddrinfo(res);
    if (listen_fd_ >= 0) close(listen_fd_);
    throw RuntimeError("--metrics-listen: cannot listen on " + host_port + ": " + why);
  }
  freeaddrinfo(res);
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                      : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  thread_ = std::thread([this] { Serve(); });
}

MetricsServer::~MetricsServer() {
  stopping_.store(true);
  if (thread_.joinable()) thread_.join();
  close(listen_fd_);
}

void MetricsServer::SetReadyCheck(std::function<bool()> check) {
  std::lock_guard lock{mu_};
  ready_check_ = std::move(check);
}

void MetricsServer::Serve() {
  while (!stopping_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string request;
    char buf[2048];
    while (request.find("\r\n\r\n") == std::string::npos && request.size() < 16384) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    std::string line = request.substr(0, request.find("\r\n"));
    std::string path;
    if (line.rfind("GET ", 0) == 0) path = line.substr(4, line.find(' ', 4) - 4);
    path = path.substr(0, path.find('?'));
    if (path == "/metrics") {
      prometheus::TextSerializer serializer;
      SendAll(fd, Response(200, "OK", "text/plain; version=0.0.4", serializer.Serialize(registry_->Collect())));
    } else if (path == "/healthz") {
      SendAll(fd, Response(200, "OK", "text/plain", "ok\n"));
    } else if (path == "/readyz") {
      bool ready = ready_.load();
      {
        std::lock_guard lock{mu_};
        if (ready_check_) ready = ready_check_();
      }
      SendAll(fd, ready ? Response(200, "OK", "text/plain", "ready\n")
                                : Response(503, "Service Unavailable", "text/plain", "not ready\n"));
    } else {
      SendAll(fd, Response(404, "Not Found", "text/plain", "not found\n"));
    }
    close(fd);
  }
}

}  // namespace outbox::relay
