// quant/qat.h: quantization-aware training (QAT) and post-training
// quantization (PTQ) of the ResNet family, with one mechanism for both.
//
// prepare(model, config) rewrites a float ResNet IN PLACE so that it computes
// in training what the integer engine will compute at inference:
//
//   1. every (conv, BN) pair becomes one fused ConvBn module at the conv's
//      dotted name (the BN's name holds nn::Identity): the BN is folded into
//      the conv's weight and bias, and the FOLDED weight is fake-quantized
//      (Jacob et al. 2018, PyTorch's ConvBn2d QAT module);
//   2. the fc (Linear) gets a per-channel weight quantizer (its weight_transform);
//   3. EVERY tensor the engine holds as int8 gets one ActQuant module, which
//      observes the tensor's range and, once enabled, fake-quantizes it.
//
// PTQ (calibrate) runs the same prepared model in eval mode over a few
// hundred training images with fake quant disabled, freezes the observed
// ranges, and enables fake quant: the result is the same kind of model a QAT
// run produces, so the exporter (quant/export.h) treats both alike.
//
// ---- Where the ActQuants sit (placement by dotted name) -------------------
//
// A module M whose output is an engine tensor is replaced by
// nn::Sequential{"0": M, "1": ActQuant}. For a CIFAR ResNet-20:
//
//   conv1                 ConvBn (stem; fused conv1 + bn1), bn1 = Identity
//   relu.1                ActQuant of the stem output            (relu.0 = ReLU)
//   layer1.0.conv1        ConvBn, layer1.0.bn1 = Identity
//   layer1.0.relu1.1      ActQuant of the block's first conv (+ReLU) output
//   layer1.0.conv2        ConvBn, layer1.0.bn2 = Sequential{"0": Identity, "1": ActQuant}
//   layer1.0.bn2.1        ActQuant of the second conv output (feeds the Add; may be negative)
//   layer2.0.shortcut.0   ConvBn of a projection shortcut, shortcut.1 = Sequential{Identity, ActQuant}
//   layer2.0.shortcut.1.1 ActQuant of the projection output (feeds the Add)
//   layer1.0.add.input_a  ActQuant only when add_inputs = tied | untied (else Identity)
//   layer1.0.add.input_b  same; tied: shares input_a's range (one observer, one grid)
//   layer1.0.relu2.1      ActQuant of the block output (Add + ReLU)
//   avgpool.1             ActQuant following the last block output's grid (the engine's
//                         average pool keeps its input's scale and zero point)
//   fc.0                  the Linear, with weight_transform = WeightQuant
//   fc.1                  ActQuant of the logits
//
// A Bottleneck is the same with conv1/relu1.1, conv2/relu2.1, conv3/bn3.1 and
// the block output at relu3.1. An ImageNet stem's max pool needs no ActQuant
// (the max of values on a grid is on that grid).
//
// The engine graph of one block, in QuantEdge terms (quant_edges() lists it):
//
//   BasicBlock(x: block input, grid = previous block output ActQuant)
//     conv  conv1      in x              out relu1.1   relu fused
//     conv  conv2      in relu1.1        out bn2.1     no relu
//     conv  shortcut.0 in x              out shortcut.1.1  (projection blocks only)
//     add   add        a bn2.1, b shortcut.1.1 (or x for an identity shortcut)
//                                         out relu2.1   relu fused
//   Bottleneck: conv1 (relu1.1, relu) -> conv2 (relu2.1, relu) -> conv3 (bn3.1),
//     [shortcut.0 (shortcut.1.1)], add -> relu3.1 (relu fused).
//
// The add-input slot ActQuants (tied/untied) are the study's "also quantize
// the inputs of Add" knob: in training they round the add's inputs once more
// onto their own grid(s). The engine's add rescales each input itself, so the
// exporter uses the producer tensors' grids (bn2.1 etc.) and QuantEdge lists
// the slots only for information (add_slot_a/b).
//
// ---- When (the schedule, a pure function of the global step) --------------
//
// phase_at(config, step, total_steps):
//   step <  quant delay  : every ActQuant and weight quantizer observes only
//                          (output == input, bit for bit); ranges are measured
//   step >= quant delay  : fake quant on at the configured locations; ActQuants
//                          elsewhere stay observe-only (still measured, so the
//                          exporter can quantize those tensors)
//   step >= observer freeze : ranges stop moving
//   step >= BN freeze       : ConvBn uses running statistics only (no batch stats,
//                             no running-stat updates), as at inference
// The trainer calls apply_phase(model, phase_at(...)) before every step.
//
// Command line: `octet train --qat [knobs]` (QAT, resumable, --init CKPT to
// fine-tune a float model), `octet calibrate CKPT --observer K -o OUT` (PTQ).
//
// ---- Checkpoints ------------------------------------------------------------
//
// A prepared model's named_state() differs from the float model's (conv1.weight
// stays, bn1.* moves to conv1.bn.*, ActQuant buffers appear). A QAT checkpoint
// carries the QatConfig as metadata "qat.<key>" (to_kv) and the exact observer
// states as "qat.observer.<dotted ActQuant name>", so load_model() can do
// make_model -> prepare(config) -> load_state.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/augment.h"
#include "core/checkpoint.h"
#include "core/dataset.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "nn/module.h"
#include "nn/resnet.h"
#include "quant/fake_quant.h"
#include "quant/observer.h"
#include "quant/qmath.h"

