// tests/quant/test_qmath.cpp: rounding, integer ranges, TF's two range rules
// (FakeQuant's nudge, QDQv2's symmetric range), choose_params and
// quantize/dequantize, with the numbers worked by hand in the comments.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "core/rng.h"
#include "quant/qmath.h"

using namespace octet;
using namespace octet::quant;

// ---- rounding ----------------------------------------------------------------

TEST_CASE("rounding modes at exact ties") {
  // v:              -2.5  -1.5  -0.5   0.5   1.5   2.5
  // half_to_even:   -2    -2    -0     0     2     2     (to the even neighbour)
  // half_up:        -2    -1     0     1     2     3     (floor(v + 0.5): toward +inf)
  // away from zero: -3    -2    -1     1     2     3
  const float v[] = {-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f};
  const float even[] = {-2, -2, 0, 0, 2, 2};
  const float up[] = {-2, -1, 0, 1, 2, 3};
  const float away[] = {-3, -2, -1, 1, 2, 3};
  for (int i = 0; i < 6; ++i) {
    CAPTURE(v[i]);
    CHECK(round_half_to_even(v[i]) == even[i]);
    CHECK(round_half_up(v[i]) == up[i]);
    CHECK(round_half_away_from_zero(v[i]) == away[i]);
    CHECK(round_with(RoundMode::half_to_even, v[i]) == even[i]);
    CHECK(round_with(RoundMode::half_up, v[i]) == up[i]);
    CHECK(round_with(RoundMode::half_away_from_zero, v[i]) == away[i]);
    // The same in double.
    CHECK(round_half_to_even(double(v[i])) == even[i]);
    CHECK(round_half_up(double(v[i])) == up[i]);
    CHECK(round_half_away_from_zero(double(v[i])) == away[i]);
  }
  // Off the ties every mode agrees: 2.4 -> 2, -2.6 -> -3, 7.75 -> 8.
  for (RoundMode m : {RoundMode::half_to_even, RoundMode::half_up, RoundMode::half_away_from_zero}) {
    CHECK(round_with(m, 2.4f) == 2.0f);
    CHECK(round_with(m, -2.6f) == -3.0f);
    CHECK(round_with(m, 7.75f) == 8.0f);
  }
}

TEST_CASE("round functions match libm on a sweep, huge values and NaN") {
  // k/8 for k in [-4000, 4000] hits every tie k + 0.5 and the quarters around it.
  for (int k = -4000; k <= 4000; ++k) {
    const float v = static_cast<float>(k) / 8.0f;
    CAPTURE(v);
    REQUIRE(round_half_to_even(v) == std::nearbyint(v));
    REQUIRE(round_half_away_from_zero(v) == std::round(v));
    REQUIRE(floor_exact(v) == std::floor(v));
    REQUIRE(round_half_up(v) == std::floor(v + 0.5f));
  }
  // Random floats over many magnitudes, float and double.
  Rng rng(7);
  for (int i = 0; i < 20000; ++i) {
    const float v = (rng.uniform() - 0.5f) * std::ldexp(1.0f, static_cast<int>(rng.below(60)) - 20);
    REQUIRE(round_half_to_even(v) == std::nearbyint(v));
    REQUIRE(round_half_away_from_zero(v) == std::round(v));
    REQUIRE(floor_exact(v) == std::floor(v));
    const double d = static_cast<double>(v) * 1.000000119;
    REQUIRE(round_half_to_even(d) == std::nearbyint(d));
    REQUIRE(floor_exact(d) == std::floor(d));
  }
  // Beyond 2^23 every float is an integer and passes through unchanged.
  CHECK(round_half_to_even(8388609.0f) == 8388609.0f);
  CHECK(round_half_away_from_zero(-1e30f) == -1e30f);
  CHECK(floor_exact(3e38f) == 3e38f);
  CHECK(std::isnan(round_half_to_even(std::numeric_limits<float>::quiet_NaN())));
  CHECK(std::isnan(floor_exact(std::numeric_limits<float>::quiet_NaN())));
  CHECK(std::isinf(round_half_up(std::numeric_limits<float>::infinity())));
}

