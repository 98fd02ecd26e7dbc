// quant/fake_quant.h: fake quantization, the differentiable ops of QAT.
//
// A fake-quant op rounds a float tensor onto a quantization grid and returns
// floats again: y = scale * (q - zero_point) with q the integer code the
// integer engine would see. Training then "feels" the rounding and clamping in
// the forward pass, and gradients flow through by the straight-through
// estimator (round() is treated as the identity), masked where the clamp cuts.
//
// Three ops, each per tensor and per channel (axis 0 for conv weights
// [Cout, Cin, KH, KW]), each with the exact semantics of its source:
//
//   fake_quant                TF FakeQuantWithMinMaxVars(+PerChannel): learnable min/max,
//                             asymmetric codes [0, 2^b - 1] (narrow: [1, 2^b - 1]) with the
//                             zero point nudged onto the grid; min and max receive gradients
//                             from the values clamped below / above, so ranges can be learned.
//   quantize_dequantize_v2    TF QuantizeAndDequantizeV2: symmetric (zero point 0), signed
//                             [-2^(b-1), 2^(b-1) - 1] or unsigned [0, 2^b - 1], scale from the
//                             tighter side of [min, max], range given or measured per call,
//                             HALF_TO_EVEN or HALF_UP.
//   lsq                       Learned Step size Quantization (Esser et al., ICLR 2020): the
//                             step s is a parameter, trained with its own gradient.
//
// Every op has a one-element reference function (*_ref) written the way its
// source defines it; the tests compare the fast kernels with them. The fast
// kernels make one pass over x (QDQv2 with a measured range: two, the first
// finds min/max), run in parallel through core/parallel.h, allocate nothing
// but their output, and decide everything per channel before the loop.
//
// Rounding: every op takes a RoundMode (quant/qmath.h). The defaults are the
// sources' own: FakeQuant rounds half up (floor(v + 0.5)), QDQv2 half to even,
// LSQ half to even (torch.round). stochastic needs an Rng; each call draws one
// 64-bit seed from it and gives every fixed block of the tensor its own stream,
// so results do not depend on the thread count. Precisely: seed = (hi << 32) | lo
// with hi, lo the caller's next two next_u32(); x is walked as [outer, C, inner]
// and each (outer, channel) row of `inner` values is cut into blocks of 4096
// (the last one shorter), numbered in memory order from 0; element j of block b
// rounds with u = the j-th uniform() of Rng(seed, b). (The tests reproduce
// this with the *_ref functions.)
//
// Exporting: the parameters each op used are available as QuantParams
// (fake_quant_params, qdq_v2_params, lsq_params), and for every output value
// y, quantize(y, params) is the code and dequantize(code, params) == y bit for
// bit (the ops compute y as code * scale in float, which dequantize reproduces).
#pragma once

#include <span>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "quant/qmath.h"

