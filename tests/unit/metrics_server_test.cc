// The operations endpoint (relay/ops/metrics_server.h) over real HTTP on 127.0.0.1.
#include "ops/metrics_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <vector>

#include "common/errors.h"
#include "http_server.h"

namespace outbox::relay {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<prometheus::Registry> RegistryWithACounter() {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("outbox_test_events_total").Help("test").Register(*registry).Add({}).Increment(3);
  return registry;
}

TEST(MetricsServer, PortZeroBindsAFreePortAndServesMetricsHealthAndReadiness) {
  MetricsServer server{"127.0.0.1:0", RegistryWithACounter()};
  ASSERT_GT(server.port(), 0);
  auto metrics = test::HttpGet(server.port(), "/metrics");
  EXPECT_EQ(metrics.status, 200) << metrics.error;
  EXPECT_THAT(metrics.body, HasSubstr("outbox_test_events_total 3"));
  auto health = test::HttpGet(server.port(), "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok\n");
  auto not_ready = test::HttpGet(server.port(), "/readyz");
  EXPECT_EQ(not_ready.status, 503);
  EXPECT_EQ(not_ready.body, "not ready\n");
  server.SetReady(true);
  EXPECT_EQ(test::HttpGet(server.port(), "/readyz").status, 200);
  auto other = test::HttpGet(server.port(), "/other");
  EXPECT_EQ(other.status, 404);
  EXPECT_EQ(other.body, "not found\n");
}

TEST(MetricsServer, ReadyCheckIsAskedAtEachRequest) {
  MetricsServer server{"127.0.0.1:0", RegistryWithACounter()};
  std::atomic<bool> ready{false};
  server.SetReadyCheck([&] { return MetricsServer::ReadyState{ready.load(), "Kafka is asleep"}; });
  auto not_ready = test::HttpGet(server.port(), "/readyz");
  EXPECT_EQ(not_ready.status, 503);
  EXPECT_EQ(not_ready.body, "not ready: Kafka is asleep\n");
  ready = true;
  auto r = test::HttpGet(server.port(), "/readyz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ready\n");
}

TEST(MetricsServer, APortInUseIsAClearErrorNotASharedPort) {
  MetricsServer first{"127.0.0.1:0", RegistryWithACounter()};
  try {
    MetricsServer second{"127.0.0.1:" + std::to_string(first.port()), RegistryWithACounter()};
    FAIL() << "a second server bound the same port";
  } catch (const RuntimeError& e) {
    EXPECT_THAT(e.what(), HasSubstr("--metrics-listen: cannot listen on 127.0.0.1:" + std::to_string(first.port())));
  }
  EXPECT_THROW(MetricsServer("no-port", RegistryWithACounter()), RuntimeError);
}

TEST(MetricsServer, StopsPromptlyRightAfterStarting) {
  for (int i = 0; i < 20; ++i) MetricsServer server{"127.0.0.1:0", RegistryWithACounter()};
}

// Issue 13: 50 clients that connect and send nothing must not delay /healthz (the old
// server handled one connection at a time with a per-recv timeout).
TEST(MetricsServer, FiftySlowClientsDoNotDelayHealthz) {
  MetricsServer server{"127.0.0.1:0", RegistryWithACounter()};
  std::vector<int> idle;
  for (int i = 0; i < 50; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(server.port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::send(fd, "G", 1, 0), 1);  // a request that never finishes
    idle.push_back(fd);
  }
  auto health = test::HttpGet(server.port(), "/healthz");
  EXPECT_EQ(health.status, 200) << health.error;
  for (int fd : idle) ::close(fd);
}

}  // namespace
}  // namespace outbox::relay
