// Command-line parsing: precedence flags > environment > config file, and every bad
// input reported at once with one clear message each.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>

#include "cli/cli.h"
#include "common/errors.h"
#include "process.h"

namespace outbox::relay {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

std::vector<std::string> ProblemsOf(const std::vector<std::string>& args, const Environment& env = {}) {
  try {
    ParseCommandLine(args, env);
  } catch (const ConfigError& e) {
    return e.problems();
  }
  ADD_FAILURE() << "expected a ConfigError";
  return {};
}

std::string WriteFile(const test::TempDir& dir, const std::string& text) {
  std::string path = dir.path() + "/relay.conf";
  std::ofstream{path} << text;
  return path;
}

TEST(Cli, RunTakesFlags) {
  auto inv = ParseCommandLine({"run", "--db", "dbname=x", "--brokers", "a:9092,b:9093", "--lanes", "4",
                               "--batch-size=100", "--poll-interval", "50ms", "--kafka-conf",
                               "linger.ms=1", "--kafka-conf", "compression.type=lz4"},
                              {});
  EXPECT_EQ(inv.command, Command::kRun);
  EXPECT_EQ(inv.run.db, "dbname=x");
  EXPECT_EQ(inv.run.brokers, "a:9092,b:9093");
  EXPECT_EQ(inv.run.lanes, 4);
  EXPECT_EQ(inv.run.batch_size, 100);
  EXPECT_EQ(inv.run.poll_interval, std::chrono::milliseconds(50));
  ASSERT_THAT(inv.run.kafka_conf, SizeIs(2));
  EXPECT_EQ(inv.run.kafka_conf[1].first, "compression.type");
}

TEST(Cli, RunHasDocumentedDefaults) {
  auto inv = ParseCommandLine({"run", "--db", "dbname=x", "--brokers", "k:9092"}, {});
  EXPECT_EQ(inv.run.check_after, std::chrono::seconds(6));
  EXPECT_EQ(inv.run.check_interval, std::chrono::seconds(60));
  EXPECT_EQ(inv.run.check_max, 15);
  EXPECT_EQ(inv.run.lanes, 0);
  EXPECT_TRUE(inv.run.metrics_listen.empty());
  EXPECT_EQ(inv.run.session_timeout, std::chrono::seconds(20));
  EXPECT_FALSE(inv.log.json);
}

// Issue 19: --session-timeout bounds how long a silent network keeps a session (and the
// lanes) of `run` and `notify`; every source sets it, nonsense is a usage error.
TEST(Cli, SessionTimeoutFromEverySourceAndValidated) {
  test::TempDir dir;
  auto path = WriteFile(dir, "session-timeout = 45s\n");
  EXPECT_EQ(ParseCommandLine({"run", "--db", "x=1", "--brokers", "k:1", "--session-timeout", "6s"}, {})
                .run.session_timeout,
            std::chrono::seconds(6));
  EXPECT_EQ(ParseCommandLine({"run", "--db", "x=1", "--brokers", "k:1"}, {{"OUTBOX_SESSION_TIMEOUT", "2m"}})
                .run.session_timeout,
            std::chrono::minutes(2));
  EXPECT_EQ(ParseCommandLine({"run", "--db", "x=1", "--brokers", "k:1", "--config", path}, {}).run.session_timeout,
            std::chrono::seconds(45));
  EXPECT_EQ(ParseCommandLine({"notify", "--db", "x=1", "--config", path}, {}).notify.session_timeout,
            std::chrono::seconds(45));
  EXPECT_EQ(ParseCommandLine({"notify", "--db", "x=1"}, {}).notify.session_timeout, std::chrono::seconds(20));
  EXPECT_THAT(ProblemsOf({"run", "--db", "x=1", "--brokers", "k:1", "--session-timeout", "1s"}),
              ElementsAre(HasSubstr("--session-timeout: must be from 4s to 60m, got '1s'")));
  EXPECT_THAT(ProblemsOf({"notify", "--db", "x=1", "--session-timeout", "soon"}),
              ElementsAre(AllOf(HasSubstr("--session-timeout"), HasSubstr("'soon'"))));
  EXPECT_THAT(ProblemsOf({"status", "--db", "x=1", "--session-timeout", "6s"}),
              Contains(HasSubstr("unknown option '--session-timeout'")));
  auto help = ParseCommandLine({"run", "--help"}, {}).help_text;
  EXPECT_THAT(help, HasSubstr("--session-timeout"));
  EXPECT_THAT(help, HasSubstr("4s..60m (default 20s)"));
  EXPECT_THAT(ParseCommandLine({"notify", "--help"}, {}).help_text, HasSubstr("--session-timeout"));
}

TEST(Cli, EnvironmentFillsWhatFlagsLeaveOut) {
  auto inv = ParseCommandLine({"run", "--brokers", "flag:1"},
                              {{"OUTBOX_DB", "dbname=env"}, {"OUTBOX_BROKERS", "env:2"},
                               {"OUTBOX_BATCH_SIZE", "7"}, {"OUTBOX_KAFKA_CONF", "linger.ms=3;acks=all"}});
  EXPECT_EQ(inv.run.db, "dbname=env");
  EXPECT_EQ(inv.run.brokers, "flag:1");  // flag wins over environment
  EXPECT_EQ(inv.run.batch_size, 7);
  ASSERT_THAT(inv.run.kafka_conf, SizeIs(2));
  EXPECT_EQ(inv.run.kafka_conf[0].second, "3");
}

TEST(Cli, ConfigFileIsTheLowestLayer) {
  test::TempDir dir;
  auto path = WriteFile(dir,
                        "# comment\n"
                        "db = dbname=file\n"
                        "brokers = file:1\n"
                        "batch-size = 11\n"
                        "lanes = 3\n"
                        "kafka-conf = linger.ms=9\n"
                        "kafka-conf = compression.type=zstd\n");
  auto inv = ParseCommandLine({"run", "--config", path, "--lanes", "5"}, {{"OUTBOX_BATCH_SIZE", "22"}});
  EXPECT_EQ(inv.run.db, "dbname=file");
  EXPECT_EQ(inv.run.lanes, 5);         // flag > file
  EXPECT_EQ(inv.run.batch_size, 22);   // env > file
  ASSERT_THAT(inv.run.kafka_conf, SizeIs(2));
  EXPECT_EQ(inv.run.kafka_conf[1].second, "zstd");
}

TEST(Cli, ConfigFileNamedByEnvironment) {
  test::TempDir dir;
  auto path = WriteFile(dir, "db = dbname=file\n");
  auto inv = ParseCommandLine({"migrate"}, {{"OUTBOX_CONFIG", path}});
  EXPECT_EQ(inv.migrate.db, "dbname=file");
}

TEST(Cli, ListFlagOverridesSameKeyFromFile) {
  test::TempDir dir;
  auto path = WriteFile(dir, "kafka-conf = linger.ms=9\n");
  auto inv = ParseCommandLine(
      {"run", "--db", "x=1", "--brokers", "k:1", "--config", path, "--kafka-conf", "linger.ms=2"}, {});
  ASSERT_THAT(inv.run.kafka_conf, SizeIs(1));
  EXPECT_EQ(inv.run.kafka_conf[0].second, "2");
}

TEST(Cli, ReportsEveryProblemAtOnce) {
  auto problems = ProblemsOf({"run", "--lanes", "many", "--batch-size", "0", "--poll-interval", "100",
                              "--metrics-listen", "nowhere", "--kafka-conf", "no.such.property=1",
                              "--log-level", "loud", "--bogus", "extra"});
  EXPECT_THAT(problems, Contains(HasSubstr("--db is required")));
  EXPECT_THAT(problems, Contains(HasSubstr("--brokers is required")));
  EXPECT_THAT(problems, Contains(AllOf(HasSubstr("--lanes"), HasSubstr("'many'"))));
  EXPECT_THAT(problems, Contains(AllOf(HasSubstr("--batch-size"), HasSubstr("1 to 100000"))));
  EXPECT_THAT(problems, Contains(AllOf(HasSubstr("--poll-interval"), HasSubstr("250ms"))));
  EXPECT_THAT(problems, Contains(HasSubstr("--metrics-listen")));
  EXPECT_THAT(problems, Contains(AllOf(HasSubstr("no.such.property"), HasSubstr("No such configuration property"))));
  EXPECT_THAT(problems, Contains(HasSubstr("--log-level")));
  EXPECT_THAT(problems, Contains(HasSubstr("unknown option '--bogus'")));
  EXPECT_THAT(problems, Contains(HasSubstr("unexpected argument 'extra'")));
  EXPECT_THAT(problems, SizeIs(10));
}

TEST(Cli, RejectsBadBrokerLists) {
  auto problems = ProblemsOf({"run", "--db", "x=1", "--brokers", "ok:9092,noport,bad:99999"});
  EXPECT_THAT(problems, Contains(HasSubstr("'noport' is not host:port")));
  EXPECT_THAT(problems, Contains(HasSubstr("'bad:99999' is not host:port")));
  EXPECT_THAT(problems, SizeIs(2));
}

TEST(Cli, RefusesToWeakenDeliveryGuarantees) {
  auto problems = ProblemsOf({"run", "--db", "x=1", "--brokers", "k:1", "--kafka-conf",
                              "enable.idempotence=false", "--kafka-conf", "acks=1", "--kafka-conf",
                              "bootstrap.servers=x:1"});
  EXPECT_THAT(problems, Contains(HasSubstr("enable.idempotence: must stay true")));
  EXPECT_THAT(problems, Contains(HasSubstr("acks: must stay all")));
  EXPECT_THAT(problems, Contains(HasSubstr("use --brokers")));
}

TEST(Cli, NeverEchoesKafkaSecrets) {
  auto problems = ProblemsOf({"run", "--db", "x=1", "--brokers", "k:1", "--kafka-conf",
                              "sasl.mechanisms=NOPE", "--kafka-conf", "ssl.key.password",
                              "--kafka-conf", "sasl.password=hunter2"},
                             {{"OUTBOX_KAFKA_CONF", "topsecretvalue-without-equals-sign-here"}});
  for (const auto& p : problems) {
    EXPECT_THAT(p, Not(HasSubstr("hunter2")));
    EXPECT_THAT(p, Not(HasSubstr("without-equals-sign-here")));
  }
  EXPECT_THAT(problems, Contains(HasSubstr("expected KEY=VALUE")));
}

TEST(Cli, RejectsDuplicateFlags) {
  auto problems = ProblemsOf({"migrate", "--db", "a=1", "--db", "b=2"});
  EXPECT_THAT(problems, Contains(HasSubstr("--db given more than once")));
}

TEST(Cli, RejectsUnknownConfigFileOptionsAndMissingFiles) {
  test::TempDir dir;
  auto path = WriteFile(dir, "db = x=1\nbrokers = k:1\nlanez = 4\n");
  EXPECT_THAT(ProblemsOf({"run", "--config", path}), Contains(HasSubstr("unknown option 'lanez'")));
  EXPECT_THAT(ProblemsOf({"run", "--config", dir.path() + "/missing.conf"}),
              Contains(HasSubstr("cannot read")));
}

TEST(Cli, UnknownCommandNamesTheCommands) {
  auto problems = ProblemsOf({"serve"});
  ASSERT_THAT(problems, SizeIs(1));
  EXPECT_THAT(problems[0], AllOf(HasSubstr("unknown command 'serve'"), HasSubstr("migrate"), HasSubstr("run")));
}

TEST(Cli, HelpAndVersion) {
  EXPECT_EQ(ParseCommandLine({"--help"}, {}).command, Command::kHelp);
  // No command at all is a usage error (exit 2), naming the commands (issue 14).
  EXPECT_THAT(ProblemsOf({}), Contains(AllOf(HasSubstr("no command given"), HasSubstr("run"))));
  EXPECT_EQ(ParseCommandLine({"--version"}, {}).command, Command::kVersion);
  auto help = ParseCommandLine({"run", "--help"}, {});
  EXPECT_EQ(help.command, Command::kHelp);
  EXPECT_THAT(help.help_text, AllOf(HasSubstr("--batch-size"), HasSubstr("--kafka-conf"), HasSubstr("OUTBOX_")));
}

TEST(Cli, DevKafkaOptions) {
  auto inv = ParseCommandLine({"dev-kafka", "--broker-count", "3", "--brokers-file", "/tmp/b"}, {});
  EXPECT_EQ(inv.dev_kafka.brokers, 3);
  EXPECT_EQ(inv.dev_kafka.brokers_file, "/tmp/b");
  EXPECT_THAT(ProblemsOf({"dev-kafka", "--broker-count", "0"}), Contains(HasSubstr("--broker-count")));
}

// DESIGN.md: the mock's broker count is not named --brokers, so the bootstrap list in
// OUTBOX_BROKERS (or in a shared config file) never reaches it.
TEST(Cli, DevKafkaIgnoresTheBootstrapList) {
  test::TempDir dir;
  auto path = WriteFile(dir, "brokers = kafka:9092\n");
  auto inv = ParseCommandLine({"dev-kafka", "--config", path}, {{"OUTBOX_BROKERS", "kafka:9092"}});
  EXPECT_EQ(inv.dev_kafka.brokers, DevKafkaConfig{}.brokers);
}

TEST(Cli, OneConfigFileServesEverySubcommand) {
  test::TempDir dir;
  auto path = WriteFile(dir, "db = dbname=file\nbrokers = k:1\nbatch-size = 9\nmax-in-flight = 8\njson = true\n");
  EXPECT_EQ(ParseCommandLine({"run", "--config", path}, {}).run.batch_size, 9);
  EXPECT_EQ(ParseCommandLine({"notify", "--config", path}, {}).notify.max_in_flight, 8);
  auto status = ParseCommandLine({"status", "--config", path}, {}).status;
  EXPECT_EQ(status.db, "dbname=file");
  EXPECT_TRUE(status.json);
}

TEST(Cli, HelpRendersTheStructDefaults) {
  auto help = ParseCommandLine({"run", "--help"}, {}).help_text;
  RunConfig defaults;
  EXPECT_THAT(help, HasSubstr("(default " + std::to_string(defaults.batch_size) + ")"));
  EXPECT_THAT(help, HasSubstr("(default " + std::to_string(defaults.check_max) + ")"));
  EXPECT_THAT(help, HasSubstr("(default 6s)"));   // check-after: DESIGN.md's 6s
  EXPECT_THAT(help, HasSubstr("(default 60s)"));  // check-interval: DESIGN.md's 60s
  EXPECT_THAT(help, HasSubstr("(default 200ms)"));
  EXPECT_THAT(help, HasSubstr("1..100000"));
  EXPECT_THAT(help, HasSubstr("(default off)"));
}

TEST(Cli, ReportsEveryProblemOfEverySource) {
  test::TempDir dir;
  auto path = WriteFile(dir, "check-max = lots\nlanez = 1\n");
  auto problems = ProblemsOf({"run", "--config", path, "--db", "x=1", "--brokers", "k:1"},
                             {{"OUTBOX_CHECK_AFTER", "soon"}});
  EXPECT_THAT(problems, Contains(AllOf(HasSubstr("--check-max"), HasSubstr("'lots'"))));
  EXPECT_THAT(problems, Contains(HasSubstr("unknown option 'lanez'")));
  EXPECT_THAT(problems, Contains(AllOf(HasSubstr("--check-after"), HasSubstr("'soon'"))));
  EXPECT_THAT(problems, SizeIs(3));
}

TEST(Cli, NotifyChecksOptionsAgainstEachOther) {
  auto problems = ProblemsOf({"notify", "--db", "x=1", "--max-in-flight", "2", "--max-per-host", "3",
                              "--request-timeout", "30s", "--lease", "30s"});
  EXPECT_THAT(problems, Contains(HasSubstr("--max-per-host (3) must not exceed --max-in-flight (2)")));
  EXPECT_THAT(problems, Contains(HasSubstr("--lease (30000ms) must be at least --request-timeout + 1s (31000ms)")));
  EXPECT_THAT(problems, SizeIs(2));
}

TEST(Cli, DeadLettersActions) {
  auto inv = ParseCommandLine({"dead-letters", "retry", "5", "7", "--db", "x=1"}, {});
  EXPECT_EQ(inv.dead_letters.action, DeadLetterAction::kRetry);
  EXPECT_EQ(inv.dead_letters.ids, (std::vector<std::int64_t>{5, 7}));
  EXPECT_THAT(ProblemsOf({"dead-letters", "retry", "--db", "x=1"}), Contains(HasSubstr("ids or --all")));
  EXPECT_THAT(ProblemsOf({"dead-letters", "zap", "--db", "x=1"}), Contains(HasSubstr("unknown action 'zap'")));
  EXPECT_THAT(ProblemsOf({"dead-letters", "drop", "x", "--db", "x=1"}), Contains(HasSubstr("'x' is not")));
}

TEST(Cli, PreparedActions) {
  auto inv = ParseCommandLine({"prepared", "resume", "g1", "g2", "--db", "x=1"}, {});
  EXPECT_EQ(inv.prepared.action, PreparedAction::kResume);
  EXPECT_EQ(inv.prepared.gids, (std::vector<std::string>{"g1", "g2"}));
  EXPECT_EQ(ParseCommandLine({"prepared", "drop", "--all", "--db", "x=1"}, {}).prepared.action, PreparedAction::kDrop);
  EXPECT_THAT(ProblemsOf({"prepared", "--db", "x=1"}), Contains(HasSubstr("say what to do: list, resume or drop")));
  EXPECT_THAT(ProblemsOf({"prepared", "list", "g1", "--db", "x=1"}), Contains(HasSubstr("takes no gids")));
  EXPECT_THAT(ProblemsOf({"prepared", "drop", "g1", "--all", "--db", "x=1"}), Contains(HasSubstr("not both")));
  EXPECT_THAT(ProblemsOf({"prepared", "publish", "--db", "x=1"}), Contains(HasSubstr("unknown action 'publish'")));
  auto from_env = ParseCommandLine({"prepared", "drop", "--all"}, {{"OUTBOX_DB", "dbname=x"}});
  EXPECT_TRUE(from_env.prepared.all);
  auto problems = ProblemsOf({"prepared", "resume", "g1", "--all"});
  EXPECT_THAT(problems, Contains(HasSubstr("--db is required")));
  EXPECT_THAT(problems, Contains(HasSubstr("give gids or --all, not both")));
}

TEST(Cli, RunTakesCheckBackOptions) {
  auto inv = ParseCommandLine({"run", "--db", "x=1", "--brokers", "h:1", "--check-timeout", "2s",
                               "--check-concurrency", "4"},
                              {});
  EXPECT_EQ(inv.run.check_timeout, std::chrono::seconds(2));
  EXPECT_EQ(inv.run.check_concurrency, 4);
}

TEST(Cli, FlagValuesAreBooleans) {
  EXPECT_TRUE(ParseCommandLine({"status", "--db", "x=1", "--json"}, {}).status.json);
  EXPECT_FALSE(ParseCommandLine({"status", "--db", "x=1", "--json=false"}, {}).status.json);
  EXPECT_THAT(ProblemsOf({"status", "--db", "x=1", "--json=maybe"}), Contains(HasSubstr("true or false")));
}

}  // namespace
}  // namespace outbox::relay

