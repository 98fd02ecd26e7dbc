// The golden values of the integer contract (docs/quantization.md, "The
// integer contract") and a randomized check of MultiplyByQuantizedMultiplier
// against an independent 128-bit formulation of the same double rounding.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "engine/fixedpoint.h"

using namespace octet::engine;

namespace {

__extension__ typedef __int128 i128;

constexpr int32_t kMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kMax = std::numeric_limits<int32_t>::max();

// floor(a / b) for b > 0, exact on 128 bits.
i128 floor_div(i128 a, i128 b) {
  i128 q = a / b;
  if ((a % b != 0) && (a < 0)) --q;
  return q;
}

// The oracle, written from the contract's words rather than from the code:
//   1. x' = x * 2^max(shift, 0), saturated to int32;
//   2. r1 = round(x' * M0 / 2^31), ties toward +infinity (SRDHM's nudge);
//   3. r2 = round(r1 / 2^max(-shift, 0)), ties away from zero.
int32_t oracle_mbqm(int32_t x, int32_t m0, int shift) {
  i128 xs = static_cast<i128>(x) * (i128{1} << (shift > 0 ? shift : 0));
  if (xs > kMax) xs = kMax;
  if (xs < kMin) xs = kMin;
  const i128 r1 = floor_div(xs * m0 + (i128{1} << 30), i128{1} << 31);
  const int e = shift > 0 ? 0 : -shift;
  if (e == 0) return static_cast<int32_t>(r1);
  const i128 mag = r1 < 0 ? -r1 : r1;
  const i128 rounded = (mag + (i128{1} << (e - 1))) >> e;
  return static_cast<int32_t>(r1 < 0 ? -rounded : rounded);
}

}  // namespace

TEST_CASE("QuantizeMultiplier golden cases") {
  const auto check = [](double real, int32_t m0, int shift) {
    const QuantizedMultiplier q = QuantizeMultiplier(real);
    CHECK(q.multiplier == m0);
    CHECK(q.shift == shift);
  };
  check(0.5, 1073741824, 0);
  check(1.0, 1073741824, 1);
  check(0.1, 1717986918, -3);
  check(0.001, 1099511628, -9);
  check(0.0, 0, 0);
  // Rounds up to 2^31: halve and shift + 1.
  check(1.0 - std::ldexp(1.0, -40), 1073741824, 1);
  // Too small to represent: (0, 0).
  check(std::ldexp(1.0, -40), 0, 0);
}

TEST_CASE("QuantizeMultiplier reconstructs the real multiplier within half an ulp of M0") {
  std::mt19937_64 gen(7);
  std::uniform_real_distribution<double> exp(-30.0, 10.0);
  for (int i = 0; i < 10000; ++i) {
    const double real = std::exp2(exp(gen));
    const QuantizedMultiplier q = QuantizeMultiplier(real);
    REQUIRE(q.multiplier >= (1 << 30));
    const double back = std::ldexp(static_cast<double>(q.multiplier), q.shift - 31);
    CHECK(std::fabs(back - real) <= std::ldexp(0.5, q.shift - 31) * (1 + 1e-12));
  }
}

TEST_CASE("double rounding golden case") {
  // SRDHM: 295987 * 1297534316 / 2^31 = 178838.749 -> 178839; RDBPOT: 178839 / 2 = 89419.5 -> 89420.
  CHECK(MultiplyByQuantizedMultiplier(295987, 1297534316, -1) == 89420);
  // A single rounding of the exact product would give 89419.
  const long double exact = 295987.0L * 1297534316.0L / 4294967296.0L;
  CHECK(std::lround(static_cast<double>(exact)) == 89419);
  CHECK(oracle_mbqm(295987, 1297534316, -1) == 89420);
}

TEST_CASE("SaturatingRoundingDoublingHighMul") {
  CHECK(SaturatingRoundingDoublingHighMul(kMin, kMin) == kMax);  // the one overflow saturates
  CHECK(SaturatingRoundingDoublingHighMul(kMin, kMax) == -kMax);
  CHECK(SaturatingRoundingDoublingHighMul(kMax, kMax) == kMax - 1);
  CHECK(SaturatingRoundingDoublingHighMul(0, kMin) == 0);
  // Ties: a*b = +-2^30 is exactly half: rounds toward +infinity.
  CHECK(SaturatingRoundingDoublingHighMul(1 << 15, 1 << 15) == 1);   // +0.5 -> 1
  CHECK(SaturatingRoundingDoublingHighMul(-(1 << 15), 1 << 15) == 0);  // -0.5 -> 0
  CHECK(SaturatingRoundingDoublingHighMul(3 << 15, 1 << 15) == 2);   // 1.5 -> 2
  CHECK(SaturatingRoundingDoublingHighMul(-(3 << 15), 1 << 15) == -1);  // -1.5 -> -1
  CHECK(SaturatingRoundingDoublingHighMul(1 << 30, 1 << 30) == 1 << 29);
}

