// tests/quant/test_observer.cpp: range observers on hand-made distributions
// whose answers are known: min/max exactly, the EMA recurrence worked by
// hand, percentiles of a uniform grid, mean +- k sigma of a textbook set,
// TensorRT's KL divergence on an 8-bin histogram worked by hand (and on data
// where clipping clearly wins or clearly loses), the MSE-optimal clip against
// a brute-force search done here; the growing histogram; state save/restore;
// bad input.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "quant/observer.h"

using namespace octet;
using namespace octet::quant;

namespace {

Tensor tens(const Shape& shape, const std::vector<float>& v) { return Tensor::from(shape, v); }

// i / n for i = 1..n: a uniform grid on (0, 1] whose maximum is exactly 1.
std::vector<float> uniform_grid(int n, float lo = 0.0f, float hi = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = lo + (hi - lo) * static_cast<float>(i + 1) / static_cast<float>(n);
  return v;
}

// A deterministic Laplace(0, b) sample: the inverse CDF at the midpoints (i + 0.5) / n.
std::vector<float> laplace(int n, double b) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const double u = (i + 0.5) / n - 0.5;
    v[static_cast<size_t>(i)] = static_cast<float>(-b * (u < 0 ? -1.0 : 1.0) * std::log(1.0 - 2.0 * std::fabs(u)));
  }
  return v;
}

void check_same_range(const Observer& a, const Observer& b) {
  CHECK(a.range().min == b.range().min);
  CHECK(a.range().max == b.range().max);
}

}  // namespace

// ---- min/max ----------------------------------------------------------------------

TEST_CASE("minmax: exact running min and max; freeze, reset, empty input") {
  MinMaxObserver obs;
  CHECK_FALSE(obs.has_data());
  CHECK_THROWS_AS(obs.range(), std::logic_error);
  obs.observe(std::vector<float>{1.0f, -2.0f, 3.0f});
  obs.observe(tens({2, 1}, {0.5f, 4.0f}));
  CHECK(obs.range().min == -2.0f);
  CHECK(obs.range().max == 4.0f);
  CHECK(obs.observations() == 2);
  // Frozen: nothing counts.
  obs.freeze();
  obs.observe(std::vector<float>{-100.0f, 100.0f});
  CHECK(obs.range().min == -2.0f);
  CHECK(obs.range().max == 4.0f);
  CHECK(obs.observations() == 2);
  obs.freeze(false);
  // Empty input is not an observation.
  obs.observe(std::vector<float>{});
  CHECK(obs.observations() == 2);
  // Values that do not touch the range change nothing; a new extreme does.
  obs.observe(std::vector<float>{0.0f, 1.0f});
  CHECK(obs.range().max == 4.0f);
  obs.observe(std::vector<float>{-7.25f});
  CHECK(obs.range().min == -7.25f);
  // Reset forgets the data, keeps the configuration.
  obs.reset();
  CHECK_FALSE(obs.has_data());
  CHECK_THROWS_AS(obs.range(), std::logic_error);
  obs.observe(std::vector<float>{2.0f, 3.0f});  // all positive: min/max does not add 0
  CHECK(obs.range().min == 2.0f);
  CHECK(obs.range().max == 3.0f);
}

TEST_CASE("minmax per channel: each channel along its axis; range() over all") {
  // [2, 3, 2] along axis 1: channel c holds elements with (i / 2) % 3 == c.
  PerChannelMinMaxObserver obs(1);
  obs.observe(tens({2, 3, 2}, {1, -1, 5, 2, 0, 0, -3, 4, 6, 7, 0.5f, 0.25f}));
  // ch0: {1, -1, -3, 4}; ch1: {5, 2, 6, 7}; ch2: {0, 0, 0.5, 0.25}.
  std::vector<Range> r = obs.channel_ranges();
  REQUIRE(r.size() == 3);
  CHECK(r[0].min == -3.0f);
  CHECK(r[0].max == 4.0f);
  CHECK(r[1].min == 2.0f);
  CHECK(r[1].max == 7.0f);
  CHECK(r[2].min == 0.0f);
  CHECK(r[2].max == 0.5f);
  CHECK(obs.range().min == -3.0f);
  CHECK(obs.range().max == 7.0f);
  // A second batch updates per channel.
  obs.observe(tens({1, 3, 1}, {-10.0f, 1.0f, 9.0f}));
  r = obs.channel_ranges();
  CHECK(r[0].min == -10.0f);
  CHECK(r[1].min == 1.0f);
  CHECK(r[2].max == 9.0f);
  // Negative axis, weights layout [Cout, Cin, KH, KW] with axis 0 == -4.
  PerChannelMinMaxObserver w(-4);
  w.observe(tens({2, 1, 1, 2}, {1, 2, -3, -4}));
  CHECK(w.channel_ranges()[1].min == -4.0f);
  CHECK(w.channel_ranges()[1].max == -3.0f);
  // A different channel count later, or an axis the tensor does not have, is an error.
  CHECK_THROWS_AS(obs.observe(tens({2, 2}, {0, 0, 0, 0})), std::invalid_argument);
  PerChannelMinMaxObserver bad(3);
  CHECK_THROWS_AS(bad.observe(tens({2, 2}, {0, 0, 0, 0})), std::invalid_argument);
}

