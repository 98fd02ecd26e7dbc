// core/parallel.h: the one thread wrapper. Every parallel loop in core/ and nn/
// goes through parallel_for(); nothing else calls oneTBB directly.
//
// Policy (also in README "Threads"): oneTBB owns the worker threads, and
// OpenBLAS is always single-threaded (core/blas.cpp calls
// openblas_set_num_threads(1) before the first sgemm). Kernels parallelize by
// cutting their work into tiles, and each TBB task calls sgemm on its own tile,
// so the cores are never oversubscribed.
//
//     octet::set_num_threads(2);                 // 0 = all cores (the default)
//     octet::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
//       for (int64_t i = b; i < e; ++i) out[i] = f(in[i]);
//     });
//
// Determinism: parallel_for only promises that every index in [begin, end) is
// visited exactly once. Kernels that reduce across indices give each fixed
// index range its own partial result and combine the partials in index order,
// so their output does not depend on scheduling.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace octet {

// Sets the number of worker threads for the whole process (n >= 1), or back to
// the number of cores with n = 0. Throws std::invalid_argument for n < 0.
void set_num_threads(int n);
// The number of threads parallel_for may use.
int num_threads();
// Number of cores the process may run on.
int hardware_threads();

namespace detail {
// A non-owning reference to a callable void(int64_t, int64_t).
struct RangeFn {
  void* obj;
  void (*call)(void*, int64_t, int64_t);
  void operator()(int64_t b, int64_t e) const { call(obj, b, e); }
};
void parallel_for_impl(int64_t begin, int64_t end, int64_t grain, RangeFn fn);
}  // namespace detail

// Calls fn(b, e) on disjoint chunks covering [begin, end), each at most
// `grain` long (grain < 1 is treated as 1), possibly on several threads.
// Runs inline when the range fits in one chunk or only one thread is allowed.
// Exceptions thrown by fn propagate to the caller.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& fn) {
  if (end <= begin) return;
  using Fn = std::remove_reference_t<F>;
  detail::RangeFn ref{const_cast<void*>(static_cast<const void*>(&fn)),
                      [](void* o, int64_t b, int64_t e) { (*static_cast<Fn*>(o))(b, e); }};
  detail::parallel_for_impl(begin, end, grain, ref);
}

}  // namespace octet
