#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace outbox::relay {

// Configuration of each subcommand: plain data, parsed and validated once by
// ParseCommandLine (cli.h), then passed by const&.

// --session-timeout: a PostgreSQL session whose peer stops answering for this long ends,
// on the server (its advisory locks, the lanes, are freed) and in the relay (a statement
// fails instead of hanging). 20 s: lanes of a cut-off relay move within about 21 s (this
// plus --rebalance-interval), while network hiccups TCP recovers from (a few lost packets,
// a switch or router fail-over of a few seconds) end no session. pg/session_timeout.h.
inline constexpr std::chrono::milliseconds kDefaultSessionTimeout{20000};

struct LogConfig {
  std::string level = "info";   // trace, debug, info, warn, error
  bool json = false;            // one JSON object per line instead of text
};

struct MigrateConfig {
  std::string db;               // libpq conninfo (secret: never printed unredacted)
  std::string schema_dir;       // read migrations from here; empty = the embedded copy
};

struct RunConfig {
  std::string db;               // libpq conninfo of the outbox database
  std::string brokers;          // Kafka bootstrap list host:port,...
  int lanes = 0;                // most lanes this relay owns at once; 0 = its fair share
  int batch_size = 2000;        // rows claimed per lane and round trip (docs/relay.md, Sizing)
  int max_inflight_batches = 4; // batches of one lane produced but not yet acknowledged
  std::chrono::milliseconds poll_interval{200};     // fallback poll when NOTIFY is quiet
  std::chrono::milliseconds rebalance_interval{1000};  // lane ownership check period
  std::chrono::milliseconds shutdown_timeout{30000};   // wait for in-flight on SIGTERM
  std::chrono::milliseconds stats_interval{5000};      // pending depth/age refresh
  // Kafka acknowledged nothing for this long while records wait: hand the lanes to relays
  // that can reach it, probe, rejoin when it answers (docs/relay.md). 0 = never.
  std::chrono::milliseconds kafka_stall_timeout{30000};
  // A silent network ends each PostgreSQL session (and frees its lanes) within this.
  std::chrono::milliseconds session_timeout{kDefaultSessionTimeout};
  std::string metrics_listen;   // host:port for /metrics, /healthz, /readyz; empty = off
  // librdkafka properties from a Java-properties file (key=value per line, # comments):
  // the way to keep SASL/TLS secrets off the command line. --kafka-conf entries win.
  std::string kafka_conf_file;
  // librdkafka properties in the order given; the first setting of a key wins.
  std::vector<std::pair<std::string, std::string>> kafka_conf;
  std::chrono::milliseconds check_after{6000};     // half messages: first check-back
  std::chrono::milliseconds check_interval{60000}; // half messages: between checks
  int check_max = 15;                               // half messages: checks before parking
  std::chrono::milliseconds check_timeout{10000};  // half messages: one whole check-back GET
  int check_concurrency = 16;                       // half messages: checks in flight at once
  // Hosts and CIDRs check-back requests may reach besides public addresses (loopback,
  // private, link-local, ... are refused at connect time unless listed; docs/security.md).
  std::string egress_allow;
};

// `doctor` takes every option of `run` (so it checks what `run` would use, from the same
// flags, environment and config file) and --json.
struct DoctorConfig {
  RunConfig run;
  bool json = false;            // machine-readable output
};

struct StatusConfig {
  std::string db;
  bool json = false;            // machine-readable output
};

struct NotifyConfig {
  std::string db;
  std::string metrics_listen;
  int max_in_flight = 32;       // concurrent HTTP requests of this worker
  int max_per_host = 4;         // concurrent requests to one host:port (slow receivers
                                // cannot take every slot)
  std::chrono::milliseconds connect_timeout{5000};   // TCP + TLS handshake per attempt
  std::chrono::milliseconds request_timeout{15000};  // one whole attempt
  // How long a claimed attempt belongs to this worker; > request_timeout + 1s. After it,
  // another worker sends the attempt of a crashed one again.
  std::chrono::milliseconds lease{60000};
  std::chrono::milliseconds poll_interval{500};      // look for due notifications
  std::chrono::milliseconds stats_interval{5000};    // backlog metrics refresh
  // A silent network ends the worker's PostgreSQL session within this (its statements
  // fail instead of hanging; leases are time-based and do not depend on the session).
  std::chrono::milliseconds session_timeout{kDefaultSessionTimeout};
  std::chrono::milliseconds retention{7 * 24 * 3600 * 1000LL};  // keep finished rows; 0 = forever
  std::chrono::milliseconds retention_interval{600000};         // how often to purge
  // Hosts and CIDRs notifications may reach besides public addresses (docs/security.md).
  std::string egress_allow;
  // Keep the start of each receiver's answer (notification_status's last_response); off
  // by default (docs/security.md).
  bool store_replies = false;
};

struct DevKafkaConfig {
  int brokers = 1;              // number of mock brokers (--broker-count)
  std::string brokers_file;     // also write the bootstrap list here; empty = don't
};

enum class DeadLetterAction {
  kList,   // show every dead letter
  kRetry,  // put it back into the outbox
  kDrop,   // delete it
};

struct DeadLettersConfig {
  std::string db;
  DeadLetterAction action = DeadLetterAction::kList;
  std::vector<std::int64_t> ids;  // dead letter ids (outbox ids) for retry/drop
  bool all = false;             // retry/drop every dead letter
  bool json = false;            // list as JSON
};

enum class PreparedAction {
  kList,    // show half messages neither committed nor rolled back
  kResume,  // check it back again at once with a fresh --check-max count
  kDrop,    // discard it without publishing
};

struct PreparedConfig {
  std::string db;
  PreparedAction action = PreparedAction::kList;
  std::vector<std::string> gids;  // half messages (gid) for resume/drop
  bool all = false;             // resume/drop every parked half message
  bool json = false;            // list as JSON
};

}  // namespace outbox::relay