// ---- EMA -------------------------------------------------------------------------------

TEST_CASE("ema: TF's moving average by hand") {
  // decay 0.9, so each batch moves the range 10% of the way:  m -= 0.1 * (m - b).
  //   batch            b_min  b_max   min                           max
  //   {-1, 2}          -1     2       -1 (first batch sets it)      2
  //   {-3, 0.5, 1}     -3     1       -1 - 0.1 (-1 + 3) = -1.2      2 - 0.1 (2 - 1) = 1.9
  //   {0.5, 1.5}        0     1.5     -1.2 - 0.1 (-1.2) = -1.08     1.9 - 0.1 (0.4) = 1.86
  // (the last batch has no negative value; include_zero makes b_min 0, as TF does).
  MovingAverageObserver obs(0.9);
  obs.observe(std::vector<float>{-1.0f, 2.0f});
  CHECK(obs.range().min == -1.0f);
  CHECK(obs.range().max == 2.0f);
  obs.observe(std::vector<float>{-3.0f, 0.5f, 1.0f});
  CHECK(obs.range().min == doctest::Approx(-1.2).epsilon(1e-7));
  CHECK(obs.range().max == doctest::Approx(1.9).epsilon(1e-7));
  obs.observe(std::vector<float>{0.5f, 1.5f});
  CHECK(obs.range().min == doctest::Approx(-1.08).epsilon(1e-7));
  CHECK(obs.range().max == doctest::Approx(1.86).epsilon(1e-7));
  CHECK(obs.decay() == 0.9);

  // Without include_zero the last batch's min is 0.5: -1.2 - 0.1 (-1.2 - 0.5) = -1.03.
  MovingAverageObserver raw(0.9, /*include_zero=*/false);
  raw.observe(std::vector<float>{-1.0f, 2.0f});
  raw.observe(std::vector<float>{-3.0f, 0.5f, 1.0f});
  raw.observe(std::vector<float>{0.5f, 1.5f});
  CHECK(raw.range().min == doctest::Approx(-1.03).epsilon(1e-7));
  CHECK(raw.range().max == doctest::Approx(1.86).epsilon(1e-7));
  // include_zero also applies to the first batch: {2, 3} starts the range at [0, 3].
  MovingAverageObserver pos(0.9);
  pos.observe(std::vector<float>{2.0f, 3.0f});
  CHECK(pos.range().min == 0.0f);
  CHECK(pos.range().max == 3.0f);

  // An initial range (TF starts from [-6, 6]) is a range before any data and is
  // blended with the first batch: decay 0.5, batch [-1, 2] -> [-3.5, 4].
  MovingAverageObserver init(0.5, true, Range{-6.0f, 6.0f});
  CHECK(init.range().min == -6.0f);
  CHECK(init.range().max == 6.0f);
  init.observe(std::vector<float>{-1.0f, 2.0f});
  CHECK(init.range().min == -3.5f);
  CHECK(init.range().max == 4.0f);
  init.reset();  // back to the initial range
  CHECK(init.range().min == -6.0f);

  // decay 0: the range is the last batch's.
  MovingAverageObserver last(0.0);
  last.observe(std::vector<float>{-5.0f, 5.0f});
  last.observe(std::vector<float>{-1.0f, 2.0f});
  CHECK(last.range().min == -1.0f);
  CHECK(last.range().max == 2.0f);

  // Many batches of one fixed range converge to it geometrically: after k more
  // batches the distance is 0.9^k of the start.
  MovingAverageObserver conv(0.9);
  conv.observe(std::vector<float>{-10.0f, 10.0f});
  for (int k = 0; k < 50; ++k) conv.observe(std::vector<float>{-1.0f, 1.0f});
  CHECK(conv.range().max == doctest::Approx(1.0 + 9.0 * std::pow(0.9, 50)).epsilon(1e-6));
}

