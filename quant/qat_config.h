// quant/qat_config.h: every knob of QAT and PTQ (QatConfig: what grid, what
// op, where, which ranges, when), its stable key=value form (checkpoint
// metadata "qat.<key>", --qat-config files, the study) and its validation.
//
// Steps ("when") are resolved against a run's total steps by the *_at
// functions; quant/qat_schedule.h turns them into the phase of a step.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "quant/observer.h"
#include "quant/qmath.h"

namespace octet::quant {

// The fake-quant op (quant/fake_quant.h) used for weights and activations.
enum class QuantOp : uint8_t {
  qdq_v2,      // TF QuantizeAndDequantizeV2: symmetric, zero point 0 (the study's default)
  fake_quant,  // TF FakeQuantWithMinMaxVars: asymmetric, nudged zero point
  lsq,        // learned step size (Esser et al. 2020), for low bit widths
};
std::string_view quant_op_name(QuantOp op);  // "qdq_v2", "fake_quant", "lsq"
QuantOp parse_quant_op(std::string_view name);  // throws std::invalid_argument listing the choices

// The study's "also quantize the inputs of Add" knob.
enum class AddInputs : uint8_t {
  off,     // no ActQuant in the add slots (the add's inputs are the producer tensors)
  tied,    // one ActQuant range shared by both inputs
  untied,  // each input its own range
};
std::string_view add_inputs_name(AddInputs a);  // "off", "tied", "untied"
AddInputs parse_add_inputs(std::string_view name);

// Every knob of the QAT parameter study, with the study's defaults. Steps
// ("when") are a fraction of the run's total steps, or an absolute step that
// takes precedence when >= 0; -1 means never.
struct QatConfig {
  // -- what grid, what op
  QuantOp op = QuantOp::qdq_v2;
  RoundMode round = RoundMode::half_to_even;
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
  AddInputs add_inputs = AddInputs::off;
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

}  // namespace octet::quant
