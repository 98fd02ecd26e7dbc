// quant/qat_modules.h: the modules prepare() (quant/qat_prepare.h) puts into
// a float model: ActQuant (one activation tensor's quantizer and range),
// WeightQuant (a weight's quantizer), ConvBn (conv + BN fused for QAT), and
// the grids of a prepared Linear (linear_weight_params).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "nn/module.h"
#include "quant/observer.h"
#include "quant/qat_config.h"
#include "quant/qmath.h"

namespace octet::quant {

// The grid and op of one quantizer.
struct QuantizerSpec {
  QuantOp op = QuantOp::qdq_v2;
  RoundMode round = RoundMode::half_to_even;
  int bits = 8;
  bool is_signed = true;
  bool narrow = false;
  bool symmetric = true;    // weights only (activations: op's own rule)
  bool in_location = true;  // false: observe-only even when fake quant is on
};

// Fake quantization of one activation tensor, with its range.
//
// Observation: in training mode (and while calibrating) every forward feeds
// the tensor to the observer (unless frozen) and copies its range into
// min_max; eval mode never observes (test data must not move a range).
// Fake quant, once enabled and in a location, with (lo, hi) = min_max
// extended to contain 0:
//   qdq_v2      QDQv2 with range_given: clamp to the symmetric range (TF's rule:
//               scale from the tighter side), round, zero point 0
//   fake_quant  FakeQuantWithMinMaxVars on (lo, hi): nudged asymmetric grid;
//               min/max are buffers fed by the observer, not trained
//   lsq         the learned step; at the first enabled forward it starts as
//               the step that covers (lo, hi), then the optimizer trains it
//
// State (buffers, so they are in named_state and checkpoints):
//   min_max [2]  the range the grid is computed from (observed, or given)
//   flags   [3]  (fake quant on, observer frozen, range valid)
//   step    [1]  LSQ only: the learned step (a parameter)
// params() is a pure function of this state, so the exporter reads exactly the
// grid the forward used.
//
// A follower (the second slot of a tied add, the average pool) has no range
// of its own: it uses its leader's grid; `observes` says whether its tensor
// also feeds the leader's observer (tied add input) or not (average pool).
class ActQuant : public nn::Module {
 public:
  ActQuant(const QuantizerSpec& spec, const QatConfig& config);
  ActQuant(std::shared_ptr<ActQuant> leader, bool observes, bool in_location);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;

  // The grid (scale, zero_point, qmin, qmax) the engine uses for this tensor.
  // Signed specs give signed codes (e.g. [-128, 127]) even for the FakeQuant op
  // (its [0, 255] grid shifted by 128: the same real values). Throws
  // std::logic_error when no range was observed yet.
  QuantParams params() const;
  bool fake_quant_enabled() const;   // on AND in a configured location
  bool in_location() const { return spec().in_location; }
  bool has_range() const;
  Range range() const;               // the (min, max) of the grid's source
  const QuantizerSpec& spec() const;
  const ActQuant* leader() const { return leader_.get(); }  // nullptr unless a follower
  Observer* observer() const;        // nullptr for range_given and followers

  void set_fake_quant(bool on);
  void freeze_observer(bool on);
  bool observer_frozen() const;      // range_given ranges are always frozen
  // Observe in eval mode too (PTQ calibration); normally only training() observes.
  void set_calibrating(bool on) { calibrating_ = on; }
  // Sets the range (range_given, tests, loaders); marks it valid.
  void set_range(Range r);
  // Re-reads min_max from the observer (after restoring an observer state).
  void sync_from_observer();
  // Stochastic rounding draws from this generator (apply_phase reseeds it every step).
  Rng& rounding_rng() { return rounding_rng_; }

