// ops/package.sh writes the two Debian packages issue 18 asks for, with the right files,
// conffile, maintainer scripts and computed dependencies (checked with dpkg-deb, without
// installing them).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "process.h"

namespace outbox {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using test::RunProcess;

std::string Sh(const std::string& command) {
  auto r = RunProcess({"/bin/sh", "-c", command});
  EXPECT_EQ(r.code, 0) << command << ": " << r.err;
  return r.out;
}

TEST(Package, BuildsTheRelayAndTheDevelopmentPackage) {
  test::TempDir out;
  auto r = RunProcess({test::SourceDir() + "/ops/package.sh", out.path()}, {{"OUTBOX_BUILD_DIR", OUTBOX_BINARY_DIR}});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const std::string relay = out.path() + "/outbox-relay_" OUTBOX_VERSION "_amd64.deb";
  const std::string dev = out.path() + "/outbox-relay-dev_" OUTBOX_VERSION "_amd64.deb";
  EXPECT_THAT(r.out, HasSubstr(relay + "\n"));
  EXPECT_THAT(r.out, HasSubstr(dev + "\n"));
  ASSERT_TRUE(std::filesystem::exists(relay)) << r.out;
  ASSERT_TRUE(std::filesystem::exists(dev)) << r.out;

  const auto files = Sh("dpkg-deb -c " + relay);
  for (const char* f : {"./usr/bin/outbox-relay", "./lib/systemd/system/outbox-relay.service",
                        "./lib/systemd/system/outbox-relay@.service", "./etc/outbox-relay/relay.conf",
                        "./usr/share/man/man1/outbox-relay.1.gz", "./usr/share/outbox-relay/schema/0001_outbox.sql",
                        "./usr/share/doc/outbox-relay/relay.md", "./usr/share/doc/outbox-relay/operations.md",
                        "./usr/share/doc/outbox-relay/outbox-relay.json", "./usr/share/doc/outbox-relay/alerts.yml"}) {
    EXPECT_THAT(files, HasSubstr(std::string(f) + "\n")) << f;
  }
  EXPECT_THAT(files, Not(HasSubstr("./usr/include/")));
  const auto info = Sh("dpkg-deb -I " + relay);
  EXPECT_THAT(info, HasSubstr("Package: outbox-relay\n"));
  EXPECT_THAT(info, HasSubstr("Version: " OUTBOX_VERSION "\n"));
  EXPECT_THAT(info, HasSubstr("Description: transactional outbox relay from PostgreSQL to Kafka\n"));
  // Computed by dpkg-shlibdeps from the binary, not listed by hand.
  for (const char* lib : {"libpq5", "librdkafka1", "libcurl4", "libc6", "adduser"}) {
    EXPECT_THAT(info, ::testing::ContainsRegex(std::string("Depends:.*") + lib)) << info;
  }
  EXPECT_EQ(Sh("dpkg-deb --ctrl-tarfile " + relay + " | tar -xO ./conffiles"), "/etc/outbox-relay/relay.conf\n");
  const auto postinst = Sh("dpkg-deb --ctrl-tarfile " + relay + " | tar -xO ./postinst");
  EXPECT_THAT(postinst, HasSubstr("adduser --system --group"));
  // The packaged units start the packaged binary.
  const auto unit = Sh("dpkg-deb --fsys-tarfile " + relay + " | tar -xO ./lib/systemd/system/outbox-relay.service");
  EXPECT_THAT(unit, HasSubstr("\nExecStart=/usr/bin/outbox-relay run --config /etc/outbox-relay/relay.conf\n"));
  const auto templ = Sh("dpkg-deb --fsys-tarfile " + relay + " | tar -xO ./lib/systemd/system/outbox-relay@.service");
  EXPECT_THAT(templ, HasSubstr("\nExecStart=/usr/bin/outbox-relay run --config /etc/outbox-relay/%i.conf\n"));
  // The man page is the --help of every command.
  const auto man = Sh("dpkg-deb --fsys-tarfile " + relay + " | tar -xO ./usr/share/man/man1/outbox-relay.1.gz | gzip -d");
  EXPECT_THAT(man, HasSubstr(".TH OUTBOX-RELAY \"1\""));
  for (const char* cmd : {"migrate", "run", "doctor", "status", "notify"}) EXPECT_THAT(man, HasSubstr(std::string(".SS ") + cmd + "\n"));

  const auto dev_files = Sh("dpkg-deb -c " + dev);
  EXPECT_THAT(dev_files, HasSubstr("./usr/include/outbox/consumer.h\n"));
  EXPECT_THAT(dev_files, HasSubstr("./usr/include/outbox/producer.h\n"));
  EXPECT_THAT(dev_files, ::testing::ContainsRegex("\\./usr/lib/([a-z0-9_-]+/)?cmake/outbox/outboxConfig\\.cmake\n"));
  EXPECT_THAT(dev_files, ::testing::ContainsRegex("\\./usr/lib/([a-z0-9_-]+/)?liboutbox_consumer\\.a\n"));
  EXPECT_THAT(dev_files, Not(HasSubstr("./usr/bin/")));
  EXPECT_THAT(dev_files, Not(HasSubstr("./etc/")));
  const auto dev_info = Sh("dpkg-deb -I " + dev);
  EXPECT_THAT(dev_info, HasSubstr("Package: outbox-relay-dev\n"));
  EXPECT_THAT(dev_info, HasSubstr("Version: " OUTBOX_VERSION "\n"));
  EXPECT_THAT(dev_info, HasSubstr("Description: outbox-relay client libraries (development files)\n"));
  EXPECT_THAT(dev_info, ::testing::ContainsRegex("Depends:.*libpqxx-dev"));
}

}  // namespace
}  // namespace outbox