namespace octet::quant {

// ---- configuration ------------------------------------------------------------

// The fake-quant op (quant/fake_quant.h) used for weights and activations.
enum class QuantOp : uint8_t {
  kQdqV2,      // TF QuantizeAndDequantizeV2: symmetric, zero point 0 (the study's default)
  kFakeQuant,  // TF FakeQuantWithMinMaxVars: asymmetric, nudged zero point
  kLsq,        // learned step size (Esser et al. 2020), for low bit widths
};
std::string_view quant_op_name(QuantOp op);  // "qdq_v2", "fake_quant", "lsq"
QuantOp parse_quant_op(std::string_view name);  // throws std::invalid_argument listing the choices

// The study's "also quantize the inputs of Add" knob.
enum class AddInputs : uint8_t {
  kOff,     // no ActQuant in the add slots (the add's inputs are the producer tensors)
  kTied,    // one ActQuant range shared by both inputs
  kUntied,  // each input its own range
};
std::string_view add_inputs_name(AddInputs a);  // "off", "tied", "untied"
AddInputs parse_add_inputs(std::string_view name);

// Every knob of the QAT parameter study, with the study's defaults. Steps
// ("when") are a fraction of the run's total steps, or an absolute step that
// takes precedence when >= 0; -1 means never.
struct QatConfig {
  // -- what grid, what op
  QuantOp op = QuantOp::kQdqV2;
  RoundMode round = RoundMode::kHalfToEven;
  int weight_bits = 8;             // 2..16 (32 accepted: a float no-op)
  int act_bits = 8;
  bool signed_activations = true;  // ReLU outputs on a signed grid (half the codes unused) or
                                   // unsigned. Tensors that can be negative (add inputs, logits)
                                   // are always signed.
  bool per_channel_weights = true; // one scale per output channel (axis 0)
  bool symmetric_weights = true;   // zero point 0 (the engine requires it)
  bool narrow_weights = true;      // weight codes [-2^(b-1)+1, 2^(b-1)-1] (TFLite: [-127, 127])

  // -- where (locations)
  bool quantize_weights = true;      // conv (folded) and fc weights
  bool quantize_activations = true;  // every engine tensor between layers (ReLU outputs, conv
                                     // outputs feeding an Add, block outputs)
  AddInputs add_inputs = AddInputs::kOff;
  bool quantize_input = false;       // the preprocessed image (the engine eats exact uint8
                                     // pixels, so the faithful default is float)
  bool quantize_output = true;       // the logits (the engine returns int8 logits)

  // -- ranges
  bool range_given = false;          // true: every activation range is [range_min, range_max],
  float range_min = -6.0f;           //       fixed, nothing observed (TF's default [-6, 6])
  float range_max = 6.0f;
  ObserverConfig act_observer{};     // kind "ema", decay 0.999 (TF's MovingAvgQuantize)

