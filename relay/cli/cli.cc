#include "cli/cli.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "cli/version.h"
#include "common/errors.h"
#include "common/host_port.h"
#include "kafka/kafka_settings.h"
#include "pg/session_timeout.h"
#include "webhooks/egress_policy.h"

extern char** environ;

namespace outbox::relay {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

// One subcommand: its words for --help, its options (each declared once, below) and what
// is checked once every option is set.
struct CommandSpec {
  const char* name;
  Command command;
  const char* usage;
  const char* brief;    // one line for `outbox-relay --help`
  const char* summary;  // for `outbox-relay COMMAND --help`
  std::vector<Option<Invocation>> options;
  bool takes_arguments = false;  // positional arguments (the action and its operands)
  // Positional arguments and checks across options; runs after every option is set.
  std::function<void(const std::vector<std::string>& arguments, Invocation& inv, Problems& problems)> finish;
};

template <class C>
using Finish = std::function<void(const std::vector<std::string>& arguments, C& config, Problems& problems)>;

// The subcommand whose options fill `Invocation::*config`.
template <class C>
CommandSpec Define(const char* name, Command command, const char* usage, const char* brief, const char* summary,
                   C Invocation::*config, std::vector<Option<C>> options, bool takes_arguments = false,
                   Finish<C> finish = {}) {
  CommandSpec spec{name, command, usage, brief, summary, {}, takes_arguments, {}};
  for (auto& o : options) spec.options.push_back(Lift(config, std::move(o)));
  if (finish) {
    spec.finish = [config, finish](const std::vector<std::string>& args, Invocation& inv, Problems& problems) {
      finish(args, inv.*config, problems);
    };
  }
  return spec;
}

// Options every subcommand takes.
const std::vector<Option<Invocation>>& CommonOptions() {
  static const std::vector<Option<Invocation>> kOptions = {
      Text("config", &Invocation::config_file, "FILE",
           "read options from FILE (INI style: `name = value`, one per line)"),
      Lift(&Invocation::log, Choice("log-level", &LogConfig::level,
                                    {{"trace", "trace"}, {"debug", "debug"}, {"info", "info"}, {"warn", "warn"},
                                     {"error", "error"}},
                                    "LEVEL", "least severe log lines written")),
      Lift(&Invocation::log,
           Choice("log-format", &LogConfig::json, {{"text", false}, {"json", true}}, "FORMAT", "log line format")),
  };
  return kOptions;
}

// --session-timeout of `run` and `notify` (pg/session_timeout.h). `effect` says what it
// bounds for the command.
template <class C>
Option<C> SessionTimeout(std::chrono::milliseconds C::*member, const std::string& effect) {
  return Duration("session-timeout", member, kMinSessionTimeout, kMaxSessionTimeout,
                  "a PostgreSQL session whose network is silent this long ends on the server and here "
                  "(TCP keepalives and user timeout, set per session; not over Unix sockets): " +
                      effect);
}

Problems CheckEgress(const std::string& value) {
  try {
    EgressPolicy::Parse(value);
  } catch (const ConfigError& e) {
    return e.problems();
  }
  return {};
}

Problems CheckListen(const std::string& value) {
  if (IsHostPort(value)) return {};
  return {"--metrics-listen: expected HOST:PORT, got '" + value + "'"};
}

Problems CheckBrokers(const std::string& value) { return CheckBrokerList(value); }

KafkaSettings KafkaConf(const std::vector<std::string>& entries, Problems& problems) {
  return ParseKafkaSettings(entries, problems);
}

// The action word of dead-letters and prepared; nothing (and a problem) if absent or unknown.
template <class Action>
std::optional<Action> ParseAction(const std::string& command, const std::vector<std::string>& args,
                                  const std::vector<std::pair<std::string, Action>>& actions, Problems& problems) {
  std::string words;
  for (size_t i = 0; i < actions.size(); ++i) {
    words += (i == 0 ? "" : i + 1 == actions.size() ? " or " : ", ") + actions[i].first;
  }
  if (args.empty()) {
    problems.push_back(command + ": say what to do: " + words);
    return std::nullopt;
  }
  for (const auto& [word, action] : actions) {
    if (args[0] == word) return action;
  }
  problems.push_back(command + ": unknown action '" + args[0] + "' (" + words + ")");
  return std::nullopt;
}

// `list` takes no operands; the others take operands or --all, not both.
void CheckTargets(const std::string& command, const std::string& word, bool list, bool has_targets, bool all,
                  const std::string& targets, const std::string& targets_long, Problems& problems) {
  if (list) {
    if (has_targets || all) problems.push_back(command + " list: takes no " + targets + " and no --all");
  } else if (!has_targets && !all) {
    problems.push_back(command + " " + word + ": give " + targets_long + " or --all");
  } else if (has_targets && all) {
    problems.push_back(command + " " + word + ": give " + targets + " or --all, not both");
  }
}

void FinishDeadLetters(const std::vector<std::string>& args, DeadLettersConfig& c, Problems& problems) {
  auto action = ParseAction<DeadLetterAction>(
      "dead-letters", args,
      {{"list", DeadLetterAction::kList}, {"retry", DeadLetterAction::kRetry}, {"drop", DeadLetterAction::kDrop}},
      problems);
  if (!action) return;
  c.action = *action;
  for (size_t i = 1; i < args.size(); ++i) {
    std::int64_t id = 0;
    const auto& s = args[i];
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), id);
    if (ec != std::errc{} || end != s.data() + s.size() || id <= 0) {
      problems.push_back("dead-letters: '" + s + "' is not a dead letter id");
    } else {
      c.ids.push_back(id);
    }
  }
  CheckTargets("dead-letters", args[0], c.action == DeadLetterAction::kList, !c.ids.empty(), c.all, "ids",
               "dead letter ids", problems);
}

