// tests/quant/test_fake_quant.cpp: the three fake-quant ops (TF FakeQuant,
// TF QuantizeAndDequantizeV2, LSQ), forward and backward. Over 600 lines:
// three ops, each with worked numbers and every gradient checked two ways.
//
// What is checked, and how:
//   - worked numbers for each op, computed by hand in the comments (nudging,
//     ranges without 0, narrow range, ties in every rounding mode, signed and
//     unsigned codes, range given vs measured, TF's documented [-10, 5] example);
//   - every gradient: the dx mask, FakeQuant's dmin/dmax sums (per tensor and
//     per channel), QDQv2's two gradients, LSQ's step gradient against the
//     formula of Esser et al. (gradient scale included) and against finite
//     differences where the op is differentiable;
//   - the fast kernels against the one-element *_ref functions, with tolerance
//     0, on random tensors for every deterministic rounding mode, bit widths
//     2..16 and 32, and several channel axes;
//   - stochastic rounding: reproducible from the seed, independent of the
//     thread count, unbiased on average;
//   - the exported parameters reproduce every output value bit for bit;
//   - bad input throws std::invalid_argument.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "quant/fake_quant.h"
#include "quant/qmath.h"

using namespace octet;
using namespace octet::quant;

namespace {

Tensor tens(const Shape& shape, const std::vector<float>& v) { return Tensor::from(shape, v); }
Tensor vec1(const std::vector<float>& v) { return tens({static_cast<int64_t>(v.size())}, v); }

Tensor leaf(const std::vector<float>& v) {
  Tensor t = vec1(v);
  t.requires_grad_(true);
  return t;
}

Tensor leaf_scalar(float v) {
  Tensor t = Tensor::scalar(v);
  t.requires_grad_(true);
  return t;
}

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.data(), t.data() + t.numel()); }

constexpr RoundMode kDeterministic[] = {RoundMode::half_to_even, RoundMode::half_up, RoundMode::half_away_from_zero};
constexpr int kBits[] = {2, 3, 4, 5, 8, 12, 16, 32};

// Random values spread over a few magnitudes, with exact zeros and repeats.
Tensor random_tensor(const Shape& shape, Rng& rng, float spread) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const uint32_t kind = rng.below(10);
    float v = rng.uniform(-spread, spread);
    if (kind == 0) v = 0.0f;
    if (kind == 1) v *= 4.0f;  // beyond most ranges
    if (kind == 2 && i > 0) v = t.data()[i - 1];
    t.data()[i] = v;
  }
  return t;
}

}  // namespace

// =====================================================================================
// FakeQuant: forward
// =====================================================================================

TEST_CASE("FakeQuant: nudging of min = -0.1, max = 0.25, 8 bits") {
  // scale       = 0.35 / 255                  = 0.00137255
  // zp_from_min = 0 - (-0.1 / 0.00137255)     = 72.857 -> zero point 73
  // nudged_min  = (0 - 73) * 0.00137255       = -0.100196
  // nudged_max  = (255 - 73) * 0.00137255     =  0.249804
  // The range slides down by 0.000196 (< half a step) so that 0 is code 73.
  const float s = (0.25f - -0.1f) / 255.0f;
  CHECK(s == doctest::Approx(0.35 / 255).epsilon(1e-6));
  const QuantParams p = fake_quant_params(-0.1f, 0.25f);
  CHECK(p.scale == s);
  CHECK(p.zero_point == 73);
  CHECK(p.qmin == 0);
  CHECK(p.qmax == 255);
  CHECK(p.real_min() == doctest::Approx(-0.100196).epsilon(1e-5));
  CHECK(p.real_max() == doctest::Approx(0.249804).epsilon(1e-5));

  // x        steps from nudged_min          code  y = (code - 73) * s
  // -1       clamped to nudged_min: 0       0     -73 s = -0.100196
  // -0.1     0.000196 / s = 0.143 -> 0      0     -73 s
  //  0       73                             73     0 (exactly)
  //  0.1     0.200196 / s = 145.857 -> 146  146    73 s = 0.100196
  //  0.2     0.300196 / s = 218.714 -> 219  219   146 s = 0.200392
  //  0.25    clamped to nudged_max: 255     255   182 s = 0.249804
  const Tensor x = vec1({-1.0f, -0.1f, 0.0f, 0.1f, 0.2f, 0.25f});
  const Tensor mn = Tensor::scalar(-0.1f), mx = Tensor::scalar(0.25f);
  const std::vector<float> y = values(fake_quant(x, mn, mx));
  const float expect[] = {-73 * s, -73 * s, 0.0f, 73 * s, 146 * s, 182 * s};
  for (int i = 0; i < 6; ++i) {
    CAPTURE(i);
    CHECK(y[i] == expect[i]);
  }
  CHECK(y[3] == doctest::Approx(0.100196).epsilon(1e-5));
  CHECK(y[4] == doctest::Approx(0.200392).epsilon(1e-5));
  // The per-channel op (multiplies by inv_scale instead of dividing) agrees here.
  const std::vector<float> yc = values(fake_quant_per_channel(vec1({-1.0f, -0.1f, 0.0f, 0.1f, 0.2f, 0.25f}).detach(),
                                                              vec1(std::vector<float>(6, -0.1f)),
                                                              vec1(std::vector<float>(6, 0.25f)), 0));
  for (int i = 0; i < 6; ++i) CHECK(yc[i] == expect[i]);
}

TEST_CASE("FakeQuant: a range that does not contain 0 slides onto it (TF)") {
  // [0.5, 64.25]: span 63.75, scale 0.25, zp_from_min = -2 < 0 -> zero point 0:
  // the range becomes [0, 63.75].
  {
    const QuantParams p = fake_quant_params(0.5f, 64.25f);
    CHECK(p.scale == 0.25f);
    CHECK(p.zero_point == 0);
    const std::vector<float> y =
        values(fake_quant(vec1({-3.0f, 0.0f, 0.3f, 0.5f, 64.0f, 64.25f, 100.0f}), Tensor::scalar(0.5f),
                          Tensor::scalar(64.25f)));
    // -3 -> 0; 0.3 -> 1.2 steps -> 1 -> 0.25; 64 -> clamped to 63.75.
    const float expect[] = {0.0f, 0.0f, 0.25f, 0.5f, 63.75f, 63.75f, 63.75f};
    for (int i = 0; i < 7; ++i) CHECK(y[i] == expect[i]);
  }
  // [-64.25, -0.5]: zp_from_min = 257 > 255 -> zero point 255: the range becomes [-63.75, 0].
  {
    const QuantParams p = fake_quant_params(-64.25f, -0.5f);
    CHECK(p.scale == 0.25f);
    CHECK(p.zero_point == 255);
    const std::vector<float> y =
        values(fake_quant(vec1({-100.0f, -64.0f, -0.3f, 2.0f}), Tensor::scalar(-64.25f), Tensor::scalar(-0.5f)));
    const float expect[] = {-63.75f, -63.75f, -0.25f, 0.0f};
    for (int i = 0; i < 4; ++i) CHECK(y[i] == expect[i]);
  }
}