// ---- percentile --------------------------------------------------------------------

TEST_CASE("percentile: a uniform grid has its percentiles where expected") {
  // 100000 values i / n on (0, 1]: the p-th percentile is p / 100. The histogram
  // spreads each bin's values uniformly, which is exact for this data up to one
  // value per bin (1e-5).
  const std::vector<float> x = uniform_grid(100000);
  PercentileObserver obs(99.0);
  obs.observe(x);
  CHECK(obs.range().max == doctest::Approx(0.99).epsilon(2e-4));
  CHECK(obs.range().min == doctest::Approx(0.01).epsilon(2e-4));
  PercentileObserver p999(99.9);
  p999.observe(x);
  CHECK(p999.range().max == doctest::Approx(0.999).epsilon(2e-4));
  CHECK(p999.range().min == doctest::Approx(0.001).epsilon(2e-4));
  // 100 is the plain min/max.
  PercentileObserver all(100.0);
  all.observe(x);
  CHECK(all.range().min == x.front());
  CHECK(all.range().max == 1.0f);
}

TEST_CASE("percentile: the histogram grows by merging whole bins, counts preserved") {
  // First [-0.5, 0) then [0, 0.5): the second batch doubles the span, so bins merge
  // in pairs; the percentiles of the union are those of the uniform [-0.5, 0.5].
  PercentileObserver obs(99.0, 2048);
  obs.observe(uniform_grid(50000, -0.5f, 0.0f));
  const double w0 = obs.histogram().width();
  obs.observe(uniform_grid(50000, 0.0f, 0.5f));
  const Histogram& h = obs.histogram();
  CHECK(h.total() == 100000.0);
  double sum = 0;
  for (double c : h.counts()) sum += c;
  CHECK(sum == 100000.0);
  // The width is a whole multiple of the old one, and the grid still starts on an old edge.
  const double k = h.width() / w0;
  CHECK(k == doctest::Approx(std::round(k)).epsilon(1e-9));
  CHECK(k >= 2.0);
  // 99th percentile of U[-0.5, 0.5] is 0.49; merged bins are 1/1024 wide at most.
  CHECK(obs.range().max == doctest::Approx(0.49).epsilon(2e-3));
  CHECK(obs.range().min == doctest::Approx(-0.49).epsilon(2e-3));

  // Outliers beyond the percentile are clipped: 1000000 values in (-1, 1] and
  // 50 at +-50 (0.0025% each side) with p = 99.99: the range stays near [-1, 1].
  std::vector<float> x = uniform_grid(1000000, -1.0f, 1.0f);
  for (int i = 0; i < 50; ++i) {
    x.push_back(50.0f);
    x.push_back(-50.0f);
  }
  PercentileObserver clip(99.99);
  clip.observe(x);
  // Bins are 100/2048 = 0.049 wide here.
  CHECK(clip.range().max < 1.05f);
  CHECK(clip.range().max > 0.95f);
  CHECK(clip.range().min > -1.05f);
  CHECK(clip.range().min < -0.95f);
}

// ---- mean +- k sigma -------------------------------------------------------------------

TEST_CASE("meanstd: mean +- k sigma of the textbook set {2, 4, 4, 4, 5, 5, 7, 9}") {
  // mean 5, population variance (9 + 1 + 1 + 1 + 0 + 0 + 4 + 16) / 8 = 4, sigma 2.
  MeanStdObserver one(1.0);
  one.observe(std::vector<float>{2, 4, 4, 4, 5, 5, 7, 9});
  CHECK(one.mean() == 5.0);
  CHECK(one.stddev() == 2.0);
  CHECK(one.range().min == 3.0f);
  CHECK(one.range().max == 7.0f);
  // k = 1.5: [2, 8]; k = 3: [-1, 11], clipped to the data's [2, 9].
  MeanStdObserver k15(1.5), k3(3.0);
  k15.observe(std::vector<float>{2, 4, 4, 4, 5, 5, 7, 9});
  k3.observe(std::vector<float>{2, 4, 4, 4, 5, 5, 7, 9});
  CHECK(k15.range().min == 2.0f);
  CHECK(k15.range().max == 8.0f);
  CHECK(k3.range().min == 2.0f);
  CHECK(k3.range().max == 9.0f);
  // In two batches, Chan's combination gives the same: batch means 3.5 and 6.5,
  // M2 3 and 11; M2 = 3 + 11 + 3^2 * 4 * 4 / 8 = 32 = 8 * 4.
  MeanStdObserver split(1.0);
  split.observe(std::vector<float>{2, 4, 4, 4});
  split.observe(std::vector<float>{5, 5, 7, 9});
  CHECK(split.mean() == 5.0);
  CHECK(split.stddev() == 2.0);
  check_same_range(split, one);
  // Constant data: sigma 0, the range is the single value.
  MeanStdObserver c(3.0);
  c.observe(std::vector<float>{1.5f, 1.5f, 1.5f});
  CHECK(c.range().min == 1.5f);
  CHECK(c.range().max == 1.5f);
  // A large offset does not cost precision (two-pass batches): 1e6 + {-1, 1}.
  MeanStdObserver off(1.0);
  for (int i = 0; i < 100; ++i) off.observe(std::vector<float>{1e6f - 1.0f, 1e6f + 1.0f});
  CHECK(off.stddev() == doctest::Approx(1.0).epsilon(1e-9));
}