void FinishPrepared(const std::vector<std::string>& args, PreparedConfig& c, Problems& problems) {
  auto action = ParseAction<PreparedAction>(
      "prepared", args,
      {{"list", PreparedAction::kList}, {"resume", PreparedAction::kResume}, {"drop", PreparedAction::kDrop}},
      problems);
  if (!action) return;
  c.action = *action;
  c.gids.assign(args.begin() + 1, args.end());
  CheckTargets("prepared", args[0], c.action == PreparedAction::kList, !c.gids.empty(), c.all, "gids", "gids",
               problems);
}

// --kafka-conf-file: Java properties ("key=value" or "key: value" per line, '#' and '!'
// comments, blank lines ignored), appended after --kafka-conf so flags win. Values are
// never shown in problems: the file is where secrets live.
void FinishRun(const std::vector<std::string>&, RunConfig& r, Problems& problems) {
  if (r.kafka_conf_file.empty()) return;
  std::ifstream in{r.kafka_conf_file};
  if (!in) {
    int err = errno;
    problems.push_back("--kafka-conf-file: cannot read '" + r.kafka_conf_file + "': " + std::strerror(err));
    return;
  }
  std::vector<std::string> entries;
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    auto start = line.find_first_not_of(" \t\r");
    if (start == std::string::npos || line[start] == '#' || line[start] == '!') continue;
    line = line.substr(start);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    auto sep = line.find_first_of("=:");
    if (sep == std::string::npos || sep == 0) {
      problems.push_back("--kafka-conf-file " + r.kafka_conf_file + " line " + std::to_string(n) +
                         ": expected key=value (the line is not shown: it may hold a secret)");
      continue;
    }
    std::string key = line.substr(0, sep), value = line.substr(sep + 1);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    auto v = value.find_first_not_of(" \t");
    entries.push_back(key + "=" + (v == std::string::npos ? std::string() : value.substr(v)));
  }
  Problems file_problems;
  auto from_file = ParseKafkaSettings(entries, file_problems);
  for (auto& p : file_problems) problems.push_back(r.kafka_conf_file + ": " + p);
  for (auto& kv : from_file) {
    bool given = std::any_of(r.kafka_conf.begin(), r.kafka_conf.end(), [&](const auto& e) { return e.first == kv.first; });
    if (!given) r.kafka_conf.push_back(std::move(kv));
  }
}

void FinishNotify(const std::vector<std::string>&, NotifyConfig& n, Problems& problems) {
  if (n.max_per_host > n.max_in_flight) {
    problems.push_back("--max-per-host (" + std::to_string(n.max_per_host) + ") must not exceed --max-in-flight (" +
                       std::to_string(n.max_in_flight) + ")");
  }
  if (n.lease < n.request_timeout + seconds{1}) {
    problems.push_back("--lease (" + std::to_string(n.lease.count()) + "ms) must be at least --request-timeout + 1s (" +
                       std::to_string((n.request_timeout + seconds{1}).count()) +
                       "ms), or a slow attempt could be sent twice");
  }
}

