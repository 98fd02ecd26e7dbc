// quant/qmath.h: the arithmetic of quantization, in one place.
//
// Octet quantizes with one affine scheme (docs/quantization.md derives it):
//
//     real = scale * (q - zero_point)
//
//   q           an integer code in [qmin, qmax] (e.g. [-128, 127] or [0, 255])
//   scale       the real value of one integer step, > 0
//   zero_point  the code that stands for real 0, exactly: zero padding and ReLU
//               must cost no error, so 0 is always representable ("nudging")
//
// This header holds the pieces every other part of quant/ builds on:
//
//   RoundMode        half_to_even, half_up, half_away_from_zero, stochastic,
//                    and the inline round functions the hot loops use;
//   int_range        [qmin, qmax] for 2..16 or 32 bits, signed or unsigned,
//                    full or narrow (narrow drops the lowest code);
//   nudge            TensorFlow's FakeQuant rule (asymmetric): scale from the
//                    span, zero point rounded, the range shifted onto the grid;
//   symmetric_range  TensorFlow's QuantizeAndDequantizeV2 rule (symmetric):
//                    zero point 0, scale from the tighter side, the other
//                    side widened;
//   choose_params    (min, max) -> QuantParams with one of those two rules,
//                    per tensor or per channel, after extending the range to
//                    contain 0 (as TF's and PyTorch's observers do);
//   quantize / dequantize of scalars and buffers, per tensor and per channel.
//
//     QuantSpec spec{.bits = 8, .is_signed = false};          // asymmetric uint8
//     QuantParams p = choose_params(-1.0f, 2.0f, spec);       // scale 3/255 (0.0117647), zp 85
//     int64_t q = quantize(0.25f, p);                         // 0.25/0.0117647 = 21.25 -> 21, +85 = 106
//     float r = dequantize(q, p);                             // (106 - 85) * 0.0117647 = 0.247059
//
// Bit widths: 2..16, and 32. A 32-bit grid is finer than float32 itself over
// almost all of its range (float32 has a 24-bit significand), so in a float
// pipeline 32-bit quantization is a no-op up to float rounding: the fake-quant
// ops keep computing in float exactly as for 16 bits (their result is within a
// few ulps of clamp(x, lo, hi)), while choose_params and quantize work in
// double, so 32-bit codes (int32 biases, for instance) are exact.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/rng.h"