  // -- when
  double quant_delay = 0.8;          // fraction of total steps before fake quant starts
  int64_t quant_delay_step = -1;     // absolute; >= 0 overrides quant_delay
  double observer_freeze = -1;       // fraction; -1 never
  int64_t observer_freeze_step = -1;
  double bn_freeze = -1;             // fraction; -1 never
  int64_t bn_freeze_step = -1;

  // -- PTQ only (calibrate applies them; QAT ignores them)
  bool cross_layer_equalization = false;  // equalize_cross_layer() before observing
  bool bias_correction = false;           // correct_bias() after observing

  // -- mixed precision: dotted name -> bits. A ConvBn/Linear name ("layer1.0.conv1",
  // "fc.0") sets that layer's weight bits; an ActQuant name ("layer1.0.relu1.1") that
  // tensor's bits.
  std::map<std::string, int> bits_overrides;

  // key=value form (stable keys; bits overrides as "bits.<dotted name>").
  std::map<std::string, std::string> to_kv() const;
  // Starts from the defaults and applies `kv`; an unknown key or a bad value
  // throws std::invalid_argument naming the key and the value.
  static QatConfig from_kv(const std::map<std::string, std::string>& kv);
  // A file of "key = value" lines ('#' comments, blank lines allowed); errors name
  // the file and line.
  static QatConfig from_file(const std::string& path);
  std::string to_string() const;  // "key = value" lines, sorted
  // Throws std::invalid_argument naming the first inconsistent field.
  void validate() const;