TEST_CASE("FakeQuant: narrow range gives a grid symmetric around 0") {
  // 8 bits narrow, codes [1, 255]: [-1, 1] has scale 2/254 = 1/127 and
  // zp_from_min = 1 + 127 = 128: nudged range [-127/127, 127/127] = [-1, 1].
  const FakeQuantOptions narrow{.bits = 8, .narrow_range = true};
  QuantParams p = fake_quant_params(-1.0f, 1.0f, narrow);
  CHECK(p.qmin == 1);
  CHECK(p.qmax == 255);
  CHECK(p.zero_point == 128);
  CHECK(p.scale == 2.0f / 254.0f);
  std::vector<float> y = values(fake_quant(vec1({-5.0f, 5.0f, 0.0f}), Tensor::scalar(-1.0f), Tensor::scalar(1.0f), narrow));
  CHECK(y[0] == -127 * p.scale);
  CHECK(y[1] == 127 * p.scale);
  CHECK(y[0] == doctest::Approx(-1.0).epsilon(1e-6));
  CHECK(y[1] == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(y[2] == 0.0f);
  // Full range [0, 255]: scale 2/255, and in real numbers zp_from_min = 1 / (2/255) = 127.5,
  // a tie. But TF computes in float: 2/255 rounds up to 0.0078431377 (relative error
  // +5.9e-8), so 1 / scale = 127.4999925, which rounds to the float 127.49999237: not a
  // tie, and std::round gives 127. The nudged range is [-127, 128] * 2/255 =
  // [-0.996078, 1.003922]: not symmetric, and the 0.5-step nudge goes up, not down.
  p = fake_quant_params(-1.0f, 1.0f);
  CHECK(p.scale == 2.0f / 255.0f);
  CHECK(0.0f - (-1.0f / p.scale) == 127.49999237f);
  CHECK(p.zero_point == 127);
  y = values(fake_quant(vec1({-5.0f, 5.0f}), Tensor::scalar(-1.0f), Tensor::scalar(1.0f)));
  CHECK(y[0] == -127 * p.scale);
  CHECK(y[1] == 128 * p.scale);
  CHECK(y[0] == doctest::Approx(-0.996078).epsilon(1e-6));
  CHECK(y[1] == doctest::Approx(1.003922).epsilon(1e-6));
  // Narrow with 4 bits, codes [1, 15]: [-0.4, 7.1] -> scale 7.5 / 14, zp_from_min = 1 + 0.747 -> 2.
  p = fake_quant_params(-0.4f, 7.1f, FakeQuantOptions{.bits = 4, .narrow_range = true});
  CHECK(p.qmin == 1);
  CHECK(p.qmax == 15);
  CHECK(p.zero_point == 2);
}

TEST_CASE("FakeQuant: every rounding mode at exact ties") {
  // [-10, 53.75]: scale 0.25, zero point 40, no nudging, inv_scale 4: all exact.
  // The kernel computes round((x - nudged_min) / scale - quant_zero), quant_zero = 40:
  //   x        v = steps - 40   half_up (TF)  half_to_even  away from zero
  //  -0.375    -1.5             -1            -2            -2
  //  -0.125    -0.5              0            -0            -1
  //   0.125     0.5              1             0             1
  //   0.375     1.5              2             2             2
  //   0.625     2.5              3             2             3
  //   0.7       2.8              3             3             3      (not a tie)
  const std::vector<float> xs = {-0.375f, -0.125f, 0.125f, 0.375f, 0.625f, 0.7f};
  const float up[] = {-1, 0, 1, 2, 3, 3};
  const float even[] = {-2, 0, 0, 2, 2, 3};
  const float away[] = {-2, -1, 1, 2, 3, 3};
  struct M {
    RoundMode mode;
    const float* codes;
  };
  for (const M m : {M{RoundMode::half_up, up}, M{RoundMode::half_to_even, even}, M{RoundMode::half_away_from_zero, away}}) {
    CAPTURE(round_mode_name(m.mode));
    const FakeQuantOptions opt{.bits = 8, .round = m.mode};
    const std::vector<float> y = values(fake_quant(vec1(xs), Tensor::scalar(-10.0f), Tensor::scalar(53.75f), opt));
    const std::vector<float> yc = values(fake_quant_per_channel(tens({1, 6}, xs), vec1({-10.0f}), vec1({53.75f}), 0, opt));
    for (size_t i = 0; i < xs.size(); ++i) {
      CAPTURE(xs[i]);
      CHECK(y[i] == m.codes[i] * 0.25f);
      CHECK(yc[i] == m.codes[i] * 0.25f);
      CHECK(fake_quant_ref(xs[i], -10.0f, 53.75f, opt) == m.codes[i] * 0.25f);
    }
  }
  // The default is TF's floor(v + 0.5).
  CHECK(FakeQuantOptions{}.round == RoundMode::half_up);
}

TEST_CASE("FakeQuant: bit widths 2, 4 and 16") {
  // 2 bits, codes [0, 3]: [-1, 0.5] -> scale 0.5, zero point 2; the grid is {-1, -0.5, 0, 0.5}.
  std::vector<float> y = values(fake_quant(vec1({-2.0f, -0.7f, -0.2f, 0.2f, 0.3f, 9.0f}), Tensor::scalar(-1.0f),
                                           Tensor::scalar(0.5f), FakeQuantOptions{.bits = 2}));
  // -0.7 -> 0.6 steps -> 1 -> -0.5; -0.2 -> 1.6 -> 2 -> 0; 0.2 -> 2.4 -> 2 -> 0; 0.3 -> 2.6 -> 3 -> 0.5.
  const float e2[] = {-1.0f, -0.5f, 0.0f, 0.0f, 0.5f, 0.5f};
  for (int i = 0; i < 6; ++i) CHECK(y[i] == e2[i]);
  // 4 bits, codes [0, 15]: [-0.4, 7.1] -> scale 0.5, zp_from_min 0.8 -> 1; grid [-0.5, 7].
  y = values(fake_quant(vec1({-0.4f, 7.1f, 3.3f}), Tensor::scalar(-0.4f), Tensor::scalar(7.1f), FakeQuantOptions{.bits = 4}));
  CHECK(y[0] == -0.5f);  // inside the nudged range: 0.1 / 0.5 = 0.2 steps -> code 0
  CHECK(y[1] == 7.0f);   // above the nudged max 7
  CHECK(y[2] == 3.5f);   // 3.8 / 0.5 = 7.6 -> 8 -> (8 - 1) * 0.5
  // 16 bits, codes [0, 65535]: [-1, 65534] gives scale 1 exactly, zero point 1.
  y = values(fake_quant(vec1({-1.0f, 2.4f, 1234.5f, 70000.0f}), Tensor::scalar(-1.0f), Tensor::scalar(65534.0f),
                        FakeQuantOptions{.bits = 16}));
  const float e16[] = {-1.0f, 2.0f, 1235.0f, 65534.0f};
  for (int i = 0; i < 4; ++i) CHECK(y[i] == e16[i]);
}

TEST_CASE("FakeQuant: min == max == 0 outputs zeros and passes the gradient (TF)") {
  Tensor x = leaf({-1.0f, 0.0f, 2.0f});
  Tensor mn = leaf_scalar(0.0f), mx = leaf_scalar(0.0f);
  Tensor y = fake_quant(x, mn, mx);
  for (float v : values(y)) CHECK(v == 0.0f);
  y.backward(vec1({1.0f, 2.0f, 3.0f}));
  CHECK(values(x.grad()) == std::vector<float>{1.0f, 2.0f, 3.0f});
  CHECK(mn.grad().item() == 0.0f);
  CHECK(mx.grad().item() == 0.0f);
  CHECK(fake_quant_ref(5.0f, 0.0f, 0.0f, {}) == 0.0f);
  const FakeQuantGrad g = fake_quant_grad_ref(5.0f, 2.0f, 0.0f, 0.0f, {});
  CHECK(g.dx == 2.0f);
  CHECK(g.dmin == 0.0f);
  CHECK(g.dmax == 0.0f);
}

// =====================================================================================
// FakeQuant: backward
// =====================================================================================

TEST_CASE("FakeQuant gradient: dx inside the nudged range, dmin/dmax sum the rest") {
  // Nudged range of [-0.1, 0.25] is [-0.100196, 0.249804] (see above). Note that
  // x = 0.25, the max input itself, is above the nudged max: its gradient goes to max.
  //   x       -1   -0.1002  -0.1   0    0.2   0.25   3
  //   where   below below   in     in   in    above  above
  // (-0.1002 < -0.100196: below.) The edges themselves are inside (TF's >= and <=).
  const float s = (0.25f + 0.1f) / 255.0f;
  const float nmin = -73 * s, nmax = 182 * s;
  const std::vector<float> xv = {-1.0f, -0.1002f, -0.1f, 0.0f, 0.2f, 0.25f, 3.0f, nmin, nmax};
  const std::vector<float> dyv = {1.0f, 2.0f, 4.0f, 8.0f, 16.0f, 32.0f, 64.0f, 128.0f, 256.0f};
  Tensor x = leaf(xv);
  Tensor mn = leaf_scalar(-0.1f), mx = leaf_scalar(0.25f);
  Tensor y = fake_quant(x, mn, mx);
  y.backward(vec1(dyv));
  const std::vector<float> dx = values(x.grad());
  const std::vector<float> expect_dx = {0, 0, 4, 8, 16, 0, 0, 128, 256};
  CHECK(dx == expect_dx);
  CHECK(mn.grad().item() == 1.0f + 2.0f);
  CHECK(mx.grad().item() == 32.0f + 64.0f);
  // The reference says the same, element by element.
  for (size_t i = 0; i < xv.size(); ++i) {
    const FakeQuantGrad g = fake_quant_grad_ref(xv[i], dyv[i], -0.1f, 0.25f, {});
    CHECK(g.dx == expect_dx[i]);
    CHECK(g.dmin == (i < 2 ? dyv[i] : 0.0f));
    CHECK(g.dmax == (i == 5 || i == 6 ? dyv[i] : 0.0f));
  }
}

TEST_CASE("FakeQuant gradient: only the inputs that require grad get one") {
  Tensor x = vec1({-5.0f, 0.0f, 5.0f});  // a constant
  Tensor mn = leaf_scalar(-1.0f), mx = leaf_scalar(1.0f);
  fake_quant(x, mn, mx).backward(vec1({1.0f, 1.0f, 1.0f}));
  CHECK(mn.grad().item() == 1.0f);
  CHECK(mx.grad().item() == 1.0f);
  CHECK_FALSE(x.grad().defined());
  Tensor x2 = leaf({-5.0f, 0.0f, 5.0f});
  fake_quant(x2, Tensor::scalar(-1.0f), Tensor::scalar(1.0f)).backward(vec1({1.0f, 1.0f, 1.0f}));
  CHECK(values(x2.grad()) == std::vector<float>{0.0f, 1.0f, 0.0f});
}

TEST_CASE("FakeQuant per-channel gradient: dmin/dmax summed per channel, any axis") {
  // x: [2, 3, 2], channels along axis 1 with ranges [-1, 1], [-2, 2], [0, 4].
  // channel 0 (1/127.5 steps): values -3 (below), 0.5 (in) | 7 (above), -1.5 (below)
  // channel 1: 1 (in), 3 (above) | -2.5 (below), 2.5 (above)
  // channel 2 ([0, 4] has zero point 0): -1 (below), 5 (above) | 2 (in), 6 (above)
  const std::vector<float> xv = {-3, 0.5f, 1, 3, -1, 5, 7, -1.5f, -2.5f, 2.5f, 2, 6};
  std::vector<float> dyv(12);
  for (int i = 0; i < 12; ++i) dyv[i] = static_cast<float>(1 << i);
  for (int axis : {1, -2}) {
    CAPTURE(axis);
    Tensor x = tens({2, 3, 2}, xv);
    x.requires_grad_(true);
    Tensor mn = leaf({-1.0f, -2.0f, 0.0f}), mx = leaf({1.0f, 2.0f, 4.0f});
    fake_quant_per_channel(x, mn, mx, axis).backward(tens({2, 3, 2}, dyv));
    const std::vector<float> dx = values(x.grad());
    const std::vector<float> expect_dx = {0, 2, 4, 0, 0, 0, 0, 0, 0, 0, 1024, 0};
    CHECK(dx == expect_dx);
    // below: ch0 {0, 7}, ch1 {8}, ch2 {4}; above: ch0 {6}, ch1 {3, 9}, ch2 {5, 11}.
    CHECK(values(mn.grad()) == std::vector<float>{1 + 128, 256, 16});
    CHECK(values(mx.grad()) == std::vector<float>{64, 8 + 512, 32 + 2048});
  }
  // The last axis (TF's own layout): x [3, 2], channel c = column c.
  Tensor x = tens({3, 2}, {-2, 0.5f, 0.1f, 9, 3, -9});
  x.requires_grad_(true);
  Tensor mn = leaf({-1.0f, -1.0f}), mx = leaf({1.0f, 2.0f});
  fake_quant_per_channel(x, mn, mx, -1).backward(tens({3, 2}, {1, 2, 4, 8, 16, 32}));
  CHECK(values(x.grad()) == std::vector<float>{0, 2, 4, 0, 0, 0});
  CHECK(values(mn.grad()) == std::vector<float>{1, 32});
  CHECK(values(mx.grad()) == std::vector<float>{16, 8});
}

TEST_CASE("FakeQuant gradient: fast kernels equal the reference on random tensors") {
  Rng rng(31);
  for (int trial = 0; trial < 6; ++trial) {
    const int bits = kBits[trial % 8];
    CAPTURE(bits);
    // Per tensor, with enough values for several parallel blocks.
    Tensor x = random_tensor({3, 7, 1000}, rng, 2.0f);
    x.requires_grad_(true);
    const float lo = -rng.uniform(0.1f, 2.0f), hi = rng.uniform(0.1f, 2.0f);
    Tensor mn = leaf_scalar(lo), mx = leaf_scalar(hi);
    Tensor dy = random_tensor(x.shape(), rng, 1.0f);
    const FakeQuantOptions opt{.bits = bits};
    fake_quant(x, mn, mx, opt).backward(dy);
    double dmin = 0, dmax = 0;
    bool same = true;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const FakeQuantGrad g = fake_quant_grad_ref(x.data()[i], dy.data()[i], lo, hi, opt);
      same = same && g.dx == x.grad().data()[i];
      dmin += g.dmin;
      dmax += g.dmax;
    }
    CHECK(same);
    CHECK(mn.grad().item() == doctest::Approx(dmin).epsilon(1e-6));
    CHECK(mx.grad().item() == doctest::Approx(dmax).epsilon(1e-6));

    // Per channel along axis 1.
    Tensor xc = random_tensor({4, 5, 3000}, rng, 2.0f);
    xc.requires_grad_(true);
    std::vector<float> los(5), his(5);
    for (int c = 0; c < 5; ++c) {
      los[c] = -rng.uniform(0.0f, 2.0f);
      his[c] = rng.uniform(0.1f, 2.0f);
    }
    Tensor mnc = leaf(los), mxc = leaf(his);
    Tensor dyc = random_tensor(xc.shape(), rng, 1.0f);
    fake_quant_per_channel(xc, mnc, mxc, 1, opt).backward(dyc);
    std::vector<double> sb(5, 0.0), sa(5, 0.0);
    same = true;
    for (int64_t i = 0; i < xc.numel(); ++i) {
      const int64_t c = (i / 3000) % 5;
      const FakeQuantGrad g = fake_quant_grad_ref(xc.data()[i], dyc.data()[i], los[c], his[c], opt);
      same = same && g.dx == xc.grad().data()[i];
      sb[c] += g.dmin;
      sa[c] += g.dmax;
    }
    CHECK(same);
    for (int c = 0; c < 5; ++c) {
      CHECK(mnc.grad().data()[c] == doctest::Approx(sb[c]).epsilon(1e-6));
      CHECK(mxc.grad().data()[c] == doctest::Approx(sa[c]).epsilon(1e-6));
    }
  }
}

