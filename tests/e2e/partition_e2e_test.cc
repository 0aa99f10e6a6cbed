// Issue 19, PostgreSQL side: a relay cut off from PostgreSQL by a real network partition
// (its packets dropped, the process alive) loses its lanes within --session-timeout, with
// no server configuration: the other relay takes every lane, the outbox drains with
// first occurrences in key order, and the cut-off relay rejoins once the link heals.
// Each test prints the measured hand-over time.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "partition_fixture.h"

namespace outbox {
namespace {

using namespace std::chrono_literals;
using test::PartitionFixture;

class PartitionE2e : public PartitionFixture {};

// --session-timeout 6s. A has records in flight when it is cut off; Kafka (reachable for
// A) acknowledges them while A cannot delete them, so B publishes them again: duplicates,
// never an order violation.
TEST_F(PartitionE2e, CutOffRelayLosesItsLanesWithinTheSessionTimeoutAndRejoins) {
  constexpr auto kTimeout = 6s;
  const std::vector<std::string> opts = {"--session-timeout", "6s"};
  auto a = StartRelay(/*inside=*/true, opts);
  auto b = StartRelay(/*inside=*/false, opts);
  const int port_a = test::WaitForMetricsPort(*a);
  ASSERT_NE(port_a, 0) << a->Stderr();
  ASSERT_TRUE(test::WaitUntil([&] { return TwoRelaysOwnEightLanesEach() && InsideLaneSession() != 0; }, 30s))
      << a->Stderr() << b->Stderr();
  const int a_backend = InsideLaneSession();
  ASSERT_EQ(LanesOf(a_backend), 8);

  // A's records stay in flight: its Kafka is silent for a moment.
  kafka_inside_->Stall();
  constexpr int kFirst = 4000, kKeys = 256;  // 256 keys: every one of the 16 lanes has rows
  Prefill(kFirst, kKeys);
  double a_inflight = 0;
  ASSERT_TRUE(test::WaitUntil([&] {
    a_inflight = Metric(Metrics(true, port_a), "outbox_relay_inflight_messages");
    return a_inflight > 0 && Pending() == a_inflight;  // B drained its lanes, A holds the rest
  }, 30s)) << "A in flight " << a_inflight << ", pending " << Pending() << "\n" << a->Stderr();

  ns_.Cut();
  const auto cut = Clock::now();
  kafka_inside_->Resume();  // A's records land now, but A cannot delete them
  ASSERT_TRUE(test::WaitUntil([&] { return OneOwnerOfAll16(); }, kTimeout + 10s))
      << "B did not take A's lanes\n" << b->Stderr();
  const auto handover_ms = MillisSince(cut);
  std::cout << "PostgreSQL cut (--session-timeout 6s, --rebalance-interval 200ms): B owned all 16 lanes "
            << handover_ms << " ms after the cut\n";
  RecordProperty("handover_ms", static_cast<int>(handover_ms));
  EXPECT_EQ(LanesOf(a_backend), 0);
  EXPECT_EQ(InsideLaneSession(), 0) << "the server still has A's session";
  // The server ended the session because A fell silent for the timeout: not sooner (A was
  // not killed: a closed socket would free the lanes at once), not much later.
  EXPECT_GE(handover_ms, 6000 - 1000);
  EXPECT_LE(handover_ms, test::Scaled(6000ms + 2000ms).count());
  EXPECT_TRUE(a->Running()) << "A was to be cut off, not ended\n" << a->Stderr();

  ASSERT_TRUE(WaitDrained(60s)) << b->Stderr();
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, kFirst, 60s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, kFirst) << "lost messages";
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
  EXPECT_GE(rep.duplicates, 1) << "A's acknowledged records were to be published again by B";
  EXPECT_LE(rep.duplicates, a_inflight) << "only what A had in flight may come twice";
  std::cout << "A had " << a_inflight << " records in flight; " << rep.duplicates << " duplicates\n";

