#include "netns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <exception>
#include <filesystem>
#include <stdexcept>

#include "process.h"

namespace outbox::test {
namespace {

constexpr int kBlocks = 16384;  // /29 blocks in 198.18.0.0/15

// Block n of 198.18.0.0/15, host part `host` (1..6).
std::string AddressOf(int block, int host) {
  unsigned v = (198u << 24) | (18u << 16);
  v += static_cast<unsigned>(block) * 8u + static_cast<unsigned>(host);
  return std::to_string(v >> 24) + "." + std::to_string((v >> 16) & 255) + "." + std::to_string((v >> 8) & 255) +
         "." + std::to_string(v & 255);
}

std::string Joined(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

// An owned descriptor (this file only: tests/support does not link the relay).
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

}  // namespace

void NetNamespace::Ip(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {"ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = RunProcess(argv);
  if (r.code != 0) {
    throw std::runtime_error("partition test setup: `" + Joined(argv) + "` failed (exit " + std::to_string(r.code) +
                             "): " + r.err +
                             " (network namespaces need root: CAP_NET_ADMIN and CAP_SYS_ADMIN, and iproute2)");
  }
}

NetNamespace::NetNamespace() {
  static std::atomic<int> counter{0};
  const int n = ++counter;
  const std::string base = "outbox-" + std::to_string(getpid()) + "-" + std::to_string(n);
  name_ = base;
  middle_ = base + "-link";
  try {
    Ip({"netns", "add", name_});
    Ip({"netns", "add", middle_});
    // Claim a block: the host end's interface name is unique on the host.
    int block = -1;
    for (int i = 0; i < kBlocks; ++i) {
      int candidate = static_cast<int>((static_cast<long>(getpid()) * 16 + n + i) % kBlocks);
      std::string link = "obx" + std::to_string(candidate);
      if (std::filesystem::exists("/sys/class/net/" + link)) continue;
      auto r = RunProcess({"ip", "link", "add", link, "type", "veth", "peer", "name", "tohost", "netns", middle_});
      if (r.code == 0) {
        block = candidate;
        host_link_ = link;
        break;
      }
      if (!std::filesystem::exists("/sys/class/net/" + link)) {
        throw std::runtime_error("partition test setup: `ip link add " + link + " type veth ...` failed: " + r.err +
                                 " (network namespaces need root: CAP_NET_ADMIN and CAP_SYS_ADMIN)");
      }
    }
    if (block < 0) throw std::runtime_error("partition test setup: every 198.18.0.0/15 block is in use");
    host_address_ = AddressOf(block, 1);
    address_ = AddressOf(block, 2);
    network_ = AddressOf(block, 0) + "/29";

    // The watchdog removes everything if this process dies without running the destructor
    // (a crash, ctest's timeout): processes left inside, the link, both namespaces. It
    // polls the owner like ops/pg-tmp.sh's: a cleanup helper, not a test.
    pid_t owner = getpid();
    std::string script = "while kill -0 " + std::to_string(owner) + " 2>/dev/null; do sleep 1; done; " +
                         "for p in $(ip netns pids " + name_ + " 2>/dev/null); do kill -9 $p; done; " +
                         "ip link del " + host_link_ + " 2>/dev/null; ip netns del " + name_ +
                         " 2>/dev/null; ip netns del " + middle_ + " 2>/dev/null";
    watchdog_ = fork();
    if (watchdog_ == 0) {
      setsid();  // outlives ctest killing the test's process group
      int null = open("/dev/null", O_RDWR);
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
      execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }

    // The middle namespace bridges its two ports; STP off: they forward at once.
    Ip({"-n", middle_, "link", "add", "toinner", "type", "veth", "peer", "name", "eth0", "netns", name_});
    Ip({"-n", middle_, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"});
    Ip({"-n", middle_, "link", "set", "dev", "tohost", "master", "br0"});
    Ip({"-n", middle_, "link", "set", "dev", "toinner", "master", "br0"});
    for (const char* dev : {"lo", "br0", "tohost", "toinner"}) Ip({"-n", middle_, "link", "set", "dev", dev, "up"});
    Ip({"addr", "add", host_address_ + "/29", "dev", host_link_});
    Ip({"link", "set", "dev", host_link_, "up"});
    Ip({"-n", name_, "addr", "add", address_ + "/29", "dev", "eth0"});
    Ip({"-n", name_, "link", "set", "dev", "eth0", "up"});
    Ip({"-n", name_, "link", "set", "dev", "lo", "up"});
  } catch (...) {
    Cleanup();
    throw;
  }
}

NetNamespace::~NetNamespace() { Cleanup(); }

void NetNamespace::Cleanup() noexcept {
  try {
    if (!name_.empty()) {
      // Anything still running inside was started by this test.
      auto pids = RunProcess({"ip", "netns", "pids", name_});
      std::size_t pos = 0;
      while (pos < pids.out.size()) {
        auto end = pids.out.find('\n', pos);
        if (end == std::string::npos) end = pids.out.size();
        if (end > pos) kill(static_cast<pid_t>(std::stol(pids.out.substr(pos, end - pos))), SIGKILL);
        pos = end + 1;
      }
    }
    if (!host_link_.empty()) RunProcess({"ip", "link", "del", host_link_});
    if (!name_.empty()) RunProcess({"ip", "netns", "del", name_});
    if (!middle_.empty()) RunProcess({"ip", "netns", "del", middle_});
  } catch (...) {
  }
  if (watchdog_ > 0) {
    kill(watchdog_, SIGKILL);
    waitpid(watchdog_, nullptr, 0);
    watchdog_ = -1;
  }
}

std::vector<std::string> NetNamespace::Command(const std::vector<std::string>& argv) const {
  std::vector<std::string> out = {"ip", "netns", "exec", name_};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

void NetNamespace::Cut() {
  // A queue of length 0 drops what the bridge forwards, on both ports: host → namespace
  // leaves through toinner, namespace → host through tohost.
  for (const char* dev : {"tohost", "toinner"}) {
    auto r = RunProcess({"tc", "-n", middle_, "qdisc", "replace", "dev", dev, "root", "pfifo", "limit", "0"});
    if (r.code != 0) throw std::runtime_error(std::string("cannot cut the link (tc qdisc pfifo): ") + r.err);
  }
  cut_ = true;
}

void NetNamespace::Heal() {
  for (const char* dev : {"tohost", "toinner"}) {
    auto r = RunProcess({"tc", "-n", middle_, "qdisc", "del", "dev", dev, "root"});
    if (r.code != 0) throw std::runtime_error(std::string("cannot heal the link (tc qdisc del): ") + r.err);
  }
  cut_ = false;
}

void NetNamespace::RunInside(const std::function<void()>& fn) const {
  Fd own{open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)};
  Fd inside{open(("/var/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC)};
  if (own.fd < 0 || inside.fd < 0) throw std::runtime_error("cannot open the network namespaces of " + name_);
  if (setns(inside.fd, CLONE_NEWNET) != 0) throw std::runtime_error("setns into " + name_ + " failed");
  struct Back {
    int fd;
    ~Back() {
      if (setns(fd, CLONE_NEWNET) != 0) std::terminate();  // this thread must not stay inside
    }
  } back{own.fd};
  fn();
}

}  // namespace outbox::test
