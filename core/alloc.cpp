// core/alloc.cpp: the size-bucketed caching allocator behind Tensor storage.
#include "core/alloc.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define OCTET_ALLOC_NO_CACHE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OCTET_ALLOC_NO_CACHE 1
#endif
#endif
#ifndef OCTET_ALLOC_NO_CACHE
#define OCTET_ALLOC_NO_CACHE 0
#endif

namespace octet {

namespace {

constexpr size_t kAlign = 64;

// The most the cache holds; beyond it, a freed buffer goes back to the
// system. Half of the machine's memory, at least 1 GiB: every buffer a step
// frees must be there again for the next step, and a big network frees
// gigabytes (ResNet-50 at batch 128: with a 1 GiB cap, 11.6 million page
// faults and 38% system time over two steps, docs/results.md, session 23).
size_t max_cached_bytes() {
  static const size_t cap = [] {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
    const size_t half = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) / 2 : 0;
    return std::max(size_t(1) << 30, half);
  }();
  return cap;
}

// Bucket = size rounded up to 64 bytes below 64 KiB and to 4 KiB above, so a
// buffer is only reused for requests within one page of its size.
size_t bucket_of(size_t bytes) {
  size_t unit = bytes < (size_t(64) << 10) ? kAlign : size_t(4096);
  return (bytes + unit - 1) / unit * unit;
}

struct Cache {
  std::mutex mutex;
  std::unordered_map<size_t, std::vector<void*>> free_lists;
  size_t cached_bytes = 0;
  int64_t hits = 0, misses = 0;
};

// Never destroyed: tensors held by static objects may be freed after main().
Cache& cache() {
  static Cache* c = new Cache;
  return *c;
}

void release_all(Cache& c) {
  std::lock_guard<std::mutex> lock(c.mutex);
  for (auto& [bucket, list] : c.free_lists)
    for (void* p : list) std::free(p);
  c.free_lists.clear();
  c.cached_bytes = 0;
}

// When the system has no memory left, the cached buffers go back first.
void* system_alloc(size_t bytes) {
  void* p = std::aligned_alloc(kAlign, bytes);
  if (!p) {
    release_all(cache());
    p = std::aligned_alloc(kAlign, bytes);
  }
  if (!p) throw std::bad_alloc();
  return p;
}

void release(void* p, size_t bucket) {
  if (OCTET_ALLOC_NO_CACHE) {
    std::free(p);
    return;
  }
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.cached_bytes + bucket <= max_cached_bytes()) {
      c.free_lists[bucket].push_back(p);
      c.cached_bytes += bucket;
      return;
    }
  }
  std::free(p);
}

}  // namespace

std::shared_ptr<float[]> alloc_floats(int64_t n) {
  if (n < 0) throw std::bad_alloc();
  size_t bucket = bucket_of(n == 0 ? kAlign : static_cast<size_t>(n) * sizeof(float));
  void* p = nullptr;
  if (!OCTET_ALLOC_NO_CACHE) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.free_lists.find(bucket);
    if (it != c.free_lists.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      c.cached_bytes -= bucket;
      ++c.hits;
    } else {
      ++c.misses;
    }
  }
  if (!p) p = system_alloc(bucket);
  // If the control block cannot be allocated, shared_ptr calls the deleter itself.
  return std::shared_ptr<float[]>(static_cast<float*>(p), [bucket](float* q) { release(q, bucket); });
}

AllocStats alloc_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  AllocStats s;
  s.cached_bytes = static_cast<int64_t>(c.cached_bytes);
  s.hits = c.hits;
  s.misses = c.misses;
  return s;
}

void alloc_release_cache() { release_all(cache()); }

}  // namespace octet