// =====================================================================================
// QDQv2: forward
// =====================================================================================

TEST_CASE("QDQv2: TF's documented example, range [-10, 5], signed 8 bits") {
  // TF's docs: scale_from_min_side = -128 / -10 = 12.8 codes per unit, from the max
  // side 127 / 5 = 25.4; the smaller wins. The min stays -10, the max becomes
  // 127 / 12.8 = 9.921875 (inverse_scale 10 / 128 = 0.078125).
  const QdqOptions opt{.bits = 8, .signed_output = true, .range_given = true};
  const QuantParams p = qdq_v2_params(-10.0f, 5.0f, opt);
  CHECK(p.scale == 0.078125f);
  CHECK(1.0f / p.scale == 12.8f);
  CHECK(p.zero_point == 0);
  CHECK(p.qmin == -128);
  CHECK(p.qmax == 127);
  CHECK(p.real_max() == 9.921875f);
  CHECK(p.real_min() == -10.0f);
  //   x       clamp          * 12.8     round   * 0.078125
  //  -11      -10            -128       -128    -10
  //   -0.3    -0.3           -3.84      -4      -0.3125
  //    5       5              64         64      5
  //    7       7              89.6       90      7.03125   (above the given max 5, not clamped)
  //   12       9.921875       127        127     9.921875
  const std::vector<float> y = values(quantize_dequantize_v2(vec1({-11.0f, -0.3f, 5.0f, 7.0f, 12.0f}), -10.0f, 5.0f, opt));
  const float expect[] = {-10.0f, -0.3125f, 5.0f, 7.03125f, 9.921875f};
  for (int i = 0; i < 5; ++i) CHECK(y[i] == expect[i]);
}

