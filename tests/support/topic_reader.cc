#include "topic_reader.h"

#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "process.h"
#include "wait.h"

namespace outbox::test {

std::vector<Record> ReadTopic(const std::string& bootstrap, const std::string& topic, int count,
                              std::chrono::milliseconds deadline, bool to_end) {
  auto seconds = std::to_string(Scaled(deadline).count() / 1000.0);
  std::vector<std::string> args = {"/usr/bin/python3", SourceDir() + "/tests/support/kafka_read.py", "--brokers",
                                   bootstrap, "--topic", topic, "--count", std::to_string(count), "--timeout", seconds};
  if (to_end) args.push_back("--to-end");
  auto r = RunProcess(args);
  if (r.code != 0) throw std::runtime_error("kafka_read.py failed: " + r.err);
  std::vector<Record> out;
  std::istringstream lines{r.out};
  std::string line;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line);
    Record rec;
    rec.partition = j["p"].get<int>();
    rec.offset = j["o"].get<std::int64_t>();
    if (!j["k"].is_null()) rec.key = j["k"].get<std::string>();
    if (!j["v"].is_null()) rec.value = j["v"].get<std::string>();
    for (auto it = j["h"].begin(); it != j["h"].end(); ++it) {
      rec.headers[it.key()] = it->is_null() ? "" : it->get<std::string>();
    }
    out.push_back(std::move(rec));
  }
  return out;
}

DeliveryReport Analyze(const std::vector<Record>& records) {
  DeliveryReport rep;
  std::set<std::string> ids;
  std::map<std::string, int> next_seq;      // key -> next expected first occurrence
  std::map<std::string, std::set<int>> seen;  // key -> seqs seen
  std::set<std::string> bad_keys;
  for (const auto& r : records) {
    ++rep.records;
    auto mid = r.headers.find("message_id");
    if (mid == r.headers.end()) {
      ++rep.missing_message_id;
      continue;
    }
    ids.insert(mid->second);
    auto seq_it = r.headers.find("key_seq");
    if (!r.key || seq_it == r.headers.end()) continue;
    int seq = std::stoi(seq_it->second);
    auto& s = seen[*r.key];
    if (s.count(seq)) continue;  // a duplicate: only first occurrences count
    s.insert(seq);
    int& expected = next_seq[*r.key];
    if (seq != expected && !bad_keys.count(*r.key)) {
      bad_keys.insert(*r.key);
      if (rep.first_problem.empty()) {
        rep.first_problem = "key " + *r.key + ": expected seq " + std::to_string(expected) + " first, got " +
                            std::to_string(seq) + " (partition " + std::to_string(r.partition) + " offset " +
                            std::to_string(r.offset) + ")";
      }
    }
    expected = std::max(expected, seq + 1);
  }
  rep.distinct = static_cast<int>(ids.size());
  rep.duplicates = rep.records - rep.missing_message_id - rep.distinct;
  rep.out_of_order_keys = static_cast<int>(bad_keys.size());
  return rep;
}

}  // namespace outbox::test
