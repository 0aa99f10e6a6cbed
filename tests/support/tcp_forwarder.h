#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace outbox::test {

class NetNamespace;

// Makes ports of this host's 127.0.0.1 reachable at the same 127.0.0.1:port inside a
// NetNamespace: for each port it listens inside the namespace (a socket made there with
// setns(2)) and forwards every connection, both ways, to 127.0.0.1:port here. This is how
// a relay inside a namespace reaches the librdkafka mock cluster, whose brokers listen on
// 127.0.0.1 and advertise 127.0.0.1:port in their metadata.
//
// Stall() stops moving bytes (both ways) and accepting connections, keeping every
// connection open: to the relay inside, Kafka went silent (a cut between the relay and
// Kafka only, while its PostgreSQL link is up). Resume() moves them again. Forwarding runs
// on its own thread; the destructor stops it and closes every connection. Destroy it
// before its NetNamespace (its sockets keep the namespace alive).
class TcpForwarder {
 public:
  // Throws std::runtime_error if a port cannot be listened on inside the namespace.
  TcpForwarder(const NetNamespace& ns, const std::vector<int>& ports);
  ~TcpForwarder();
  TcpForwarder(const TcpForwarder&) = delete;
  TcpForwarder& operator=(const TcpForwarder&) = delete;

  void Stall();
  void Resume();
  // Connections accepted so far (the relay inside did connect).
  int accepted() const { return accepted_.load(); }

 private:
  struct Listener {
    int fd;
    int port;
  };
  void Loop();
  void Wake();

  std::vector<Listener> listeners_;
  int wake_fd_ = -1;  // eventfd: stall, resume, stop
  std::atomic<bool> stalled_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

// host:port entries of a broker list ("127.0.0.1:9092,localhost:9093") as ports; throws
// std::runtime_error naming the entry if a host is not loopback (only those can be
// forwarded into a namespace).
std::vector<int> LoopbackPorts(const std::vector<std::string>& brokers);

}  // namespace outbox::test