 private:
  QuantizerSpec spec_;
  std::shared_ptr<ActQuant> leader_;
  bool observes_ = true;
  bool calibrating_ = false;
  std::shared_ptr<Observer> observer_;
  Tensor min_max_, flags_, step_;  // handles of the registered buffers / LSQ parameter
  Rng rounding_rng_;
  ActQuant& root();
  const ActQuant& root() const;
};

// Fake quantization of a weight tensor [Cout, ...] per output channel (axis 0)
// or per tensor. The range is the weight's own (min, max) per channel, measured
// on every call (TF's last-value weight quantization), so no state but the
// switch (buffer flags [1]) and, for LSQ, the learned steps (parameter step [C]).
class WeightQuant : public nn::Module {
 public:
  WeightQuant(const QuantizerSpec& spec, bool per_channel, int64_t channels);
  Tensor forward(const Tensor& w) override;  // w unchanged while disabled
  std::string describe() const override;
  // The grid per output channel for weight `w` (the exact one forward(w) uses);
  // per-tensor quantization repeats one grid C times. Signed codes, zero point 0
  // for symmetric weights (FakeQuant's [1, 255] narrow grid appears as [-127, 127]).
  std::vector<QuantParams> params(const Tensor& w) const;
  bool fake_quant_enabled() const;
  void set_fake_quant(bool on);
  const QuantizerSpec& spec() const { return spec_; }
  bool per_channel() const { return per_channel_; }
  // Stochastic rounding draws from this generator (apply_phase reseeds it every step).
  Rng& rounding_rng() { return rounding_rng_; }

 private:
  QuantizerSpec spec_;
  bool per_channel_;
  Tensor flags_, step_;  // handles of the registered buffer / LSQ parameter
  Rng rounding_rng_;
};

// Conv2d + BatchNorm2d fused for QAT (PyTorch's ConvBn2d, Jacob et al. 2018).
//   sigma_r  = sqrt(running_var + eps),  sf = gamma / sigma_r           [Cout]
//   w_fold   = w * sf (per output channel),  w_q = weight_quant(w_fold)
//   training, BN not frozen:
//     y = BN_batch(conv(x, w_q) / sf (+ conv bias))   batch statistics, running stats updated
//       (before quantization this IS conv -> BN with batch statistics; computed
//       as conv(x, w_q / sf), the same by linearity, at the cost of a weight-sized op)
//   eval, or BN frozen:
//     y = conv(x, w_q) + b_fold,  b_fold = beta + (bias - running_mean) * sf
// so in eval the module computes exactly what the exported integer layer does
// (up to the rounding of the activation that follows).
// State: "weight" [Cout, Cin, K, K] (the conv's), "bias" (if the conv had one),
// child "bn" (the BatchNorm2d: weight, bias, running_mean, running_var), child
// "weight_quant", buffer "bn_frozen" [1], optional child "input_quant" (the stem,
// when quantize_input).
class ConvBn : public nn::Module {
 public:
  ConvBn(std::shared_ptr<nn::Conv2d> conv, std::shared_ptr<nn::BatchNorm2d> bn, const QuantizerSpec& weight_spec,
         bool per_channel);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;

  Tensor& weight() { return weight_; }  // the raw conv weight (trained)
  Tensor bias() const { return maybe_param("bias"); }  // the conv's own bias; undefined if none
  // Folded with the running statistics (what the engine uses), no autograd.
  Tensor folded_weight() const;  // [Cout, Cin, K, K]
  Tensor folded_bias() const;    // [Cout]
  // The grid of each output channel of folded_weight() (== the eval forward's).
  std::vector<QuantParams> weight_params() const;
  int weight_bits() const;
  WeightQuant& weight_quant() const;
  nn::BatchNorm2d& bn() const;
  ActQuant* input_quant() const;  // nullptr unless the stem quantizes its input
  void set_input_quant(std::shared_ptr<ActQuant> aq);  // nullptr removes it
  // Per-channel mean of the conv's input over the forwards while collecting
  // (bias correction); collect_input_mean(true) restarts the sums.
  void collect_input_mean(bool on);
  std::vector<double> input_mean() const;

  bool bn_frozen() const;
  void freeze_bn(bool on);

  int in_channels, out_channels, kernel, stride, pad;

 private:
  Tensor weight_, bn_frozen_;
  bool collecting_ = false;
  std::vector<double> input_sum_;
  int64_t input_count_ = 0;
};

// The grid per output channel of a prepared Linear's effective weight.
std::vector<QuantParams> linear_weight_params(nn::Linear& fc);

}  // namespace octet::quant
