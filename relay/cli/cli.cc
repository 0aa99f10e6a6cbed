#include "cli/cli.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cctype>
#include <charconv>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>

#include "common/errors.h"
#include "common/redact.h"
#include "cli/version.h"

extern char** environ;

namespace outbox::relay {
namespace {

namespace po = boost::program_options;

enum class Kind { kValue, kFlag, kList };

struct OptionSpec {
  const char* name;
  const char* help;
  Kind kind = Kind::kValue;
};

struct CommandSpec {
  const char* name;
  Command command;
  const char* usage;
  const char* brief;    // one line for `outbox-relay --help`
  const char* summary;
  std::vector<OptionSpec> options;
};

const std::vector<OptionSpec> kCommonOptions = {
    {"config", "read options from FILE (INI style: `name = value`, one per line)"},
    {"log-level", "trace, debug, info, warn or error (default info)"},
    {"log-format", "text or json (default text)"},
};

const std::vector<CommandSpec>& Commands() {
  static const std::vector<CommandSpec> kCommands = {
      {"migrate", Command::kMigrate, "outbox-relay migrate --db CONNINFO",
       "apply the SQL migrations (schemas outbox and inbox)",
       "Apply the SQL migrations (schema outbox and inbox) to the database.",
       {{"db", "libpq conninfo of the outbox database (required)"},
        {"schema-dir", "read migrations from DIR instead of the copy built into the binary"}}},
      {"run", Command::kRun, "outbox-relay run --db CONNINFO --brokers LIST",
       "run the relay: publish outbox rows to Kafka in per-key order",
       "Run the relay: publish outbox rows to Kafka, in per-key order, then delete them.",
       {{"db", "libpq conninfo of the outbox database (required)"},
        {"brokers", "Kafka bootstrap servers host:port,... (required)"},
        {"lanes", "most lanes this relay owns at once; 0 = its fair share (default 0)"},
        {"batch-size", "rows claimed per lane and round trip, 1..100000 (default 500)"},
        {"max-inflight-batches", "unacknowledged batches per lane, 1..64 (default 4)"},
        {"poll-interval", "poll the outbox this often when no NOTIFY arrives (default 200ms)"},
        {"rebalance-interval", "check lane ownership this often (default 1s)"},
        {"shutdown-timeout", "on SIGTERM, wait this long for in-flight messages (default 30s)"},
        {"stats-interval", "refresh pending depth and age metrics this often (default 5s)"},
        {"metrics-listen", "serve /metrics, /healthz, /readyz on HOST:PORT (default off)"},
        {"kafka-conf", "librdkafka property KEY=VALUE (repeatable): TLS, SASL, tuning",
         Kind::kList},
        {"check-after", "half messages: first check-back after this age (default 6s)"},
        {"check-interval", "half messages: time between check-backs (default 60s)"},
        {"check-max", "half messages: inconclusive checks before parking (default 15)"},
        {"check-timeout", "half messages: timeout of one check-back request (default 10s)"},
        {"check-concurrency", "half messages: check-back requests in flight at once, 1..1000 "
                              "(default 16)"}}},
      {"status", Command::kStatus, "outbox-relay status --db CONNINFO [--json]",
       "pending messages per lane, dead letters, half messages, notifications",
       "Show pending messages per lane, oldest pending age, and dead letters.",
       {{"db", "libpq conninfo of the outbox database (required)"},
        {"json", "print JSON instead of a table", Kind::kFlag}}},
      {"notify", Command::kNotify, "outbox-relay notify --db CONNINFO",
       "run the best-effort notification worker",
       "Run the best-effort notification worker.",
       {{"db", "libpq conninfo of the database holding inbox.notifications (required)"},
        {"metrics-listen", "serve /metrics, /healthz, /readyz on HOST:PORT (default off)"},
        {"max-in-flight", "concurrent HTTP requests, 1..1000 (default 32)"},
        {"max-per-host", "concurrent requests to one host:port, 1..max-in-flight (default 4)"},
        {"connect-timeout", "TCP + TLS handshake timeout per attempt (default 5s)"},
        {"request-timeout", "timeout of one whole attempt (default 15s)"},
        {"lease", "a claimed attempt is resent by another worker after this if its worker "
                  "died; at least request-timeout + 1s (default 60s)"},
        {"poll-interval", "look for due notifications this often (default 500ms)"},
        {"stats-interval", "refresh the backlog metrics this often (default 5s)"},
        {"retention", "delete delivered/exhausted notifications older than this; 0s = keep "
                      "them (default 168h)"},
        {"retention-interval", "run retention this often (default 10m)"}}},
      {"dev-kafka", Command::kDevKafka, "outbox-relay dev-kafka [--brokers N] [--brokers-file PATH]",
       "serve an in-memory Kafka for development (librdkafka mock cluster)",
       "Serve an in-memory Kafka cluster for development (librdkafka's mock cluster) until\n"
       "SIGTERM/SIGINT. Prints one line BOOTSTRAP=host:port,... on stdout.",
       {{"brokers", "number of brokers, 1..16 (default 1)"},
        {"brokers-file", "also write the bootstrap list to PATH"}}},
      {"dead-letters", Command::kDeadLetters,
       "outbox-relay dead-letters list|retry|drop [ID...] [--all] --db CONNINFO",
       "list, retry or drop messages Kafka refused for good",
       "Operate on messages Kafka refused for good (outbox.dead_letters): list them, put\n"
       "them back into the outbox (retry), or delete them (drop).",
       {{"db", "libpq conninfo of the outbox database (required)"},
        {"all", "retry/drop every dead letter", Kind::kFlag},
        {"json", "list as JSON", Kind::kFlag}}},
      {"prepared", Command::kPrepared,
       "outbox-relay prepared list|resume|drop [GID...] [--all] --db CONNINFO",
       "list, resume or drop half messages awaiting commit or check-back",
       "Operate on half messages not yet committed or rolled back (outbox.prepared): list\n"
       "them, check them back again at once with a fresh --check-max count (resume: a\n"
       "\"committed\" answer publishes), or discard them without publishing (drop).",
       {{"db", "libpq conninfo of the outbox database (required)"},
        {"all", "resume/drop every parked half message", Kind::kFlag},
        {"json", "list as JSON", Kind::kFlag}}},
  };
  return kCommands;
}

std::string EnvName(std::string_view option) {
  std::string s = "OUTBOX_";
  for (char c : option) s += c == '-' ? '_' : static_cast<char>(std::toupper(c));
  return s;
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

po::options_description Describe(const CommandSpec& cmd, bool include_config) {
  po::options_description desc{"Options"};
  auto add = [&](const OptionSpec& o) {
    switch (o.kind) {
      case Kind::kValue:
        desc.add_options()(o.name, po::value<std::string>()->value_name("VALUE"), o.help);
        break;
      case Kind::kFlag:
        desc.add_options()(o.name, po::value<std::string>()->implicit_value("true")->value_name("BOOL"),
                           o.help);
        break;
      case Kind::kList:
        desc.add_options()(o.name, po::value<std::vector<std::string>>()->composing()->value_name("KEY=VALUE"),
                           o.help);
        break;
    }
  };
  for (const auto& o : cmd.options) add(o);
  for (const auto& o : kCommonOptions) {
    if (include_config || std::string_view(o.name) != "config") add(o);
  }
  return desc;
}

std::string CommandHelp(const CommandSpec& cmd) {
  std::ostringstream out;
  out << "Usage: " << cmd.usage << "\n\n" << cmd.summary << "\n\n";
  auto desc = Describe(cmd, true);
  desc.add_options()("help,h", "show this help");
  out << desc << "\nEvery option can also be set as OUTBOX_<NAME> or in the --config file.\n";
  return out.str();
}

// The raw strings of every option after layering flags > environment > file.
class Layered {
 public:
  explicit Layered(std::vector<std::string>& problems) : problems_(problems) {}

  std::map<std::string, std::vector<std::string>> flags, env, file;

  std::optional<std::string> Get(const std::string& name) const {
    for (const auto* layer : {&flags, &env, &file}) {
      auto it = layer->find(name);
      if (it != layer->end() && !it->second.empty()) return it->second.back();
    }
    return std::nullopt;
  }

  std::vector<std::string> List(const std::string& name) const {
    std::vector<std::string> all;
    for (const auto* layer : {&flags, &env, &file}) {
      auto it = layer->find(name);
      if (it != layer->end()) all.insert(all.end(), it->second.begin(), it->second.end());
    }
    return all;
  }

  std::string Str(const std::string& name, std::string def = {}) const {
    return Get(name).value_or(std::move(def));
  }

  std::string Required(const std::string& name) const {
    auto v = Get(name);
    if (!v || v->empty()) {
      problems_.push_back("--" + name + " is required (or set " + EnvName(name) + ")");
      return {};
    }
    return *v;
  }

  int Int(const std::string& name, int def, int min, int max) const {
    auto v = Get(name);
    if (!v) return def;
    int out = 0;
    auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
    if (ec != std::errc{} || end != v->data() + v->size() || out < min || out > max) {
      problems_.push_back("--" + name + ": expected an integer from " + std::to_string(min) +
                          " to " + std::to_string(max) + ", got '" + *v + "'");
      return def;
    }
    return out;
  }

  bool Flag(const std::string& name) const {
    auto v = Get(name);
    if (!v) return false;
    std::string s = *v;
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "0" || s == "no" || s == "off") return false;
    problems_.push_back("--" + name + ": expected true or false, got '" + *v + "'");
    return false;
  }

  std::chrono::milliseconds Duration(const std::string& name, std::chrono::milliseconds def,
                                     std::chrono::milliseconds min,
                                     std::chrono::milliseconds max) const {
    auto v = Get(name);
    if (!v) return def;
    static const std::regex kDuration{R"(^(\d{1,9})(ms|s|m|h)$)"};
    std::smatch m;
    if (!std::regex_match(*v, m, kDuration)) {
      problems_.push_back("--" + name + ": expected a duration like 250ms, 6s, 1m or 2h, got '" +
                          *v + "'");
      return def;
    }
    std::int64_t n = std::stoll(m[1]);
    std::int64_t mult = m[2] == "ms" ? 1 : m[2] == "s" ? 1000 : m[2] == "m" ? 60000 : 3600000;
    std::chrono::milliseconds d{n * mult};
    if (d < min || d > max) {
      problems_.push_back("--" + name + ": must be from " + std::to_string(min.count()) +
                          "ms to " + std::to_string(max.count()) + "ms, got '" + *v + "'");
      return def;
    }
    return d;
  }

 private:
  std::vector<std::string>& problems_;
};

bool ValidHostPort(const std::string& s) {
  static const std::regex kHostPort{R"(^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$)"};
  std::smatch m;
  if (!std::regex_match(s, m, kHostPort)) return false;
  int port = std::stoi(m[2]);
  return port >= 0 && port <= 65535;  // 0: any free port (logged at start)
}

void CheckBrokers(const std::string& brokers, std::vector<std::string>& problems) {
  if (brokers.empty()) return;  // reported as missing already
  std::stringstream in{brokers};
  std::string one;
  while (std::getline(in, one, ',')) {
    // librdkafka accepts an optional protocol prefix such as SSL:// or PLAINTEXT://.
    auto scheme = one.find("://");
    std::string hp = scheme == std::string::npos ? one : one.substr(scheme + 3);
    if (!ValidHostPort(hp)) {
      problems.push_back("--brokers: '" + one + "' is not host:port");
    }
  }
}

// Settings the relay's guarantees depend on; users may not weaken them.
void CheckKafkaConf(const std::vector<std::string>& entries,
                    std::vector<std::pair<std::string, std::string>>& out,
                    std::vector<std::string>& problems) {
  std::unique_ptr<rd_kafka_conf_t, decltype(&rd_kafka_conf_destroy)> conf{rd_kafka_conf_new(),
                                                                           &rd_kafka_conf_destroy};
  for (const auto& e : entries) {
    auto eq = e.find('=');
    if (eq == std::string::npos || eq == 0) {
      // The entry may be a secret typed without '=': show only its start.
      problems.push_back("--kafka-conf: expected KEY=VALUE, got '" + e.substr(0, 24) +
                         (e.size() > 24 ? "...'" : "'"));
      continue;
    }
    std::string key = e.substr(0, eq), value = e.substr(eq + 1);
    bool secret = IsSecretKafkaProperty(key);
    if (key == "bootstrap.servers" || key == "metadata.broker.list") {
      problems.push_back("--kafka-conf " + key + ": use --brokers instead");
      continue;
    }
    if (key == "enable.idempotence" && value != "true") {
      problems.push_back("--kafka-conf enable.idempotence: must stay true (per-key order and "
                         "no duplicates on retries depend on it)");
      continue;
    }
    if (key == "acks" || key == "request.required.acks") {
      if (value != "all" && value != "-1") {
        problems.push_back("--kafka-conf " + key + ": must stay all (a message is deleted from "
                           "the outbox only once every in-sync replica has it)");
        continue;
      }
    }
    char err[512];
    if (rd_kafka_conf_set(conf.get(), key.c_str(), value.c_str(), err, sizeof err) !=
        RD_KAFKA_CONF_OK) {
      std::string msg = err;
      if (secret) msg = RedactSecret(msg, value);
      problems.push_back("--kafka-conf " + key + ": " + msg);
      continue;
    }
    bool seen = std::any_of(out.begin(), out.end(), [&](const auto& kv) { return kv.first == key; });
    if (!seen) out.emplace_back(key, value);  // the first (highest precedence) wins
  }
}

void ReadConfigFile(const std::string& path, const CommandSpec& cmd, Layered& values,
                    std::vector<std::string>& problems) {
  std::ifstream in{path};
  if (!in) {
    problems.push_back("--config: cannot read '" + path + "'");
    return;
  }
  try {
    auto desc = Describe(cmd, false);
    auto parsed = po::parse_config_file(in, desc, /*allow_unregistered=*/true);
    for (const auto& opt : parsed.options) {
      if (opt.unregistered) {
        problems.push_back(path + ": unknown option '" + opt.string_key + "' for " + cmd.name);
        continue;
      }
      auto& slot = values.file[opt.string_key];
      slot.insert(slot.end(), opt.value.begin(), opt.value.end());
    }
  } catch (const po::error& e) {
    problems.push_back(path + ": " + e.what());
  }
}

void FillLog(const Layered& v, LogConfig& log, std::vector<std::string>& problems) {
  log.level = v.Str("log-level", "info");
  static const std::vector<std::string> kLevels = {"trace", "debug", "info", "warn", "error"};
  if (std::find(kLevels.begin(), kLevels.end(), log.level) == kLevels.end()) {
    problems.push_back("--log-level: expected trace, debug, info, warn or error, got '" +
                       log.level + "'");
  }
  auto format = v.Str("log-format", "text");
  if (format != "text" && format != "json") {
    problems.push_back("--log-format: expected text or json, got '" + format + "'");
  }
  log.json = format == "json";
}

void FillRun(const Layered& v, RunConfig& c, std::vector<std::string>& problems) {
  using std::chrono::milliseconds;
  c.db = v.Required("db");
  c.brokers = v.Required("brokers");
  CheckBrokers(c.brokers, problems);
  c.lanes = v.Int("lanes", c.lanes, 0, 1024);
  c.batch_size = v.Int("batch-size", c.batch_size, 1, 100000);
  c.max_inflight_batches = v.Int("max-inflight-batches", c.max_inflight_batches, 1, 64);
  c.poll_interval = v.Duration("poll-interval", c.poll_interval, milliseconds{1}, milliseconds{60000});
  c.rebalance_interval =
      v.Duration("rebalance-interval", c.rebalance_interval, milliseconds{100}, milliseconds{60000});
  c.shutdown_timeout =
      v.Duration("shutdown-timeout", c.shutdown_timeout, milliseconds{0}, milliseconds{3600000});
  c.stats_interval =
      v.Duration("stats-interval", c.stats_interval, milliseconds{100}, milliseconds{3600000});
  c.metrics_listen = v.Str("metrics-listen");
  if (!c.metrics_listen.empty() && !ValidHostPort(c.metrics_listen)) {
    problems.push_back("--metrics-listen: expected HOST:PORT, got '" + c.metrics_listen + "'");
  }
  CheckKafkaConf(v.List("kafka-conf"), c.kafka_conf, problems);
  c.check_after = v.Duration("check-after", c.check_after, milliseconds{0}, milliseconds{86400000});
  c.check_interval =
      v.Duration("check-interval", c.check_interval, milliseconds{1}, milliseconds{86400000});
  c.check_max = v.Int("check-max", c.check_max, 1, 1000);
  c.check_timeout = v.Duration("check-timeout", c.check_timeout, milliseconds{100}, milliseconds{600000});
  c.check_concurrency = v.Int("check-concurrency", c.check_concurrency, 1, 1000);
}

void FillPrepared(const Layered& v, const std::vector<std::string>& positional, PreparedConfig& c,
                  std::vector<std::string>& problems) {
  c.db = v.Required("db");
  c.all = v.Flag("all");
  c.json = v.Flag("json");
  if (positional.empty()) {
    problems.push_back("prepared: say what to do: list, resume or drop");
    return;
  }
  c.action = positional[0];
  if (c.action != "list" && c.action != "resume" && c.action != "drop") {
    problems.push_back("prepared: unknown action '" + c.action + "' (list, resume or drop)");
    return;
  }
  c.gids.assign(positional.begin() + 1, positional.end());
  if (c.action == "list" && (!c.gids.empty() || c.all)) {
    problems.push_back("prepared list: takes no gids and no --all");
  }
  if (c.action != "list" && c.gids.empty() && !c.all) {
    problems.push_back("prepared " + c.action + ": give gids or --all");
  }
  if (c.action != "list" && !c.gids.empty() && c.all) {
    problems.push_back("prepared " + c.action + ": give gids or --all, not both");
  }
}

void FillDeadLetters(const Layered& v, const std::vector<std::string>& positional,
                     DeadLettersConfig& c, std::vector<std::string>& problems) {
  c.db = v.Required("db");
  c.all = v.Flag("all");
  c.json = v.Flag("json");
  if (positional.empty()) {
    problems.push_back("dead-letters: say what to do: list, retry or drop");
    return;
  }
  c.action = positional[0];
  if (c.action != "list" && c.action != "retry" && c.action != "drop") {
    problems.push_back("dead-letters: unknown action '" + c.action + "' (list, retry or drop)");
    return;
  }
  for (size_t i = 1; i < positional.size(); ++i) {
    std::int64_t id = 0;
    const auto& s = positional[i];
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), id);
    if (ec != std::errc{} || end != s.data() + s.size() || id <= 0) {
      problems.push_back("dead-letters: '" + s + "' is not a dead letter id");
    } else {
      c.ids.push_back(id);
    }
  }
  if (c.action == "list" && (!c.ids.empty() || c.all)) {
    problems.push_back("dead-letters list: takes no ids and no --all");
  }
  if (c.action != "list" && c.ids.empty() && !c.all) {
    problems.push_back("dead-letters " + c.action + ": give dead letter ids or --all");
  }
  if (c.action != "list" && !c.ids.empty() && c.all) {
    problems.push_back("dead-letters " + c.action + ": give ids or --all, not both");
  }
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
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
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
    throw ConfigError({"unknown command '" + args[0] + "' (commands: " + names +
                       "; see outbox-relay --help)"});
  }
  const CommandSpec& cmd = *cmd_it;
  inv.command = cmd.command;

  std::vector<std::string> problems;
  Layered values{problems};
  std::vector<std::string> positional;
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (std::find(rest.begin(), rest.end(), "--help") != rest.end() ||
      std::find(rest.begin(), rest.end(), "-h") != rest.end()) {
    inv.command = Command::kHelp;
    inv.help_text = CommandHelp(cmd);
    return inv;
  }

  // 1. Flags.
  try {
    auto desc = Describe(cmd, true);
    auto parsed = po::command_line_parser(rest).options(desc).allow_unregistered().run();
    for (const auto& opt : parsed.options) {
      if (opt.unregistered || opt.position_key >= 0) {
        if (opt.position_key >= 0) {
          positional.insert(positional.end(), opt.value.begin(), opt.value.end());
        } else {
          problems.push_back(cmd.name + std::string(": unknown option '") + opt.original_tokens[0] +
                             "' (see outbox-relay " + cmd.name + " --help)");
        }
        continue;
      }
      auto& slot = values.flags[opt.string_key];
      if (!slot.empty()) {
        auto spec = std::find_if(cmd.options.begin(), cmd.options.end(),
                                 [&](const OptionSpec& o) { return opt.string_key == o.name; });
        bool list = spec != cmd.options.end() && spec->kind == Kind::kList;
        if (!list) {
          problems.push_back("--" + opt.string_key + " given more than once");
          continue;
        }
      }
      if (opt.value.empty()) {
        slot.push_back("true");  // a flag without a value
      } else {
        slot.insert(slot.end(), opt.value.begin(), opt.value.end());
      }
    }
  } catch (const po::error& e) {
    problems.push_back(std::string(cmd.name) + ": " + e.what());
  }
  if (cmd.command != Command::kDeadLetters && cmd.command != Command::kPrepared) {
    for (const auto& p : positional) {
      problems.push_back(std::string(cmd.name) + ": unexpected argument '" + p + "'");
    }
  }

  // 2. Environment: OUTBOX_<NAME>; lists are separated by ';'.
  auto from_env = [&](const OptionSpec& o) {
    auto it = env.find(EnvName(o.name));
    if (it == env.end()) return;
    if (o.kind == Kind::kList) {
      std::stringstream in{it->second};
      std::string one;
      while (std::getline(in, one, ';')) {
        if (!one.empty()) values.env[o.name].push_back(one);
      }
    } else {
      values.env[o.name].push_back(it->second);
    }
  };
  for (const auto& o : cmd.options) from_env(o);
  for (const auto& o : kCommonOptions) from_env(o);

  // 3. The config file.
  if (auto path = values.Get("config")) ReadConfigFile(*path, cmd, values, problems);

  FillLog(values, inv.log, problems);
  switch (cmd.command) {
    case Command::kMigrate:
      inv.migrate.db = values.Required("db");
      inv.migrate.schema_dir = values.Str("schema-dir");
      break;
    case Command::kRun:
      FillRun(values, inv.run, problems);
      break;
    case Command::kStatus:
      inv.status.db = values.Required("db");
      inv.status.json = values.Flag("json");
      break;
    case Command::kNotify:
      inv.notify.db = values.Required("db");
      inv.notify.metrics_listen = values.Str("metrics-listen");
      if (!inv.notify.metrics_listen.empty() && !ValidHostPort(inv.notify.metrics_listen)) {
        problems.push_back("--metrics-listen: expected HOST:PORT, got '" +
                           inv.notify.metrics_listen + "'");
      }
      {
        using std::chrono::milliseconds;
        auto& n = inv.notify;
        n.max_in_flight = values.Int("max-in-flight", n.max_in_flight, 1, 1000);
        n.max_per_host = values.Int("max-per-host", n.max_per_host, 1, 1000);
        if (n.max_per_host > n.max_in_flight) {
          problems.push_back("--max-per-host (" + std::to_string(n.max_per_host) +
                             ") must not exceed --max-in-flight (" + std::to_string(n.max_in_flight) + ")");
        }
        n.connect_timeout =
            values.Duration("connect-timeout", n.connect_timeout, milliseconds{1}, milliseconds{600000});
        n.request_timeout =
            values.Duration("request-timeout", n.request_timeout, milliseconds{1}, milliseconds{600000});
        n.lease = values.Duration("lease", n.lease, milliseconds{1}, milliseconds{3600000});
        if (n.lease < n.request_timeout + milliseconds{1000}) {
          problems.push_back("--lease (" + std::to_string(n.lease.count()) +
                             "ms) must be at least --request-timeout + 1s (" +
                             std::to_string((n.request_timeout + milliseconds{1000}).count()) +
                             "ms), or a slow attempt could be sent twice");
        }
        n.poll_interval = values.Duration("poll-interval", n.poll_interval, milliseconds{1}, milliseconds{60000});
        n.stats_interval =
            values.Duration("stats-interval", n.stats_interval, milliseconds{100}, milliseconds{3600000});
        n.retention = values.Duration("retention", n.retention, milliseconds{0}, milliseconds{3650LL * 86400000});
        n.retention_interval =
            values.Duration("retention-interval", n.retention_interval, milliseconds{1000}, milliseconds{86400000});
      }
      break;
    case Command::kDevKafka:
      inv.dev_kafka.brokers = values.Int("brokers", 1, 1, 16);
      inv.dev_kafka.brokers_file = values.Str("brokers-file");
      break;
    case Command::kDeadLetters:
      FillDeadLetters(values, positional, inv.dead_letters, problems);
      break;
    case Command::kPrepared:
      FillPrepared(values, positional, inv.prepared, problems);
      break;
    case Command::kHelp:
    case Command::kVersion:
      break;
  }
  if (!problems.empty()) throw ConfigError(std::move(problems));
  return inv;
}

}  // namespace outbox::relay
