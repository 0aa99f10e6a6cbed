// Lane ownership planning: every lane gets an owner, shares are even, --lanes caps.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/lane_plan.h"
#include "kafka/kafka_producer.h"

namespace outbox::relay {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(LanePlan, FairShareCoversEveryLane) {
  for (int lanes : {1, 7, 16, 100}) {
    for (int relays = 1; relays <= 9; ++relays) {
      EXPECT_GE(FairShare(lanes, relays, 0) * relays, lanes) << lanes << " lanes, " << relays << " relays";
    }
  }
  EXPECT_EQ(FairShare(16, 2, 0), 8);
  EXPECT_EQ(FairShare(16, 3, 0), 6);
  EXPECT_EQ(FairShare(16, 0, 0), 16);  // we are always at least one relay
  EXPECT_EQ(FairShare(16, 1, 4), 4);   // --lanes caps the share
}

TEST(LanePlan, LoneRelayTriesEveryLaneItLacks) {
  auto plan = PlanLanes(4, 1, 0, 0, {1});
  EXPECT_EQ(plan.target, 4);
  EXPECT_THAT(plan.try_acquire, ElementsAre(0, 2, 3));
  EXPECT_THAT(plan.release, IsEmpty());
}

TEST(LanePlan, RelaysStartTheirSearchAtDifferentLanes) {
  auto first = PlanLanes(16, 2, 0, 0, {});
  auto second = PlanLanes(16, 2, 0, 1, {});
  EXPECT_EQ(first.try_acquire.front(), 0);
  EXPECT_EQ(second.try_acquire.front(), 8);
}

TEST(LanePlan, ReleasesWhatExceedsTheShareWhenARelayJoins) {
  std::set<int> all;
  for (int i = 0; i < 16; ++i) all.insert(i);
  auto plan = PlanLanes(16, 2, 0, 0, all);
  EXPECT_EQ(plan.target, 8);
  EXPECT_EQ(plan.release.size(), 8u);
  EXPECT_THAT(plan.try_acquire, IsEmpty());
}

TEST(KafkaErrors, OnlyRefusalsForGoodArePermanent) {
  EXPECT_EQ(ClassifyKafkaError(10 /* MSG_SIZE_TOO_LARGE */), DeliveryFailure::kPermanent);
  EXPECT_EQ(ClassifyKafkaError(3 /* UNKNOWN_TOPIC_OR_PART */), DeliveryFailure::kPermanent);
  EXPECT_EQ(ClassifyKafkaError(-192 /* _MSG_TIMED_OUT */), DeliveryFailure::kTransient);
  EXPECT_EQ(ClassifyKafkaError(-195 /* _TRANSPORT */), DeliveryFailure::kTransient);
  EXPECT_EQ(ClassifyKafkaError(6 /* NOT_LEADER_FOR_PARTITION */), DeliveryFailure::kTransient);
}

}  // namespace
}  // namespace outbox::relay
