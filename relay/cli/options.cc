#include "cli/options.h"

#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace outbox::relay {
namespace {

namespace po = boost::program_options;

// Every value is taken as text (typed checks come after layering, so that a bad value
// is one problem among all the others instead of an exception that ends parsing).
void Add(po::options_description& desc, const OptionInfo& o) {
  switch (o.kind) {
    case OptionKind::kValue:
      desc.add_options()(o.name.c_str(), po::value<std::string>()->value_name(o.value_name), o.help.c_str());
      break;
    case OptionKind::kFlag:
      desc.add_options()(o.name.c_str(),
                         po::value<std::string>()->implicit_value("true")->value_name(o.value_name),
                         o.help.c_str());
      break;
    case OptionKind::kList:
      desc.add_options()(o.name.c_str(),
                         po::value<std::vector<std::string>>()->composing()->value_name(o.value_name),
                         o.help.c_str());
      break;
  }
}

const OptionInfo* Find(const std::vector<const OptionInfo*>& options, const std::string& name) {
  auto it = std::find_if(options.begin(), options.end(), [&](const OptionInfo* o) { return o->name == name; });
  return it == options.end() ? nullptr : *it;
}

// Keeps the first setting of a single-valued option within one source (store() would
// throw on the second and skip everything after it); `repeated` words the problem.
po::parsed_options OncePerSource(const po::parsed_options& parsed, const po::options_description& desc,
                                 const std::vector<const OptionInfo*>& options,
                                 const std::function<std::string(const std::string&)>& repeated,
                                 Problems& problems) {
  po::parsed_options out{&desc};
  std::set<std::string> seen;
  for (const auto& opt : parsed.options) {
    const OptionInfo* info = Find(options, opt.string_key);
    if (info == nullptr) continue;
    if (info->kind != OptionKind::kList && !seen.insert(opt.string_key).second) {
      problems.push_back(repeated(opt.string_key));
      continue;
    }
    out.options.push_back(opt);
  }
  return out;
}

}  // namespace

std::string EnvName(std::string_view option) {
  std::string s = "OUTBOX_";
  for (char c : option) s += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::optional<std::int64_t> ParseInt(const std::string& name, const std::string& text, std::int64_t min,
                                     std::int64_t max, Problems& problems) {
  std::int64_t out = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (ec != std::errc{} || end != text.data() + text.size() || out < min || out > max) {
    problems.push_back("--" + name + ": expected an integer from " + std::to_string(min) + " to " +
                       std::to_string(max) + ", got '" + text + "'");
    return std::nullopt;
  }
  return out;
}

std::optional<std::chrono::milliseconds> ParseDuration(const std::string& name, const std::string& text,
                                                       std::chrono::milliseconds min,
                                                       std::chrono::milliseconds max, Problems& problems) {
  static const std::regex kDuration{R"(^(\d{1,9})(ms|s|m|h)$)"};
  std::smatch m;
  if (!std::regex_match(text, m, kDuration)) {
    problems.push_back("--" + name + ": expected a duration like 250ms, 6s, 1m or 2h, got '" + text + "'");
    return std::nullopt;
  }
  std::int64_t n = std::stoll(m[1]);
  std::int64_t unit = m[2] == "ms" ? 1 : m[2] == "s" ? 1000 : m[2] == "m" ? 60000 : 3600000;
  std::chrono::milliseconds d{n * unit};
  if (d < min || d > max) {
    problems.push_back("--" + name + ": must be from " + FormatDuration(min) + " to " + FormatDuration(max) +
                       ", got '" + text + "'");
    return std::nullopt;
  }
  return d;
}

std::optional<bool> ParseBool(const std::string& name, const std::string& text, Problems& problems) {
  std::string s = text;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "0" || s == "no" || s == "off") return false;
  problems.push_back("--" + name + ": expected true or false, got '" + text + "'");
  return std::nullopt;
}

std::string FormatDuration(std::chrono::milliseconds d) {
  static constexpr std::pair<std::int64_t, const char*> kUnits[] = {{1000, "s"}, {60, "m"}, {60, "h"}};
  std::int64_t n = d.count();
  if (n == 0) return "0s";
  const char* unit = "ms";
  for (const auto& [factor, name] : kUnits) {
    if (n < 100 || n % factor != 0) break;
    n /= factor;
    unit = name;
  }
  return std::to_string(n) + unit;
}