TEST_CASE("half_up is TF's floor(v + 0.5), quirk included") {
  // 0.49999997f = 0.5 - 2^-25. v + 0.5 = 1 - 2^-25 is not a float; it rounds
  // (to even) up to 1.0f, so floor gives 1. TF's Eigen scalar_round_up_op and
  // FakeQuant's floor(x + 0.5f) do exactly this; the other modes give 0.
  const float v = 0.49999997f;
  REQUIRE(v == 0.5f - std::ldexp(1.0f, -25));
  CHECK(round_half_up(v) == 1.0f);
  CHECK(round_half_to_even(v) == 0.0f);
  CHECK(round_half_away_from_zero(v) == 0.0f);
  // In double the sum is exact: 0.
  CHECK(round_half_up(static_cast<double>(v)) == 0.0);
}

TEST_CASE("stochastic rounding: the rule, unbiased on average, reproducible") {
  // 2.25 = 2 + 0.25: up (to 3) exactly when u < 0.25.
  CHECK(round_stochastic(2.25f, 0.0f) == 3.0f);
  CHECK(round_stochastic(2.25f, 0.2499f) == 3.0f);
  CHECK(round_stochastic(2.25f, 0.25f) == 2.0f);
  CHECK(round_stochastic(2.25f, 0.9f) == 2.0f);
  // -1.75 = -2 + 0.25: up (to -1) when u < 0.25.
  CHECK(round_stochastic(-1.75f, 0.1f) == -1.0f);
  CHECK(round_stochastic(-1.75f, 0.5f) == -2.0f);
  // Integers never move.
  CHECK(round_stochastic(5.0f, 0.0f) == 5.0f);

  // E[round(0.3)] = 0.3: 200000 draws, sigma of the mean = sqrt(0.21 / 2e5) = 0.001.
  Rng rng(2024);
  double sum = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) sum += round_with(RoundMode::stochastic, 0.3f, rng.uniform());
  CHECK(std::fabs(sum / n - 0.3) < 0.005);

  // Through quantize with a seeded Rng: codes of 0.3 with scale 1 average 0.3,
  // the same seed gives the same codes, another seed other codes.
  const QuantParams p{1.0f, 0, -128, 127};
  std::vector<float> x(50000, 0.3f);
  std::vector<int8_t> a(x.size()), b(x.size()), c(x.size());
  Rng r1(11), r2(11), r3(12);
  quantize<int8_t>(x, p, a, RoundMode::stochastic, &r1);
  quantize<int8_t>(x, p, b, RoundMode::stochastic, &r2);
  quantize<int8_t>(x, p, c, RoundMode::stochastic, &r3);
  CHECK(a == b);
  CHECK(a != c);
  double mean = 0;
  for (int8_t q : a) mean += q;
  CHECK(std::fabs(mean / a.size() - 0.3) < 0.01);
  // Without an Rng, stochastic rounding is refused.
  CHECK_THROWS_AS(quantize(0.3f, p, RoundMode::stochastic, nullptr), std::invalid_argument);
}

TEST_CASE("round mode names") {
  for (RoundMode m : {RoundMode::half_to_even, RoundMode::half_up, RoundMode::half_away_from_zero,
                      RoundMode::stochastic}) {
    CHECK(parse_round_mode(round_mode_name(m)) == m);
  }
  CHECK(round_mode_name(RoundMode::half_to_even) == "half_to_even");
  CHECK_THROWS_AS(parse_round_mode("nearest"), std::invalid_argument);
}

// ---- integer ranges ------------------------------------------------------------