TEST_CASE("QDQv2: both rounding modes at exact ties") {
  // Range given [-32, 8], signed 8 bits: min side 128 / 32 = 4, max side 127 / 8 = 15.875:
  // scale 4 codes per unit, inverse 0.25, max widened to 31.75. x * 4:
  //   x        x * 4   HALF_TO_EVEN   HALF_UP (floor(v + 0.5))
  //  -0.625    -2.5    -2             -2
  //  -0.375    -1.5    -2             -1
  //  -0.125    -0.5    -0             0
  //   0.125     0.5     0             1
  //   0.375     1.5     2             2
  //   0.625     2.5     2             3
  const std::vector<float> xs = {-0.625f, -0.375f, -0.125f, 0.125f, 0.375f, 0.625f};
  const float even[] = {-2, -2, 0, 0, 2, 2};
  const float up[] = {-2, -1, 0, 1, 2, 3};
  const QdqOptions e{.range_given = true, .round = RoundMode::half_to_even};
  const QdqOptions u{.range_given = true, .round = RoundMode::half_up};
  const std::vector<float> ye = values(quantize_dequantize_v2(vec1(xs), -32.0f, 8.0f, e));
  const std::vector<float> yu = values(quantize_dequantize_v2(vec1(xs), -32.0f, 8.0f, u));
  for (size_t i = 0; i < xs.size(); ++i) {
    CAPTURE(xs[i]);
    CHECK(ye[i] == even[i] * 0.25f);
    CHECK(yu[i] == up[i] * 0.25f);
    CHECK(qdq_v2_ref(xs[i], -32.0f, 8.0f, e) == even[i] * 0.25f);
    CHECK(qdq_v2_ref(xs[i], -32.0f, 8.0f, u) == up[i] * 0.25f);
  }
  CHECK(QdqOptions{}.round == RoundMode::half_to_even);
}

TEST_CASE("QDQv2: narrow range, unsigned output, the other side winning") {
  // Narrow signed [-127, 127], range [-10, 5]: min side 127 / 10 = 12.7 wins;
  // inverse 10 / 127, max widened to 127 * 10 / 127 = 10: symmetric.
  QdqOptions narrow{.range_given = true, .narrow_range = true};
  QuantParams p = qdq_v2_params(-10.0f, 5.0f, narrow);
  CHECK(p.qmin == -127);
  CHECK(p.scale == 10.0f / 127.0f);
  std::vector<float> y = values(quantize_dequantize_v2(vec1({-12.0f, 12.0f}), -10.0f, 5.0f, narrow));
  CHECK(y[0] == -127 * p.scale);
  CHECK(y[1] == 127 * p.scale);
  CHECK(y[1] == doctest::Approx(10.0f).epsilon(1e-6));

  // Unsigned [0, 255], range given [0, 63.75]: only the max side counts (0 * min is
  // not > 0): 255 / 63.75 = 4 codes per unit; min_range = 0 * 0.25 = 0, so negatives clamp.
  const QdqOptions uns{.signed_output = false, .range_given = true};
  p = qdq_v2_params(0.0f, 63.75f, uns);
  CHECK(p.qmin == 0);
  CHECK(p.qmax == 255);
  CHECK(p.scale == 0.25f);
  y = values(quantize_dequantize_v2(vec1({-1.0f, 0.3f, 100.0f}), 0.0f, 63.75f, uns));
  CHECK(y == std::vector<float>{0.0f, 0.25f, 63.75f});
  // TF ignores narrow_range for unsigned output.
  const QdqOptions uns_narrow{.signed_output = false, .range_given = true, .narrow_range = true};
  CHECK(qdq_v2_params(0.0f, 63.75f, uns_narrow).qmin == 0);

  // Signed [-1, 2]: min side 128, max side 127 / 2 = 63.5 wins: inverse 2 / 127,
  // min widened to -128 * 2 / 127 = -2.015748.
  p = qdq_v2_params(-1.0f, 2.0f, QdqOptions{});
  CHECK(p.scale == 2.0f / 127.0f);
  CHECK(p.real_min() == doctest::Approx(-2.015748).epsilon(1e-6));
  CHECK(p.real_max() == doctest::Approx(2.0f).epsilon(1e-7));
}

TEST_CASE("QDQv2: range measured from the tensor vs given") {
  // Measured: x spans [-10, 5] -> the same grid as TF's example, no clamp needed.
  const std::vector<float> xs = {-10.0f, -0.3f, 0.3f, 5.0f};
  std::vector<float> y = values(quantize_dequantize_v2(vec1(xs), 0.0f, 0.0f, QdqOptions{}));
  // -0.3 * 12.8 = -3.84 -> -4 -> -0.3125; 0.3 -> 0.3125; 5 * 12.8 = 64 -> 5.
  CHECK(y == std::vector<float>{-10.0f, -0.3125f, 0.3125f, 5.0f});
  // The (min, max) arguments are ignored when the range is measured.
  CHECK(values(quantize_dequantize_v2(vec1(xs), -1000.0f, 1000.0f, QdqOptions{})) == y);
  // Given [-1, 1] instead: max side 127 wins, inverse 1/127; -10 clamps to -128/127.
  y = values(quantize_dequantize_v2(vec1(xs), -1.0f, 1.0f, QdqOptions{.range_given = true}));
  CHECK(y[0] == -128.0f * (1.0f / 127.0f));
  CHECK(y[3] == 1.0f);
  // Measured, unsigned, negative inputs: TF does not clamp when the range is measured,
  // so negatives stay negative. x in [-1, 63.75]: max side 255 / 63.75 = 4 -> -1 * 4 = -4 -> -1.
  y = values(quantize_dequantize_v2(vec1({-1.0f, 0.3f, 63.75f}), 0.0f, 0.0f, QdqOptions{.signed_output = false}));
  CHECK(y == std::vector<float>{-1.0f, 0.25f, 63.75f});
  // An all-zero tensor: scale 1 as parameters, zeros out.
  y = values(quantize_dequantize_v2(vec1({0.0f, 0.0f}), 0.0f, 0.0f, QdqOptions{}));
  CHECK(y == std::vector<float>{0.0f, 0.0f});
  CHECK(qdq_v2_params(0.0f, 0.0f).scale == 1.0f);
}

TEST_CASE("QDQv2 per channel: each channel its own measured or given range") {
  // x [2, 3]: channel c = column c along axis 1: columns {-10, 5}, {-1, 2}, {0, 63.75}.
  const Tensor x = tens({2, 3}, {-10.0f, -1.0f, 0.0f, 5.0f, 2.0f, 63.75f});
  const float dummy[3] = {0, 0, 0};
  const std::vector<float> y = values(quantize_dequantize_v2_per_channel(x, dummy, dummy, 1, QdqOptions{}));
  for (int64_t i = 0; i < 6; ++i) {
    const int64_t c = i % 3;
    const float lo = std::min(x.data()[c], x.data()[c + 3]);
    const float hi = std::max(x.data()[c], x.data()[c + 3]);
    CHECK(y[i] == qdq_v2_ref(x.data()[i], lo, hi, QdqOptions{}));
  }
  CHECK(y[0] == -10.0f);
  CHECK(y[3] == 5.0f);
  CHECK(y[5] == doctest::Approx(63.75f).epsilon(1e-6));
  // Given per-channel ranges along axis 0 (rows): row 0 [-1, 1], row 1 [-32, 8].
  const float mins[2] = {-1.0f, -32.0f}, maxs[2] = {1.0f, 8.0f};
  const Tensor x2 = tens({2, 3}, {-5.0f, 0.5f, 5.0f, -40.0f, 0.625f, 40.0f});
  const QdqOptions given{.range_given = true};
  const std::vector<float> y2 = values(quantize_dequantize_v2_per_channel(x2, mins, maxs, 0, given));
  CHECK(y2[0] == -128.0f * (1.0f / 127.0f));
  CHECK(y2[2] == doctest::Approx(1.0f).epsilon(1e-6));
  CHECK(y2[3] == -32.0f);
  CHECK(y2[4] == 0.5f);  // 2.5 -> 2 (half to even)
  CHECK(y2[5] == 31.75f);
}

// =====================================================================================
// QDQv2: backward
// =====================================================================================

TEST_CASE("QDQv2 gradients: clipped (V4Grad) masks with the range inputs; straight-through passes all") {
  // Range [-10, 5] given: the forward clamps at [-10, 9.921875], but TF's
  // QuantizeAndDequantizeV4Grad masks with the inputs [-10, 5]: x = 7 is not
  // clamped, yet gets dx = 0. Edges are inside.
  const std::vector<float> xv = {-11.0f, -10.0f, 0.0f, 5.0f, 7.0f, 12.0f};
  const std::vector<float> dyv = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  {
    Tensor x = leaf(xv);
    quantize_dequantize_v2(x, -10.0f, 5.0f, QdqOptions{.range_given = true}).backward(vec1(dyv));
    CHECK(values(x.grad()) == std::vector<float>{0.0f, 2.0f, 3.0f, 4.0f, 0.0f, 0.0f});
  }
  {
    Tensor x = leaf(xv);
    quantize_dequantize_v2(x, -10.0f, 5.0f, QdqOptions{.range_given = true, .gradient = QdqGradient::straight_through})
        .backward(vec1(dyv));
    CHECK(values(x.grad()) == dyv);
  }
  // Measured range: TF's V4Grad still masks with the (unused) inputs.
  {
    Tensor x = leaf(xv);
    quantize_dequantize_v2(x, -1.0f, 1.0f, QdqOptions{}).backward(vec1(dyv));
    CHECK(values(x.grad()) == std::vector<float>{0.0f, 0.0f, 3.0f, 0.0f, 0.0f, 0.0f});
    const float inf = std::numeric_limits<float>::infinity();
    Tensor x2 = leaf(xv);
    quantize_dequantize_v2(x2, -inf, inf, QdqOptions{}).backward(vec1(dyv));
    CHECK(values(x2.grad()) == dyv);
  }
  // The reference, per element.
  for (size_t i = 0; i < xv.size(); ++i) {
    const float clipped = qdq_v2_grad_ref(xv[i], dyv[i], -10.0f, 5.0f, QdqOptions{.range_given = true});
    CHECK(clipped == ((xv[i] >= -10.0f && xv[i] <= 5.0f) ? dyv[i] : 0.0f));
    CHECK(qdq_v2_grad_ref(xv[i], dyv[i], -10.0f, 5.0f, QdqOptions{.gradient = QdqGradient::straight_through}) == dyv[i]);
  }
}

