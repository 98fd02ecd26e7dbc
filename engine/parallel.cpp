// engine/parallel.cpp: the engine's one thread wrapper. With oneTBB (the
// normal build) parallel_for runs in a task arena of num_threads() workers;
// built without it (OCTET_ENGINE_NO_TBB, e.g. the Arm cross build) it runs
// the whole range on the calling thread. Kernels compute every output element
// from its inputs alone, so the result never depends on how the range is cut.
#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>

#include "engine/kernels.h"

#ifndef OCTET_ENGINE_NO_TBB
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#endif

namespace octet::engine {

#ifndef OCTET_ENGINE_NO_TBB

namespace {

int all_cores() { return std::max(1, tbb::info::default_concurrency()); }

// The arena is replaced only by set_num_threads, which must not race with a
// running parallel_for (set the threads once, before running).
struct Pool {
  std::mutex mutex;
  std::atomic<int> threads{0};
  std::unique_ptr<tbb::task_arena> arena;
};
Pool& pool() {
  static Pool p;
  return p;
}

tbb::task_arena& arena() {
  Pool& p = pool();
  if (p.threads.load(std::memory_order_acquire) == 0) {
    std::lock_guard<std::mutex> lock(p.mutex);
    if (!p.arena) {
      p.arena = std::make_unique<tbb::task_arena>(all_cores());
      p.threads.store(all_cores(), std::memory_order_release);
    }
  }
  return *p.arena;
}

}  // namespace

void set_num_threads(int threads) {
  Pool& p = pool();
  const int t = threads <= 0 ? all_cores() : threads;
  std::lock_guard<std::mutex> lock(p.mutex);
  p.arena = std::make_unique<tbb::task_arena>(t);
  p.threads.store(t, std::memory_order_release);
}

int num_threads() {
  arena();
  return pool().threads.load(std::memory_order_acquire);
}

void parallel_for(size_t n, size_t grain, const void* ctx, void (*fn)(const void* ctx, size_t begin, size_t end)) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  tbb::task_arena& a = arena();
  if (n <= grain || a.max_concurrency() == 1) {
    fn(ctx, 0, n);
    return;
  }
  a.execute([&] {
    tbb::parallel_for(tbb::blocked_range<size_t>(0, n, grain),
                      [&](const tbb::blocked_range<size_t>& r) { fn(ctx, r.begin(), r.end()); });
  });
}

#else  // OCTET_ENGINE_NO_TBB: one thread

void set_num_threads(int) {}
int num_threads() { return 1; }

void parallel_for(size_t n, size_t, const void* ctx, void (*fn)(const void* ctx, size_t begin, size_t end)) {
  if (n > 0) fn(ctx, 0, n);
}

#endif

}  // namespace octet::engine