namespace outbox::relay {
namespace {

// ops/relay.conf.example must document every `run` option, and what it shows must parse.
TEST(Cli, ExampleConfigDocumentsEveryRunOptionAndParses) {
  std::ifstream in{test::SourceDir() + "/ops/relay.conf.example"};
  ASSERT_TRUE(in) << "ops/relay.conf.example missing";
  std::string line, uncommented;
  std::set<std::string> documented;
  // Documented options: commented out ("# name = value") or set ("name = value").
  static const std::regex kLine{R"(^(?:# )?([a-z-]+) = (.*)$)"};
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_match(line, m, kLine)) continue;
    documented.insert(m[1]);
    std::string value = m[2];
    if (value.find("...") != std::string::npos) continue;  // placeholders for secrets
    if (m[1] == "kafka-conf-file") continue;  // names a file of the deployment, not of this tree
    uncommented += std::string(m[1]) + " = " + value + "\n";
  }
  test::TempDir dir;
  std::ofstream{dir.path() + "/relay.conf"} << uncommented;
  EXPECT_NO_THROW(ParseCommandLine({"run", "--config", dir.path() + "/relay.conf"}, {}));
  auto help = ParseCommandLine({"run", "--help"}, {}).help_text;
  static const std::regex kOption{R"(--([a-z-]+) )"};
  for (std::sregex_iterator it{help.begin(), help.end(), kOption}, end; it != end; ++it) {
    std::string name = (*it)[1];
    if (name == "help" || name == "config") continue;
    EXPECT_TRUE(documented.count(name)) << "ops/relay.conf.example does not document --" << name;
  }
}