// The options of `run` (also `doctor`'s, which checks what `run` would use).
std::vector<Option<RunConfig>> RunOptions() {
  return {
      Required("db", &RunConfig::db, "CONNINFO", "libpq conninfo of the outbox database"),
      Required("brokers", &RunConfig::brokers, "LIST", "Kafka bootstrap servers host:port,...",
               CheckBrokers),
      Int("lanes", &RunConfig::lanes, 0, 1024, "most lanes this relay owns at once; 0 = its fair share"),
      Int("batch-size", &RunConfig::batch_size, 1, 100000, "rows claimed per lane and round trip"),
      Int("max-inflight-batches", &RunConfig::max_inflight_batches, 1, 64,
          "unacknowledged batches per lane"),
      Duration("poll-interval", &RunConfig::poll_interval, milliseconds{1}, minutes{1},
               "poll the outbox this often when no NOTIFY arrives"),
      Duration("rebalance-interval", &RunConfig::rebalance_interval, milliseconds{100}, minutes{1},
               "check lane ownership this often"),
      Duration("shutdown-timeout", &RunConfig::shutdown_timeout, milliseconds{0}, hours{1},
               "on SIGTERM, wait this long for in-flight messages"),
      Duration("stats-interval", &RunConfig::stats_interval, milliseconds{100}, hours{1},
               "refresh pending depth and age metrics this often"),
      Duration("kafka-stall-timeout", &RunConfig::kafka_stall_timeout, milliseconds{0}, hours{1},
               "when Kafka acknowledges nothing this long while records wait, hand the lanes to "
               "other relays until it answers again (0: never)"),
      SessionTimeout(&RunConfig::session_timeout,
                     "a cut-off relay's lanes move after about this plus --rebalance-interval"),
      Text("metrics-listen", &RunConfig::metrics_listen, "HOST:PORT",
           "serve /metrics, /healthz, /readyz on HOST:PORT", "off", CheckListen),
      List("kafka-conf", &RunConfig::kafka_conf, "KEY=VALUE",
           "librdkafka property KEY=VALUE (repeatable): TLS, SASL, tuning", KafkaConf),
      Text("kafka-conf-file", &RunConfig::kafka_conf_file, "PATH",
           "librdkafka properties file (key=value lines, like Kafka's clients); secrets belong here",
           "none"),
      Duration("check-after", &RunConfig::check_after, milliseconds{0}, hours{24},
               "half messages: first check-back after this age"),
      Duration("check-interval", &RunConfig::check_interval, milliseconds{1}, hours{24},
               "half messages: time between check-backs"),
      Int("check-max", &RunConfig::check_max, 1, 1000,
          "half messages: inconclusive checks before parking"),
      Duration("check-timeout", &RunConfig::check_timeout, milliseconds{100}, minutes{10},
               "half messages: timeout of one check-back request"),
      Int("check-concurrency", &RunConfig::check_concurrency, 1, 1000,
          "half messages: check-back requests in flight at once"),
      Text("egress-allow", &RunConfig::egress_allow, "LIST",
           "hosts and CIDRs check-backs may call besides public addresses", "none", CheckEgress),
  };
}

// `run`'s options lifted into DoctorConfig, and --json. --egress-allow is taken as given:
// doctor reports a bad list as a failed check (with the other checks) instead of ending.
std::vector<Option<DoctorConfig>> DoctorOptions() {
  std::vector<Option<DoctorConfig>> options;
  for (auto& o : RunOptions()) {
    if (o.name == "egress-allow") {
      o = Text("egress-allow", &RunConfig::egress_allow, "LIST",
               "hosts and CIDRs check-backs may call besides public addresses (checked as one of the checks)",
               "none");
    }
    options.push_back(Lift(&DoctorConfig::run, std::move(o)));
  }
  options.push_back(Flag("json", &DoctorConfig::json, "print JSON instead of one line per check"));
  return options;
}

void FinishDoctor(const std::vector<std::string>& args, DoctorConfig& d, Problems& problems) {
  FinishRun(args, d.run, problems);
}

