#include "http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <stdexcept>

namespace outbox::test {
namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string Trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t");
  auto e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

void SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

// True when the peer closed its side (or the socket failed).
bool PeerGone(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLERR)) return true;
  char c;
  return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

}  // namespace

std::string RecordedRequest::Header(const std::string& name) const {
  auto it = headers.find(Lower(name));
  return it == headers.end() ? "" : it->second;
}

HttpServer::HttpServer(Policy policy) : policy_(std::move(policy)) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw std::runtime_error("HttpServer: socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listen_fd_, 128) != 0) {
    close(listen_fd_);
    throw std::runtime_error(std::string("HttpServer: bind/listen failed: ") + std::strerror(errno));
  }
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

HttpServer::~HttpServer() {
  {
    std::lock_guard<std::mutex> lock{mu_};
    stopping_ = true;
  }
  released_cv_.notify_all();
  acceptor_.join();
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> lock{mu_};
    workers.swap(workers_);
  }
  for (auto& t : workers) t.join();
  close(listen_fd_);
}

std::string HttpServer::Url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path;
}

void HttpServer::SetPolicy(Policy policy) {
  std::lock_guard<std::mutex> lock{mu_};
  policy_ = std::move(policy);
}

std::vector<RecordedRequest> HttpServer::Requests() const {
  std::lock_guard<std::mutex> lock{mu_};
  return requests_;
}

int HttpServer::RequestCount() const {
  std::lock_guard<std::mutex> lock{mu_};
  return static_cast<int>(requests_.size());
}

int HttpServer::Held() const {
  std::lock_guard<std::mutex> lock{mu_};
  return held_;
}

int HttpServer::MaxConcurrent() const {
  std::lock_guard<std::mutex> lock{mu_};
  return max_open_;
}

void HttpServer::ReleaseHeld() {
  {
    std::lock_guard<std::mutex> lock{mu_};
    ++release_generation_;
  }
  released_cv_.notify_all();
}

Policy HttpServer::Always(int status) {
  return [status](const RecordedRequest&) { return Reply{status, status / 100 == 2 ? "ok" : "no", false}; };
}

Policy HttpServer::FailFirst(int n, int fail_status) {
  return [n, fail_status](const RecordedRequest& r) {
    return r.index < n ? Reply{fail_status, "try again", false} : Reply{200, "ok", false};
  };
}

Policy HttpServer::HoldAll(int status_on_release) {
  return [status_on_release](const RecordedRequest&) { return Reply{status_on_release, "late", true}; };
}

void HttpServer::AcceptLoop() {
  while (true) {
    {
      std::lock_guard<std::mutex> lock{mu_};
      if (stopping_) return;
    }
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 20) <= 0) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard<std::mutex> lock{mu_};
    workers_.emplace_back([this, fd] {
      Serve(fd);
      close(fd);
    });
  }
}

void HttpServer::Serve(int fd) {
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string data;
  char buf[8192];
  size_t head_end;
  while ((head_end = data.find("\r\n\r\n")) == std::string::npos) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    data.append(buf, static_cast<size_t>(n));
  }
  RecordedRequest req;
  std::string head = data.substr(0, head_end);
  size_t line_end = head.find("\r\n");
  std::string request_line = head.substr(0, line_end);
  auto sp1 = request_line.find(' ');
  auto sp2 = request_line.find(' ', sp1 + 1);
  req.method = request_line.substr(0, sp1);
  req.target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
  size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    size_t eol = head.find("\r\n", pos);
    if (eol == std::string::npos) eol = head.size();
    std::string line = head.substr(pos, eol - pos);
    auto colon = line.find(':');
    if (colon != std::string::npos) req.headers[Lower(line.substr(0, colon))] = Trim(line.substr(colon + 1));
    pos = eol + 2;
  }
  req.arrived = std::chrono::steady_clock::now();
  size_t length = req.headers.count("content-length") ? std::stoul(req.headers["content-length"]) : 0;
  req.body = data.substr(head_end + 4);
  while (req.body.size() < length) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    req.body.append(buf, static_cast<size_t>(n));
  }

  Reply reply;
  {
    std::unique_lock<std::mutex> lock{mu_};
    req.index = static_cast<int>(requests_.size());
    requests_.push_back(req);
    max_open_ = std::max(max_open_, ++open_);
    Policy policy = policy_;
    lock.unlock();
    reply = policy(req);
    lock.lock();
    if (reply.hold) {
      ++held_;
      unsigned generation = release_generation_;
      while (!stopping_ && release_generation_ == generation) {
        released_cv_.wait_for(lock, std::chrono::milliseconds(20));
        lock.unlock();
        bool gone = PeerGone(fd);
        lock.lock();
        if (gone) break;
      }
      --held_;
    }
    --open_;
  }
  std::string response = "HTTP/1.1 " + std::to_string(reply.status) + " Status\r\nContent-Type: text/plain\r\n"
                         "Content-Length: " + std::to_string(reply.body.size()) +
                         "\r\nConnection: close\r\n\r\n" + reply.body;
  SendAll(fd, response);
}

}  // namespace outbox::test
