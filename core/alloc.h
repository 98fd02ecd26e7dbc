// core/alloc.h: storage for tensors. 64-byte aligned float buffers from a
// size-bucketed cache: a training step allocates the same sizes every step,
// so freed buffers are kept and handed out again instead of going back to the
// OS (page faults on fresh memory otherwise dominate the memory-bound ops).
// It holds up to half of the machine's memory (at least 1 GiB), and gives it
// all back when the system runs out. Thread-safe. Under AddressSanitizer the
// cache is bypassed so use-after-free is still caught.
#pragma once

#include <cstdint>
#include <memory>

namespace octet {

// An uninitialized buffer of n floats (n >= 0), 64-byte aligned. Throws
// std::bad_alloc when memory runs out.
std::shared_ptr<float[]> alloc_floats(int64_t n);

struct AllocStats {
  int64_t cached_bytes = 0;  // held by the cache, free for reuse
  int64_t hits = 0;          // allocations served from the cache
  int64_t misses = 0;        // allocations that went to the system
};
AllocStats alloc_stats();
// Returns every cached buffer to the system.
void alloc_release_cache();

}  // namespace octet
