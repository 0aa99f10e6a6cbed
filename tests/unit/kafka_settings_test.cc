// What users may pass to librdkafka: the relay's guarantees stay, secrets stay hidden.
#include "kafka/kafka_settings.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace outbox::relay {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Pair;
using ::testing::SizeIs;

TEST(KafkaSettings, KnowsSecretProperties) {
  EXPECT_TRUE(IsSecretKafkaProperty("sasl.password"));
  EXPECT_TRUE(IsSecretKafkaProperty("ssl.key.password"));
  EXPECT_TRUE(IsSecretKafkaProperty("sasl.oauthbearer.client.secret"));
  EXPECT_TRUE(IsSecretKafkaProperty("SSL.KEY.PEM"));
  EXPECT_FALSE(IsSecretKafkaProperty("linger.ms"));
}

TEST(KafkaSettings, KeepsTheFirstSettingOfAKey) {
  std::vector<std::string> problems;
  auto s = ParseKafkaSettings({"linger.ms=2", "compression.type=lz4", "linger.ms=9"}, problems);
  EXPECT_THAT(problems, IsEmpty());
  EXPECT_THAT(s, ElementsAre(Pair("linger.ms", "2"), Pair("compression.type", "lz4")));
}

TEST(KafkaSettings, RefusesToWeakenDeliveryGuarantees) {
  std::vector<std::string> problems;
  auto s = ParseKafkaSettings({"enable.idempotence=false", "acks=1", "request.required.acks=0",
                               "metadata.broker.list=x:1", "acks=all", "enable.idempotence=true"},
                              problems);
  EXPECT_THAT(problems, ElementsAre(HasSubstr("enable.idempotence: must stay true"), HasSubstr("acks: must stay all"),
                                    HasSubstr("request.required.acks: must stay all"), HasSubstr("use --brokers")));
  EXPECT_THAT(s, SizeIs(2));
}

TEST(KafkaSettings, NeverEchoesSecrets) {
  std::vector<std::string> problems;
  // A secret typed without its key: only the start of the entry is shown.
  ParseKafkaSettings({"sasl.password", "topsecretvalue-without-equals-sign-here"}, problems);
  ASSERT_THAT(problems, SizeIs(2));
  for (const auto& p : problems) {
    EXPECT_THAT(p, Not(HasSubstr("without-equals-sign-here")));
    EXPECT_THAT(p, HasSubstr("--kafka-conf: expected KEY=VALUE"));
  }
}

TEST(KafkaSettings, LetsLibrdkafkaJudgeNamesAndValues) {
  std::vector<std::string> problems;
  ParseKafkaSettings({"no.such.property=1", "linger.ms=soon"}, problems);
  EXPECT_THAT(problems, ElementsAre(AllOf(HasSubstr("no.such.property"), HasSubstr("No such configuration property")),
                                    HasSubstr("linger.ms")));
}

TEST(KafkaSettings, ChecksBrokerLists) {
  EXPECT_THAT(CheckBrokerList("a:9092,SSL://b.example:9093,[::1]:9094"), IsEmpty());
  EXPECT_THAT(CheckBrokerList("ok:9092,noport,bad:99999,"),
              ElementsAre(HasSubstr("'noport' is not host:port"), HasSubstr("'bad:99999' is not host:port"),
                          HasSubstr("'' is not host:port")));
}

}  // namespace
}  // namespace outbox::relay
