#pragma once

// The option table: every option of every subcommand is declared once (cli.cc), as
//   Int("batch-size", &RunConfig::batch_size, 1, 100000, "rows claimed per lane and round trip")
// which gives its name (flag --batch-size, environment OUTBOX_BATCH_SIZE, config file
// `batch-size = ...`), the member it fills, its range, and its help line; the default is
// the struct's in-class default (RunConfig{}.batch_size), rendered into the help line, so
// each default lives in one place. Layering (flags > environment > config file) is
// Boost.Program_options' own store(); this file only adds typed validation that reports
// every problem instead of stopping at the first.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace outbox::relay {

using Problems = std::vector<std::string>;
using Environment = std::map<std::string, std::string>;

// How an option takes values.
enum class OptionKind {
  kValue,  // --name VALUE, at most once per source; the highest source wins
  kFlag,   // --name (true) or --name=BOOL
  kList,   // --name VALUE, repeatable; every source adds (flags first, then env, file)
};

// What layering needs to know of an option (name, kind, help).
struct OptionInfo {
  std::string name;
  OptionKind kind = OptionKind::kValue;
  std::string value_name;  // shown in --help: N, DURATION, CONNINFO, ...
  std::string help;        // complete: range and default included
  bool required = false;   // absent or empty is a problem
};

// An option that fills a member of configuration C.
template <class C>
struct Option : OptionInfo {
  // Validates the layered texts (for kValue and kFlag only the winning one is passed)
  // and stores the result into c; appends one problem per bad text. Called only when
  // some source gave the option.
  std::function<void(const std::vector<std::string>& texts, C& c, Problems& problems)> set;
};

// "OUTBOX_BATCH_SIZE" for "batch-size".
std::string EnvName(std::string_view option);

// Text parsers: on a bad text they append "--NAME: expected ..., got 'TEXT'" and return
// nothing.
std::optional<std::int64_t> ParseInt(const std::string& name, const std::string& text, std::int64_t min,
                                     std::int64_t max, Problems& problems);
// 250ms, 6s, 1m, 2h.
std::optional<std::chrono::milliseconds> ParseDuration(const std::string& name, const std::string& text,
                                                       std::chrono::milliseconds min,
                                                       std::chrono::milliseconds max, Problems& problems);
// true/false, 1/0, yes/no, on/off (any case).
std::optional<bool> ParseBool(const std::string& name, const std::string& text, Problems& problems);
// The way a user writes it: 0s, 200ms, 6s, 60s, 10m, 168h (the largest unit that keeps
// the number exact, moving up a unit only from 100 on).
std::string FormatDuration(std::chrono::milliseconds d);

// ---- Declaring options ----------------------------------------------------------------

// A checker of a text option's value: the problems of one value (empty = fine).
using TextCheck = std::function<Problems(const std::string& value)>;

// A required text option: absent or empty is "--NAME is required (or set OUTBOX_NAME)".
template <class C>
Option<C> Required(std::string name, std::string C::*member, std::string value_name, const std::string& help,
                   TextCheck check = {}) {
  Option<C> o;
  o.name = std::move(name);
  o.value_name = std::move(value_name);
  o.help = help + " (required)";
  o.required = true;
  o.set = [member, check](const std::vector<std::string>& texts, C& c, Problems& problems) {
    c.*member = texts.back();
    if (check && !texts.back().empty()) {
      for (auto& p : check(texts.back())) problems.push_back(std::move(p));
    }
  };
  return o;
}

// An optional text option. `when_empty` names what the empty default means ("off"); an
// empty default without it is not shown.
template <class C>
Option<C> Text(std::string name, std::string C::*member, std::string value_name, const std::string& help,
               const char* when_empty = nullptr, TextCheck check = {}) {
  Option<C> o;
  o.name = std::move(name);
  o.value_name = std::move(value_name);
  const std::string def = C{}.*member;
  o.help = help;
  if (!def.empty()) o.help += " (default " + def + ")";
  if (def.empty() && when_empty) o.help += std::string(" (default ") + when_empty + ")";
  o.set = [member, check](const std::vector<std::string>& texts, C& c, Problems& problems) {
    c.*member = texts.back();
    if (check && !texts.back().empty()) {
      for (auto& p : check(texts.back())) problems.push_back(std::move(p));
    }
  };
  return o;
}

// An integer from min to max.
template <class C>
Option<C> Int(std::string name, int C::*member, int min, int max, const std::string& help) {
  Option<C> o;
  o.name = std::move(name);
  o.value_name = "N";
  o.help = help + ", " + std::to_string(min) + ".." + std::to_string(max) + " (default " +
           std::to_string(C{}.*member) + ")";
  o.set = [name = o.name, member, min, max](const std::vector<std::string>& texts, C& c, Problems& problems) {
    if (auto n = ParseInt(name, texts.back(), min, max, problems)) c.*member = static_cast<int>(*n);
  };
  return o;
}