// Every subcommand and every option it takes: the one place options are declared.
const std::vector<CommandSpec>& Commands() {
  static const std::vector<CommandSpec> kCommands = {
      Define("migrate", Command::kMigrate, "outbox-relay migrate --db CONNINFO",
             "apply the SQL migrations (schemas outbox and inbox)",
             "Apply the SQL migrations (schema outbox and inbox) to the database.", &Invocation::migrate,
             std::vector<Option<MigrateConfig>>{
                 Required("db", &MigrateConfig::db, "CONNINFO", "libpq conninfo of the outbox database"),
                 Text("schema-dir", &MigrateConfig::schema_dir, "DIR",
                      "read migrations from DIR instead of the copy built into the binary"),
             }),
      Define("run", Command::kRun, "outbox-relay run --db CONNINFO --brokers LIST",
             "run the relay: publish outbox rows to Kafka in per-key order",
             "Run the relay: publish outbox rows to Kafka, in per-key order, then delete them.", &Invocation::run,
             RunOptions(),
             false, Finish<RunConfig>{FinishRun}),
      Define("status", Command::kStatus, "outbox-relay status --db CONNINFO [--json]",
             "pending messages per lane, dead letters, half messages, notifications",
             "Show pending messages per lane, oldest pending age, and dead letters.", &Invocation::status,
             std::vector<Option<StatusConfig>>{
                 Required("db", &StatusConfig::db, "CONNINFO", "libpq conninfo of the outbox database"),
                 Flag("json", &StatusConfig::json, "print JSON instead of a table"),
             }),
      Define("notify", Command::kNotify, "outbox-relay notify --db CONNINFO",
             "run the best-effort notification worker", "Run the best-effort notification worker.",
             &Invocation::notify,
             std::vector<Option<NotifyConfig>>{
                 Required("db", &NotifyConfig::db, "CONNINFO",
                          "libpq conninfo of the database holding inbox.notifications"),
                 Text("metrics-listen", &NotifyConfig::metrics_listen, "HOST:PORT",
                      "serve /metrics, /healthz, /readyz on HOST:PORT", "off", CheckListen),
                 Int("max-in-flight", &NotifyConfig::max_in_flight, 1, 1000, "concurrent HTTP requests"),
                 Int("max-per-host", &NotifyConfig::max_per_host, 1, 1000,
                     "concurrent requests to one host:port, at most max-in-flight"),
                 Duration("connect-timeout", &NotifyConfig::connect_timeout, milliseconds{1}, minutes{10},
                          "TCP + TLS handshake timeout per attempt"),
                 Duration("request-timeout", &NotifyConfig::request_timeout, milliseconds{1}, minutes{10},
                          "timeout of one whole attempt"),
                 Duration("lease", &NotifyConfig::lease, milliseconds{1}, hours{1},
                          "a claimed attempt is resent by another worker after this if its worker died; at "
                          "least request-timeout + 1s"),
                 Duration("poll-interval", &NotifyConfig::poll_interval, milliseconds{1}, minutes{1},
                          "look for due notifications this often"),
                 Duration("stats-interval", &NotifyConfig::stats_interval, milliseconds{100}, hours{1},
                          "refresh the backlog metrics this often"),
                 SessionTimeout(&NotifyConfig::session_timeout,
                                "a statement on a dead network fails after this instead of hanging"),
                 Duration("retention", &NotifyConfig::retention, milliseconds{0}, hours{3650 * 24},
                          "delete delivered/exhausted notifications older than this; 0s = keep them"),
                 Duration("retention-interval", &NotifyConfig::retention_interval, seconds{1}, hours{24},
                          "run retention this often"),
                 Text("egress-allow", &NotifyConfig::egress_allow, "LIST",
                      "hosts and CIDRs notifications may call besides public addresses", "none", CheckEgress),
                 Flag("store-replies", &NotifyConfig::store_replies,
                      "store the start of each receiver's answer (512 bytes; inbox.notification_status shows it as "
                      "last_response); off by default: replies are read and dropped"),
             },
             false, Finish<NotifyConfig>{FinishNotify}),
      Define("dev-kafka", Command::kDevKafka, "outbox-relay dev-kafka [--broker-count N] [--brokers-file PATH]",
             "serve an in-memory Kafka for development (librdkafka mock cluster)",
             "Serve an in-memory Kafka cluster for development (librdkafka's mock cluster) until\n"
             "SIGTERM/SIGINT. Prints one line BOOTSTRAP=host:port,... on stdout.",
             &Invocation::dev_kafka,
             std::vector<Option<DevKafkaConfig>>{
                 // Not named "brokers": OUTBOX_BROKERS (a bootstrap list) must never reach it.
                 Int("broker-count", &DevKafkaConfig::brokers, 1, 16, "number of brokers"),
                 Text("brokers-file", &DevKafkaConfig::brokers_file, "PATH", "also write the bootstrap list to PATH"),
             }),
      Define("dead-letters", Command::kDeadLetters,
             "outbox-relay dead-letters list|retry|drop [ID...] [--all] --db CONNINFO",
             "list, retry or drop messages Kafka refused for good",
             "Operate on messages Kafka refused for good (outbox.dead_letters): list them, put\n"
             "them back into the outbox (retry), or delete them (drop).",
             &Invocation::dead_letters,
             std::vector<Option<DeadLettersConfig>>{
                 Required("db", &DeadLettersConfig::db, "CONNINFO", "libpq conninfo of the outbox database"),
                 Flag("all", &DeadLettersConfig::all, "retry/drop every dead letter"),
                 Flag("json", &DeadLettersConfig::json, "list as JSON"),
             },
             true, Finish<DeadLettersConfig>{FinishDeadLetters}),
      Define("prepared", Command::kPrepared, "outbox-relay prepared list|resume|drop [GID...] [--all] --db CONNINFO",
             "list, resume or drop half messages awaiting commit or check-back",
             "Operate on half messages not yet committed or rolled back (outbox.prepared): list\n"
             "them, check them back again at once with a fresh --check-max count (resume: a\n"
             "\"committed\" answer publishes), or discard them without publishing (drop).",
             &Invocation::prepared,
             std::vector<Option<PreparedConfig>>{
                 Required("db", &PreparedConfig::db, "CONNINFO", "libpq conninfo of the outbox database"),
                 Flag("all", &PreparedConfig::all, "resume/drop every parked half message"),
                 Flag("json", &PreparedConfig::json, "list as JSON"),
             },
             true, Finish<PreparedConfig>{FinishPrepared}),
      Define("doctor", Command::kDoctor, "outbox-relay doctor --db CONNINFO --brokers LIST [--config FILE] [--json]",
             "check a setup: database, schema, privileges, Kafka, topics, egress policy",
             "Check a setup, one line per check with the fix when it fails: database reachable,\n"
             "server version, schema version, the login's privileges for `run` and `notify`,\n"
             "lanes and live relays, Kafka reachable, idempotence, topics of pending messages,\n"
             "the egress policy, unknown OUTBOX_* variables. Takes every option of `run` (so\n"
             "`doctor --config FILE` checks what `run --config FILE` would use); the ones it\n"
             "does not check are accepted and ignored. Exit 0 only when every check passes, 1\n"
             "otherwise, 2 for bad usage.",
             &Invocation::doctor, DoctorOptions(), false, Finish<DoctorConfig>{FinishDoctor}),
  };
  return kCommands;
}