// Issue 13: an abbreviation is not an option (--batch is not --batch-size).
TEST(Cli, NoPrefixGuessing) {
  EXPECT_THAT(ProblemsOf({"run", "--db", "host=db", "--brokers", "k:9092", "--batch", "10"}),
              Contains(HasSubstr("unknown option '--batch'")));
}

// Issue 13: a typo in an OUTBOX_* variable is named at start-up with the closest name;
// the scripts' own variables are left alone.
TEST(Cli, UnknownEnvironmentVariablesAreNamedWithTheClosestKnownOne) {
  auto inv = ParseCommandLine({"status", "--db", "host=db"},
                              {{"OUTBOX_BATCHSIZE", "100"}, {"OUTBOX_TEST_BROKERS", "k:9092"}, {"OUTBOX_DB", "x"}});
  ASSERT_THAT(inv.warnings, SizeIs(1));
  EXPECT_THAT(inv.warnings[0], AllOf(HasSubstr("OUTBOX_BATCHSIZE is ignored"), HasSubstr("did you mean OUTBOX_BATCH_SIZE?")));
}

// Issue 13: a ';' inside a secret in OUTBOX_KAFKA_CONF neither splits it nor is echoed.
TEST(Cli, KafkaConfFromEnvironmentKeepsASemicolonInsideAValue) {
  auto inv = ParseCommandLine({"run", "--db", "host=db", "--brokers", "k:9092"},
                              {{"OUTBOX_KAFKA_CONF", "sasl.password=p;art;x;linger.ms=7"}});
  EXPECT_THAT(inv.run.kafka_conf, Contains(std::make_pair(std::string("sasl.password"), std::string("p;art;x"))));
  EXPECT_THAT(inv.run.kafka_conf, Contains(std::make_pair(std::string("linger.ms"), std::string("7"))));
  for (const auto& p : ProblemsOf({"run", "--db", "host=db", "--brokers", "k:9092", "--kafka-conf", "hunter2"})) {
    EXPECT_THAT(p, Not(HasSubstr("hunter2")));
  }
}

