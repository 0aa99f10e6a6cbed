// `outbox-relay dev-kafka` serves the Kafka protocol: kcat (a client we did not write)
// produces to it and consumes back.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "process.h"
#include "wait.h"

namespace outbox {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

std::string Slurp(const std::string& path) {
  std::ifstream in{path};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(DevKafka, ServesKafkaToKcatUntilSigterm) {
  test::TempDir dir;
  std::string file = dir.path() + "/brokers";
  test::Process kafka{{test::RelayBinary(), "dev-kafka", "--broker-count", "3", "--brokers-file", file}};
  ASSERT_TRUE(test::WaitUntil([&] { return kafka.Stdout().find('\n') != std::string::npos; },
                              std::chrono::seconds(20)))
      << kafka.Stderr();
  std::string line = kafka.Stdout();
  ASSERT_THAT(line, MatchesRegex("BOOTSTRAP=127\\.0\\.0\\.1:[0-9]+,127\\.0\\.0\\.1:[0-9]+,127\\.0\\.0\\.1:[0-9]+\n"));
  std::string bootstrap = line.substr(10, line.size() - 11);
  EXPECT_EQ(Slurp(file), bootstrap + "\n");

  std::string input = dir.path() + "/in.txt";
  std::ofstream{input} << "k1:hello\nk2:world\n";
  auto produce = test::RunProcess({"sh", "-c", "kcat -P -b " + bootstrap + " -t greetings -K: -p 0 < " + input});
  ASSERT_EQ(produce.code, 0) << produce.err;
  auto consume = test::RunProcess({"kcat", "-C", "-b", bootstrap, "-t", "greetings", "-p", "0", "-o", "beginning",
                            "-c", "2", "-e", "-f", "%k=%s\\n"});
  ASSERT_EQ(consume.code, 0) << consume.err;
  EXPECT_EQ(consume.out, "k1=hello\nk2=world\n");

  kafka.Signal(SIGTERM);
  EXPECT_EQ(kafka.Wait(std::chrono::seconds(20)), 0) << kafka.Stderr();
  EXPECT_FALSE(std::filesystem::exists(file));
}

}  // namespace
}  // namespace outbox
