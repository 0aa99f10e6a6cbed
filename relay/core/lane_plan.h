#pragma once

#include <set>
#include <vector>

namespace outbox::relay {

// How many lanes one relay should own: an even share of lane_count over the live relays
// (rounded up, so every lane has an owner), capped by max_lanes when max_lanes > 0.
int FairShare(int lane_count, int live_relays, int max_lanes);

struct LanePlan {
  int target = 0;                 // lanes this relay should own
  std::vector<int> try_acquire;   // free-looking lanes to try, best first
  std::vector<int> release;       // owned lanes to hand back (beyond target)
};

// Decides which lanes to try and which to release. Relays start their search at
// different offsets (by member slot) so that they rarely contend for the same lanes.
LanePlan PlanLanes(int lane_count, int live_relays, int max_lanes, int member_slot, const std::set<int>& owned);

}  // namespace outbox::relay
