#pragma once
// Small helpers shared by the benchmark programs (not part of the relay).

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace outbox::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// --name=value or --name value; returns fallback when absent.
inline std::string Arg(int argc, char** argv, std::string_view name, std::string fallback = "") {
  std::string flag = "--" + std::string(name);
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == flag && i + 1 < argc) return argv[i + 1];
    if (a.size() > flag.size() && a.substr(0, flag.size()) == flag && a[flag.size()] == '=') {
      return std::string(a.substr(flag.size() + 1));
    }
  }
  return fallback;
}

inline long long IntArg(int argc, char** argv, std::string_view name, long long fallback) {
  auto v = Arg(argc, argv, name);
  return v.empty() ? fallback : std::atoll(v.c_str());
}

[[noreturn]] inline void Die(const std::string& what) {
  std::fprintf(stderr, "bench: %s\n", what.c_str());
  std::exit(1);
}

}  // namespace outbox::bench
