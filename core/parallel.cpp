// core/parallel.cpp: parallel_for over oneTBB; thread count via tbb::global_control.
#include "core/parallel.h"

#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/info.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>

#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

namespace octet {

namespace {
std::mutex g_mutex;
std::unique_ptr<tbb::global_control> g_control;  // guarded by g_mutex
int g_threads = 0;                                // 0 = not set: all cores
}  // namespace

int hardware_threads() {
  int n = tbb::info::default_concurrency();
  return n > 0 ? n : 1;
}

void set_num_threads(int n) {
  if (n < 0) throw std::invalid_argument("set_num_threads: thread count must be >= 0, got " + std::to_string(n));
  std::lock_guard<std::mutex> lock(g_mutex);
  g_control.reset();
  g_threads = n;
  if (n > 0) g_control = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, n);
}

int num_threads() {
  int active = static_cast<int>(tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
  int hw = hardware_threads();
  return active < hw ? active : hw;
}

namespace detail {
void parallel_for_impl(int64_t begin, int64_t end, int64_t grain, RangeFn fn) {
  if (grain < 1) grain = 1;
  if (end - begin <= grain || num_threads() == 1) {
    // Inline, in chunks of `grain` (chunk boundaries are not part of the contract).
    for (int64_t b = begin; b < end; b += grain) fn(b, b + grain < end ? b + grain : end);
    return;
  }
  // simple_partitioner: chunks of at most `grain`, so kernels may size scratch by it.
  tbb::parallel_for(tbb::blocked_range<int64_t>(begin, end, static_cast<size_t>(grain)),
                    [&](const tbb::blocked_range<int64_t>& r) { fn(r.begin(), r.end()); },
                    tbb::simple_partitioner());
}
}  // namespace detail

}  // namespace octet
