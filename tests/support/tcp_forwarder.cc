#include "tcp_forwarder.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <list>
#include <stdexcept>

#include "netns.h"

namespace outbox::test {
namespace {

constexpr std::size_t kBufferCap = 1 << 20;  // per direction: stop reading when full

sockaddr_in Loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

void NonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// One forwarded connection: `inner` accepted inside the namespace, `outer` to the host's
// 127.0.0.1. Bytes read from one side wait in a buffer until the other side takes them.
struct Pair {
  int inner = -1, outer = -1;
  std::string to_outer, to_inner;
  bool inner_eof = false, outer_eof = false;
  bool broken = false;
  ~Pair() {
    if (inner >= 0) close(inner);
    if (outer >= 0) close(outer);
  }
};

// Reads what fits into `buf`; false on EOF or error.
bool ReadInto(int fd, std::string& buf, bool& eof) {
  char chunk[65536];
  while (buf.size() < kBufferCap) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n > 0) {
      buf.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) {
      eof = true;
      return true;
    }
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  }
  return true;
}

bool WriteFrom(int fd, std::string& buf) {
  while (!buf.empty()) {
    ssize_t n = send(fd, buf.data(), buf.size(), MSG_NOSIGNAL);
    if (n > 0) {
      buf.erase(0, static_cast<std::size_t>(n));
      continue;
    }
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
  }
  return true;
}

}  // namespace

std::vector<int> LoopbackPorts(const std::vector<std::string>& brokers) {
  std::vector<int> ports;
  for (const auto& b : brokers) {
    auto colon = b.rfind(':');
    std::string host = colon == std::string::npos ? b : b.substr(0, colon);
    if (colon == std::string::npos || (host != "127.0.0.1" && host != "localhost")) {
      throw std::runtime_error("broker " + b +
                               " is not on 127.0.0.1: partition tests reach Kafka from inside a network namespace "
                               "through a forwarder of loopback ports (use the mock cluster, or a broker that "
                               "listens on and advertises 127.0.0.1)");
    }
    ports.push_back(std::stoi(b.substr(colon + 1)));
  }
  return ports;
}

TcpForwarder::TcpForwarder(const NetNamespace& ns, const std::vector<int>& ports) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error("eventfd failed");
  try {
    ns.RunInside([&] {
      for (int port : ports) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) throw std::runtime_error("socket failed inside " + ns.name());
        listeners_.push_back({fd, port});
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        auto addr = Loopback(port);
        if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 64) != 0) {
          throw std::runtime_error("cannot listen on 127.0.0.1:" + std::to_string(port) + " inside " + ns.name() +
                                   ": " + std::strerror(errno));
        }
      }
    });
  } catch (...) {
    for (const auto& l : listeners_) close(l.fd);
    close(wake_fd_);
    throw;
  }
  thread_ = std::thread([this] { Loop(); });
}

TcpForwarder::~TcpForwarder() {
  stopping_.store(true);
  Wake();
  thread_.join();
  for (const auto& l : listeners_) close(l.fd);
  close(wake_fd_);
}

void TcpForwarder::Wake() {
  std::uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
}

void TcpForwarder::Stall() {
  stalled_.store(true);
  Wake();
}

void TcpForwarder::Resume() {
  stalled_.store(false);
  Wake();
}

void TcpForwarder::Loop() {
  std::list<Pair> pairs;
  while (!stopping_.load()) {
    const bool stalled = stalled_.load();
    std::vector<pollfd> fds;
    fds.push_back({wake_fd_, POLLIN, 0});
    if (!stalled) {
      for (const auto& l : listeners_) fds.push_back({l.fd, POLLIN, 0});
      for (auto& p : pairs) {
        short in = 0, out = 0;
        if (!p.inner_eof && p.to_outer.size() < kBufferCap) in |= POLLIN;
        if (!p.to_inner.empty()) in |= POLLOUT;
        if (!p.outer_eof && p.to_inner.size() < kBufferCap) out |= POLLIN;
        if (!p.to_outer.empty()) out |= POLLOUT;
        fds.push_back({p.inner, in, 0});
        fds.push_back({p.outer, out, 0});
      }
    }
    // Stalled: only the wake-up descriptor; bytes wait in the kernel's buffers.
    if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) return;
    if (fds[0].revents & POLLIN) {
      std::uint64_t v;
      (void)!read(wake_fd_, &v, sizeof v);
    }
    if (stalled || stopping_.load() || stalled_.load()) continue;
    std::size_t i = 1;
    for (const auto& l : listeners_) {
      if (fds[i++].revents & POLLIN) {
        while (true) {
          int inner = accept4(l.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (inner < 0) break;
          // Created on this thread, which never entered the namespace: the host's loopback.
          int outer = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          auto addr = Loopback(l.port);
          if (outer < 0 || connect(outer, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            if (outer >= 0) close(outer);
            close(inner);
            continue;
          }
          NonBlocking(outer);
          int one = 1;
          setsockopt(inner, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          setsockopt(outer, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          auto& p = pairs.emplace_back();
          p.inner = inner;
          p.outer = outer;
          ++accepted_;
        }
      }
    }
    // fds[i...] describe the pairs that existed before accepting, in order.
    for (auto it = pairs.begin(); it != pairs.end() && i + 1 < fds.size(); ++it, i += 2) {
      auto& p = *it;
      const auto& fi = fds[i];
      const auto& fo = fds[i + 1];
      if ((fi.revents & (POLLIN | POLLHUP | POLLERR)) && !ReadInto(p.inner, p.to_outer, p.inner_eof)) p.broken = true;
      if ((fo.revents & (POLLIN | POLLHUP | POLLERR)) && !ReadInto(p.outer, p.to_inner, p.outer_eof)) p.broken = true;
      if (!WriteFrom(p.outer, p.to_outer) || !WriteFrom(p.inner, p.to_inner)) p.broken = true;
    }
    // A side that closed (or broke) closes the other once what it sent is passed on.
    pairs.remove_if([](const Pair& p) {
      return p.broken || ((p.inner_eof || p.outer_eof) && p.to_outer.empty() && p.to_inner.empty());
    });
  }
}

}  // namespace outbox::test