namespace octet::quant {

// ---- FakeQuant (TF FakeQuantWithMinMaxVars) ---------------------------------

struct FakeQuantOptions {
  int bits = 8;                          // 2..16 (TF's limits) or 32
  bool narrow_range = false;             // codes [1, 2^b - 1] instead of [0, 2^b - 1]
  RoundMode round = RoundMode::half_up;  // TF: floor(v + 0.5)
  Rng* rng = nullptr;                    // for stochastic
};

// x: any shape; min, max: one-element tensors (usually learnable leaves).
// Forward, per TF (fake_quant_ops_functor.h, Nudge in quant/qmath.h):
//   (nudged_min, nudged_max, scale, inv_scale) = Nudge(min, max, quant_min, quant_max)
//   quant_zero = floor(-nudged_min * inv_scale + 0.5)          (= zero_point - quant_min)
//   y = round((clamp(x, nudged_min, nudged_max) - nudged_min) / scale - quant_zero) * scale
// so y is exactly (q - zero_point) * scale. min = max = 0 gives y = 0 (TF).
// Backward: dx = dy where nudged_min <= x <= nudged_max, else 0;
//           dmin = sum of dy where x < nudged_min; dmax = sum of dy where x > nudged_max.
// Throws std::invalid_argument for bad bits, non-finite min/max, min > max, or
// min == max != 0 (TF computes NaN or garbage there).
Tensor fake_quant(const Tensor& x, const Tensor& min, const Tensor& max, const FakeQuantOptions& opt = {});

// TF FakeQuantWithMinMaxVarsPerChannel, generalized from TF's last axis to any
// axis: min, max have shape [C], C = x.dim(axis); channel c uses (min[c], max[c]).
// Exactly as TF's per-channel kernel, the step is applied as a product with
// inv_scale instead of a division by scale (this can differ from the
// per-tensor op in the last bit of a tie when 1/scale is inexact).
// dmin, dmax are [C], each summed over its channel.
Tensor fake_quant_per_channel(const Tensor& x, const Tensor& min, const Tensor& max, int axis,
                              const FakeQuantOptions& opt = {});

// The grid fake_quant uses for (min, max): Nudge's scale and zero point,
// codes [quant_min, quant_max]. Same checks as fake_quant.
QuantParams fake_quant_params(float min, float max, const FakeQuantOptions& opt = {});

// One element, written as TF's kernels read (no shortcuts): recomputes Nudge.
// per_channel selects the per-channel kernel's product with inv_scale.
// u feeds stochastic.
float fake_quant_ref(float x, float min, float max, const FakeQuantOptions& opt, bool per_channel = false,
                     float u = 0.0f);
struct FakeQuantGrad {
  float dx = 0, dmin = 0, dmax = 0;
};
FakeQuantGrad fake_quant_grad_ref(float x, float dy, float min, float max, const FakeQuantOptions& opt);

// ---- QDQv2 (TF QuantizeAndDequantizeV2) -------------------------------------

// Which gradient QDQv2 gets; TF has two, both checked in TF's sources:
enum class QdqGradient : uint8_t {
  // QuantizeAndDequantizeV4Grad (tf.quantization.quantize_and_dequantize_v2 since TF 2.4):
  // dx = dy where min <= x <= max, with (min, max) the op's range INPUTS as
  // given, not the widened range the forward clamps to. With range [-10, 5]
  // (8-bit signed) x = 7 is not clamped (max widens to 9.921875) but gets dx = 0.
  // With range_given = false TF still masks with the (unused) inputs: pass
  // -inf, +inf for the identity.
  clipped,
  // The gradient TF registers for the QuantizeAndDequantizeV2 op itself
  // (array_grad.py: "return [grad, None, None]"): the identity everywhere.
  straight_through,
};

struct QdqOptions {
  int bits = 8;                              // 2..16 or 32 (TF allows up to 61/62)
  bool signed_output = true;                 // TF's signed_input
  bool range_given = false;                  // false: use the tensor's own min/max each call
  bool narrow_range = false;                 // signed only: [-2^(b-1) + 1, 2^(b-1) - 1]
  RoundMode round = RoundMode::half_to_even;  // TF: HALF_TO_EVEN (default) or HALF_UP
  QdqGradient gradient = QdqGradient::clipped;
  Rng* rng = nullptr;  // for stochastic
};

// x: any shape. Forward, per TF (quantize_and_dequantize_op.h):
//   (lo, hi) = range_given ? (min, max) : (min(x), max(x))
//   (scale, inverse_scale, min_range, max_range) = ComputeQuantizationRange(lo, hi)
//                                                 (symmetric_range in quant/qmath.h)
//   y = round(clamp(x, min_range, max_range) * scale) * inverse_scale   if range_given
//   y = round(x * scale) * inverse_scale                               otherwise (no clamp:
//       with an unsigned output and range not given, negative x stay negative, as in TF)
// min and max get no gradient (TF returns None). With range_given, min <= max
// and both finite, else std::invalid_argument (TF: "Invalid range"). With the
// range measured, a NaN or infinity in x throws std::invalid_argument naming
// its offset (its range would make every output NaN); with a given range, x is
// clamped and a NaN passes through as NaN.
Tensor quantize_dequantize_v2(const Tensor& x, float min, float max, const QdqOptions& opt = {});

// Per channel along `axis` (TF's `axis` attribute): min, max have C values.
Tensor quantize_dequantize_v2_per_channel(const Tensor& x, std::span<const float> min, std::span<const float> max,
                                          int axis, const QdqOptions& opt = {});

// The codes TF's QDQv2 uses for (lo, hi), the range it actually uses
// (given or measured): scale = inverse_scale, zero point 0, codes
// [min_quantized, max_quantized]. lo = hi = 0 gives scale 1 (TF: 0).
QuantParams qdq_v2_params(float lo, float hi, const QdqOptions& opt = {});

// One element: (lo, hi) is the range the op uses (given, or the measured
// min/max of the whole tensor or channel); clamping follows opt.range_given.
float qdq_v2_ref(float x, float lo, float hi, const QdqOptions& opt, float u = 0.0f);
// dx for one element; (min, max) are the op's range inputs (see QdqGradient).
float qdq_v2_grad_ref(float x, float dy, float min, float max, const QdqOptions& opt);

// ---- LSQ (learned step size) ------------------------------------------------

struct LsqOptions {
  int bits = 4;                              // 2..16 or 32
  bool is_signed = true;                     // weights: Qn = 2^(b-1), Qp = 2^(b-1) - 1;
                                             // unsigned (after ReLU): Qn = 0, Qp = 2^b - 1
  float grad_scale = 0.0f;                   // g; 0 = the paper's 1/sqrt(N * Qp), N = values per step
  RoundMode round = RoundMode::half_to_even;  // torch.round
  Rng* rng = nullptr;                        // for stochastic
};

// x: any shape, step: one-element tensor s > 0 (a learnable leaf).
//   v = x / s,  y = round(clamp(v, -Qn, Qp)) * s
// Backward (straight-through for round, hardtanh's strict interior for clamp):
//   dx = dy if -Qn < v < Qp else 0
//   ds = g * sum(dy * d),  d = round(v) - v inside, -Qn if v <= -Qn, Qp if v >= Qp
// Throws std::invalid_argument for s <= 0 or non-finite.
Tensor lsq(const Tensor& x, const Tensor& step, const LsqOptions& opt = {});
// step: [C] along `axis`; N = numel / C for the default g.
Tensor lsq_per_channel(const Tensor& x, const Tensor& step, int axis, const LsqOptions& opt = {});

// The paper's initialization 2 * mean(|x|) / sqrt(Qp).
float lsq_init_step(const Tensor& x, const LsqOptions& opt = {});
// Codes [-Qn, Qp], zero point 0, scale s.
QuantParams lsq_params(float step, const LsqOptions& opt = {});

float lsq_ref(float x, float step, const LsqOptions& opt, float u = 0.0f);
struct LsqGrad {
  float dx = 0;
  float dstep = 0;  // dy * d, before the gradient scale g
};
LsqGrad lsq_grad_ref(float x, float dy, float step, const LsqOptions& opt);

}  // namespace octet::quant
