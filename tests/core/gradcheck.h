// tests/core/gradcheck.h: central-difference gradient checking for the core
// ops (shared by the core test executables).
//
// The checked scalar is L = sum(f(inputs) * R) with R a fixed random tensor,
// so every output element contributes with its own weight. The analytic
// gradient comes from backward(R); the numeric one from
// (L(x + eps) - L(x - eps)) / (2 eps), with L summed in double from the float
// outputs. An element passes when
//     |analytic - numeric| <= rtol * max(|analytic|, |numeric|) + atol.
// The ops compute in float32, so eps is 1e-2 by default: the error of the
// difference quotient is O(eps^2) (zero for conv/linear/matmul/add/mul, which
// are linear in each input), while float rounding of L contributes about
// 1e-7 * |L| / eps.
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace octet::test {

struct GradcheckResult {
  bool ok = true;
  int64_t checked = 0;      // number of input elements compared
  double max_abs_err = 0;   // max |analytic - numeric|
  std::string worst;        // "input 1 [7]: analytic 0.3 numeric 0.31"
};

struct GradcheckOptions {
  double eps = 1e-2;
  double rtol = 1e-2;
  double atol = 1e-3;
  uint64_t seed = 1234;
};

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

inline double weighted_sum(const Tensor& y, const Tensor& r) {
  double s = 0;
  for (int64_t i = 0; i < y.numel(); ++i) s += double(y.data()[i]) * r.data()[i];
  return s;
}

// Checks d sum(f(in) * R) / d in[i] for every input with requires_grad().
inline GradcheckResult gradcheck(const Fn& f, std::vector<Tensor> inputs, GradcheckOptions opt = {}) {
  GradcheckResult res;
  for (Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) t.zero_grad();
  Tensor y = f(inputs);
  Rng rng(opt.seed);
  Tensor r = Tensor::uniform(y.shape(), rng, -1.0f, 1.0f);
  y.backward(r);
  double worst_excess = -1;
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor ga = x.grad();
    for (int64_t i = 0; i < x.numel(); ++i) {
      float saved = x.data()[i];
      double lp, lm;
      {
        NoGradGuard ng;
        x.data()[i] = static_cast<float>(saved + opt.eps);
        lp = weighted_sum(f(inputs), r);
        x.data()[i] = static_cast<float>(saved - opt.eps);
        lm = weighted_sum(f(inputs), r);
        x.data()[i] = saved;
      }
      // The step actually taken in float.
      double h = double(static_cast<float>(saved + opt.eps)) - double(static_cast<float>(saved - opt.eps));
      double num = (lp - lm) / h;
      double ana = ga.defined() ? ga.data()[i] : 0.0;
      double err = std::fabs(ana - num);
      double allowed = opt.rtol * std::max(std::fabs(ana), std::fabs(num)) + opt.atol;
      ++res.checked;
      res.max_abs_err = std::max(res.max_abs_err, err);
      if (err - allowed > worst_excess) {
        worst_excess = err - allowed;
        res.worst = "input " + std::to_string(k) + " [" + std::to_string(i) + "]: analytic " + std::to_string(ana) +
                    " numeric " + std::to_string(num);
      }
      if (err > allowed) res.ok = false;
    }
  }
  return res;
}

}  // namespace octet::test