TEST_CASE("integer ranges for every kind of code") {
  struct Row {
    int bits;
    bool is_signed, narrow;
    int64_t qmin, qmax;
  };
  const Row rows[] = {
      {8, true, false, -128, 127},   {8, true, true, -127, 127},    {8, false, false, 0, 255},
      {8, false, true, 1, 255},      {4, true, false, -8, 7},       {4, false, false, 0, 15},
      {2, true, false, -2, 1},       {2, false, true, 1, 3},        {16, false, false, 0, 65535},
      {16, true, true, -32767, 32767},
      {32, true, false, -2147483648LL, 2147483647LL},
      {32, false, false, 0, 4294967295LL},
  };
  for (const Row& r : rows) {
    CAPTURE(r.bits);
    CAPTURE(r.is_signed);
    CAPTURE(r.narrow);
    const IntRange got = int_range(r.bits, r.is_signed, r.narrow);
    CHECK(got.qmin == r.qmin);
    CHECK(got.qmax == r.qmax);
  }
  for (int bad : {0, 1, 17, 31, 33, 64}) CHECK_THROWS_AS(int_range(bad, true, false), std::invalid_argument);
}

TEST_CASE("channel layout around an axis") {
  const std::vector<int64_t> shape{4, 3, 2, 2};  // e.g. conv weights [Cout, Cin, KH, KW]
  ChannelLayout l = channel_layout(shape, 0);
  CHECK(l.outer == 1);
  CHECK(l.channels == 4);
  CHECK(l.inner == 12);
  l = channel_layout(shape, 1);  // NCHW activations: [N, C, HW]
  CHECK(l.outer == 4);
  CHECK(l.channels == 3);
  CHECK(l.inner == 4);
  l = channel_layout(shape, -1);  // TF's last axis
  CHECK(l.outer == 24);
  CHECK(l.channels == 2);
  CHECK(l.inner == 1);
  CHECK(l.channel_of(5) == 1);
  CHECK_THROWS_AS(channel_layout(shape, 4), std::invalid_argument);
  CHECK_THROWS_AS(channel_layout(shape, -5), std::invalid_argument);
}

// ---- TF's FakeQuant nudge ----------------------------------------------------------

TEST_CASE("nudge: TF's zero-point nudging, worked cases") {
  struct Case {
    const char* name;
    float min, max;
    int64_t qmin, qmax;
    float scale;
    int64_t zp;
    float nudged_min, nudged_max;
  };
  // All scales below are powers of two, so every number is exact in float.
  const Case cases[] = {
      // span 63.75 / 255 = 0.25; zp_from_min = 0 - (-10 / 0.25) = 40: on the grid already.
      {"no nudging", -10.0f, 53.75f, 0, 255, 0.25f, 40, -10.0f, 53.75f},
      // 63.65f + 0.1f rounds to 63.75f: scale 0.25; zp_from_min = 0.1 / 0.25 = 0.4 -> 0:
      // the range slides up by 0.1 to [0, 63.75].
      {"nudged down", -0.1f, 63.65f, 0, 255, 0.25f, 0, 0.0f, 63.75f},
      // zp_from_min = 0.125 / 0.25 = 0.5, an exact tie: std::round goes away from zero,
      // to 1; the range slides down by 0.125 to [-0.25, 63.5].
      {"nudged up at a tie", -0.125f, 63.625f, 0, 255, 0.25f, 1, -0.25f, 63.5f},
      // narrow [1, 255]: 254 steps; 63.5 / 254 = 0.25; zp_from_min = 1 + 0.4 = 1.4 -> 1.
      {"narrow, nudged down", -0.1f, 63.4f, 1, 255, 0.25f, 1, 0.0f, 63.5f},
      // 4 bits [0, 15]: 7.5 / 15 = 0.5; zp_from_min = 0.4 / 0.5 = 0.8 -> 1.
      {"4 bits, nudged up", -0.4f, 7.1f, 0, 15, 0.5f, 1, -0.5f, 7.0f},
      // 2 bits [0, 3]: 1.5 / 3 = 0.5; zp_from_min = 2.
      {"2 bits", -1.0f, 0.5f, 0, 3, 0.5f, 2, -1.0f, 0.5f},
      // Signed codes work the same: [-128, 127], zp_from_min = -128 + 40 = -88.
      {"signed codes", -10.0f, 53.75f, -128, 127, 0.25f, -88, -10.0f, 53.75f},
      // 0 above the range (max < 0): zp_from_min = 0 + 2 / (1.5/255) = 340 > 255 -> 255;
      // TF slides the range to [-(max - min), 0] = [-1.5, 0].
      {"max < 0: slid to end at 0", -2.0f, -0.5f, 0, 255, 1.5f / 255.0f, 255, -1.5f, 0.0f},
      // 0 below the range (min > 0): zp_from_min = -0.5 / (1.5/255) = -85 < 0 -> 0;
      // the range slides to [0, max - min] = [0, 1.5].
      {"min > 0: slid to start at 0", 0.5f, 2.0f, 0, 255, 1.5f / 255.0f, 0, 0.0f, 1.5f},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const Nudged<float> n = nudge(c.min, c.max, c.qmin, c.qmax);
    CHECK(n.scale == c.scale);
    CHECK(n.zero_point == c.zp);
    CHECK(n.nudged_min == doctest::Approx(c.nudged_min).epsilon(1e-6));
    CHECK(n.nudged_max == doctest::Approx(c.nudged_max).epsilon(1e-6));
    // Whatever the case, real 0 is the code zero_point exactly: (zp - zp) * scale = 0, and
    // the span is exactly (qmax - qmin) steps.
    CHECK(n.nudged_max - n.nudged_min == doctest::Approx((c.qmax - c.qmin) * n.scale).epsilon(1e-6));
  }
}