// A duration from min to max, written 250ms, 6s, 1m or 2h.
template <class C>
Option<C> Duration(std::string name, std::chrono::milliseconds C::*member, std::chrono::milliseconds min,
                   std::chrono::milliseconds max, const std::string& help) {
  Option<C> o;
  o.name = std::move(name);
  o.value_name = "DURATION";
  o.help = help + ", " + FormatDuration(min) + ".." + FormatDuration(max) + " (default " +
           FormatDuration(C{}.*member) + ")";
  o.set = [name = o.name, member, min, max](const std::vector<std::string>& texts, C& c, Problems& problems) {
    if (auto d = ParseDuration(name, texts.back(), min, max, problems)) c.*member = *d;
  };
  return o;
}

// A boolean: `--NAME` alone means true.
template <class C>
Option<C> Flag(std::string name, bool C::*member, const std::string& help) {
  Option<C> o;
  o.name = std::move(name);
  o.kind = OptionKind::kFlag;
  o.value_name = "BOOL";
  o.help = help + (C{}.*member ? " (default true)" : "");
  o.set = [name = o.name, member](const std::vector<std::string>& texts, C& c, Problems& problems) {
    if (auto b = ParseBool(name, texts.back(), problems)) c.*member = *b;
  };
  return o;
}

// One of a fixed set of words, each standing for a value of T.
template <class C, class T>
Option<C> Choice(std::string name, T C::*member, std::type_identity_t<std::vector<std::pair<std::string, T>>> choices,
                 std::string value_name, const std::string& help) {
  std::string words, def;
  for (size_t i = 0; i < choices.size(); ++i) {
    words += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i].first;
    if (choices[i].second == C{}.*member) def = choices[i].first;
  }
  Option<C> o;
  o.name = std::move(name);
  o.value_name = std::move(value_name);
  o.help = help + ": " + words + (def.empty() ? "" : " (default " + def + ")");
  o.set = [name = o.name, member, choices, words](const std::vector<std::string>& texts, C& c,
                                                  Problems& problems) {
    for (const auto& [word, value] : choices) {
      if (texts.back() == word) {
        c.*member = value;
        return;
      }
    }
    problems.push_back("--" + name + ": expected " + words + ", got '" + texts.back() + "'");
  };
  return o;
}

// A repeatable option whose texts `parse` turns into the member's value.
template <class C, class T>
Option<C> List(std::string name, T C::*member, std::string value_name, const std::string& help,
               std::type_identity_t<std::function<T(const std::vector<std::string>&, Problems&)>> parse) {
  Option<C> o;
  o.name = std::move(name);
  o.kind = OptionKind::kList;
  o.value_name = std::move(value_name);
  o.help = help;
  o.set = [member, parse](const std::vector<std::string>& texts, C& c, Problems& problems) {
    c.*member = parse(texts, problems);
  };
  return o;
}

// The option of a part of Outer (e.g. Invocation::run) as an option of Outer.
template <class Outer, class C>
Option<Outer> Lift(C Outer::*part, Option<C> option) {
  Option<Outer> o;
  static_cast<OptionInfo&>(o) = static_cast<const OptionInfo&>(option);
  o.set = [part, set = std::move(option.set)](const std::vector<std::string>& texts, Outer& outer,
                                              Problems& problems) { set(texts, outer.*part, problems); };
  return o;
}

// ---- Layering -----------------------------------------------------------------------

// What the sources said, after Boost.Program_options layered them.
struct LayeredValues {
  // Option name -> texts: the winning text for kValue/kFlag, every text for kList.
  std::map<std::string, std::vector<std::string>> texts;
  std::vector<std::string> arguments;  // positional arguments, in order
};

// Layers the sources of one subcommand's `options` with Boost.Program_options' store:
// command-line `args` first, then `env` (OUTBOX_<NAME>; a list option's entries are
// separated by ';'), then the file named by the option `config_option` (INI style,
// `name = value`; list options on several lines). The file may also hold options of
// other subcommands (`file_known`: every option name of every subcommand), which are
// ignored, so one file serves every subcommand; other names are problems. Unknown flags,
// options given twice and unreadable files are problems too; parsing goes on after each.
LayeredValues Layer(const std::string& command, const std::vector<const OptionInfo*>& options,
                    const std::vector<std::string>& args, const Environment& env,
                    const std::string& config_option, const std::vector<std::string>& file_known,
                    Problems& problems);

// The options as --help shows them, with `--help` added.
std::string DescribeOptions(const std::vector<const OptionInfo*>& options);

}  // namespace outbox::relay
