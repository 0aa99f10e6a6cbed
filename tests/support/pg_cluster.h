#pragma once

#include <memory>
#include <map>
#include <string>

namespace outbox::test {

// What a cluster listens to besides its socket directory and 127.0.0.1.
struct PgClusterOptions {
  std::string listen_address;  // also listen on this address (e.g. NetNamespace::host_address())
  std::string trust_network;   // CIDR whose clients log in without a password (pg_hba.conf)
};

// A throwaway PostgreSQL 15 cluster (ops/pg-tmp.sh): its own port and socket directory,
// wal_level=logical, server settings left at their defaults otherwise (no TCP keepalive
// settings), stopped and deleted by the destructor, and by a watchdog if the test
// process dies. Construction fails loudly if PostgreSQL cannot start: a test never
// silently skips for want of a database.
class PgCluster {
 public:
  explicit PgCluster(const PgClusterOptions& options = {});
  ~PgCluster();
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  // Superuser conninfo of database `postgres`.
  const std::string& conninfo() const { return conninfo_; }
  // Creates an empty database and returns its superuser conninfo.
  std::string CreateDatabase(const std::string& name);
  // conninfo for `dbname` as `user` (password-less, trust auth).
  std::string ConninfoFor(const std::string& dbname, const std::string& user = "postgres") const;
  // The same over TCP to `host` (127.0.0.1, or the options' listen_address): session
  // settings such as TCP keepalives only apply there, not over the Unix socket.
  std::string TcpConninfoFor(const std::string& dbname, const std::string& user = "postgres",
                             const std::string& host = "127.0.0.1") const;
  // Stops and starts the server on the same port (mode: fast or immediate).
  void Restart(const std::string& mode = "fast");
  // Stops the server (keeping its data) until Up starts it again on the same port.
  void Down();
  void Up();
  // From now on `user` (a login with a password) must authenticate with its password
  // (scram-sha-256), on the socket and on TCP; every other login stays trust. Returns once
  // the server applies it (a password-less connection of `user` is refused).
  void RequirePasswordFor(const std::string& user);
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::string conninfo_;
};

// (Re)creates `login` with `password`, granted `role`, and makes the shared cluster ask
// it for that password (PgCluster::RequirePasswordFor). `owner_conninfo`: a superuser's.
void CreatePasswordLogin(const std::string& owner_conninfo, const std::string& login, const std::string& password,
                         const std::string& role);

// One value of `sql` on database `conninfo` (NULL -> 0).
long long ScalarOf(const std::string& conninfo, const std::string& sql);

// The relays' lane locks on database `conninfo` as the server sees them: how many lanes
// each backend (pid) holds (relay/pg/outbox_store.h, lock class 0x6f72656c).
std::map<int, int> LaneLockHolders(const std::string& conninfo);
// Two backends hold eight of the 16 default lanes each.
bool TwoHoldEightLanesEach(const std::map<int, int>& holders);

// One cluster per test process, started on first use.
PgCluster& SharedCluster();

// Creates a fresh database on the shared cluster named after the running gtest and
// returns its conninfo.
std::string FreshDatabase();

// The logins the README documents, one per role (two producers and two consumers, so
// tests can show that one cannot touch the other's rows). Only migrations and the
// tests' own checks run as the owner; the relay, producers and consumers under test run
// as these.
enum class Login {
  kRelay,      // granted outbox_relay: `outbox-relay run|notify|status|...`
  kProducer,   // granted outbox_producer
  kProducer2,
  kConsumer,   // granted outbox_consumer
  kConsumer2,
};
// The login's name (outbox_test_relay, ...).
std::string LoginName(Login login);
// `conninfo` (an owner conninfo from FreshDatabase) with the user replaced by `login`.
// Creates the login on first use; the database must be migrated (the migrations create
// the group roles outbox_relay, outbox_producer and outbox_consumer).
std::string As(Login login, const std::string& conninfo);
// Gives `login` the REPLICATION attribute (ALTER ROLE ... REPLICATION), e.g. so the relay
// login can stream from a logical replication slot. The login must exist: call As() first.
// `owner_conninfo`: a superuser's (FreshDatabase).
void GrantReplication(const std::string& owner_conninfo, Login login);

}  // namespace outbox::test