TEST_CASE("nudge: zero point rounding is std::round, ties away from zero") {
  // 4 bits, scale 0.5: zp_from_min = -min / 0.5 lands on ties 0.5, 1.5, 2.5 for
  // min = -0.25, -0.75, -1.25; std::round gives 1, 2, 3 (half-to-even would give 0, 2, 2).
  const float mins[] = {-0.25f, -0.75f, -1.25f};
  const int64_t zps[] = {1, 2, 3};
  for (int i = 0; i < 3; ++i) {
    const Nudged<float> n = nudge(mins[i], mins[i] + 7.5f, 0, 15);
    CHECK(n.scale == 0.5f);
    CHECK(n.zero_point == zps[i]);
  }
}

// ---- TF's QDQv2 symmetric range ------------------------------------------------------

TEST_CASE("symmetric_range: TF's documented example [-10, 5], signed 8 bits") {
  // scale_from_min_side = -128 / -10 = 12.8, scale_from_max_side = 127 / 5 = 25.4.
  // The smaller, 12.8 codes per unit, keeps both ends inside [-128, 127]; the min
  // side stays and the max side widens: inverse_scale = -10 / -128 = 0.078125,
  // max_range = 127 * 0.078125 = 9.921875.
  const SymmetricRange<float> s = symmetric_range(-10.0f, 5.0f, -128, 127);
  CHECK(s.scale == 12.8f);
  CHECK(s.inverse_scale == 0.078125f);
  CHECK(s.min_range == -10.0f);
  CHECK(s.max_range == 9.921875f);
}

TEST_CASE("symmetric_range: the other side wins, narrow, unsigned, all zero") {
  // [-1, 1] signed: min side 128, max side 127 -> max side; min widens to -128/127.
  SymmetricRange<float> s = symmetric_range(-1.0f, 1.0f, -128, 127);
  CHECK(s.scale == 127.0f);
  CHECK(s.inverse_scale == 1.0f / 127.0f);
  CHECK(s.min_range == -128.0f / 127.0f);
  CHECK(s.max_range == 1.0f);
  // Narrow [-127, 127]: both sides 12.7 vs 25.4 for [-10, 5] -> min side: max_range = 10.
  s = symmetric_range(-10.0f, 5.0f, -127, 127);
  CHECK(s.inverse_scale == 10.0f / 127.0f);
  CHECK(s.max_range == doctest::Approx(10.0f).epsilon(1e-7));
  // Unsigned [0, 255]: 0 * min is not > 0, so only the max side counts: 255 / 2.
  s = symmetric_range(-1.0f, 2.0f, 0, 255);
  CHECK(s.scale == 127.5f);
  CHECK(s.inverse_scale == 2.0f / 255.0f);
  CHECK(s.min_range == 0.0f);
  // Both sides empty: TF ends with inverse_scale = max / qmax = 0.
  s = symmetric_range(0.0f, 0.0f, -128, 127);
  CHECK(s.inverse_scale == 0.0f);
  CHECK(s.scale == std::numeric_limits<float>::max());
}

