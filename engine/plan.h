// engine/plan.h: the arena planner of Session (defined in engine/engine.cpp).
// An internal of the engine, not part of its API (engine/engine.h): only
// engine.cpp and the planner's tests (tests/engine/test_executor.cpp) include it.
#pragma once

#include <cstddef>
#include <vector>

namespace octet::engine {

// One buffer to place in the arena: `bytes` long, live from step `first` to
// step `last` inclusive.
struct Lifetime {
  size_t bytes = 0;
  int first = 0, last = 0;
};
// Greedy-by-size placement (largest first, each at the lowest aligned offset
// that does not collide with an already placed buffer of overlapping
// lifetime). Returns the offsets; *total receives the arena size.
std::vector<size_t> plan_arena(const std::vector<Lifetime>& buffers, size_t align, size_t* total);

}  // namespace octet::engine
