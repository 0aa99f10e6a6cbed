#include "core/lane_plan.h"

#include <algorithm>

namespace outbox::relay {

int FairShare(int lane_count, int live_relays, int max_lanes) {
  int live = std::max(1, live_relays);
  int share = (lane_count + live - 1) / live;
  return max_lanes > 0 ? std::min(share, max_lanes) : share;
}

LanePlan PlanLanes(int lane_count, int live_relays, int max_lanes, int member_slot, const std::set<int>& owned) {
  LanePlan plan;
  plan.target = FairShare(lane_count, live_relays, max_lanes);
  int have = static_cast<int>(owned.size());
  if (have < plan.target) {
    int live = std::max(1, live_relays);
    int start = (member_slot % live) * (lane_count / live);
    for (int i = 0; i < lane_count; ++i) {
      int lane = (start + i) % lane_count;
      if (!owned.count(lane)) plan.try_acquire.push_back(lane);
    }
  } else if (have > plan.target) {
    // Hand back the lanes furthest from our starting point first.
    std::vector<int> mine(owned.begin(), owned.end());
    plan.release.assign(mine.end() - (have - plan.target), mine.end());
  }
  return plan;
}

}  // namespace outbox::relay
