#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

namespace outbox::test {

// A network namespace for partition tests (issue 19): processes started with Command()
// run inside it, and the only way out is one link to this process's namespace (the
// host) through a middle namespace, which Cut() makes drop every packet, both ways:
//
//   host (this process)  ── veth ──  [middle: bridge]  ── veth ──  the namespace
//   host_address() x.x.x.1          Cut(): pfifo limit 0            address() x.x.x.2
//                                   on both of its ports
//
// The packets are dropped in the middle, so neither end's kernel sees a local error:
// both see a network that went silent (a cable cut, a firewall dropping packets), and TCP
// keepalives and timeouts behave as they would between two machines. Connections stay
// open through a cut; Heal() lets packets through again.
//
// Addresses are a private /29 of 198.18.0.0/15 (RFC 2544, for testing; never routed)
// unique on this host: the host end's interface name (obx<N>) claims block N. Nothing is
// routed anywhere else: traffic stays inside the namespaces this object made and the
// host's end of the link. The destructor deletes both namespaces and the link; a
// watchdog does it if the test process dies first.
//
// Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2 (`ip`, `tc`); construction
// throws std::runtime_error naming what is missing: partition tests fail, never skip.
class NetNamespace {
 public:
  NetNamespace();
  ~NetNamespace();
  NetNamespace(const NetNamespace&) = delete;
  NetNamespace& operator=(const NetNamespace&) = delete;

  const std::string& name() const { return name_; }
  const std::string& address() const { return address_; }            // inside
  const std::string& host_address() const { return host_address_; }  // the host's end
  const std::string& network() const { return network_; }            // both, as a CIDR

  // argv to run argv inside the namespace (`ip netns exec NAME argv...`, which execs, so
  // the process id is the program's own).
  std::vector<std::string> Command(const std::vector<std::string>& argv) const;

  // Drops every packet between the namespace and the host, both ways; connections stay
  // open. Heal() lets them through again. Throws std::runtime_error if tc fails.
  void Cut();
  void Heal();
  bool cut() const { return cut_; }

  // Runs fn on the calling thread inside the namespace: sockets fn creates belong to it
  // (and keep working after the thread returns to its own namespace).
  void RunInside(const std::function<void()>& fn) const;

 private:
  void Ip(const std::vector<std::string>& args) const;  // throws with ip's message
  void Cleanup() noexcept;

  std::string name_, middle_, host_link_;
  std::string address_, host_address_, network_;
  pid_t watchdog_ = -1;
  bool cut_ = false;
};

}  // namespace outbox::test