// ---- choose_params ---------------------------------------------------------------------

TEST_CASE("choose_params: the header's example") {
  // [-1, 2] as uint8: scale 3/255 = 0.0117647, zp_from_min = 1 / 0.0117647 = 85.
  const QuantParams p = choose_params(-1.0f, 2.0f, QuantSpec{.bits = 8, .is_signed = false});
  CHECK(p.scale == 3.0f / 255.0f);
  CHECK(p.zero_point == 85);
  CHECK(p.qmin == 0);
  CHECK(p.qmax == 255);
  // 0.25 / 0.0117647 = 21.25 -> 21, + 85 = 106; back: 21 * 0.0117647 = 0.247059.
  CHECK(quantize(0.25f, p) == 106);
  CHECK(dequantize(106, p) == doctest::Approx(0.247059f).epsilon(1e-5));
  CHECK(p.real_min() == doctest::Approx(-1.0f));
  CHECK(p.real_max() == doctest::Approx(2.0f));
}

TEST_CASE("choose_params: asymmetric equals TF's nudge; ranges are extended to contain 0") {
  const QuantSpec u8{.bits = 8, .is_signed = false};
  // TF's "nudged up" case: [-0.125, 63.625] -> scale 0.25, zp 1.
  QuantParams p = choose_params(-0.125f, 63.625f, u8);
  CHECK(p.scale == 0.25f);
  CHECK(p.zero_point == 1);
  // min > 0: extended to [0, 2] (not slid as TF's FakeQuant would): scale 2/255, zp 0.
  p = choose_params(0.5f, 2.0f, u8);
  CHECK(p.scale == 2.0f / 255.0f);
  CHECK(p.zero_point == 0);
  // max < 0: extended to [-2, 0]: zp 255, so real 0 is the top code.
  p = choose_params(-2.0f, -0.5f, u8);
  CHECK(p.scale == 2.0f / 255.0f);
  CHECK(p.zero_point == 255);
  // min == max == 0: scale 1, zp 0 (any scale represents the only value 0).
  p = choose_params(0.0f, 0.0f, u8);
  CHECK(p.scale == 1.0f);
  CHECK(p.zero_point == 0);
  // min == max != 0 is extended too: [3, 3] -> [0, 3].
  p = choose_params(3.0f, 3.0f, u8);
  CHECK(p.scale == 3.0f / 255.0f);
  CHECK(p.zero_point == 0);
  // Signed asymmetric: [-1, 2] on [-128, 127]: zp_from_min = -128 + 85 = -43.
  p = choose_params(-1.0f, 2.0f, QuantSpec{.bits = 8, .is_signed = true});
  CHECK(p.scale == 3.0f / 255.0f);
  CHECK(p.zero_point == -43);
  // Narrow unsigned [1, 255]: [-0.25, 63.25] over 254 steps: scale 63.5 / 254 = 0.25,
  // zp_from_min = 1 - (-0.25 / 0.25) = 2.
  p = choose_params(-0.25f, 63.25f, QuantSpec{.bits = 8, .is_signed = false, .narrow = true});
  CHECK(p.scale == 0.25f);
  CHECK(p.zero_point == 2);
  CHECK(p.qmin == 1);
  // 16 bits unsigned: [-8192, 8191.75] spans 16383.75 = 65535 * 0.25; zp_from_min = 8192 / 0.25 = 32768.
  p = choose_params(-8192.0f, 8191.75f, QuantSpec{.bits = 16, .is_signed = false});
  CHECK(p.scale == 0.25f);
  CHECK(p.zero_point == 32768);
}