namespace octet::quant {

// ---- rounding ---------------------------------------------------------------

// How a real number of steps becomes an integer number of steps. Ties are the
// values exactly halfway between two integers (k + 0.5).
enum class RoundMode : uint8_t {
  half_to_even,        // ties to the even neighbour: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2 (IEEE default,
                      // TF QuantizeAndDequantizeV2 HALF_TO_EVEN, torch.round)
  half_up,            // floor(v + 0.5): ties toward +inf: 0.5 -> 1, -2.5 -> -2 (TF HALF_UP and
                      // TF FakeQuant's floor(x + 0.5))
  half_away_from_zero,  // ties away from zero: 0.5 -> 1, -2.5 -> -3 (std::round, TF's zero-point
                      // nudge, the engine's RoundingDivideByPOT)
  stochastic,        // floor(v) + 1 with probability v - floor(v): unbiased, E[round(v)] = v
};

std::string_view round_mode_name(RoundMode mode);  // "half_to_even", "half_up", ...
// Inverse of round_mode_name; throws std::invalid_argument listing the choices.
RoundMode parse_round_mode(std::string_view name);

// The round functions, inline for the hot loops. They are exact for every
// finite input (|v| >= 2^23 for float, 2^52 for double, is already integral)
// and never call libm, so they vectorize. NaN stays NaN.
namespace detail {
template <class T>
struct FloatTraits;
template <>
struct FloatTraits<float> {
  using Int = int32_t;
  static constexpr float kIntegral = 8388608.0f;  // 2^23: from here on every float is an integer
};
template <>
struct FloatTraits<double> {
  using Int = int64_t;
  static constexpr double kIntegral = 4503599627370496.0;  // 2^52
};
}  // namespace detail

// floor(v), exactly.
template <class T>
inline T floor_exact(T v) {
  using Tr = detail::FloatTraits<T>;
  if (!(std::fabs(v) < Tr::kIntegral)) return v;  // integral already, or NaN/inf
  const T t = static_cast<T>(static_cast<typename Tr::Int>(v));  // truncates toward 0
  return t > v ? t - T(1) : t;
}

// Ties to even (what rint/nearbyint do in the default rounding mode): adding
// 2^23 to |v| < 2^23 leaves no fraction bits, so the addition itself rounds,
// and IEEE addition rounds ties to even.
template <class T>
inline T round_half_to_even(T v) {
  using Tr = detail::FloatTraits<T>;
  const T a = std::fabs(v);
  if (!(a < Tr::kIntegral)) return v;
  const T r = (a + Tr::kIntegral) - Tr::kIntegral;
  return std::copysign(r, v);
}

// floor(v + 0.5), evaluated in T exactly as TensorFlow (Eigen's
// scalar_round_up_op) and TF's FakeQuant kernels write it. This inherits one
// float quirk on purpose: v = 0.5 - 2^-25 (0.49999997f) gives 1, because
// v + 0.5 rounds up to 1.0f before the floor. Quantized values never come near
// the other quirk (odd integers >= 2^23).
template <class T>
inline T round_half_up(T v) {
  return floor_exact(v + T(0.5));
}

// std::round: ties away from zero, exact (no v + 0.5 quirk).
template <class T>
inline T round_half_away_from_zero(T v) {
  const T a = std::fabs(v);
  const T f = floor_exact(a);
  const T r = (a - f >= T(0.5)) ? f + T(1) : f;  // a - f is exact
  return std::copysign(r, v);
}

// floor(v) + (u < v - floor(v)), u uniform in [0, 1): rounds up with
// probability equal to the fraction, so the expectation is v (to 2^-24).
template <class T>
inline T round_stochastic(T v, float u) {
  const T f = floor_exact(v);
  return (static_cast<T>(u) < v - f) ? f + T(1) : f;
}

// Dispatch on a run-time mode; u is used by stochastic only.
template <class T>
inline T round_with(RoundMode mode, T v, float u = 0.0f) {
  switch (mode) {
    case RoundMode::half_to_even: return round_half_to_even(v);
    case RoundMode::half_up: return round_half_up(v);
    case RoundMode::half_away_from_zero: return round_half_away_from_zero(v);
    case RoundMode::stochastic: return round_stochastic(v, u);
  }
  return v;
}

// ---- integer ranges ---------------------------------------------------------

// Bit widths Octet quantizes to: 2..16 and 32. Throws std::invalid_argument
// naming `who` otherwise.
void check_bits(int bits, const char* who);

struct IntRange {
  int64_t qmin = 0;
  int64_t qmax = 255;
};

// signed:   [-2^(b-1), 2^(b-1) - 1], narrow: [-2^(b-1) + 1, 2^(b-1) - 1]
// unsigned: [0, 2^b - 1],            narrow: [1, 2^b - 1]   (TF FakeQuant's narrow_range)
// e.g. 8 bits: [-128, 127], [-127, 127], [0, 255], [1, 255]; 32 bits: [-2^31, 2^31 - 1], ...
IntRange int_range(int bits, bool is_signed, bool narrow);

// ---- the two TensorFlow rules, in float (as TF) or double ---------------------

// TF's Nudge (tensorflow/core/kernels/fake_quant_ops_functor.h): for
// min < max, quantization onto [qmin, qmax] with
//   scale          = (max - min) / (qmax - qmin)
//   inv_scale      = (qmax - qmin) / (max - min)   (recomputed, not 1/scale)
//   zp_from_min    = qmin - min / scale
//   zero_point     = qmin if zp_from_min < qmin, qmax if > qmax, else round(zp_from_min)
//                    (std::round: ties away from zero)
//   nudged_min/max = (qmin - zero_point) * scale, (qmax - zero_point) * scale
// The span stays (qmax - qmin) * scale; the range slides by less than half a
// step so that real 0 lands exactly on the code zero_point. If 0 is outside
// [min, max] the zero point clamps and the range slides to [0, max - min] or
// [min - max, 0] (TF's documented behaviour; choose_params extends instead).
template <class T>
struct Nudged {
  T scale = 1, inv_scale = 1;
  T nudged_min = 0, nudged_max = 0;
  int64_t zero_point = 0;
};

template <class T>
inline Nudged<T> nudge(T min, T max, int64_t qmin, int64_t qmax) {
  const T qmin_f = static_cast<T>(qmin);
  const T qmax_f = static_cast<T>(qmax);
  Nudged<T> n;
  n.scale = (max - min) / (qmax_f - qmin_f);
  n.inv_scale = (qmax_f - qmin_f) / (max - min);
  const T zero_point_from_min = qmin_f - min / n.scale;
  if (zero_point_from_min < qmin_f) {
    n.zero_point = qmin;
  } else if (zero_point_from_min > qmax_f) {
    n.zero_point = qmax;
  } else {
    n.zero_point = static_cast<int64_t>(std::round(zero_point_from_min));
  }
  const T zp_f = static_cast<T>(n.zero_point);
  n.nudged_min = (qmin_f - zp_f) * n.scale;
  n.nudged_max = (qmax_f - zp_f) * n.scale;
  return n;
}

// TF's ComputeQuantizationRange (tensorflow/core/kernels/quantize_and_dequantize_op.h):
// zero point 0; TF's "scale" is codes per real unit (the reciprocal of ours):
//   scale_from_min_side = qmin / min  if qmin * min > 0, else the largest T
//   scale_from_max_side = qmax / max  if qmax * max > 0, else the largest T
// The smaller one wins (it keeps both ends inside the codes); that side's end
// stays, the other end is widened to its code:
//   min side wins: inverse_scale = min / qmin, max_range = qmax * inverse_scale
//   max side wins: inverse_scale = max / qmax, min_range = qmin * inverse_scale
// e.g. [-10, 5], 8-bit signed: 128/10 = 12.8 < 127/5 = 25.4, so scale 12.8,
// inverse_scale 0.078125 and max_range = 127 * 0.078125 = 9.921875.
// When neither side qualifies (min = max = 0, say) TF ends with
// inverse_scale = max / qmax = 0; callers that need a usable scale check.
template <class T>
struct SymmetricRange {
  T scale = 1;          // codes per real unit (TF's "scale")
  T inverse_scale = 1;  // real units per code: Octet's scale
  T min_range = 0, max_range = 0;
};

template <class T>
inline SymmetricRange<T> symmetric_range(T min, T max, int64_t qmin, int64_t qmax) {
  const T qmin_f = static_cast<T>(qmin);
  const T qmax_f = static_cast<T>(qmax);
  const T scale_from_min_side = (qmin_f * min > 0) ? qmin_f / min : std::numeric_limits<T>::max();
  const T scale_from_max_side = (qmax_f * max > 0) ? qmax_f / max : std::numeric_limits<T>::max();
  SymmetricRange<T> r;
  r.min_range = min;
  r.max_range = max;
  if (scale_from_min_side < scale_from_max_side) {
    r.scale = scale_from_min_side;
    r.inverse_scale = min / qmin_f;
    r.max_range = qmax_f * r.inverse_scale;
  } else {
    r.scale = scale_from_max_side;
    r.inverse_scale = max / qmax_f;
    r.min_range = qmin_f * r.inverse_scale;
  }
  return r;
}

// ---- parameters ---------------------------------------------------------------

// What to quantize to.
struct QuantSpec {
  int bits = 8;            // 2..16 or 32
  bool is_signed = true;   // codes [-2^(b-1), 2^(b-1)-1] or [0, 2^b-1]
  bool symmetric = false;  // zero point 0 (QDQv2 rule) or free (FakeQuant nudge)
  bool narrow = false;     // drop the lowest code: [-127, 127], [1, 255]
};

// Per-tensor parameters of real = scale * (q - zero_point).
struct QuantParams {
  float scale = 1.0f;
  int64_t zero_point = 0;
  int64_t qmin = 0;
  int64_t qmax = 255;