  // Resolved steps for a run of total_steps (-1: never).
  int64_t quant_delay_at(int64_t total_steps) const;
  int64_t observer_freeze_at(int64_t total_steps) const;
  int64_t bn_freeze_at(int64_t total_steps) const;
};

// ---- the schedule -------------------------------------------------------------

struct QatPhase {
  bool fake_quant = false;        // fake quant on at the configured locations
  bool observers_frozen = false;
  bool bn_frozen = false;
  int64_t step = 0;               // the training step (keys stochastic rounding)
};
QatPhase phase_at(const QatConfig& config, int64_t step, int64_t total_steps);
// Sets every ActQuant, WeightQuant and ConvBn of `model` to `phase`
// (initializing LSQ steps from the observed ranges on the first switch).
// Stochastic rounding: the i-th quantizer of the model (named_modules order)
// draws from stream i of a generator seeded by phase.step, so the draws of a
// step depend on the step alone, and a resumed run rounds exactly as the
// uninterrupted one did (no generator state to checkpoint).
void apply_phase(nn::Module& model, const QatPhase& phase);

// ---- modules ------------------------------------------------------------------

// The grid and op of one quantizer.
struct QuantizerSpec {
  QuantOp op = QuantOp::kQdqV2;
  RoundMode round = RoundMode::kHalfToEven;
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

// ---- prepare and the exporter's view ----------------------------------------------

// Rewrites `model` in place (see the top of this file). The model keeps its
// current weights and BN statistics (prepare a loaded float model to fine-tune
// it). Fake quant starts disabled (phase "observe only"). Throws
// std::invalid_argument for an invalid config, std::logic_error if the model
// is already prepared.
void prepare(nn::ResNet& model, const QatConfig& config);
bool is_prepared(const nn::Module& model);

// Every ActQuant / ConvBn of a prepared model with its dotted name, in tree order.
std::vector<std::pair<std::string, ActQuant*>> act_quants(nn::Module& model);
std::vector<std::pair<std::string, ConvBn*>> conv_bns(nn::Module& model);

// One engine op of a prepared model, with the ActQuants giving its input and
// output grids (see "The engine graph of one block" above).
struct QuantEdge {
  enum class Kind { kConv, kLinear, kAdd, kMaxPool, kAvgPool };
  Kind kind = Kind::kConv;
  std::string name;                 // ConvBn ("layer1.0.conv1"), Linear ("fc.0"), Add ("layer1.0.add"),
                                    // pools ("maxpool", "avgpool.0")
  ConvBn* conv = nullptr;           // kConv
  nn::Linear* linear = nullptr;     // kLinear
  const ActQuant* input = nullptr;  // grid of the (first) input; nullptr: the model input (stem conv)
  const ActQuant* input_b = nullptr;  // kAdd: the second input (the shortcut)
  const ActQuant* output = nullptr;   // grid of the output (maxpool: == input)
  bool relu = false;                // ReLU fused into the op (clamp at the output zero point)
  const ActQuant* add_slot_a = nullptr;  // kAdd with add_inputs != off: the slot quantizers (training only)
  const ActQuant* add_slot_b = nullptr;
};
// In forward (topological) order. Throws std::logic_error if `model` is not prepared.
std::vector<QuantEdge> quant_edges(nn::ResNet& model);

// ---- PTQ ----------------------------------------------------------------------------

// Post-training calibration: prepare(model, config) (config.act_observer is the
// calibration observer: minmax, percentile, entropy, mse, ema, meanstd), run
// `batches` (preprocessed images [N, C, H, W]) in eval mode with fake quant
// off, freeze every range and turn fake quant on (phase "quantized, BN frozen").
// With config.cross_layer_equalization the weights are equalized first; with
// config.bias_correction the biases are corrected after observing.
void calibrate(nn::ResNet& model, const QatConfig& config, const std::vector<Tensor>& batches);
// The same over the first `images` images of a seeded, class-mixed sample of
// `data`, preprocessed with `pre`, in batches of `batch`.
void calibrate(nn::ResNet& model, const QatConfig& config, const Dataset& data, const Preprocess& pre,
               int64_t images, int batch = 100, uint64_t seed = 0);

// Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization
// Through Weight Equalization and Bias Correction"): inside each block, for
// every ConvBn -> ReLU -> ConvBn pair, output channel i of the first and input
// channel i of the second are rescaled by s_i = sqrt(r1_i / r2_i) (r = max |w|
// of the folded weights), so both get the range sqrt(r1_i * r2_i). ReLU is
// positively homogeneous, so the float model computes the same function (eval
// mode, up to float rounding): the first layer's BN gamma and beta are divided
// by s_i, the second conv's input channel multiplied by it. Pairs across an Add
// are left alone. Repeats `iterations` sweeps; returns the number of pairs.
int equalize_cross_layer(nn::ResNet& model, int iterations = 20);

// Empirical bias correction (same paper): for each ConvBn, the mean output
// shift the weight quantization causes, sum_{c,k} (W_q - W)[o, c, k] * E[x_c]
// with E[x_c] the channel means of its input seen while collecting, is
// subtracted from the BN beta (so from the folded bias).
void correct_bias(nn::Module& model);
// The same for the fc of a prepared model: b[o] -= sum_i (W_q - W)[o, i] * input_mean[i],
// input_mean being the mean of the fc's input (the pooled features) per feature.
// calibrate() collects that mean in the same pass as the ConvBn ones.
void correct_bias(nn::Linear& fc, const std::vector<double>& input_mean);

// ---- checkpoints ---------------------------------------------------------------------

// Adds "qat.<key>" (config) and "qat.observer.<name>" (observer states of
// unfrozen observers) to ck.meta.
void write_qat_meta(nn::Module& model, const QatConfig& config, Checkpoint& ck);
// Restores the observer states written by write_qat_meta (after load_state).
void read_qat_meta(nn::Module& model, const Checkpoint& ck);
// The QatConfig of a checkpoint, or nullopt for a float checkpoint.
std::optional<QatConfig> qat_config_from_checkpoint(const Checkpoint& ck);

struct LoadedModel {
  std::shared_ptr<nn::ResNet> model;
  std::optional<QatConfig> qat;  // set when the model is prepared (QAT or PTQ checkpoint)
  Preprocess preprocess;         // the run's exact float preprocessing
  Checkpoint checkpoint;         // metadata and tensors as loaded
};
// A checkpoint of `octet train` (float or --qat) or `octet calibrate` as a
// ready model: make_model -> [prepare(config)] -> load_state -> observer
// states. Throws std::runtime_error naming the file and what is wrong.
LoadedModel load_model(const std::string& path);
LoadedModel load_model(const Checkpoint& ck);

}  // namespace octet::quant
