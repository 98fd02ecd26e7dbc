// tests/core/compare.h: comparing two tensors, slicing a batch, and one
// conv2d forward + backward to compare (shared by the core tests, and by the
// nn and quant tests of data-parallel pieces).
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <span>

#include "core/ops.h"
#include "core/tensor.h"

namespace octet::test {

// Largest |a - b| / (1 + |b|) over all elements; shapes must match.
inline double max_err(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double worst = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double e = std::fabs(double(a.data()[i]) - b.data()[i]) / (1.0 + std::fabs(double(b.data()[i])));
    if (!(e <= worst)) worst = e;  // NaN sticks
  }
  return worst;
}

// Samples [begin, end) of an [N, ...] tensor, as a new tensor (maybe empty):
// one rank's shard of a batch, in the data-parallel tests.
inline Tensor rows(const Tensor& t, int64_t begin, int64_t end) {
  Shape s = t.shape();
  const int64_t per = t.numel() / s[0];
  s[0] = end - begin;
  return Tensor::from(s, std::span<const float>(t.data() + begin * per, static_cast<size_t>((end - begin) * per)));
}

// Same shape and bit for bit the same values.
inline bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * sizeof(float)) == 0;
}

// conv2d forward + backward (gradient gy) on fresh copies of the inputs:
// y and the gradients of x, w and the bias (undefined without a bias).
struct ConvRun {
  Tensor y, dx, dw, db;
};
inline ConvRun run_conv(const Tensor& x0, const Tensor& w0, const Tensor& b0, const Tensor& gy, Conv2dOptions opt) {
  Tensor x = x0.detach().requires_grad_();
  Tensor w = w0.detach().requires_grad_();
  Tensor b = b0.defined() ? b0.detach().requires_grad_() : Tensor();
  Tensor y = conv2d(x, w, b, opt);
  y.backward(gy);
  return {y, x.grad(), w.grad(), b.defined() ? b.grad() : Tensor()};
}

}  // namespace octet::test