// ---- entropy (TensorRT KL) ---------------------------------------------------------------

TEST_CASE("entropy: KL divergence worked by hand on 8 bins") {
  // Nonnegative data, 2 bits -> levels = 2^2 = 4 codes for the magnitude; 8 bins over
  // [0, 8] (width 1): a ReLU's zeros x4, then 1.5 x2, 2.5, 3.5 x2, 8 (the last bin takes 8).
  //   histogram [4, 2, 1, 2, 0, 0, 0, 1]; bin 0 counts as bin 1 (the zeros are exact
  //   on any grid): h = [2, 2, 1, 2, 0, 0, 0, 1], total 8
  // Candidate i = 4 (threshold 4): P = h[0..3] with the outlier folded into bin 3:
  //   P = [2, 2, 1, 3] / 8; Q quantizes 4 bins into 4 groups of one: Q = [2, 2, 1, 2] / 7.
  //   KL = 2 * 2/8 ln((2/8)/(2/7)) + 1/8 ln((1/8)/(1/7)) + 3/8 ln((3/8)/(2/7))
  //      = 5/8 ln(7/8) + 3/8 ln(21/16) = 0.018518
  // Candidate i = 8 (no clipping): groups of two bins, each group's count spread over
  // its nonempty bins: Q = [2, 2, 1.5, 1.5, 0, 0, 0, 1] / 8:
  //   KL = 1/8 ln(1/1.5) + 2/8 ln(2/1.5) = 1/8 ln(2/3) + 1/4 ln(4/3) = 0.021237
  // Candidates 5, 6, 7: the outlier lands in an empty bin that Q leaves at 0: infinite.
  // So T = 4 * width = 4: clipping the lone 8 wins, narrowly.
  EntropyObserver obs(2, 8);
  obs.observe(std::vector<float>{0.0f, 0.0f, 0.0f, 0.0f, 1.5f, 1.5f, 2.5f, 3.5f, 3.5f, 8.0f});
  REQUIRE(obs.histogram().counts() == std::vector<double>{4, 2, 1, 2, 0, 0, 0, 1});
  const double kl4 = 5.0 / 8 * std::log(7.0 / 8) + 3.0 / 8 * std::log(21.0 / 16);
  const double kl8 = 1.0 / 8 * std::log(2.0 / 3) + 1.0 / 4 * std::log(4.0 / 3);
  CHECK(kl4 == doctest::Approx(0.018518).epsilon(1e-4));
  CHECK(kl8 == doctest::Approx(0.021237).epsilon(1e-4));
  CHECK(obs.divergence(4) == doctest::Approx(kl4).epsilon(1e-12));
  CHECK(obs.divergence(8) == doctest::Approx(kl8).epsilon(1e-12));
  for (int i : {5, 6, 7}) CHECK(std::isinf(obs.divergence(i)));
  CHECK(obs.threshold() == 4.0);
  // The range: the data are nonnegative, so [min, T] = [0, 4].
  CHECK(obs.range().min == 0.0f);
  CHECK(obs.range().max == 4.0f);
  CHECK_THROWS_AS(obs.divergence(0), std::invalid_argument);
  CHECK_THROWS_AS(obs.divergence(9), std::invalid_argument);

  // One more value at 2.5 tips the balance: h = [2, 2, 2, 2, 0, 0, 0, 1], total 9.
  //   i = 4: P = [2, 2, 2, 3] / 9, Q = [2, 2, 2, 2] / 8:
  //          KL = 6/9 ln(8/9) + 3/9 ln(4/3) = 0.017372
  //   i = 8: Q = [2, 2, 2, 2, 0, 0, 0, 1] / 9 = P: KL = 0, so no clipping: T = max = 8.
  EntropyObserver obs2(2, 8);
  obs2.observe(std::vector<float>{0.0f, 0.0f, 0.0f, 0.0f, 1.5f, 1.5f, 2.5f, 2.5f, 3.5f, 3.5f, 8.0f});
  CHECK(obs2.divergence(4) ==
        doctest::Approx(6.0 / 9 * std::log(8.0 / 9) + 3.0 / 9 * std::log(4.0 / 3)).epsilon(1e-12));
  CHECK(obs2.divergence(4) == doctest::Approx(0.017372).epsilon(1e-4));
  CHECK(obs2.divergence(8) == doctest::Approx(0.0).scale(1e-12));
  CHECK(obs2.threshold() == 8.0);
  CHECK(obs2.range().max == 8.0f);
}

