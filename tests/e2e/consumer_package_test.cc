// The installed package works for users: `cmake --install` to a temporary prefix, then
// configure and build examples/consumer against it with find_package(outbox CONFIG).
#include <gtest/gtest.h>

#include <filesystem>

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
}

}  // namespace
}  // namespace outbox