// The options of `cmd` followed by the common ones.
std::vector<const OptionInfo*> OptionsOf(const CommandSpec& cmd) {
  std::vector<const OptionInfo*> all;
  for (const auto& o : cmd.options) all.push_back(&o);
  for (const auto& o : CommonOptions()) all.push_back(&o);
  return all;
}

// Every option name of every subcommand: what a config file may hold.
std::vector<std::string> EveryOptionName() {
  std::set<std::string> names;
  for (const auto& c : Commands()) {
    for (const auto* o : OptionsOf(c)) names.insert(o->name);
  }
  return {names.begin(), names.end()};
}

// Edit distance, for "did you mean".
std::size_t Distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// OUTBOX_* variables that name no option of any command (a typo such as
// OUTBOX_BATCHSIZE would otherwise do nothing, silently). The test, benchmark and build
// scripts' own variables are left alone.
std::vector<std::string> UnknownEnvironment(const Environment& env) {
  static const char* const kOthers[] = {"OUTBOX_TEST_", "OUTBOX_BENCH_", "OUTBOX_BUILD_", "OUTBOX_SANITIZERS",
                                        "OUTBOX_QUICKSTART_"};
  std::vector<std::string> known;
  for (const auto& name : EveryOptionName()) known.push_back(EnvName(name));
  known.push_back(EnvName("config"));
  std::vector<std::string> warnings;
  for (const auto& [key, value] : env) {
    if (key.rfind("OUTBOX_", 0) != 0) continue;
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    if (std::any_of(std::begin(kOthers), std::end(kOthers), [&](const char* p) { return key.rfind(p, 0) == 0; })) {
      continue;
    }
    auto best = std::min_element(known.begin(), known.end(), [&](const auto& a, const auto& b) {
      return Distance(key, a) < Distance(key, b);
    });
    std::string w = "unknown environment variable " + key + " is ignored";
    if (best != known.end() && Distance(key, *best) <= 3) w += " (did you mean " + *best + "?)";
    warnings.push_back(w);
  }
  return warnings;
}