TEST_CASE("entropy: the zeros of a ReLU do not pull the threshold down") {
  // Half the values of a ReLU output are exactly 0. They all land in bin 0, and the
  // expansion step of every wide candidate spreads that spike over its whole first
  // group, which KL punishes so hard that the narrowest candidate (levels bins) wins:
  // at 4 bits a PTQ ResNet-20 with that rule collapsed to 10% (docs/results.md).
  // Bin 0 counts as bin 1 in the divergence, so the zeros change nothing.
  std::vector<float> pos;  // Exp(1): the positive half of Laplace(0, 1)
  for (float v : laplace(200000, 1.0))
    if (v > 0) pos.push_back(v);
  std::vector<float> relu = pos;
  relu.insert(relu.end(), pos.size(), 0.0f);
  EntropyObserver with_zeros(4), without(4);
  with_zeros.observe(relu);
  without.observe(pos);
  MESSAGE("entropy threshold, 4 bits, ReLU(Laplace): " << with_zeros.threshold() << " (max " << without.range().max
                                                      << ")");
  CHECK(with_zeros.threshold() == without.threshold());
  CHECK(with_zeros.threshold() > 3.0);  // P(x > 3) = 5% of the nonzero values
  CHECK(with_zeros.range().min == 0.0f);
}

TEST_CASE("entropy: clips a heavy tail, keeps a uniform range") {
  // Laplace(0, 1), 200000 values, max |x| = ln(200000) = 12.2: KL calibration clips
  // the sparse tail, the more so the fewer the levels (4 bits: 8 magnitude levels).
  const std::vector<float> lap = laplace(200000, 1.0);
  const float amax = *std::max_element(lap.begin(), lap.end());
  EntropyObserver heavy(4), heavy8(8);
  heavy.observe(lap);
  heavy8.observe(lap);
  MESSAGE("entropy threshold on Laplace(0, 1): 4 bits " << heavy.threshold() << ", 8 bits " << heavy8.threshold()
                                                        << ", max " << amax);
  CHECK(heavy.threshold() < 0.6 * amax);
  CHECK(heavy.threshold() > 3.0);  // but not into the bulk (P(|x| > 3) = 5%)
  CHECK(heavy8.threshold() < 0.9 * amax);
  CHECK(heavy8.threshold() > heavy.threshold());
  CHECK(heavy.range().max == static_cast<float>(heavy.threshold()));
  CHECK(heavy.range().min == static_cast<float>(-heavy.threshold()));
  // Uniform on [-1, 1]: every candidate below the maximum piles the clipped mass in
  // one bin that Q cannot match; the full range (KL about 0) wins.
  EntropyObserver flat(8);
  flat.observe(uniform_grid(200000, -1.0f, 1.0f));
  MESSAGE("entropy threshold on U[-1, 1]: " << flat.threshold());
  CHECK(flat.threshold() >= 0.99);
  CHECK(flat.range().max == 1.0f);
  // 16 bits: more levels than bins, nothing to choose: T = max |x|.
  EntropyObserver wide(16);
  wide.observe(lap);
  CHECK(wide.threshold() == amax);
}

// ---- MSE ---------------------------------------------------------------------------------

namespace {
// The actual mean squared error of quantizing |x| with clip t and `levels` codes
// (step t / (levels - 1)), by brute force over the data.
double actual_mse(const std::vector<float>& x, double t, int64_t levels) {
  const double step = t / static_cast<double>(levels - 1);
  double err = 0;
  for (float v : x) {
    const double a = std::fabs(static_cast<double>(v));
    const double q = std::min(std::nearbyint(a / step), static_cast<double>(levels - 1)) * step;
    err += (a - q) * (a - q);
  }
  return err / static_cast<double>(x.size());
}
}  // namespace

