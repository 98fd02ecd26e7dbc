// quant/intsim.h: integer simulation of an Octet model file, the second,
// independent implementation of the integer contract.
//
// IntSim runs an engine model (engine::ModelDesc, as read from a .oct file or
// assembled by engine::ModelBuilder) with its own plain loops over NCHW
// planes. It shares NOTHING with the engine's executor or kernels: the only
// engine code it calls is engine/fixedpoint.h (the rounding rules) and the
// format's validating reader. If the two implementations agree bit for bit on
// every image (tests/quant/test_intsim.cpp, `octet compare`, `octet eval
// --mode intsim`), the engine computes what the contract says.
//
// The semantics, op by op (docs/format.md, engine/kernels.h):
//
//   values     Every activation is carried as int8: a uint8 tensor of the
//              file (codes 0..255, zero point zp) is carried as q - 128 with
//              zero point zp - 128. real = scale * (q - zp) is unchanged.
//              The average pools round the mean of the CARRIED values, so the
//              carrying is part of the contract, not an implementation detail.
//   input      q = pixel - 128.
//   conv2d/fc  acc = bias[c] + sum (x - x_zp) * w   (int32; padding adds 0)
//              y   = clamp(zp_out + MultiplyByQuantizedMultiplier(acc, M0[c], shift[c]),
//                          act_min, act_max)
//              fc reads its input flattened in HWC order (the file's order).
//   add        a' = MBQM((a - a_zp) << left_shift, a_mult, a_shift), b' likewise,
//              y  = clamp(zp_out + MBQM(a' + b', out_mult, out_shift), act_min, act_max)
//   max_pool   the largest in-image value of the window
//   avg_pool   RoundedDivide(sum of the window's in-image values, their count)
//   global_avg RoundedDivide(sum over H*W, H*W)
//
// The accumulator fits int32 because the reader proved every layer's
// headroom before IntSim accepts the model.
//
//   quant::IntSim sim(engine::read_model_file("model.oct"));
//   std::vector<int8_t> logits = sim.run(pixels_nhwc, batch);   // [batch, classes]
//
// For per-layer analysis, run_image() keeps every activation of one image.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/format.h"

namespace octet::quant {

class IntSim {
 public:
  // Validates the model with the engine format's reader (encode + decode);
  // throws engine::FormatError for a model the engine would refuse.
  explicit IntSim(const engine::ModelDesc& model);

  const engine::ModelDesc& model() const { return model_; }
  int input_h() const { return in_h_; }
  int input_w() const { return in_w_; }
  int input_c() const { return in_c_; }
  size_t input_bytes() const { return static_cast<size_t>(in_h_) * in_w_ * in_c_; }
  int num_classes() const { return classes_; }

  // pixels: batch images of input_h x input_w x input_c uint8, NHWC (the
  // engine's input layout). Returns the int8 logits [batch, classes]. Images
  // run in parallel (core/parallel.h); the result does not depend on it.
  std::vector<int8_t> run(const uint8_t* pixels_nhwc, int batch) const;

  // Every activation of one image, indexed by tensor id (empty for constants
  // and for the raw pixel input): carried int8 codes, CHW for [H,W,C]
  // tensors (index (c * H + h) * W + w), plain [C] otherwise.
  struct Trace {
    std::vector<std::vector<int8_t>> values;
  };
  Trace run_image(const uint8_t* pixels_hwc) const;
  std::vector<int8_t> logits(const Trace& t) const { return t.values[model_.output]; }

  // The carried zero point of tensor `id` (zp - 128 for uint8 tensors) and
  // the real value of a carried code: scale * (q - carried zp).
  int32_t carried_zero_point(uint32_t id) const;
  double real(uint32_t id, int8_t q) const;

 private:
  void run_into(const uint8_t* pixels_hwc, Trace& t) const;
  engine::ModelDesc model_;
  int in_h_ = 0, in_w_ = 0, in_c_ = 0, classes_ = 0;
};

}  // namespace octet::quant