TEST_CASE("QDQv2 per-channel gradient masks each channel with its own inputs") {
  Tensor x = tens({2, 2}, {-2.0f, 0.5f, 3.0f, 9.0f});
  x.requires_grad_(true);
  const float mins[2] = {-1.0f, 0.0f}, maxs[2] = {1.0f, 8.0f};
  quantize_dequantize_v2_per_channel(x, mins, maxs, 0, QdqOptions{.range_given = true})
      .backward(tens({2, 2}, {1.0f, 2.0f, 3.0f, 4.0f}));
  // row 0 [-1, 1]: -2 out, 0.5 in; row 1 [0, 8]: 3 in, 9 out.
  CHECK(values(x.grad()) == std::vector<float>{0.0f, 2.0f, 3.0f, 0.0f});
}

// =====================================================================================
// LSQ
// =====================================================================================

TEST_CASE("LSQ: worked example, 4 bits signed, step 0.5") {
  // Qn = 8, Qp = 7. v = x / 0.5:
  //   x      v      clamp   round (even)   y      dx?   d = dy/ds per unit dy
  //  -5     -10     -8      -8             -4     no    -Qn = -8
  //  -4.1   -8.2    -8      -8             -4     no    -8
  //  -0.3   -0.6    -0.6    -1             -0.5   yes   -1 - (-0.6) = -0.4
  //   0.25   0.5     0.5     0 (tie)        0     yes    0 - 0.5   = -0.5
  //   0.8    1.6     1.6     2              1     yes    2 - 1.6   =  0.4
  //   3.4    6.8     6.8     7              3.5   yes    7 - 6.8   =  0.2
  //   3.5    7       7       7              3.5   no     Qp = 7    (v >= Qp)
  //  10     20       7       7              3.5   no     7
  // sum(d) with dy = 1: -8 - 8 - 0.4 - 0.5 + 0.4 + 0.2 + 7 + 7 = -2.3;
  // g = 1 / sqrt(N * Qp) = 1 / sqrt(8 * 7), so ds = -2.3 / sqrt(56) = -0.307352.
  const std::vector<float> xv = {-5.0f, -4.1f, -0.3f, 0.25f, 0.8f, 3.4f, 3.5f, 10.0f};
  Tensor x = leaf(xv);
  Tensor s = leaf_scalar(0.5f);
  Tensor y = lsq(x, s);
  CHECK(values(y) == std::vector<float>{-4.0f, -4.0f, -0.5f, 0.0f, 1.0f, 3.5f, 3.5f, 3.5f});
  y.backward(Tensor::full({8}, 1.0f));
  CHECK(values(x.grad()) == std::vector<float>{0, 0, 1, 1, 1, 1, 0, 0});
  CHECK(s.grad().item() == doctest::Approx(-2.3 / std::sqrt(56.0)).epsilon(1e-6));
  // An explicit gradient scale replaces 1 / sqrt(N Qp).
  Tensor s2 = leaf_scalar(0.5f);
  lsq(leaf(xv), s2, LsqOptions{.grad_scale = 0.5f}).backward(Tensor::full({8}, 1.0f));
  CHECK(s2.grad().item() == doctest::Approx(-1.15).epsilon(1e-6));
  // Unsigned, 2 bits: Qn = 0, Qp = 3; step 1: -1 -> 0, 1.4 -> 1, 2.5 -> 2 (even), 9 -> 3.
  const LsqOptions u2{.bits = 2, .is_signed = false};
  CHECK(values(lsq(vec1({-1.0f, 1.4f, 2.5f, 9.0f}), Tensor::scalar(1.0f), u2)) ==
        std::vector<float>{0.0f, 1.0f, 2.0f, 3.0f});
  const QuantParams p = lsq_params(0.5f, LsqOptions{});
  CHECK(p.qmin == -8);
  CHECK(p.qmax == 7);
  CHECK(p.zero_point == 0);
  CHECK(p.scale == 0.5f);
}

TEST_CASE("LSQ: the paper's initialization 2 mean|x| / sqrt(Qp)") {
  // mean |x| of {-1, 2, -3, 6} = 3; 4 bits signed: Qp = 7 -> 6 / sqrt(7).
  CHECK(lsq_init_step(vec1({-1.0f, 2.0f, -3.0f, 6.0f})) == doctest::Approx(6.0 / std::sqrt(7.0)).epsilon(1e-6));
  // 8 bits unsigned: Qp = 255.
  CHECK(lsq_init_step(vec1({1.0f, 3.0f}), LsqOptions{.bits = 8, .is_signed = false}) ==
        doctest::Approx(4.0 / std::sqrt(255.0)).epsilon(1e-6));
  CHECK_THROWS_AS(lsq_init_step(vec1({0.0f, 0.0f})), std::invalid_argument);
}

namespace {
// Esser et al. (ICLR 2020), eq. 3, written from the paper: d x_hat / d s =
//   -v/s + round(v/s)   if -Qn < v/s < Qp
//   -Qn                 if v/s <= -Qn
//   Qp                  if v/s >= Qp
// and the step's gradient is scaled by g = 1 / sqrt(N * Qp) (section 2.2).
double esser_dstep(const std::vector<float>& x, const std::vector<float>& dy, float s, int64_t qn, int64_t qp,
                   RoundMode mode, double g) {
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float v = x[i] / s;
    double d;
    if (v <= static_cast<float>(-qn)) {
      d = -static_cast<double>(qn);
    } else if (v >= static_cast<float>(qp)) {
      d = static_cast<double>(qp);
    } else {
      d = -static_cast<double>(v) + round_with(mode, v);
    }
    sum += dy[i] * d;
  }
  return g * sum;
}
}  // namespace

TEST_CASE("LSQ step gradient equals Esser et al.'s formula with the gradient scale") {
  Rng rng(5);
  for (int bits : {2, 3, 4, 8}) {
    for (bool is_signed : {true, false}) {
      CAPTURE(bits);
      CAPTURE(is_signed);
      const int64_t qn = is_signed ? (int64_t{1} << (bits - 1)) : 0;
      const int64_t qp = is_signed ? (int64_t{1} << (bits - 1)) - 1 : (int64_t{1} << bits) - 1;
      const int64_t n = 20000;
      Tensor x = random_tensor({n}, rng, 1.5f);
      Tensor dy = random_tensor({n}, rng, 1.0f);
      const LsqOptions opt{.bits = bits, .is_signed = is_signed};
      const float s0 = lsq_init_step(x, opt);
      Tensor s = leaf_scalar(s0);
      x.requires_grad_(true);
      lsq(x, s, opt).backward(dy);
      const double expect = esser_dstep(values(x.detach()), values(dy), s0, qn, qp, RoundMode::half_to_even,
                                        1.0 / std::sqrt(static_cast<double>(n * qp)));
      CHECK(s.grad().item() == doctest::Approx(expect).epsilon(1e-5));
      // Per channel [4, n/4] along axis 0: N = n / 4 per step, g = 1 / sqrt(N Qp).
      Tensor xc = tens({4, n / 4}, values(x.detach()));
      const std::vector<float> steps = {s0, 0.5f * s0, 2.0f * s0, 1.3f * s0};
      Tensor sc = leaf(steps);
      lsq_per_channel(xc, sc, 0, opt).backward(tens({4, n / 4}, values(dy)));
      for (int c = 0; c < 4; ++c) {
        const std::vector<float> xs(x.data() + c * (n / 4), x.data() + (c + 1) * (n / 4));
        const std::vector<float> dys(dy.data() + c * (n / 4), dy.data() + (c + 1) * (n / 4));
        const double e = esser_dstep(xs, dys, steps[c], qn, qp, RoundMode::half_to_even,
                                     1.0 / std::sqrt(static_cast<double>(n / 4 * qp)));
        CHECK(sc.grad().data()[c] == doctest::Approx(e).epsilon(1e-5));
      }
      // The one-element reference gives the same per-element terms (before g).
      double ref = 0;
      for (int64_t i = 0; i < n; ++i) ref += lsq_grad_ref(x.data()[i], dy.data()[i], s0, opt).dstep;
      CHECK(ref * (1.0 / std::sqrt(static_cast<double>(n * qp))) == doctest::Approx(expect).epsilon(1e-4));
    }
  }
}