TEST_CASE("mse: expected error worked by hand on flat data") {
  // 204800 values i / n on (0, 1]: a flat |x| histogram. 8 bits signed would be 128
  // levels, but the data are nonnegative, so 256 levels: step t / 255.
  //   t = 1:   only rounding error, step^2 / 12 = 1 / (12 * 255^2) = 1.2815e-6
  //   t = 0.5: rounding error on half the mass, 0.5 * (0.5/255)^2 / 12, plus clipping
  //            int_{0.5}^{1} (x - 0.5)^2 dx = 0.125 / 3 = 0.0416667
  MseObserver obs(8);
  obs.observe(uniform_grid(204800));
  CHECK(obs.expected_error(1.0) == doctest::Approx(1.0 / (12.0 * 255 * 255)).epsilon(2e-3));
  CHECK(obs.expected_error(0.5) ==
        doctest::Approx(0.125 / 3 + 0.5 * std::pow(0.5 / 255, 2) / 12).epsilon(2e-3));
  // The optimum for flat data: d/dt [t^3 / (12 L^2) + (1 - t)^3 / 3] = 0 with L = 255
  // gives t = 1 / (1 + 1 / (2 L)) = 0.998: essentially no clipping.
  CHECK(obs.threshold() == doctest::Approx(1.0 / (1.0 + 1.0 / 510)).epsilon(2e-3));
  CHECK_THROWS_AS(obs.expected_error(0.0), std::invalid_argument);
}

TEST_CASE("mse: the clip on a Laplacian set matches a brute-force search") {
  const std::vector<float> lap = laplace(60000, 1.0);
  const double amax = *std::max_element(lap.begin(), lap.end());
  for (int bits : {4, 8}) {
    CAPTURE(bits);
    const int64_t levels = int64_t{1} << (bits - 1);  // signed data
    // Brute force over 600 clips from amax / 600 to amax.
    double best_t = amax, best = actual_mse(lap, amax, levels);
    for (int j = 1; j <= 600; ++j) {
      const double t = amax * j / 600.0;
      const double e = actual_mse(lap, t, levels);
      if (e < best) {
        best = e;
        best_t = t;
      }
    }
    MseObserver obs(bits);
    obs.observe(lap);
    const double t = obs.threshold();
    MESSAGE("bits " << bits << ": observer clip " << t << ", brute force " << best_t << " (max " << amax << ")");
    // The error curve is flat near its minimum, so compare errors first, then clips.
    CHECK(actual_mse(lap, t, levels) <= best * 1.01);
    CHECK(t == doctest::Approx(best_t).epsilon(0.05));
    // The model's own estimate at its optimum agrees with the real error.
    CHECK(obs.expected_error(t) == doctest::Approx(actual_mse(lap, t, levels)).epsilon(0.05));
    CHECK(obs.range().max == static_cast<float>(t));
    CHECK(obs.range().min == static_cast<float>(-t));
  }
  // With 4 bits clipping clearly wins: the clip is far inside the maximum.
  MseObserver four(4);
  four.observe(lap);
  CHECK(four.threshold() < 0.6 * amax);
}

// ---- state -------------------------------------------------------------------------------

