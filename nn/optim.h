// nn/optim.h: optimizers over a model's named parameters.
//
//   auto opt = make_optimizer(OptimizerConfig{.kind = "sgd", .momentum = 0.9f,
//                             .nesterov = true, .weight_decay = 5e-4f}, model.named_parameters());
//   opt->set_lr(schedule.lr(step));           // every step, from nn/schedule.h
//   loss.backward();  opt->step();  model.zero_grad();
//
// Semantics (all float32 arithmetic, as the frameworks they copy):
//   SGD (PyTorch torch.optim.SGD, dampening 0):
//     g = grad + wd * p                          (coupled weight decay)
//     buf = g on the first step, else buf = momentum * buf + g
//     d = nesterov ? g + momentum * buf : buf    (d = g without momentum)
//     p -= lr * d
//   RMSProp (TensorFlow 1 tf.train.RMSPropOptimizer / ApplyRMSProp):
//     g = grad + wd * p                          (L2 term added to the loss gradient)
//     ms  = decay * ms + (1 - decay) * g^2       (ms starts at 1.0, as TF's "rms" slot)
//     mom = momentum * mom + lr * g / sqrt(ms + epsilon)   (mom starts at 0)
//     p  -= mom
//   Adam (PyTorch torch.optim.Adam, coupled weight decay, no amsgrad), t = 1, 2, ...:
//     g = grad + wd * p
//     m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g^2
//     p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//
// Weight decay applies to every parameter unless no_decay_1d is set, which
// exempts parameters with one dimension (BN gamma/beta and biases).
// Parameters whose gradient is undefined are skipped (their state too).
// state() holds the slots ("<param>.momentum_buffer", "<param>.ms", ...) and
// step_count() the number of steps taken; both go into checkpoints, so a
// resumed run continues exactly.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace octet::nn {

struct OptimizerConfig {
  std::string kind = "sgd";  // sgd | rmsprop | adam
  float lr = 0.1f;           // initial; schedules override it per step
  float momentum = 0.9f;     // sgd, rmsprop
  bool nesterov = false;     // sgd
  float weight_decay = 0.0f;
  bool no_decay_1d = false;  // exempt BN gamma/beta and biases from weight decay
  float rms_decay = 0.9f;    // rmsprop "decay" (rho)
  float epsilon = 1.0f;      // rmsprop epsilon (inside the sqrt); adam uses adam_eps
  float beta1 = 0.9f, beta2 = 0.999f, adam_eps = 1e-8f;
};

class Optimizer {
 public:
  Optimizer(const OptimizerConfig& config, NamedTensors params);
  virtual ~Optimizer() = default;

  // One update of every parameter that has a gradient, with the current lr
  // and momentum.
  void step();

  void set_lr(float lr) { lr_ = lr; }
  float lr() const { return lr_; }
  void set_momentum(float m) { momentum_ = m; }  // one-cycle momentum cycling
  float momentum() const { return momentum_; }
  const OptimizerConfig& config() const { return config_; }
  int64_t step_count() const { return steps_; }

  // The optimizer slots by name ("<param>.<slot>"). Slots that do not exist
  // yet (SGD before its first step) are absent.
  NamedTensors state() const;
  // Restores slots and the step count; names and shapes are checked and a
  // mismatch throws std::runtime_error naming the slot.
  void load_state(const NamedTensors& state, int64_t step_count);

 protected:
  struct Param {
    std::string name;
    Tensor p;
    bool decay;
    std::vector<Tensor> slots;  // per optimizer kind; undefined until created
  };
  // Updates one parameter: p [n], g [n] (already includes weight decay).
  virtual void update(Param& prm, float* p, const float* g, int64_t n) = 0;
  virtual std::vector<std::string> slot_names() const = 0;

  OptimizerConfig config_;
  std::vector<Param> params_;
  float lr_;
  float momentum_;
  int64_t steps_ = 0;  // completed steps; during update() the step in progress is steps_ + 1

 private:
  std::vector<float> scratch_;
};

class SGD : public Optimizer {
 public:
  using Optimizer::Optimizer;

 protected:
  void update(Param& prm, float* p, const float* g, int64_t n) override;
  std::vector<std::string> slot_names() const override { return {"momentum_buffer"}; }
};

class RMSProp : public Optimizer {
 public:
  using Optimizer::Optimizer;

 protected:
  void update(Param& prm, float* p, const float* g, int64_t n) override;
  std::vector<std::string> slot_names() const override { return {"ms", "mom"}; }
};

class Adam : public Optimizer {
 public:
  using Optimizer::Optimizer;

 protected:
  void update(Param& prm, float* p, const float* g, int64_t n) override;
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq"}; }
};

// Throws std::invalid_argument for an unknown kind (listing sgd, rmsprop, adam).
std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, NamedTensors params);

}  // namespace octet::nn
