// nn/sam.h: sharpness-aware minimization (SAM; Foret et al., ICLR 2021).
//
// SAM prefers weights whose whole neighbourhood has a low loss, not only the
// point itself: a flat minimum rather than a sharp one. Each step takes two
// gradients of the same batch:
//
//   g  = dL/dw at w                      the usual gradient
//   e  = rho * g / ||g||                 a step of length rho uphill
//   g' = dL/dw at w + e                  the gradient at that nearby worse point
//   w <- the optimizer's step from w with g' (momentum, weight decay as usual)
//
// ||g|| is the L2 norm over the gradients of all parameters together. The
// second pass runs in training mode (batch statistics) but must not move the
// BN running statistics, which would otherwise count the batch twice, once
// at weights that are never kept: FrozenBatchNormStatistics holds them.
// The price is a second forward and backward pass per step.
//
//   SharpnessAwareMinimization sam(0.05f);
//   loss_at(w).backward();
//   sam.ascend(params);                       // w + e, remembers w
//   model.zero_grad();
//   { FrozenBatchNormStatistics frozen(model); loss_at(w + e).backward(); }
//   sam.descend(params);                      // w again, bit for bit; grads stay g'
//   optimizer.step();
#pragma once

#include <utility>
#include <vector>

#include "nn/module.h"

namespace octet::nn {

class SharpnessAwareMinimization {
 public:
  // rho > 0: the radius of the neighbourhood (0.05 in the paper for CIFAR).
  explicit SharpnessAwareMinimization(float rho);

  // Moves every parameter that has a gradient to w + rho * g / ||g|| and
  // keeps a copy of w. Returns ||g||. A zero gradient moves nothing.
  double ascend(const NamedTensors& params);
  // Puts back the w that ascend() saw, exactly; the gradients are untouched.
  void descend(const NamedTensors& params);

  float rho() const { return rho_; }

 private:
  float rho_;
  std::vector<Tensor> saved_;  // w, one per parameter in ascend()'s order (undefined: no gradient)
};

// Within its scope the model's BatchNorm2d layers keep their running
// statistics as they are (momentum 0: running = 1 * running + 0 * batch)
// while training-mode forwards still normalize with batch statistics.
class FrozenBatchNormStatistics {
 public:
  explicit FrozenBatchNormStatistics(Module& model);
  ~FrozenBatchNormStatistics();
  FrozenBatchNormStatistics(const FrozenBatchNormStatistics&) = delete;
  FrozenBatchNormStatistics& operator=(const FrozenBatchNormStatistics&) = delete;

 private:
  std::vector<std::pair<BatchNorm2d*, float>> saved_;  // layer, its momentum
};

}  // namespace octet::nn