TEST_CASE("LSQ step gradient against finite differences where the op is differentiable") {
  // y(s) = round(clamp(x / s, -Qn, Qp)) * s is piecewise linear in s: between the
  // points where some x / s crosses a rounding boundary, each y_i = k_i * s with a
  // fixed code k_i, so dL/ds = sum(dy * k) exactly, for L = sum(dy * y).
  //  - Clipped values (k = -Qn or Qp): LSQ's gradient is exactly this derivative.
  //  - Values inside: LSQ's straight-through gradient round(v) - v is the true
  //    derivative k minus v = x / s (the term that lets s feel the rounding error).
  // The finite difference uses h small enough that no code changes.
  const LsqOptions opt{.bits = 3, .grad_scale = 1.0f};  // Qn = 4, Qp = 3; g = 1 to compare raw sums
  const float s0 = 0.5f;
  auto loss = [&](const std::vector<float>& x, const std::vector<float>& dy, float s) {
    const std::vector<float> y = values(lsq(vec1(x), Tensor::scalar(s), opt));
    double l = 0;
    for (size_t i = 0; i < x.size(); ++i) l += static_cast<double>(dy[i]) * y[i];
    return l;
  };
  const double h = 1.0 / 1024;  // s0 +- h exact in float
  // All clipped: v = x / 0.5 far outside [-4, 3].
  {
    const std::vector<float> x = {-7.0f, -3.1f, 2.2f, 9.0f};
    const std::vector<float> dy = {0.5f, -1.0f, 2.0f, 0.25f};
    Tensor s = leaf_scalar(s0);
    lsq(vec1(x), s, opt).backward(vec1(dy));
    const double fd = (loss(x, dy, static_cast<float>(s0 + h)) - loss(x, dy, static_cast<float>(s0 - h))) / (2 * h);
    // -4 * (0.5 - 1) + 3 * (2 + 0.25) = 2 + 6.75 = 8.75
    CHECK(fd == doctest::Approx(8.75).epsilon(1e-4));
    CHECK(s.grad().item() == doctest::Approx(fd).epsilon(1e-4));
  }
  // Inside, away from rounding boundaries: v = {-2.7, -0.8, 0.3, 1.2, 2.1}.
  {
    const std::vector<float> x = {-1.35f, -0.4f, 0.15f, 0.6f, 1.05f};
    const std::vector<float> dy = {1.0f, -2.0f, 0.5f, 3.0f, -1.0f};
    Tensor s = leaf_scalar(s0);
    lsq(vec1(x), s, opt).backward(vec1(dy));
    const double fd = (loss(x, dy, static_cast<float>(s0 + h)) - loss(x, dy, static_cast<float>(s0 - h))) / (2 * h);
    // codes {-3, -1, 0, 1, 2}: sum(dy * k) = -3 + 2 + 0 + 3 - 2 = 0; sum(dy * v) =
    // -2.7 + 1.6 + 0.15 + 3.6 - 2.1 = 0.55.
    CHECK(fd == doctest::Approx(0.0).epsilon(1e-4).scale(1.0));
    double sum_dy_v = 0;
    for (size_t i = 0; i < x.size(); ++i) sum_dy_v += static_cast<double>(dy[i]) * (x[i] / s0);
    CHECK(sum_dy_v == doctest::Approx(0.55).epsilon(1e-5));
    CHECK(s.grad().item() == doctest::Approx(fd - sum_dy_v).epsilon(1e-4));
  }
}

// =====================================================================================
// Fast kernels vs the one-element references
// =====================================================================================

TEST_CASE("fast kernels equal the references bit for bit: every mode, bit width, axis") {
  Rng rng(77);
  const Shape shape = {3, 4, 5, 700};  // 42000 values: several parallel blocks
  int checked = 0;
  for (const int bits : kBits) {
    for (const RoundMode mode : kDeterministic) {
      CAPTURE(bits);
      CAPTURE(round_mode_name(mode));
      const Tensor x = random_tensor(shape, rng, 3.0f);
      const int64_t n = x.numel();

      // FakeQuant, per tensor; every other time narrow, sometimes a range without 0.
      const bool narrow = rng.below(2) == 0;
      float lo = -rng.uniform(0.0f, 3.0f), hi = rng.uniform(0.05f, 3.0f);
      if (rng.below(4) == 0) lo = hi * 0.25f;
      const FakeQuantOptions fq{.bits = bits, .narrow_range = narrow, .round = mode};
      std::vector<float> y = values(fake_quant(x, Tensor::scalar(lo), Tensor::scalar(hi), fq));
      int64_t bad = -1;
      for (int64_t i = 0; i < n && bad < 0; ++i)
        if (y[i] != fake_quant_ref(x.data()[i], lo, hi, fq)) bad = i;
      CHECK(bad == -1);

      // FakeQuant and QDQv2 per channel along several axes.
      for (const int axis : {0, 1, 3, -2}) {
        CAPTURE(axis);
        const ChannelLayout l = channel_layout(shape, axis);
        std::vector<float> los(l.channels), his(l.channels);
        for (int64_t c = 0; c < l.channels; ++c) {
          los[c] = -rng.uniform(0.0f, 3.0f);
          his[c] = rng.uniform(0.05f, 3.0f);
        }
        y = values(fake_quant_per_channel(x, vec1(los), vec1(his), axis, fq));
        bad = -1;
        for (int64_t i = 0; i < n && bad < 0; ++i) {
          const int64_t c = l.channel_of(i);
          if (y[i] != fake_quant_ref(x.data()[i], los[c], his[c], fq, /*per_channel=*/true)) bad = i;
        }
        CHECK(bad == -1);

        for (const bool given : {false, true}) {
          const bool is_signed = rng.below(2) == 0;
          const QdqOptions qo{.bits = bits,
                              .signed_output = is_signed,
                              .range_given = given,
                              .narrow_range = rng.below(2) == 0,
                              .round = mode == RoundMode::half_away_from_zero ? RoundMode::half_to_even : mode};
          // Measured ranges: computed here for the reference.
          std::vector<float> mlo(l.channels, std::numeric_limits<float>::infinity());
          std::vector<float> mhi(l.channels, -std::numeric_limits<float>::infinity());
          for (int64_t i = 0; i < n; ++i) {
            const int64_t c = l.channel_of(i);
            mlo[c] = std::min(mlo[c], x.data()[i]);
            mhi[c] = std::max(mhi[c], x.data()[i]);
          }
          y = values(quantize_dequantize_v2_per_channel(x, los, his, axis, qo));
          bad = -1;
          for (int64_t i = 0; i < n && bad < 0; ++i) {
            const int64_t c = l.channel_of(i);
            const float ref = given ? qdq_v2_ref(x.data()[i], los[c], his[c], qo)
                                    : qdq_v2_ref(x.data()[i], mlo[c], mhi[c], qo);
            if (y[i] != ref) bad = i;
          }
          CHECK(bad == -1);
        }

        // LSQ per channel.
        std::vector<float> steps(l.channels);
        for (int64_t c = 0; c < l.channels; ++c) steps[c] = rng.uniform(0.01f, 1.0f);
        const LsqOptions lo_opt{.bits = bits, .is_signed = rng.below(2) == 0, .round = mode};
        y = values(lsq_per_channel(x, vec1(steps), axis, lo_opt));
        bad = -1;
        for (int64_t i = 0; i < n && bad < 0; ++i)
          if (y[i] != lsq_ref(x.data()[i], steps[l.channel_of(i)], lo_opt)) bad = i;
        CHECK(bad == -1);
        ++checked;
      }

      // QDQv2 and LSQ per tensor.
      const QdqOptions qo{.bits = bits, .signed_output = rng.below(2) == 0, .range_given = rng.below(2) == 0,
                          .round = mode == RoundMode::half_away_from_zero ? RoundMode::half_up : mode};
      float mlo = x.data()[0], mhi = x.data()[0];
      for (int64_t i = 0; i < n; ++i) {
        mlo = std::min(mlo, x.data()[i]);
        mhi = std::max(mhi, x.data()[i]);
      }
      y = values(quantize_dequantize_v2(x, lo, hi, qo));
      bad = -1;
      for (int64_t i = 0; i < n && bad < 0; ++i) {
        const float ref = qo.range_given ? qdq_v2_ref(x.data()[i], lo, hi, qo) : qdq_v2_ref(x.data()[i], mlo, mhi, qo);
        if (y[i] != ref) bad = i;
      }
      CHECK(bad == -1);
      const float step = rng.uniform(0.01f, 1.0f);
      const LsqOptions lo_opt{.bits = bits, .is_signed = rng.below(2) == 0, .round = mode};
      y = values(lsq(x, Tensor::scalar(step), lo_opt));
      bad = -1;
      for (int64_t i = 0; i < n && bad < 0; ++i)
        if (y[i] != lsq_ref(x.data()[i], step, lo_opt)) bad = i;
      CHECK(bad == -1);
    }
  }
  CHECK(checked == 8 * 3 * 4);
}

