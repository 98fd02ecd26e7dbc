// core/ops_ref.h: plain-loop reference implementations of the kernels in
// core/ops.h (double accumulation, no threads, no autograd). They are the test
// oracle for the fast kernels: the same contract, written to be obviously right.
#pragma once

#include "core/ops.h"

namespace octet::ref {

// Same contract as octet::conv2d (no graph).
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, Conv2dOptions opt = {});

struct Conv2dGrads {
  Tensor dx, dw, dbias;  // dbias is [Cout]
};
// Gradients of conv2d for output gradient gy.
Conv2dGrads conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& gy, Conv2dOptions opt = {});

Tensor max_pool2d(const Tensor& x, int kernel, int stride, int pad = 0);
Tensor avg_pool2d(const Tensor& x, int kernel, int stride, int pad = 0);

// Same contract as octet::batch_norm, including the running-stat update.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                  bool training, float momentum = 0.1f, float eps = 1e-5f);

}  // namespace octet::ref