  // The representable real range: scale * (qmin - zero_point) .. scale * (qmax - zero_point).
  float real_min() const;
  float real_max() const;
};

// A tensor viewed as [outer, channels, inner] around its channel axis; every
// per-channel loop of quant/ walks this view. Per tensor is {1, 1, numel}.
struct ChannelLayout {
  int64_t outer = 1;
  int64_t channels = 1;
  int64_t inner = 1;
  int64_t numel() const { return outer * channels * inner; }
  int64_t channel_of(int64_t flat_index) const { return (flat_index / inner) % channels; }
};

// axis may be negative (counts from the back). Throws std::invalid_argument
// naming `who`, the shape and the axis when the axis is out of range.
ChannelLayout channel_layout(std::span<const int64_t> shape, int axis, const char* who = "channel_layout");

// Per-channel parameters along `axis` (0 for conv weights [Cout, Cin, KH, KW]).
struct PerChannelParams {
  std::vector<float> scale;         // [C]
  std::vector<int64_t> zero_point;  // [C]
  int64_t qmin = 0;
  int64_t qmax = 255;
  int axis = 0;

  int64_t channels() const { return static_cast<int64_t>(scale.size()); }
  QuantParams channel(int64_t c) const;  // throws std::out_of_range
};

// (min, max) -> parameters. The range is first extended to contain 0
// (min' = min(min, 0), max' = max(max, 0); min == max == 0 gives scale 1),
// then spec.symmetric picks symmetric_range, otherwise nudge. Computed in
// float, as TF's kernels do, for bits <= 16 (so the result matches the
// fake-quant op of the same range bit for bit); in double for 32 bits.
// Throws std::invalid_argument for bad bits, non-finite min/max, min > max, or
// symmetric + unsigned + narrow (zero point 0 would be below qmin = 1).
QuantParams choose_params(float min, float max, const QuantSpec& spec);
PerChannelParams choose_params_per_channel(std::span<const float> mins, std::span<const float> maxs,
                                           const QuantSpec& spec, int axis = 0);

// ---- quantize / dequantize ------------------------------------------------------

// q = clamp(round(x / scale) + zero_point, qmin, qmax). The division is done in
// double, which for float inputs decides every tie exactly, so this is the
// exact rounding of the real quotient. stochastic needs rng (one draw per
// value). Throws std::invalid_argument for NaN x, a missing rng, or scale <= 0.
int64_t quantize(float x, const QuantParams& p, RoundMode mode = RoundMode::half_to_even, Rng* rng = nullptr);

// scale * (q - zero_point), one rounding to float (the product is exact in double).
float dequantize(int64_t q, const QuantParams& p);

// Buffers. Int is int8_t, uint8_t, int16_t, uint16_t or int32_t, and
// [qmin, qmax] must fit it (else std::invalid_argument). A NaN input throws,
// naming its offset. x and q have the same length.
template <class Int>
void quantize(std::span<const float> x, const QuantParams& p, std::span<Int> q,
              RoundMode mode = RoundMode::half_to_even, Rng* rng = nullptr);
template <class Int>
void dequantize(std::span<const Int> q, const QuantParams& p, std::span<float> x);

// Per channel: x is laid out as `layout` ([outer, C, inner]), C == p.channels().
template <class Int>
void quantize_per_channel(std::span<const float> x, const ChannelLayout& layout, const PerChannelParams& p,
                          std::span<Int> q, RoundMode mode = RoundMode::half_to_even, Rng* rng = nullptr);
template <class Int>
void dequantize_per_channel(std::span<const Int> q, const ChannelLayout& layout, const PerChannelParams& p,
                            std::span<float> x);

}  // namespace octet::quant
