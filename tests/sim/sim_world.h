#pragma once

// A seeded, single-threaded simulated world for the relay core (relay/core): several
// Relay objects, the real state machine, driven against an in-memory model of
// PostgreSQL (sim_store) and of an idempotent librdkafka producer with its brokers
// (sim_kafka), with faults injected from the seed (crashes, lost sessions, restarts,
// broker outages, refused batches, network partitions) and every invariant checked
// during and at the end of the world. See docs/simulation.md.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace outbox::sim {

struct WorldOptions {
  std::uint64_t seed = 1;
  bool trace = false;          // keep the event trace (and the relays' logs) for printing
  int schema_version = 5;      // 1: outbox.publish / retry_dead_letter as in 0001; 5: 0005_lanes.sql
};

struct WorldResult {
  std::uint64_t seed = 0;
  std::uint64_t events = 0;
  std::optional<std::string> violation;  // the first invariant that failed
  std::vector<std::string> trace;        // when WorldOptions::trace
  std::string summary;                   // the world's shape, one line
};

// Builds the world from the seed, runs it to the end and checks it.
WorldResult RunWorld(const WorldOptions& options);

}  // namespace outbox::sim