TEST_CASE("exported parameters reproduce every output value") {
  // For each output y: quantize(y, params) is its code and dequantize(code) == y.
  Rng rng(9);
  for (const int bits : {2, 4, 8, 12, 16}) {
    CAPTURE(bits);
    const Tensor x = random_tensor({5000}, rng, 2.0f);
    const float lo = -rng.uniform(0.1f, 2.0f), hi = rng.uniform(0.1f, 2.0f);
    struct Out {
      std::vector<float> y;
      QuantParams p;
    };
    const FakeQuantOptions fq{.bits = bits};
    const QdqOptions qo{.bits = bits, .range_given = true};
    const LsqOptions lo_opt{.bits = bits};
    const float step = lsq_init_step(x, lo_opt);
    const Out outs[] = {
        {values(fake_quant(x, Tensor::scalar(lo), Tensor::scalar(hi), fq)), fake_quant_params(lo, hi, fq)},
        {values(quantize_dequantize_v2(x, lo, hi, qo)), qdq_v2_params(lo, hi, qo)},
        {values(lsq(x, Tensor::scalar(step), lo_opt)), lsq_params(step, lo_opt)},
    };
    for (const Out& o : outs) {
      int64_t bad = -1;
      for (size_t i = 0; i < o.y.size() && bad < 0; ++i) {
        const int64_t q = quantize(o.y[i], o.p);
        if (q < o.p.qmin || q > o.p.qmax || dequantize(q, o.p) != o.y[i]) bad = static_cast<int64_t>(i);
      }
      CHECK(bad == -1);
    }
  }
}

// =====================================================================================
// Stochastic rounding
// =====================================================================================

TEST_CASE("stochastic rounding: reproducible, independent of threads, unbiased") {
  // 0.3 steps above a grid point everywhere: FakeQuant [-10, 53.75] (scale 0.25, zp 40)
  // with x = 0.075 (0.3 steps), QDQv2 given [-32, 8] (4 codes per unit) with
  // x = 0.075, LSQ with step 0.25. Each op rounds up with probability 0.3.
  const int64_t n = 300000;  // about 73 blocks of 4096: several parallel tasks
  const Tensor x = Tensor::full({n}, 0.075f);
  auto run_all = [&](uint64_t seed) {
    Rng r1(seed), r2(seed + 100), r3(seed + 200);
    std::vector<std::vector<float>> out;
    out.push_back(values(fake_quant(x, Tensor::scalar(-10.0f), Tensor::scalar(53.75f),
                                    FakeQuantOptions{.round = RoundMode::stochastic, .rng = &r1})));
    out.push_back(values(fake_quant_per_channel(tens({3, n / 3}, values(x)), vec1({-10.0f, -10.0f, -10.0f}),
                                                vec1({53.75f, 53.75f, 53.75f}), 0,
                                                FakeQuantOptions{.round = RoundMode::stochastic, .rng = &r1})));
    out.push_back(values(quantize_dequantize_v2(
        x, -32.0f, 8.0f, QdqOptions{.range_given = true, .round = RoundMode::stochastic, .rng = &r2})));
    out.push_back(values(lsq(x, Tensor::scalar(0.25f), LsqOptions{.bits = 8, .round = RoundMode::stochastic, .rng = &r3})));
    return out;
  };
  set_num_threads(1);
  const auto one = run_all(42);
  set_num_threads(2);
  const auto two = run_all(42);
  set_num_threads(4);
  const auto four = run_all(42);
  const auto other = run_all(43);
  set_num_threads(0);
  REQUIRE(one.size() == 4);
  for (size_t k = 0; k < one.size(); ++k) {
    CAPTURE(k);
    CHECK(one[k] == two[k]);
    CHECK(one[k] == four[k]);
    CHECK(one[k] != other[k]);
    // Only the two neighbours 0 and 0.25 appear, and the mean is 0.3 steps:
    // sigma of the mean = sqrt(0.21 / n) = 0.00084 steps.
    double sum = 0;
    bool on_grid = true;
    for (float v : one[k]) {
      on_grid = on_grid && (v == 0.0f || v == 0.25f);
      sum += v / 0.25;
    }
    CHECK(on_grid);
    CHECK(std::fabs(sum / static_cast<double>(n) - 0.3) < 0.005);
  }
}

TEST_CASE("stochastic rounding: fast kernels equal the references fed with the documented streams") {
  // fake_quant.h: seed = (hi << 32) | lo from the caller's Rng; rows of `inner` values
  // cut into blocks of 4096 numbered in memory order; element j of block b uses the
  // j-th uniform of Rng(seed, b).
  auto uniforms = [](uint64_t caller_seed, const ChannelLayout& l) {
    Rng caller(caller_seed);
    const uint64_t hi = caller.next_u32();
    const uint64_t seed = (hi << 32) | caller.next_u32();
    std::vector<float> u(static_cast<size_t>(l.numel()));
    uint64_t block = 0;
    for (int64_t row = 0; row < l.outer * l.channels; ++row) {
      for (int64_t j0 = 0; j0 < l.inner; j0 += 4096, ++block) {
        Rng r(seed, block);
        for (int64_t j = j0; j < std::min(l.inner, j0 + 4096); ++j) u[static_cast<size_t>(row * l.inner + j)] = r.uniform();
      }
    }
    return u;
  };
  Rng data(21);
  const Tensor x = random_tensor({2, 3, 5000}, data, 2.0f);  // rows of 5000: blocks of 4096 and 904
  const int64_t n = x.numel();
  for (const int bits : {2, 4, 8, 16}) {
    CAPTURE(bits);
    const uint64_t s = 1000 + static_cast<uint64_t>(bits);
    // Per tensor: one row of 30000 values.
    {
      const std::vector<float> u = uniforms(s, ChannelLayout{1, 1, n});
      Rng r1(s), r2(s), r3(s);
      const FakeQuantOptions fq{.bits = bits, .round = RoundMode::stochastic, .rng = &r1};
      const QdqOptions qo{.bits = bits, .range_given = true, .round = RoundMode::stochastic, .rng = &r2};
      const LsqOptions lo{.bits = bits, .round = RoundMode::stochastic, .rng = &r3};
      const std::vector<float> yf = values(fake_quant(x, Tensor::scalar(-1.0f), Tensor::scalar(1.5f), fq));
      const std::vector<float> yq = values(quantize_dequantize_v2(x, -1.0f, 1.5f, qo));
      const std::vector<float> yl = values(lsq(x, Tensor::scalar(0.3f), lo));
      int64_t bad = -1;
      for (int64_t i = 0; i < n && bad < 0; ++i) {
        const float xi = x.data()[i], ui = u[static_cast<size_t>(i)];
        if (yf[i] != fake_quant_ref(xi, -1.0f, 1.5f, fq, false, ui) || yq[i] != qdq_v2_ref(xi, -1.0f, 1.5f, qo, ui) ||
            yl[i] != lsq_ref(xi, 0.3f, lo, ui))
          bad = i;
      }
      CHECK(bad == -1);
    }
    // Per channel along axis 1: rows of 5000, channel c = (row % 3).
    {
      const ChannelLayout l = channel_layout(x.shape(), 1);
      const std::vector<float> u = uniforms(s, l);
      Rng r1(s);
      const FakeQuantOptions fq{.bits = bits, .round = RoundMode::stochastic, .rng = &r1};
      const std::vector<float> los = {-1.0f, -0.5f, 0.0f}, his = {1.0f, 2.0f, 0.75f};
      const std::vector<float> y = values(fake_quant_per_channel(x, vec1(los), vec1(his), 1, fq));
      int64_t bad = -1;
      for (int64_t i = 0; i < n && bad < 0; ++i) {
        const int64_t c = l.channel_of(i);
        if (y[i] != fake_quant_ref(x.data()[i], los[c], his[c], fq, true, u[static_cast<size_t>(i)])) bad = i;
      }
      CHECK(bad == -1);
    }
  }
}

