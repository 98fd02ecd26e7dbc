// nn/ema.h: an exponential moving average of a model's weights.
//
// Averaging the weights over the last steps of training smooths out the
// noise of the final SGD steps; the averaged model is evaluated and exported
// in place of the raw one. This is TensorFlow's
// tf.train.ExponentialMovingAverage(decay, num_updates) applied to every
// parameter and BN statistic (named_state), as timm's ModelEmaV2 does:
//
//   d      = min(decay, (1 + n) / (10 + n))     n = optimizer steps so far
//   shadow = shadow - (1 - d) * (shadow - value)
//
// The shadow starts as a copy of the model at construction. The warm-up term
// (1 + n) / (10 + n) keeps the first updates from being dominated by the
// random initialization. Horizon: about 1 / (1 - decay) steps, e.g. 0.999 ->
// 1000 steps, 2.6 epochs of CIFAR-10 at batch 128.
//
//   ExponentialMovingAverage ema(model, 0.999);
//   ... optimizer.step(); ema.update(model, steps_done);
//   { AveragedWeights use(ema, model); evaluate(model, ...); }  // back to raw after
#pragma once

#include <cstdint>

#include "nn/module.h"

namespace octet::nn {

class ExponentialMovingAverage {
 public:
  // decay in [0, 1). The shadow copies model.named_state().
  ExponentialMovingAverage(const Module& model, double decay);

  // One update after optimizer step number `num_updates` (1-based).
  // The model must have the same named_state as at construction.
  void update(const Module& model, int64_t num_updates);

  // The decay update `num_updates` uses: min(decay, (1 + n) / (10 + n)).
  double decay_at(int64_t num_updates) const;
  double decay() const { return decay_; }

  // The averaged state, names as in named_state().
  const NamedTensors& shadow() const { return shadow_; }
  // Sets the shadow from a checkpoint's tensors (names and shapes checked;
  // a missing or unexpected name throws std::runtime_error naming it).
  void load(const NamedTensors& state);

  // Exchanges the model's state with the shadow, value for value. Calling it
  // twice restores both exactly. AveragedWeights does it for a scope.
  void swap_with(Module& model);

 private:
  double decay_;
  NamedTensors shadow_;
};

// Within its scope the model holds the averaged weights; the raw weights
// come back (bit for bit) at the end, also when an exception leaves the scope.
class AveragedWeights {
 public:
  AveragedWeights(ExponentialMovingAverage& ema, Module& model) : ema_(ema), model_(model) { ema_.swap_with(model_); }
  ~AveragedWeights() { ema_.swap_with(model_); }
  AveragedWeights(const AveragedWeights&) = delete;
  AveragedWeights& operator=(const AveragedWeights&) = delete;

 private:
  ExponentialMovingAverage& ema_;
  Module& model_;
};

}  // namespace octet::nn