TEST_CASE("choose_params: symmetric equals TF's QDQv2 rule, zero point 0") {
  // The documented example: scale 0.078125, range [-10, 9.921875].
  QuantParams p = choose_params(-10.0f, 5.0f, QuantSpec{.bits = 8, .is_signed = true, .symmetric = true});
  CHECK(p.scale == 0.078125f);
  CHECK(p.zero_point == 0);
  CHECK(p.real_min() == -10.0f);
  CHECK(p.real_max() == 9.921875f);
  // Narrow: [-127, 127], scale 10/127, range [-10, 10].
  p = choose_params(-10.0f, 5.0f, QuantSpec{.bits = 8, .is_signed = true, .symmetric = true, .narrow = true});
  CHECK(p.scale == 10.0f / 127.0f);
  CHECK(p.real_max() == doctest::Approx(10.0f));
  // Unsigned symmetric: codes [0, 255], zero point 0, scale from max: 2 / 255; negatives clamp to 0.
  p = choose_params(-1.0f, 2.0f, QuantSpec{.bits = 8, .is_signed = false, .symmetric = true});
  CHECK(p.scale == 2.0f / 255.0f);
  CHECK(p.zero_point == 0);
  CHECK(quantize(-0.5f, p) == 0);
  // 4-bit signed symmetric weights in [-0.7, 0.35]: min side 8 / 0.7 = 11.43, max side
  // 7 / 0.35 = 20 -> min side, scale 0.7 / 8 = 0.0875.
  p = choose_params(-0.7f, 0.35f, QuantSpec{.bits = 4, .is_signed = true, .symmetric = true});
  CHECK(p.scale == doctest::Approx(0.0875f).epsilon(1e-6));
  CHECK(quantize(0.35f, p) == 4);   // 0.35 / 0.0875 = 4
  CHECK(quantize(-0.7f, p) == -8);  // the min side maps to the lowest code exactly
}

TEST_CASE("choose_params: 32 bits, computed in double") {
  // Unsigned 32-bit codes [0, 2^32 - 1] over [0, 2^32 - 1]: scale exactly 1.
  QuantParams p = choose_params(0.0f, 4294967295.0f, QuantSpec{.bits = 32, .is_signed = false});
  // 4294967295.0f rounds to 2^32 in float; in double the span 2^32 / (2^32 - 1) ~ 1 + 2.3e-10 -> float 1.
  CHECK(p.scale == 1.0f);
  CHECK(p.zero_point == 0);
  CHECK(p.qmax == 4294967295LL);
  // Signed symmetric [-1, 1]: the max side wins, scale = 1 / (2^31 - 1) in double -> float.
  p = choose_params(-1.0f, 1.0f, QuantSpec{.bits = 32, .is_signed = true, .symmetric = true});
  CHECK(p.scale == static_cast<float>(1.0 / 2147483647.0));
  // Codes are exact in double: 0.5 / scale ~ 2^30, far beyond float's 24 bits.
  const int64_t q = quantize(0.5f, p);
  CHECK(q == std::llround(0.5 / static_cast<double>(p.scale)));
  CHECK(dequantize(q, p) == 0.5f);
  CHECK(quantize(1.0f, p) == 2147483647LL);
  CHECK(quantize(-2.0f, p) == -2147483648LL);  // clamped
}

TEST_CASE("choose_params: bad input says what is wrong") {
  const QuantSpec s;
  CHECK_THROWS_AS(choose_params(std::nanf(""), 1.0f, s), std::invalid_argument);
  CHECK_THROWS_AS(choose_params(-std::numeric_limits<float>::infinity(), 1.0f, s), std::invalid_argument);
  CHECK_THROWS_AS(choose_params(2.0f, 1.0f, s), std::invalid_argument);
  CHECK_THROWS_AS(choose_params(-1.0f, 1.0f, QuantSpec{.bits = 1}), std::invalid_argument);
  CHECK_THROWS_AS(choose_params(-1.0f, 1.0f, QuantSpec{.bits = 8, .is_signed = false, .symmetric = true, .narrow = true}),
                  std::invalid_argument);
  try {
    choose_params(2.0f, 1.0f, s);
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("min 2 > max 1") != std::string::npos);
  }
}

