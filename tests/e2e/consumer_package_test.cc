// The installed package works for users: `cmake --install` to a temporary prefix, then
// configure and build examples/consumer against it with find_package(outbox CONFIG).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "process.h"

namespace outbox {
namespace {

test::RunResult RunLong(std::vector<std::string> argv) {
  test::Process p{std::move(argv)};
  auto code = p.Wait(std::chrono::minutes(10));
  if (!code) p.Signal(9);
  return {code.value_or(-1), p.Stdout(), p.Stderr()};
}

TEST(ConsumerPackage, ExampleBuildsAgainstTheInstalledPackage) {
  test::TempDir dir;
  std::string prefix = dir.path() + "/prefix";
  auto install = RunLong({"cmake", "--install", OUTBOX_BINARY_DIR, "--prefix", prefix});
  ASSERT_EQ(install.code, 0) << install.out << install.err;
  ASSERT_TRUE(std::filesystem::exists(prefix + "/include/outbox/consumer.h"));

  std::string build = dir.path() + "/build";
  auto configure = RunLong({"cmake", "-S", test::SourceDir() + "/examples/consumer", "-B", build,
                            "-DCMAKE_PREFIX_PATH=" + prefix, "-DCMAKE_BUILD_TYPE=Release"});
  ASSERT_EQ(configure.code, 0) << configure.out << configure.err;
  auto make = RunLong({"cmake", "--build", build});
  ASSERT_EQ(make.code, 0) << make.out << make.err;

  auto help = RunLong({build + "/outbox-example-consumer", "--help"});
  EXPECT_EQ(help.code, 0) << help.err;
  EXPECT_NE(help.out.find("usage: outbox-example-consumer"), std::string::npos) << help.out;

  // A consumer application links no HTTP client: the notification worker is a daemon.
  auto needed = RunLong({"readelf", "-d", build + "/outbox-example-consumer"});
  ASSERT_EQ(needed.code, 0) << needed.err;
  EXPECT_NE(needed.out.find("librdkafka"), std::string::npos) << needed.out;
  EXPECT_EQ(needed.out.find("libcurl"), std::string::npos) << needed.out;
}

TEST(ConsumerPackage, ProducerComponentBuildsTheHalfMessageExample) {
  test::TempDir dir;
  std::string prefix = dir.path() + "/prefix";
  auto install = RunLong({"cmake", "--install", OUTBOX_BINARY_DIR, "--prefix", prefix});
  ASSERT_EQ(install.code, 0) << install.out << install.err;
  ASSERT_TRUE(std::filesystem::exists(prefix + "/include/outbox/producer.h"));

  std::string build = dir.path() + "/build";
  auto configure = RunLong({"cmake", "-S", test::SourceDir() + "/examples/half_message", "-B", build,
                            "-DCMAKE_PREFIX_PATH=" + prefix, "-DCMAKE_BUILD_TYPE=Release"});
  ASSERT_EQ(configure.code, 0) << configure.out << configure.err;
  auto make = RunLong({"cmake", "--build", build});
  ASSERT_EQ(make.code, 0) << make.out << make.err;
  auto needed = RunLong({"readelf", "-d", build + "/outbox-example-half-message"});
  ASSERT_EQ(needed.code, 0) << needed.err;
  EXPECT_EQ(needed.out.find("libcurl"), std::string::npos) << needed.out;
  EXPECT_EQ(needed.out.find("librdkafka"), std::string::npos) << needed.out;
}

TEST(ConsumerPackage, AnUnknownComponentIsReportedNotIgnored) {
  test::TempDir dir;
  std::string prefix = dir.path() + "/prefix";
  auto install = RunLong({"cmake", "--install", OUTBOX_BINARY_DIR, "--prefix", prefix});
  ASSERT_EQ(install.code, 0) << install.out << install.err;
  std::string src = dir.path() + "/src";
  std::filesystem::create_directories(src);
  {
    std::ofstream f{src + "/CMakeLists.txt"};
    f << "cmake_minimum_required(VERSION 3.25)\nproject(p LANGUAGES CXX)\n"
         "find_package(outbox CONFIG REQUIRED COMPONENTS consumer webhooks)\n";
  }
  auto configure = RunLong({"cmake", "-S", src, "-B", dir.path() + "/build", "-DCMAKE_PREFIX_PATH=" + prefix});
  EXPECT_NE(configure.code, 0) << configure.out;
  EXPECT_NE((configure.out + configure.err).find("webhooks"), std::string::npos) << configure.err;
}

}  // namespace
}  // namespace outbox