  // The link heals: A reconnects and takes its share again.
  const double a_published = Metric(Metrics(true, port_a), "outbox_relay_published_total");
  ns_.Heal();
  const auto healed = Clock::now();
  ASSERT_TRUE(test::WaitUntil([&] { return TwoRelaysOwnEightLanesEach() && InsideLaneSession() != 0; }, 40s))
      << "A did not rejoin\n" << a->Stderr();
  std::cout << "link healed: A owned its share (8 lanes) again " << MillisSince(healed) << " ms later\n";
  EXPECT_TRUE(test::WaitUntil([&] { return Metric(Metrics(true, port_a), "outbox_relay_owned_lanes") == 8; }, 10s));
  EXPECT_THAT(a->Stderr(), ::testing::HasSubstr("lost the PostgreSQL session"));
  constexpr int kSecond = 2000;
  Prefill(kSecond, kKeys, /*first=*/kFirst / kKeys);
  ASSERT_TRUE(WaitDrained(60s)) << a->Stderr() << b->Stderr();
  EXPECT_GT(Metric(Metrics(true, port_a), "outbox_relay_published_total"), a_published) << "A publishes again";
  auto all = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, kFirst + kSecond, 60s, /*to_end=*/true));
  EXPECT_EQ(all.distinct, kFirst + kSecond);
  EXPECT_EQ(all.out_of_order_keys, 0) << all.first_problem;
}

// The default --session-timeout (20s) against a server with default settings (no TCP
// keepalive configuration): the whole host is cut off, PostgreSQL and Kafka. A's records
// in flight reach Kafka only after the link heals, long after B published them and the
// messages behind them: duplicates, first occurrences still in key order.
TEST_F(PartitionE2e, WholeHostCutWithDefaultsNeedsNoServerConfiguration) {
  ASSERT_EQ(Scalar("SELECT setting::int FROM pg_settings WHERE name = 'tcp_keepalives_idle'"), 0);
  ASSERT_EQ(Scalar("SELECT setting::int FROM pg_settings WHERE name = 'tcp_user_timeout'"), 0);
  constexpr auto kDefaultTimeout = 20s;
  auto a = StartRelay(/*inside=*/true);
  auto b = StartRelay(/*inside=*/false);
  const int port_a = test::WaitForMetricsPort(*a);
  ASSERT_NE(port_a, 0) << a->Stderr();
  ASSERT_TRUE(test::WaitUntil([&] { return TwoRelaysOwnEightLanesEach() && InsideLaneSession() != 0; }, 30s))
      << a->Stderr() << b->Stderr();

  kafka_inside_->Stall();
  constexpr int kFirst = 4000, kKeys = 256;
  Prefill(kFirst, kKeys);
  double a_inflight = 0;
  ASSERT_TRUE(test::WaitUntil([&] {
    a_inflight = Metric(Metrics(true, port_a), "outbox_relay_inflight_messages");
    return a_inflight > 0 && Pending() == a_inflight;
  }, 30s)) << "A in flight " << a_inflight << ", pending " << Pending() << "\n" << a->Stderr();

  ns_.Cut();  // Kafka stays stalled too: A is cut off from everything
  const auto cut = Clock::now();
  ASSERT_TRUE(test::WaitUntil([&] { return OneOwnerOfAll16(); }, kDefaultTimeout + 10s))
      << "B did not take A's lanes\n" << b->Stderr();
  const auto handover_ms = MillisSince(cut);
  std::cout << "whole-host cut, defaults (--session-timeout 20s, --rebalance-interval 200ms): B owned all 16 "
               "lanes "
            << handover_ms << " ms after the cut\n";
  RecordProperty("handover_ms", static_cast<int>(handover_ms));
  EXPECT_GE(handover_ms, 20000 - 1000);
  EXPECT_LE(handover_ms, test::Scaled(20000ms + 2000ms).count());
  EXPECT_EQ(InsideLaneSession(), 0);
  ASSERT_TRUE(WaitDrained(60s)) << b->Stderr();

  ns_.Heal();
  kafka_inside_->Resume();  // what A had in flight may land now, after B's copies
  ASSERT_TRUE(test::WaitUntil([&] { return TwoRelaysOwnEightLanesEach() && InsideLaneSession() != 0; }, 40s))
      << "A did not rejoin\n" << a->Stderr();
  // A's records were acknowledged (or purged) once Kafka answered: none left in flight.
  ASSERT_TRUE(test::WaitUntil([&] { return Metric(Metrics(true, port_a), "outbox_relay_inflight_messages") == 0; },
                              30s));
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, kFirst, 60s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, kFirst);
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;
  EXPECT_LE(rep.duplicates, a_inflight);
  std::cout << "A had " << a_inflight << " records in flight; " << rep.duplicates
            << " duplicates landed after the heal\n";
}

}  // namespace
}  // namespace outbox