TEST_CASE("choose_params_per_channel: each channel its own rule") {
  const std::vector<float> mins{-1.0f, 0.0f, -0.125f};
  const std::vector<float> maxs{2.0f, 0.0f, 63.625f};
  const PerChannelParams p =
      choose_params_per_channel(mins, maxs, QuantSpec{.bits = 8, .is_signed = false}, /*axis=*/0);
  REQUIRE(p.channels() == 3);
  CHECK(p.scale[0] == 3.0f / 255.0f);
  CHECK(p.zero_point[0] == 85);
  CHECK(p.scale[1] == 1.0f);
  CHECK(p.zero_point[1] == 0);
  CHECK(p.scale[2] == 0.25f);
  CHECK(p.zero_point[2] == 1);
  CHECK(p.channel(2).scale == 0.25f);
  CHECK_THROWS_AS(p.channel(3), std::out_of_range);
  const std::vector<float> bad_max{2.0f, -1.0f, 1.0f};
  CHECK_THROWS_AS(choose_params_per_channel(mins, bad_max, QuantSpec{}), std::invalid_argument);
  CHECK_THROWS_AS(choose_params_per_channel(mins, std::vector<float>{1.0f}, QuantSpec{}), std::invalid_argument);
}

// ---- quantize / dequantize -----------------------------------------------------------------

TEST_CASE("quantize: ties in each mode, clamping, dequantize") {
  // scale 0.25, zero point 40, codes [0, 255] (real range [-10, 53.75]).
  const QuantParams p{0.25f, 40, 0, 255};
  // 1.125 / 0.25 = 4.5, a tie: even -> 4, up -> 5, away -> 5; plus 40.
  CHECK(quantize(1.125f, p, RoundMode::half_to_even) == 44);
  CHECK(quantize(1.125f, p, RoundMode::half_up) == 45);
  CHECK(quantize(1.125f, p, RoundMode::half_away_from_zero) == 45);
  // -1.125 / 0.25 = -4.5: even -> -4, up -> -4, away -> -5; plus 40.
  CHECK(quantize(-1.125f, p, RoundMode::half_to_even) == 36);
  CHECK(quantize(-1.125f, p, RoundMode::half_up) == 36);
  CHECK(quantize(-1.125f, p, RoundMode::half_away_from_zero) == 35);
  // 1.375 / 0.25 = 5.5: even -> 6 this time.
  CHECK(quantize(1.375f, p, RoundMode::half_to_even) == 46);
  // Clamping: 100 / 0.25 + 40 = 440 -> 255; -20 / 0.25 + 40 = -40 -> 0; infinities too.
  CHECK(quantize(100.0f, p) == 255);
  CHECK(quantize(-20.0f, p) == 0);
  CHECK(quantize(std::numeric_limits<float>::infinity(), p) == 255);
  CHECK(quantize(-std::numeric_limits<float>::infinity(), p) == 0);
  CHECK_THROWS_AS(quantize(std::nanf(""), p), std::invalid_argument);
  // Real 0 is the zero point, exactly, both ways.
  CHECK(quantize(0.0f, p) == 40);
  CHECK(dequantize(40, p) == 0.0f);
  CHECK(dequantize(44, p) == 1.0f);
  CHECK(dequantize(255, p) == 53.75f);
  CHECK(dequantize(0, p) == -10.0f);
  // A bad scale is refused.
  CHECK_THROWS_AS(quantize(1.0f, QuantParams{0.0f, 0, 0, 255}), std::invalid_argument);
  CHECK_THROWS_AS(quantize(1.0f, QuantParams{1.0f, 300, 0, 255}), std::invalid_argument);
}

