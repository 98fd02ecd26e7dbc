// engine/fixedpoint.h: the fixed-point arithmetic of the integer contract
// (docs/quantization.md, "The integer contract"). These few functions are the
// whole of the engine's rounding semantics; the quant module's integer
// simulation calls the same functions, so simulation and engine cannot drift
// apart.
//
// A real multiplier m > 0 is carried as m = M0 * 2^(shift - 31) with M0 in
// [2^30, 2^31): QuantizeMultiplier computes (M0, shift) offline in double,
// MultiplyByQuantizedMultiplier applies it to an int32 at run time in
// integers only, rounding twice exactly as TFLite's default path does.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace octet::engine {

// (a * b * 2) / 2^32, rounded to nearest with the nudge of gemmlowp: the
// product plus 2^30 (or 1 - 2^30 when negative) divided by 2^31 truncating
// toward zero. The one overflow case, INT32_MIN * INT32_MIN, saturates to
// INT32_MAX. Hardware twin: Arm NEON VQRDMULH (sqrdmulh).
inline int32_t SaturatingRoundingDoublingHighMul(int32_t a, int32_t b) {
  if (a == std::numeric_limits<int32_t>::min() && b == std::numeric_limits<int32_t>::min()) {
    return std::numeric_limits<int32_t>::max();
  }
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = ab >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
  return static_cast<int32_t>((ab + nudge) / (int64_t{1} << 31));
}

// x / 2^exponent rounded to nearest, ties away from zero; exponent in [0, 31].
// Hardware twin: Arm NEON VRSHL by a negative amount, after the fixup of
// gemmlowp's RoundingDivideByPOT for negative ties.
inline int32_t RoundingDivideByPOT(int32_t x, int exponent) {
  const int64_t mask = (int64_t{1} << exponent) - 1;
  const int64_t remainder = static_cast<int64_t>(x) & mask;
  const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return static_cast<int32_t>((static_cast<int64_t>(x) >> exponent) + (remainder > threshold ? 1 : 0));
}

// x * M0 * 2^(shift - 31), TFLite's MultiplyByQuantizedMultiplier: a left
// shift for shift > 0, then SaturatingRoundingDoublingHighMul, then a rounding
// right shift for shift < 0 (double rounding). The left shift saturates to
// int32 instead of overflowing; the exporter's headroom proof and the loader's
// bound on shifts keep real models away from that edge.
inline int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier, int shift) {
  const int left_shift = shift > 0 ? shift : 0;
  const int right_shift = shift > 0 ? 0 : -shift;
  int64_t shifted = static_cast<int64_t>(x) * (int64_t{1} << left_shift);
  if (shifted > std::numeric_limits<int32_t>::max()) shifted = std::numeric_limits<int32_t>::max();
  if (shifted < std::numeric_limits<int32_t>::min()) shifted = std::numeric_limits<int32_t>::min();
  return RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(static_cast<int32_t>(shifted), multiplier),
                             right_shift);
}

// Offline (writer side, double): real = M0 * 2^(shift - 31), M0 in [2^30, 2^31).
// frexp gives real = q * 2^shift with q in [0.5, 1); M0 = round(q * 2^31) with
// ties away from zero; if that rounds up to 2^31, halve it and add 1 to shift.
// real == 0 gives (0, 0). Multipliers too small to represent (shift < -31)
// become (0, 0): the product is then 0, as it would round to anyway.
struct QuantizedMultiplier {
  int32_t multiplier = 0;
  int shift = 0;
};

inline QuantizedMultiplier QuantizeMultiplier(double real) {
  if (real == 0.0) return {};
  int shift = 0;
  const double q = std::frexp(real, &shift);
  long long m0 = std::llround(q * static_cast<double>(int64_t{1} << 31));
  if (m0 == (int64_t{1} << 31)) {
    m0 /= 2;
    ++shift;
  }
  if (shift < -31) return {};
  return {static_cast<int32_t>(m0), shift};
}

// Rounded integer division with ties away from zero (average pools).
inline int32_t RoundedDivide(int32_t numerator, int32_t denominator) {
  return numerator >= 0 ? (numerator + denominator / 2) / denominator
                        : (numerator - denominator / 2) / denominator;
}

}  // namespace octet::engine