std::string GeneralHelp() {
  std::ostringstream out;
  out << "outbox-relay " << kVersion
      << " — transactional outbox relay from PostgreSQL to Kafka\n\n"
         "Usage: outbox-relay COMMAND [OPTIONS]\n\nCommands:\n";
  for (const auto& c : Commands()) {
    out << "  " << c.name << std::string(14 - std::string_view(c.name).size(), ' ') << c.brief << "\n";
  }
  out << "\nRun `outbox-relay COMMAND --help` for the options of a command.\n"
         "Every option can also be set as OUTBOX_<NAME> (e.g. OUTBOX_DB, OUTBOX_BROKERS)\n"
         "or in the --config file; flags win over environment, environment over the file.\n"
         "Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.\n";
  return out.str();
}

std::string CommandHelp(const CommandSpec& cmd) {
  std::ostringstream out;
  out << "Usage: " << cmd.usage << "\n\n"
      << cmd.summary << "\n\n"
      << DescribeOptions(OptionsOf(cmd))
      << "\nEvery option can also be set as OUTBOX_<NAME> or in the --config file.\n";
  return out.str();
}

}  // namespace

Environment ProcessEnvironment() {
  Environment env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv{*e};
    auto eq = kv.find('=');
    if (eq != std::string_view::npos && kv.substr(0, 7) == "OUTBOX_") {
      env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
    }
  }
  return env;
}

Invocation ParseCommandLine(const std::vector<std::string>& args, const Environment& env) {
  Invocation inv;
  if (args.empty()) {
    // No command is a usage error (exit 2), not a request for help: a service started
    // with an empty command line must not look like it ran fine.
    std::string names;
    for (const auto& c : Commands()) names += (names.empty() ? "" : ", ") + std::string(c.name);
    throw ConfigError({"no command given: usage: outbox-relay <command> [options] (commands: " + names +
                       "; see outbox-relay --help)"});
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    inv.command = Command::kHelp;
    inv.help_text = GeneralHelp();
    if (args.size() >= 2 && args[0] == "help") {
      for (const auto& c : Commands()) {
        if (args[1] == c.name) inv.help_text = CommandHelp(c);
      }
    }
    return inv;
  }
  if (args[0] == "--version" || args[0] == "-V" || args[0] == "version") {
    inv.command = Command::kVersion;
    return inv;
  }
  auto cmd_it = std::find_if(Commands().begin(), Commands().end(),
                             [&](const CommandSpec& c) { return args[0] == c.name; });
  if (cmd_it == Commands().end()) {
    std::string names;
    for (const auto& c : Commands()) names += (names.empty() ? "" : ", ") + std::string(c.name);
    throw ConfigError({"unknown command '" + args[0] + "' (commands: " + names + "; see outbox-relay --help)"});
  }
  const CommandSpec& cmd = *cmd_it;
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (std::find(rest.begin(), rest.end(), "--help") != rest.end() ||
      std::find(rest.begin(), rest.end(), "-h") != rest.end()) {
    inv.command = Command::kHelp;
    inv.help_text = CommandHelp(cmd);
    return inv;
  }
  inv.command = cmd.command;
  inv.warnings = UnknownEnvironment(env);

  Problems problems;
  auto layered = Layer(cmd.name, OptionsOf(cmd), rest, env, "config", EveryOptionName(), problems);
  auto apply = [&](const Option<Invocation>& o) {
    auto it = layered.texts.find(o.name);
    bool given = it != layered.texts.end() && !it->second.empty();
    if (o.required && (!given || it->second.back().empty())) {
      problems.push_back("--" + o.name + " is required (or set " + EnvName(o.name) + ")");
      return;
    }
    if (given) o.set(it->second, inv, problems);
  };
  for (const auto& o : cmd.options) apply(o);
  for (const auto& o : CommonOptions()) apply(o);
  if (!cmd.takes_arguments) {
    for (const auto& a : layered.arguments) problems.push_back(std::string(cmd.name) + ": unexpected argument '" + a + "'");
  }
  if (cmd.finish) cmd.finish(layered.arguments, inv, problems);
  if (!problems.empty()) throw ConfigError(std::move(problems));
  return inv;
}

}  // namespace outbox::relay