TEST_CASE("quantize: the division is exact, so near-ties are not ties") {
  // scale 0.1f is 0.100000001490116...: 0.25f / 0.1f = 2.4999999627 < 2.5, so every mode gives 2,
  // while float arithmetic (0.25f / 0.1f = 2.5f exactly) would see a tie.
  const QuantParams p{0.1f, 0, -128, 127};
  CHECK(0.25f / 0.1f == 2.5f);
  CHECK(quantize(0.25f, p, RoundMode::half_up) == 2);
  CHECK(quantize(0.25f, p, RoundMode::half_away_from_zero) == 2);
}

TEST_CASE("quantize/dequantize buffers, per tensor") {
  const QuantParams p{0.25f, 40, 0, 255};
  const std::vector<float> x{-20.0f, -1.125f, 0.0f, 1.125f, 1.2f, 100.0f};
  std::vector<uint8_t> q(x.size());
  quantize<uint8_t>(x, p, q, RoundMode::half_to_even);
  // -20 -> 0 (clamped); -4.5 -> -4 + 40 = 36; 0 -> 40; 4.5 -> 4 + 40 = 44; 4.8 -> 5 + 40 = 45; 440 -> 255.
  CHECK(q == std::vector<uint8_t>{0, 36, 40, 44, 45, 255});
  std::vector<float> back(q.size());
  dequantize<uint8_t>(q, p, back);
  CHECK(back == std::vector<float>{-10.0f, -1.0f, 0.0f, 1.0f, 1.25f, 53.75f});
  // Codes [0, 255] do not fit int8.
  std::vector<int8_t> q8(x.size());
  CHECK_THROWS_AS(quantize<int8_t>(x, p, q8), std::invalid_argument);
  // Length mismatch and NaN (with its offset) are refused.
  std::vector<uint8_t> short_q(2);
  CHECK_THROWS_AS(quantize<uint8_t>(x, p, short_q), std::invalid_argument);
  const std::vector<float> with_nan{1.0f, std::nanf("")};
  std::vector<uint8_t> q2(2);
  try {
    quantize<uint8_t>(with_nan, p, q2);
    FAIL("no throw");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("offset 1") != std::string::npos);
  }
}

TEST_CASE("quantize/dequantize buffers, per channel") {
  // x [2, 3] along axis 0: channel 0 scale 0.5, zp 0; channel 1 scale 0.25, zp 10; codes [-128, 127].
  PerChannelParams p;
  p.scale = {0.5f, 0.25f};
  p.zero_point = {0, 10};
  p.qmin = -128;
  p.qmax = 127;
  const std::vector<int64_t> shape{2, 3};
  const std::vector<float> x{1.0f, -0.75f, 100.0f, 1.0f, -0.75f, -100.0f};
  std::vector<int8_t> q(6);
  quantize_per_channel<int8_t>(x, channel_layout(shape, 0), p, q);
  // ch0: 1/0.5 = 2; -0.75/0.5 = -1.5 -> -2 (even); 200 -> 127.
  // ch1: 1/0.25 = 4 + 10 = 14; -3 + 10 = 7; -400 + 10 -> -128.
  CHECK(q == std::vector<int8_t>{2, -2, 127, 14, 7, -128});
  std::vector<float> back(6);
  dequantize_per_channel<int8_t>(q, channel_layout(shape, 0), p, back);
  CHECK(back == std::vector<float>{1.0f, -1.0f, 63.5f, 1.0f, -0.75f, -34.5f});
  // Along axis 1 ([2, 3] -> 3 channels) the same two-channel parameters do not fit.
  CHECK_THROWS_AS(quantize_per_channel<int8_t>(x, channel_layout(shape, 1), p, q), std::invalid_argument);
  // Axis 1 with 3 channels: column c uses scale[c].
  PerChannelParams p3;
  p3.scale = {1.0f, 0.5f, 0.25f};
  p3.zero_point = {0, 0, 0};
  p3.qmin = -128;
  p3.qmax = 127;
  quantize_per_channel<int8_t>(x, channel_layout(shape, 1), p3, q);
  // row 0: 1/1 = 1; -0.75/0.5 = -1.5 -> -2; 100/0.25 -> 127. row 1: 1; -2; -400 -> -128.
  CHECK(q == std::vector<int8_t>{1, -2, 127, 1, -2, -128});
}
