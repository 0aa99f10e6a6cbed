// Issue 19: the relay bounds both ends of its PostgreSQL sessions itself. Against a real
// server with default settings: the session's server-side keepalive settings and the
// client socket's options are what --session-timeout says, on the libpq sessions (lanes,
// check-back, stats) and the libpqxx ones (notify, migrate).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <pqxx/pqxx>

#include "pg/db.h"
#include "pg/pg.h"
#include "pg_cluster.h"

namespace outbox::relay {
namespace {

using std::chrono::seconds;

int SocketOption(int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  if (getsockopt(fd, level, name, &v, &len) != 0) return -1;
  return v;
}

std::string Show(PgConnection& c, const std::string& setting) {
  return TextValue(c.Exec("SHOW " + setting), 0, 0);
}

TEST(SessionTimeout, ServerAndClientGiveUpOnASilentPeerWithinTheTimeout) {
  auto& cluster = test::SharedCluster();
  {
    pqxx::connection owner{cluster.conninfo()};
    pqxx::nontransaction tx{owner};
    // The server runs with the defaults: 0 = the kernel's (two hours of silence).
    EXPECT_EQ(tx.exec1("SELECT setting FROM pg_settings WHERE name = 'tcp_keepalives_idle'")[0].as<std::string>(),
              "0");
    EXPECT_EQ(tx.exec1("SELECT setting FROM pg_settings WHERE name = 'tcp_user_timeout'")[0].as<std::string>(), "0");
  }
  PgConnection c{cluster.TcpConninfoFor("postgres"), "session-timeout-test", seconds(8)};
  EXPECT_EQ(Show(c, "tcp_keepalives_idle"), "2");
  EXPECT_EQ(Show(c, "tcp_keepalives_interval"), "2");
  EXPECT_EQ(Show(c, "tcp_keepalives_count"), "3");
  EXPECT_EQ(Show(c, "tcp_user_timeout"), "8000");
  EXPECT_EQ(SocketOption(c.socket(), SOL_SOCKET, SO_KEEPALIVE), 1);
  EXPECT_EQ(SocketOption(c.socket(), IPPROTO_TCP, TCP_KEEPIDLE), 2);
  EXPECT_EQ(SocketOption(c.socket(), IPPROTO_TCP, TCP_KEEPINTVL), 2);
  EXPECT_EQ(SocketOption(c.socket(), IPPROTO_TCP, TCP_KEEPCNT), 3);
  EXPECT_EQ(SocketOption(c.socket(), IPPROTO_TCP, TCP_USER_TIMEOUT), 8000);
}

TEST(SessionTimeout, TheConninfosOwnClientKeywordsWinTheServerSideStays) {
  PgConnection c{test::SharedCluster().TcpConninfoFor("postgres") + " keepalives_idle=60 tcp_user_timeout=0",
                 "session-timeout-test", seconds(20)};
  EXPECT_EQ(SocketOption(c.socket(), IPPROTO_TCP, TCP_KEEPIDLE), 60);
  EXPECT_EQ(SocketOption(c.socket(), IPPROTO_TCP, TCP_USER_TIMEOUT), 0);
  EXPECT_EQ(SocketOption(c.socket(), IPPROTO_TCP, TCP_KEEPINTVL), 5);
  EXPECT_EQ(Show(c, "tcp_keepalives_idle"), "5");
  EXPECT_EQ(Show(c, "tcp_user_timeout"), "20000");
}

TEST(SessionTimeout, LibpqxxSessionsOfNotifyAndMigrateAreBoundedToo) {
  auto conn = Connect(test::SharedCluster().TcpConninfoFor("postgres"), "session-timeout-test", seconds(12));
  EXPECT_EQ(SocketOption(conn->sock(), IPPROTO_TCP, TCP_USER_TIMEOUT), 12000);
  EXPECT_EQ(SocketOption(conn->sock(), IPPROTO_TCP, TCP_KEEPIDLE), 3);
  pqxx::nontransaction tx{*conn};
  EXPECT_EQ(tx.exec1("SHOW tcp_keepalives_interval")[0].as<std::string>(), "3");
  EXPECT_EQ(tx.exec1("SHOW tcp_user_timeout")[0].as<std::string>(), "12000");
  EXPECT_EQ(tx.exec1("SHOW application_name")[0].as<std::string>(), "session-timeout-test");
}

TEST(SessionTimeout, UnixSocketSessionsConnectAndIgnoreTheSettings) {
  // Nothing can cut a Unix-domain socket off its server: PostgreSQL ignores the settings.
  PgConnection c{test::SharedCluster().conninfo(), "session-timeout-test", seconds(8)};
  EXPECT_EQ(Show(c, "tcp_keepalives_idle"), "0");
  EXPECT_EQ(Show(c, "tcp_user_timeout"), "0");
}

}  // namespace
}  // namespace outbox::relay