LayeredValues Layer(const std::string& command, const std::vector<const OptionInfo*>& options,
                    const std::vector<std::string>& args, const Environment& env,
                    const std::string& config_option, const std::vector<std::string>& file_known,
                    Problems& problems) {
  LayeredValues out;
  po::options_description desc;
  for (const auto* o : options) Add(desc, *o);
  po::variables_map vm;

  // 1. Flags (the highest source: stored first, store() keeps the first value).
  try {
    // No prefix guessing: --batch is not --batch-size (a typo must not pick an option).
    auto parsed = po::command_line_parser(args)
                      .options(desc)
                      .style(po::command_line_style::default_style & ~po::command_line_style::allow_guessing)
                      .allow_unregistered()
                      .run();
    po::parsed_options known{&desc};
    for (const auto& opt : parsed.options) {
      if (opt.position_key >= 0) {
        out.arguments.insert(out.arguments.end(), opt.value.begin(), opt.value.end());
      } else if (opt.unregistered) {
        problems.push_back(command + ": unknown option '" + opt.original_tokens[0] + "' (see outbox-relay " +
                           command + " --help)");
      } else {
        known.options.push_back(opt);
      }
    }
    po::store(OncePerSource(known, desc, options, [](const std::string& n) { return "--" + n + " given more than once"; },
                            problems),
              vm);
  } catch (const po::error& e) {
    problems.push_back(command + ": " + e.what());
  }

  // 2. Environment: OUTBOX_<NAME> of this subcommand's options. Built from `env` in the
  // shape po::parse_environment produces (it can only read the process's environ, and the
  // caller's map keeps parsing a pure function), then layered by the same store().
  try {
    po::parsed_options from_env{&desc};
    for (const auto* o : options) {
      auto it = env.find(EnvName(o->name));
      if (it == env.end()) continue;
      po::option opt{o->name, {}};
      if (o->kind == OptionKind::kList) {
        std::stringstream in{it->second};
        for (std::string one; std::getline(in, one, ';');) {
          if (one.empty()) continue;
          // A piece without '=' continues the previous value: a ';' inside a value (a
          // password) must not split it, nor have a piece of it echoed as an error.
          if (one.find('=') == std::string::npos && !opt.value.empty()) {
            opt.value.back() += ";" + one;
          } else {
            opt.value.push_back(one);
          }
        }
        if (opt.value.empty()) continue;
      } else {
        opt.value.push_back(it->second);
      }
      from_env.options.push_back(opt);
    }
    po::store(from_env, vm);
  } catch (const po::error& e) {
    problems.push_back(command + ": environment: " + e.what());
  }

  // 3. The config file.
  if (vm.count(config_option) && !vm[config_option].as<std::string>().empty()) {
    const std::string path = vm[config_option].as<std::string>();
    std::ifstream in{path};
    if (!in) {
      // Say why (permission denied, no such file): under systemd the file must be readable
      // by the service's user, which is the usual cause.
      int err = errno;
      problems.push_back("--" + config_option + ": cannot read '" + path + "': " + std::strerror(err) +
                         " (running as uid " + std::to_string(::geteuid()) + ")");
    } else {
      try {
        po::options_description every;  // names of every subcommand, so one file serves all
        for (const auto& name : file_known) {
          if (every.find_nothrow(name, false) == nullptr) {
            every.add_options()(name.c_str(), po::value<std::vector<std::string>>()->composing(), "");
          }
        }
        auto parsed = po::parse_config_file(in, every, /*allow_unregistered=*/true);
        po::parsed_options own{&desc};
        for (const auto& opt : parsed.options) {
          if (opt.unregistered) {
            problems.push_back(path + ": unknown option '" + opt.string_key + "'");
          } else if (opt.string_key == config_option) {
            problems.push_back(path + ": '" + config_option + "' cannot name another file");
          } else if (Find(options, opt.string_key) != nullptr) {
            own.options.push_back(opt);
          }
        }
        po::store(OncePerSource(own, desc, options,
                                [&](const std::string& n) { return path + ": '" + n + "' set more than once"; },
                                problems),
                  vm);
      } catch (const po::error& e) {
        problems.push_back(path + ": " + e.what());
      }
    }
  }

  for (const auto* o : options) {
    if (!vm.count(o->name)) continue;
    if (o->kind == OptionKind::kList) {
      out.texts[o->name] = vm[o->name].as<std::vector<std::string>>();
    } else {
      out.texts[o->name] = {vm[o->name].as<std::string>()};
    }
  }
  return out;
}

std::string DescribeOptions(const std::vector<const OptionInfo*>& options) {
  po::options_description desc{"Options"};
  for (const auto* o : options) Add(desc, *o);
  desc.add_options()("help,h", "show this help");
  std::ostringstream out;
  out << desc;
  return out.str();
}

}  // namespace outbox::relay