TEST_CASE("state: every observer round-trips through encode/decode and restore_observer") {
  const std::vector<float> a = laplace(5000, 0.5);
  std::vector<float> b = laplace(3000, 2.0);
  for (float& v : b) v += 0.25f;
  const ObserverConfig configs[] = {
      {.kind = "minmax"},
      {.kind = "ema", .decay = 0.95, .include_zero = false},
      {.kind = "percentile", .percentile = 99.5, .bins = 512},
      {.kind = "meanstd", .k = 2.5},
      {.kind = "entropy", .bits = 6, .bins = 256},
      {.kind = "mse", .bits = 4, .bins = 300},
      {.kind = "minmax_per_channel", .axis = 1},
  };
  for (const ObserverConfig& c : configs) {
    CAPTURE(c.kind);
    std::unique_ptr<Observer> obs = make_observer(c);
    CHECK(obs->kind() == c.kind);
    const Tensor ta = tens({50, 100}, a);
    obs->observe(ta);
    const ObserverState s = obs->state();
    CHECK(s.kind == c.kind);
    const std::string text = s.encode();
    const ObserverState back = ObserverState::decode(text);
    CHECK(back.kind == s.kind);
    CHECK(back.values == s.values);  // %.17g round-trips doubles exactly
    std::unique_ptr<Observer> copy = restore_observer(back);
    CHECK(copy->kind() == c.kind);
    CHECK(copy->observations() == 1);
    check_same_range(*obs, *copy);
    // Both evolve identically from here (configuration restored too).
    const Tensor tb = tens({30, 100}, b);
    obs->observe(tb);
    copy->observe(tb);
    check_same_range(*obs, *copy);
    CHECK(copy->state().values == obs->state().values);
    // The frozen flag is part of the state.
    obs->freeze();
    std::unique_ptr<Observer> frozen = restore_observer(obs->state());
    CHECK(frozen->frozen());
    frozen->observe(tens({1, 2}, {-1000.0f, 1000.0f}));
    check_same_range(*frozen, *obs);
    // load() into an existing observer of the same kind.
    std::unique_ptr<Observer> fresh = make_observer(c);
    fresh->load(obs->state());
    check_same_range(*fresh, *obs);
  }
  // A per-channel observer's channel ranges survive too.
  PerChannelMinMaxObserver pc(0);
  pc.observe(tens({2, 2}, {1, 2, -3, 4}));
  std::unique_ptr<Observer> pc2 = restore_observer(ObserverState::decode(pc.state().encode()));
  auto* typed = dynamic_cast<PerChannelMinMaxObserver*>(pc2.get());
  REQUIRE(typed != nullptr);
  CHECK(typed->channel_ranges()[1].min == -3.0f);
  CHECK(typed->channel_ranges()[1].max == 4.0f);
  // An ema observer's initial range survives a restore (reset() returns to it).
  MovingAverageObserver with_init(0.5, true, Range{-6.0f, 6.0f});
  with_init.observe(std::vector<float>{-1.0f, 2.0f});
  std::unique_ptr<Observer> init_copy = restore_observer(ObserverState::decode(with_init.state().encode()));
  check_same_range(*init_copy, with_init);
  init_copy->reset();
  CHECK(init_copy->range().min == -6.0f);
  CHECK(init_copy->range().max == 6.0f);
  CHECK_THROWS_AS(restore_observer(ObserverState::decode("ema 0 1 0.5 1 1 -1 1 6 -6")), std::invalid_argument);
  // The documented text form of an ema state.
  MovingAverageObserver ema(0.5);
  ema.observe(std::vector<float>{-0.5f, 2.25f});
  CHECK(ema.state().encode() == "ema 0 1 0.5 1 1 -0.5 2.25");
}

// ---- bad input ---------------------------------------------------------------------------

