// outbox-relay: parse, wire, run, map failures to exit codes 0/1/2.
#include <cstdio>
#include <iostream>

#include "cli/cli.h"
#include "cli/commands.h"
#include "common/errors.h"
#include "ops/logging.h"
#include "ops/signals.h"
#include "cli/version.h"

int main(int argc, char** argv) {
  using namespace outbox::relay;
  BlockTerminationSignals();
  Invocation inv;
  try {
    inv = ParseCommandLine(std::vector<std::string>(argv + 1, argv + argc), ProcessEnvironment());
  } catch (const ConfigError& e) {
    for (const auto& p : e.problems()) std::cerr << "outbox-relay: " << p << "\n";
    return kExitUsage;
  }
  if (inv.command == Command::kHelp) {
    std::cout << inv.help_text;
    return kExitOk;
  }
  if (inv.command == Command::kVersion) {
    std::cout << "outbox-relay " << kVersion << "\n";
    return kExitOk;
  }
  auto log = MakeLogger(inv.log);
  for (const auto& w : inv.warnings) log->warn("{}", w);
  try {
    return RunCommand(inv, log);
  } catch (const ConfigError& e) {
    for (const auto& p : e.problems()) log->error("{}", p);
    return kExitUsage;
  } catch (const std::exception& e) {
    log->error("{}", e.what());
    return kExitRuntime;
  }
}