TEST_CASE("RoundingDivideByPOT rounds half away from zero, both signs") {
  CHECK(RoundingDivideByPOT(5, 1) == 3);
  CHECK(RoundingDivideByPOT(-5, 1) == -3);
  CHECK(RoundingDivideByPOT(3, 1) == 2);
  CHECK(RoundingDivideByPOT(-3, 1) == -2);
  CHECK(RoundingDivideByPOT(6, 2) == 2);    // 1.5
  CHECK(RoundingDivideByPOT(-6, 2) == -2);  // -1.5
  CHECK(RoundingDivideByPOT(5, 2) == 1);    // 1.25
  CHECK(RoundingDivideByPOT(-5, 2) == -1);
  CHECK(RoundingDivideByPOT(7, 2) == 2);    // 1.75
  CHECK(RoundingDivideByPOT(-7, 2) == -2);
  CHECK(RoundingDivideByPOT(-4, 1) == -2);
  CHECK(RoundingDivideByPOT(42, 0) == 42);
  CHECK(RoundingDivideByPOT(-42, 0) == -42);
  CHECK(RoundingDivideByPOT(kMin, 31) == -1);
  CHECK(RoundingDivideByPOT(kMax, 31) == 1);
  CHECK(RoundingDivideByPOT(1 << 30, 31) == 1);      // exactly 0.5 -> 1
  CHECK(RoundingDivideByPOT(-(1 << 30), 31) == -1);  // exactly -0.5 -> -1
}

TEST_CASE("RoundedDivide ties away from zero") {
  CHECK(RoundedDivide(5, 2) == 3);
  CHECK(RoundedDivide(-5, 2) == -3);
  CHECK(RoundedDivide(4, 3) == 1);
  CHECK(RoundedDivide(-4, 3) == -1);
  CHECK(RoundedDivide(-128 * 9, 9) == -128);
}

TEST_CASE("MultiplyByQuantizedMultiplier equals the 128-bit oracle on random and edge inputs") {
  std::mt19937_64 gen(12345);
  std::uniform_int_distribution<int32_t> any(kMin, kMax);
  std::uniform_int_distribution<int32_t> small(-(1 << 20), 1 << 20);
  std::uniform_int_distribution<int32_t> mult((1 << 30), kMax);
  std::uniform_int_distribution<int> shift(-31, 30);
  const int32_t edges_x[] = {0, 1, -1, kMax, kMin, kMin + 1, 1 << 30, -(1 << 30), 295987, 12345678};
  const int32_t edges_m[] = {1 << 30, kMax, (1 << 30) + 1, 1297534316, 0};
  long checked = 0, mismatches = 0;
  for (int32_t x : edges_x)
    for (int32_t m : edges_m)
      for (int s = -31; s <= 30; ++s) {
        mismatches += MultiplyByQuantizedMultiplier(x, m, s) != oracle_mbqm(x, m, s);
        ++checked;
      }
  for (int i = 0; i < 1000000; ++i) {
    const int32_t x = (i & 1) ? any(gen) : small(gen);
    const int32_t m = mult(gen);
    const int s = (i & 2) ? shift(gen) : -(i % 12);  // real models mostly have small negative shifts
    const int32_t got = MultiplyByQuantizedMultiplier(x, m, s);
    const int32_t want = oracle_mbqm(x, m, s);
    if (got != want && mismatches < 5) FAIL_CHECK("x=" << x << " M0=" << m << " shift=" << s << ": " << got << " != " << want);
    mismatches += got != want;
    ++checked;
  }
  CHECK(mismatches == 0);
  CHECK(checked > 1000000);
}

TEST_CASE("requantization is monotonic in the accumulator") {
  // A sanity property the kernels rely on for clamping: x <= y implies f(x) <= f(y).
  std::mt19937_64 gen(3);
  std::uniform_int_distribution<int32_t> acc(-(1 << 24), 1 << 24);
  std::uniform_int_distribution<int32_t> mult((1 << 30), kMax);
  for (int i = 0; i < 100000; ++i) {
    int32_t a = acc(gen), b = acc(gen);
    if (a > b) std::swap(a, b);
    const int32_t m = mult(gen);
    const int s = -static_cast<int>(i % 20);
    CHECK(MultiplyByQuantizedMultiplier(a, m, s) <= MultiplyByQuantizedMultiplier(b, m, s));
  }
}
