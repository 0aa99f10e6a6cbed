// Issue 19, Kafka side (item 2): `run --kafka-stall-timeout DURATION` (default 30s). When
// Kafka has acknowledged nothing for that long while records wait, the relay drops what
// it has in flight (a new producer), releases all its lanes and its member slot (so the
// other relays' fair share grows), keeps its PostgreSQL session, asks Kafka every second
// and rejoins when Kafka answers (docs/relay.md, "Kafka out of reach").
//
// Relay A runs in a network namespace and reaches PostgreSQL through its link (never cut
// here) and Kafka through a forwarder that the test stalls: every connection stays open,
// no byte moves, as when a firewall between A and the brokers starts dropping packets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "partition_fixture.h"

namespace outbox {
namespace {

using namespace std::chrono_literals;
using test::PartitionFixture;

constexpr int kMemberLockClass = 0x6f726d62;  // relay/pg/outbox_store.h

class PartitionKafkaE2e : public PartitionFixture {
 protected:
  long long LiveMembers() {
    return Scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
                  "AND classid = " + std::to_string(kMemberLockClass) +
                  " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())");
  }
};

TEST_F(PartitionKafkaE2e, RelayThatCannotReachKafkaHandsItsLanesToOneThatCanAndRejoins) {
  const std::vector<std::string> opts = {"--kafka-stall-timeout", "5s"};
  auto a = StartRelay(/*inside=*/true, opts);
  auto b = StartRelay(/*inside=*/false, opts);
  const int port_a = test::WaitForMetricsPort(*a);
  ASSERT_NE(port_a, 0) << a->Stderr();
  ASSERT_TRUE(test::WaitUntil([&] { return TwoRelaysOwnEightLanesEach() && InsideLaneSession() != 0; }, 30s))
      << a->Stderr() << b->Stderr();
  ASSERT_EQ(LiveMembers(), 2);
  const int a_backend = InsideLaneSession();

  kafka_inside_->Stall();  // A reaches PostgreSQL, not Kafka
  constexpr int kFirst = 4000, kKeys = 256;
  Prefill(kFirst, kKeys);
  const auto waiting = Clock::now();  // from here A has records that Kafka does not acknowledge
  double a_inflight = 0;
  ASSERT_TRUE(test::WaitUntil([&] {
    a_inflight = Metric(Metrics(true, port_a), "outbox_relay_inflight_messages");
    return a_inflight > 0 && Pending() == a_inflight;  // B drained its lanes, A holds the rest
  }, 4s)) << "A in flight " << a_inflight << ", pending " << Pending() << "\n" << a->Stderr();
  ASSERT_TRUE(test::WaitUntil([&] { return OneOwnerOfAll16() && LanesOf(a_backend) == 0; }, 5s + 15s))
      << "A kept its lanes\n" << a->Stderr();
  const auto handover_ms = MillisSince(waiting);
  std::cout << "Kafka cut (--kafka-stall-timeout 5s, --rebalance-interval 200ms): B owned all 16 lanes "
            << handover_ms << " ms after A's records began to wait\n";
  RecordProperty("handover_ms", static_cast<int>(handover_ms));
  EXPECT_GE(handover_ms, 5000 - 1000);
  EXPECT_LE(handover_ms, test::Scaled(5000ms + 3000ms).count());
  // A keeps its PostgreSQL session, but no longer counts as a member: B's share is all.
  EXPECT_EQ(InsideLaneSession(), a_backend);
  EXPECT_EQ(LiveMembers(), 1);
  EXPECT_EQ(Metric(Metrics(true, port_a), "outbox_relay_owned_lanes"), 0);

  ASSERT_TRUE(WaitDrained(60s)) << b->Stderr();
  auto rep = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, kFirst, 60s, /*to_end=*/true));
  EXPECT_EQ(rep.distinct, kFirst) << "lost messages";
  EXPECT_EQ(rep.out_of_order_keys, 0) << rep.first_problem;

  // Kafka answers again: A probes it, rejoins and takes its share.
  kafka_inside_->Resume();
  const auto resumed = Clock::now();
  ASSERT_TRUE(test::WaitUntil([&] { return TwoRelaysOwnEightLanesEach() && LanesOf(a_backend) == 8; }, 30s))
      << "A did not rejoin\n" << a->Stderr();
  std::cout << "Kafka healed: A owned its share (8 lanes) again " << MillisSince(resumed) << " ms later\n";
  EXPECT_EQ(LiveMembers(), 2);
  constexpr int kSecond = 2000;
  Prefill(kSecond, kKeys, /*first=*/kFirst / kKeys);
  ASSERT_TRUE(WaitDrained(60s)) << a->Stderr() << b->Stderr();
  auto all = test::Analyze(test::ReadTopic(kafka_.bootstrap(), topic_, kFirst + kSecond, 60s, /*to_end=*/true));
  EXPECT_EQ(all.distinct, kFirst + kSecond);
  EXPECT_EQ(all.out_of_order_keys, 0) << all.first_problem;
  // What A purged may still have landed: only that comes twice.
  EXPECT_LE(all.duplicates, a_inflight);
}

}  // namespace
}  // namespace outbox