TEST_CASE("bad input: non-finite values, bad configurations, malformed states") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (const char* kind : {"minmax", "ema", "percentile", "meanstd", "entropy", "mse", "minmax_per_channel"}) {
    CAPTURE(kind);
    std::unique_ptr<Observer> obs = make_observer({.kind = kind});
    CHECK_THROWS_AS(obs->range(), std::logic_error);
    try {
      obs->observe(std::vector<float>{0.0f, 1.0f, 2.0f, nan});
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      const std::string msg = e.what();
      CHECK(msg.find(kind) != std::string::npos);
      CHECK(msg.find("offset 3") != std::string::npos);
    }
    CHECK_THROWS_AS(obs->observe(std::vector<float>{inf}), std::invalid_argument);
    CHECK_THROWS_AS(obs->observe(std::vector<float>{1.0f, -inf}), std::invalid_argument);
    CHECK_THROWS_AS(obs->observe(Tensor()), std::invalid_argument);
    // A rejected batch leaves no trace.
    CHECK_FALSE(obs->has_data());
    // Loading another kind's state is refused, naming both.
    const ObserverState other{std::string(kind) == "minmax" ? "ema" : "minmax", {0, 0, 0, 0}};
    try {
      obs->load(other);
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()).find(other.kind) != std::string::npos);
    }
    // Truncated or padded states are refused.
    obs->observe(std::vector<float>{-1.0f, 0.5f, 2.0f});
    ObserverState s = obs->state();
    ObserverState shorter = s;
    shorter.values.pop_back();
    CHECK_THROWS_AS(obs->load(shorter), std::invalid_argument);
    ObserverState longer = s;
    longer.values.push_back(1.0);
    CHECK_THROWS_AS(obs->load(longer), std::invalid_argument);
    ObserverState headless{s.kind, {}};
    CHECK_THROWS_AS(obs->load(headless), std::invalid_argument);
    // A refused load leaves the observer as it was, even when the bad state's
    // leading numbers (configuration) differ.
    ObserverState changed = shorter;
    for (size_t j = 2; j < changed.values.size(); ++j) changed.values[j] = 0.5 * changed.values[j] + 0.125;
    CHECK_THROWS_AS(obs->load(changed), std::invalid_argument);
    CHECK(obs->state().values == s.values);
  }
  // Configurations.
  CHECK_THROWS_AS(make_observer({.kind = "maxmin"}), std::invalid_argument);
  CHECK_THROWS_AS(make_observer({.kind = "ema", .decay = 1.0}), std::invalid_argument);
  CHECK_THROWS_AS(make_observer({.kind = "ema", .decay = -0.1}), std::invalid_argument);
  CHECK_THROWS_AS(make_observer({.kind = "ema", .initial = Range{1.0f, -1.0f}}), std::invalid_argument);
  CHECK_THROWS_AS(make_observer({.kind = "percentile", .percentile = 50.0}), std::invalid_argument);
  CHECK_THROWS_AS(make_observer({.kind = "percentile", .percentile = 100.5}), std::invalid_argument);
  CHECK_THROWS_AS(make_observer({.kind = "meanstd", .k = 0.0}), std::invalid_argument);
  CHECK_THROWS_AS(make_observer({.kind = "entropy", .bits = 1}), std::invalid_argument);
  CHECK_THROWS_AS(make_observer({.kind = "mse", .bits = 17}), std::invalid_argument);
  CHECK_THROWS_AS(make_observer({.kind = "entropy", .bins = 4}), std::invalid_argument);
  CHECK_THROWS_AS(make_observer({.kind = "percentile", .bins = 7}), std::invalid_argument);
  // Text states.
  CHECK_THROWS_AS(ObserverState::decode(""), std::invalid_argument);
  CHECK_THROWS_AS(ObserverState::decode("ema 0 1 x"), std::invalid_argument);
  CHECK_THROWS_AS(ObserverState::decode("ema 0  1"), std::invalid_argument);
  CHECK_THROWS_AS(restore_observer(ObserverState::decode("nosuch 0 0")), std::invalid_argument);
  CHECK_THROWS_AS(restore_observer(ObserverState::decode("ema 0 1 1.5 1 1 0 1")), std::invalid_argument);  // decay
  CHECK_THROWS_AS(restore_observer(ObserverState::decode("minmax 0 -1 0 1")), std::invalid_argument);  // count
  CHECK_THROWS_AS(restore_observer(ObserverState::decode("entropy 0 1 7.5 0 1 8 1 0 0.125 1 1 0 0 0 0 0 0 0")),
                  std::invalid_argument);  // bits
  // The same entropy state with 8 bits loads (one value in [0, 0.125), observed range [0, 1];
  // 256 levels for 8 bins: nothing to choose, T = max|x| = 1). With a histogram not anchored
  // at 0, counts that do not sum to the total, a negative count, or a non-finite number it is
  // refused.
  CHECK(restore_observer(ObserverState::decode("entropy 0 1 8 0 1 8 1 0 0.125 1 1 0 0 0 0 0 0 0"))->range().max ==
        1.0f);
  CHECK_THROWS_AS(restore_observer(ObserverState::decode("entropy 0 1 8 0 1 8 0 0 0.125 1 1 0 0 0 0 0 0 0")),
                  std::invalid_argument);
  CHECK_THROWS_AS(restore_observer(ObserverState::decode("entropy 0 1 8 0 1 8 1 0 0.125 2 1 0 0 0 0 0 0 0")),
                  std::invalid_argument);
  CHECK_THROWS_AS(restore_observer(ObserverState::decode("entropy 0 1 8 0 1 8 1 0 0.125 1 2 -1 0 0 0 0 0 0")),
                  std::invalid_argument);
  CHECK_THROWS_AS(restore_observer(ObserverState::decode("minmax 0 1 nan 1")), std::invalid_argument);
  CHECK_THROWS_AS(restore_observer(ObserverState::decode("ema 0 1 0.5 1 1 -inf 1")), std::invalid_argument);
  // A per-channel state that claims data but has no channels: range() refuses instead of
  // reading an empty list.
  std::unique_ptr<Observer> empty = restore_observer(ObserverState::decode("minmax_per_channel 0 1 0 0"));
  CHECK_THROWS_AS(empty->range(), std::logic_error);
}