TEST_CASE("stochastic rounding: each output is one of the two neighbours; LSQ's backward uses the forward's codes") {
  Rng data(3);
  const Tensor x = random_tensor({20000}, data, 2.0f);
  Rng r(8);
  const FakeQuantOptions fq{.bits = 4, .round = RoundMode::stochastic, .rng = &r};
  const std::vector<float> y = values(fake_quant(x, Tensor::scalar(-1.0f), Tensor::scalar(1.5f), fq));
  int64_t bad = -1;
  for (int64_t i = 0; i < x.numel() && bad < 0; ++i) {
    // u = 0 rounds every fraction up, u just below 1 rounds it down.
    const float up = fake_quant_ref(x.data()[i], -1.0f, 1.5f, fq, false, 0.0f);
    const float down = fake_quant_ref(x.data()[i], -1.0f, 1.5f, fq, false, 0.99999994f);
    if (y[i] != up && y[i] != down) bad = i;
  }
  CHECK(bad == -1);

  // LSQ: ds = g * sum(dy * d) with d = code - v inside, where code is what the
  // forward drew (y / s), not a fresh draw.
  Rng r2(10);
  const LsqOptions lo{.bits = 4, .grad_scale = 1.0f, .round = RoundMode::stochastic, .rng = &r2};
  Tensor xs = x.detach().clone();
  xs.requires_grad_(true);
  Tensor s = leaf_scalar(0.2f);
  Tensor ly = lsq(xs, s, lo);
  const std::vector<float> lyv = values(ly);
  Tensor dy = random_tensor(x.shape(), data, 1.0f);
  ly.backward(dy);
  double expect = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float v = x.data()[i] / 0.2f;
    double d;
    if (v <= -8.0f) {
      d = -8;
    } else if (v >= 7.0f) {
      d = 7;
    } else {
      d = static_cast<double>(std::nearbyint(lyv[i] / 0.2f)) - v;
    }
    expect += dy.data()[i] * d;
  }
  CHECK(s.grad().item() == doctest::Approx(expect).epsilon(1e-4));
  // Without an Rng stochastic rounding is refused.
  CHECK_THROWS_AS(fake_quant(x, Tensor::scalar(-1.0f), Tensor::scalar(1.0f), FakeQuantOptions{.round = RoundMode::stochastic}),
                  std::invalid_argument);
  CHECK_THROWS_AS(quantize_dequantize_v2(x, 0.0f, 0.0f, QdqOptions{.round = RoundMode::stochastic}),
                  std::invalid_argument);
  CHECK_THROWS_AS(lsq(x, Tensor::scalar(0.1f), LsqOptions{.round = RoundMode::stochastic}), std::invalid_argument);
}

// =====================================================================================
// Bad input
// =====================================================================================

TEST_CASE("bad input is refused with a message") {
  const Tensor x = vec1({0.0f, 1.0f});
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // FakeQuant: bit widths, ranges, shapes.
  CHECK_THROWS_AS(fake_quant(x, Tensor::scalar(-1.0f), Tensor::scalar(1.0f), FakeQuantOptions{.bits = 1}),
                  std::invalid_argument);
  CHECK_THROWS_AS(fake_quant(x, Tensor::scalar(-1.0f), Tensor::scalar(1.0f), FakeQuantOptions{.bits = 17}),
                  std::invalid_argument);
  CHECK_THROWS_AS(fake_quant(x, Tensor::scalar(1.0f), Tensor::scalar(-1.0f)), std::invalid_argument);
  CHECK_THROWS_AS(fake_quant(x, Tensor::scalar(nan), Tensor::scalar(1.0f)), std::invalid_argument);
  CHECK_THROWS_AS(fake_quant(x, Tensor::scalar(-1.0f), Tensor::scalar(inf)), std::invalid_argument);
  CHECK_THROWS_AS(fake_quant(x, Tensor::scalar(0.5f), Tensor::scalar(0.5f)), std::invalid_argument);
  CHECK_THROWS_AS(fake_quant(x, vec1({-1.0f, -1.0f}), vec1({1.0f, 1.0f})), std::invalid_argument);
  CHECK_THROWS_AS(fake_quant(Tensor(), Tensor::scalar(-1.0f), Tensor::scalar(1.0f)), std::invalid_argument);
  CHECK_THROWS_AS(fake_quant_per_channel(x, vec1({-1.0f}), vec1({1.0f}), 0), std::invalid_argument);
  CHECK_THROWS_AS(fake_quant_per_channel(x, vec1({-1.0f, -1.0f}), vec1({1.0f, 1.0f}), 1), std::invalid_argument);
  CHECK_THROWS_AS(fake_quant_params(2.0f, 1.0f), std::invalid_argument);
  // The message names the op, the channel and the values.
  try {
    fake_quant_per_channel(tens({2, 2}, {0, 0, 0, 0}), vec1({-1.0f, 3.0f}), vec1({1.0f, 2.0f}), 0);
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    CHECK(msg.find("fake_quant_per_channel") != std::string::npos);
    CHECK(msg.find("channel 1") != std::string::npos);
    CHECK(msg.find("3 > max 2") != std::string::npos);
  }
  // QDQv2: given ranges must be finite and ordered; NaN never; NaN in x when measuring.
  CHECK_THROWS_AS(quantize_dequantize_v2(x, 1.0f, -1.0f, QdqOptions{.range_given = true}), std::invalid_argument);
  CHECK_THROWS_AS(quantize_dequantize_v2(x, -inf, 1.0f, QdqOptions{.range_given = true}), std::invalid_argument);
  CHECK_THROWS_AS(quantize_dequantize_v2(x, nan, 1.0f, QdqOptions{}), std::invalid_argument);
  CHECK_THROWS_AS(quantize_dequantize_v2(vec1({0.0f, nan}), 0.0f, 0.0f, QdqOptions{}), std::invalid_argument);
  CHECK_THROWS_AS(quantize_dequantize_v2(vec1({nan, 1.0f}), 0.0f, 0.0f, QdqOptions{}), std::invalid_argument);
  CHECK_THROWS_AS(quantize_dequantize_v2(vec1({0.0f, inf}), 0.0f, 0.0f, QdqOptions{}), std::invalid_argument);
  // With a given range, x is clamped: an infinity becomes the range's end, NaN stays NaN.
  const std::vector<float> yg =
      values(quantize_dequantize_v2(vec1({-inf, inf, nan}), -1.0f, 1.0f, QdqOptions{.range_given = true}));
  CHECK(yg[0] == -128.0f * (1.0f / 127.0f));
  CHECK(yg[1] == doctest::Approx(1.0f).epsilon(1e-6));
  CHECK(std::isnan(yg[2]));
  CHECK_THROWS_AS(quantize_dequantize_v2(x, -1.0f, 1.0f, QdqOptions{.bits = 33}), std::invalid_argument);
  const float two[2] = {-1.0f, -1.0f};
  CHECK_THROWS_AS(quantize_dequantize_v2_per_channel(x, std::span<const float>(two, 1), std::span<const float>(two, 1), 0),
                  std::invalid_argument);
  CHECK_THROWS_AS(quantize_dequantize_v2_per_channel(x, two, two, 2), std::invalid_argument);
  try {
    quantize_dequantize_v2(vec1({0.0f, 1.0f, nan}), 0.0f, 0.0f, QdqOptions{});
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("offset 2") != std::string::npos);
  }
  // LSQ: the step must be finite and positive; one step per channel; grad_scale >= 0.
  CHECK_THROWS_AS(lsq(x, Tensor::scalar(0.0f)), std::invalid_argument);
  CHECK_THROWS_AS(lsq(x, Tensor::scalar(-0.1f)), std::invalid_argument);
  CHECK_THROWS_AS(lsq(x, Tensor::scalar(nan)), std::invalid_argument);
  CHECK_THROWS_AS(lsq(x, Tensor::scalar(0.1f), LsqOptions{.grad_scale = -1.0f}), std::invalid_argument);
  CHECK_THROWS_AS(lsq_per_channel(x, vec1({0.1f}), 0), std::invalid_argument);
  CHECK_THROWS_AS(lsq_params(0.0f), std::invalid_argument);
}