// Issue 13: secrets in a properties file, like Kafka's own clients.
TEST(Cli, KafkaConfFileKeepsSecretsOffTheCommandLine) {
  test::TempDir dir;
  auto path = dir.path() + "/kafka.properties";
  std::ofstream{path} << "# SASL\nsasl.username = relay\n! also a comment\nsasl.password=s3cr=et\n\nlinger.ms: 9\n";
  auto inv = ParseCommandLine({"run", "--db", "host=db", "--brokers", "k:9092", "--kafka-conf", "linger.ms=1",
                               "--kafka-conf-file", path},
                              {});
  EXPECT_THAT(inv.run.kafka_conf, Contains(std::make_pair(std::string("sasl.password"), std::string("s3cr=et"))));
  EXPECT_THAT(inv.run.kafka_conf, Contains(std::make_pair(std::string("sasl.username"), std::string("relay"))));
  EXPECT_THAT(inv.run.kafka_conf, Contains(std::make_pair(std::string("linger.ms"), std::string("1"))))
      << "--kafka-conf wins over the file";
  std::ofstream{path} << "sasl.password s3cret-without-equals\n";
  auto problems = ProblemsOf({"run", "--db", "host=db", "--brokers", "k:9092", "--kafka-conf-file", path});
  EXPECT_THAT(problems, Contains(HasSubstr("line 1: expected key=value")));
  for (const auto& p : problems) EXPECT_THAT(p, Not(HasSubstr("s3cret")));
  EXPECT_THAT(ProblemsOf({"run", "--db", "host=db", "--brokers", "k:9092", "--kafka-conf-file", "/nonexistent"}),
              Contains(HasSubstr("cannot read '/nonexistent': No such file or directory")));
}

}  // namespace
}  // namespace outbox::relay
