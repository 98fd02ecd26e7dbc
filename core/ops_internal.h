// core/ops_internal.h: helpers shared by core/tensor.cpp and core/ops*.cpp
// (not part of the public API).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/parallel.h"
#include "core/tensor.h"

namespace octet::detail {

// OCTET_SIMD_CLONES on a function compiles it for AVX-512, AVX2 and the
// baseline x86-64, picked at load time by the CPU (gcc function multiversioning),
// so the memory-bound loops vectorize at the width the machine has while the
// binary still runs anywhere. A no-op elsewhere and under sanitizers.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define OCTET_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OCTET_SIMD_CLONES
#endif

// Elements per task for memory-bound elementwise loops: big enough that task
// overhead is noise, small enough that 2 threads split a 128x16x32x32 tensor.
constexpr int64_t kElementwiseGrain = int64_t(1) << 16;

template <class F>
void parallel_elementwise(int64_t n, F&& fn) {
  parallel_for(0, n, kElementwiseGrain, fn);
}

// dst[i] += src[i], i < n.
void add_into(float* dst, const float* src, int64_t n);
// a + b for equal shapes, no graph.
Tensor add_raw(const Tensor& a, const Tensor& b);

[[noreturn]] inline void fail(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string(op) + ": " + what);
}

inline void require_defined(const char* op, const Tensor& t, const char* name) {
  if (!t.defined()) fail(op, std::string(name) + " is undefined");
}

inline void require_ndim(const char* op, const Tensor& t, const char* name, int ndim) {
  require_defined(op, t, name);
  if (t.ndim() != ndim)
    fail(op, std::string(name) + " must have " + std::to_string(ndim) + " dims, got shape " + shape_str(t.shape()));
}

// True when grad mode is on and t requires grad: the op must compute its grad.
inline bool needs_grad(const Tensor& t) { return t.defined() && t.requires_grad() && grad_enabled(); }

}  // namespace octet::detail
