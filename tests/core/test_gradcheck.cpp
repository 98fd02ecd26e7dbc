// Finite-difference gradient checks (tests/core/gradcheck.h) for every
// differentiable op in core/ops.h: conv2d (odd sizes, stride 2, padding 0/1/2,
// groups > 1, depthwise, non-square kernels, bias), linear, matmul,
// batch_norm (training and eval, with and without affine parameters, 4-D and
// 2-D), relu, add/sub/mul with broadcasting, scalar mul, max/avg/global pools,
// reshape/flatten, cross-entropy with and without label smoothing, sum, mean;
// and a small residual network that chains them.
//
// Tolerance (gradcheck.h): |analytic - numeric| <= 1e-2 * max(|a|, |n|) + 1e-3
// per element, central differences with step 1e-2 on the float forward,
// L = sum(f(x) * R) accumulated in double. Inputs of non-smooth ops are kept
// away from their kinks (relu at 0, max-pool ties) by more than the step.
//
// The last test case checks the checker: backward rules that are wrong by a
// scale, a dropped element or a transposition must fail it.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "tests/core/gradcheck.h"

using namespace octet;
using octet::test::gradcheck;
using octet::test::GradcheckResult;

namespace {

Tensor leaf(const Shape& s, Rng& rng, float std = 1.0f) { return Tensor::randn(s, rng, std).requires_grad_(); }

// Values at least `gap` away from 0 (for relu).
Tensor away_from_zero(const Shape& s, Rng& rng, float gap) {
  Tensor t = Tensor::randn(s, rng);
  for (int64_t i = 0; i < t.numel(); ++i) {
    float& v = t.data()[i];
    v = v >= 0 ? v + gap : v - gap;
  }
  return t.requires_grad_();
}

// A random permutation of k * spacing, k < numel: no two values within
// `spacing` of each other, so a max never changes hands under the step.
Tensor distinct(const Shape& s, Rng& rng, float spacing) {
  Tensor t = Tensor::empty(s);
  std::vector<int64_t> idx(static_cast<size_t>(t.numel()));
  std::iota(idx.begin(), idx.end(), 0);
  for (size_t i = idx.size(); i > 1; --i) std::swap(idx[i - 1], idx[rng.below(static_cast<uint32_t>(i))]);
  const float mid = 0.5f * spacing * static_cast<float>(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<float>(idx[static_cast<size_t>(i)]) * spacing - mid;
  return t.requires_grad_();
}

void expect_ok(const GradcheckResult& r) {
  INFO("worst: " << r.worst << "; checked " << r.checked << " elements, max abs err " << r.max_abs_err);
  CHECK(r.checked > 0);
  CHECK(r.ok);
}

}  // namespace

TEST_CASE("conv2d: x, w and bias gradients") {
  struct Case {
    Shape x, w;
    Conv2dOptions opt;
    bool bias;
  };
  const std::vector<Case> cases = {
      {{2, 3, 5, 5}, {4, 3, 3, 3}, {.stride = 1, .pad = 1}, true},
      {{2, 3, 7, 6}, {2, 3, 3, 3}, {.stride = 2, .pad = 0}, false},
      {{1, 2, 7, 7}, {3, 2, 3, 3}, {.stride = 2, .pad = 1}, true},
      {{2, 4, 5, 4}, {6, 2, 3, 3}, {.stride = 1, .pad = 1, .groups = 2}, true},
      {{1, 3, 6, 5}, {3, 1, 3, 3}, {.stride = 2, .pad = 1, .groups = 3}, false},  // depthwise
      {{2, 2, 4, 5}, {3, 2, 2, 3}, {.stride = 1, .pad = 0}, true},               // non-square kernel
      {{1, 2, 4, 4}, {2, 2, 3, 3}, {.stride = 1, .pad = 2}, false},              // pad > kernel/2
      {{2, 4, 5, 5}, {3, 4, 1, 1}, {.stride = 1, .pad = 0}, true},               // pointwise
      {{2, 4, 5, 5}, {3, 4, 1, 1}, {.stride = 2, .pad = 0}, false},              // 1x1 projection
  };
  Rng rng(21);
  for (const Case& c : cases) {
    CAPTURE(shape_str(c.x));
    CAPTURE(shape_str(c.w));
    CAPTURE(c.opt.stride);
    CAPTURE(c.opt.pad);
    CAPTURE(c.opt.groups);
    const Conv2dOptions opt = c.opt;
    expect_ok(gradcheck([opt](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], opt); },
                        {leaf(c.x, rng), leaf(c.w, rng, 0.5f), c.bias ? leaf({c.w[0]}, rng) : Tensor()}));
  }
  // Only w requires grad (the network input), and only x.
  Tensor x = leaf({2, 3, 5, 5}, rng), w = leaf({2, 3, 3, 3}, rng);
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], {}, {.pad = 1}); },
                      {x.detach(), w}));
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], {}, {.stride = 2}); },
                      {x, w.detach()}));
}

TEST_CASE("linear and matmul") {
  Rng rng(22);
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                      {leaf({5, 7}, rng), leaf({3, 7}, rng), leaf({3}, rng)}));
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], {}); },
                      {leaf({1, 4}, rng), leaf({6, 4}, rng)}));
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
                      {leaf({4, 6}, rng), leaf({6, 3}, rng)}));
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
                      {leaf({1, 5}, rng), leaf({5, 1}, rng)}));
}

TEST_CASE("batch_norm in training mode") {
  Rng rng(23);
  for (Shape s : {Shape{3, 2, 3, 5}, Shape{2, 3, 1, 1}, Shape{7, 4}}) {
    CAPTURE(shape_str(s));
    const int64_t C = s[1];
    Tensor rm = Tensor::zeros({C}), rv = Tensor::full({C}, 1.0f);
    expect_ok(gradcheck(
        [&](const std::vector<Tensor>& in) { return batch_norm(in[0], in[1], in[2], rm, rv, true, 0.1f, 1e-5f); },
        {leaf(s, rng), Tensor::uniform({C}, rng, 0.5f, 1.5f).requires_grad_(), leaf({C}, rng)}));
  }
  // Without affine parameters and without running statistics.
  Tensor none_m, none_v;
  expect_ok(gradcheck(
      [&](const std::vector<Tensor>& in) { return batch_norm(in[0], {}, {}, none_m, none_v, true); },
      {leaf({4, 3, 2, 3}, rng)}));
}

TEST_CASE("batch_norm in eval mode") {
  Rng rng(24);
  Tensor rm = Tensor::randn({3}, rng), rv = Tensor::uniform({3}, rng, 0.5f, 2.0f);
  expect_ok(gradcheck(
      [&](const std::vector<Tensor>& in) { return batch_norm(in[0], in[1], in[2], rm, rv, false, 0.1f, 1e-5f); },
      {leaf({2, 3, 3, 4}, rng), leaf({3}, rng), leaf({3}, rng)}));
}

TEST_CASE("relu") {
  Rng rng(25);
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return relu(in[0]); },
                      {away_from_zero({3, 4, 5}, rng, 0.05f)}));
}

TEST_CASE("add, sub, mul with broadcasting; scalar mul") {
  Rng rng(26);
  const Shape a{2, 3, 4, 5};
  for (Shape b : {a, Shape{1, 3, 1, 1}, Shape{3, 1, 1}, Shape{4, 5}, Shape{5}, Shape{1}, Shape{2, 1, 4, 1}, Shape{}}) {
    CAPTURE(shape_str(b));
    expect_ok(gradcheck([](const std::vector<Tensor>& in) { return add(in[0], in[1]); }, {leaf(a, rng), leaf(b, rng)}));
    expect_ok(gradcheck([](const std::vector<Tensor>& in) { return sub(in[0], in[1]); }, {leaf(a, rng), leaf(b, rng)}));
    expect_ok(gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {leaf(a, rng), leaf(b, rng)}));
  }
  // A bias [C] onto [N, C] (linear's layout).
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return add(in[0], in[1]); },
                      {leaf({5, 3}, rng), leaf({3}, rng)}));
  // Only one side requires grad.
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); },
                      {Tensor::randn({3, 4}, rng), leaf({4}, rng)}));
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], -2.5f); }, {leaf({3, 7}, rng)}));
}

TEST_CASE("max_pool2d") {
  Rng rng(27);
  struct Case {
    Shape x;
    int k, s, p;
  };
  for (const Case& c : {Case{{2, 2, 4, 4}, 2, 2, 0}, Case{{1, 3, 7, 5}, 3, 2, 1}, Case{{2, 1, 5, 5}, 3, 1, 1},
                        Case{{1, 2, 5, 6}, 2, 1, 0}}) {
    CAPTURE(shape_str(c.x));
    CAPTURE(c.k);
    CAPTURE(c.s);
    CAPTURE(c.p);
    expect_ok(gradcheck([c](const std::vector<Tensor>& in) { return max_pool2d(in[0], c.k, c.s, c.p); },
                        {distinct(c.x, rng, 0.05f)}));
  }
}

TEST_CASE("avg_pool2d and global_avg_pool") {
  Rng rng(28);
  struct Case {
    Shape x;
    int k, s, p;
  };
  for (const Case& c : {Case{{2, 2, 4, 4}, 2, 2, 0}, Case{{1, 3, 7, 5}, 3, 2, 1}, Case{{2, 1, 5, 5}, 3, 1, 1},
                        Case{{1, 2, 9, 7}, 4, 3, 2}}) {
    CAPTURE(shape_str(c.x));
    CAPTURE(c.k);
    expect_ok(gradcheck([c](const std::vector<Tensor>& in) { return avg_pool2d(in[0], c.k, c.s, c.p); },
                        {leaf(c.x, rng)}));
  }
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return global_avg_pool(in[0]); }, {leaf({3, 2, 5, 3}, rng)}));
}

TEST_CASE("reshape and flatten") {
  Rng rng(29);
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return reshape(in[0], {4, -1}); }, {leaf({2, 3, 4}, rng)}));
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return flatten(in[0]); }, {leaf({3, 2, 3, 1}, rng)}));
  // A view inside a chain: the gradient goes back through the reshape.
  expect_ok(gradcheck(
      [](const std::vector<Tensor>& in) { return mul(reshape(in[0], {6, 2}), reshape(in[0], {6, 2})); },
      {leaf({3, 4}, rng)}));
}

TEST_CASE("cross_entropy with and without label smoothing") {
  Rng rng(30);
  const std::vector<int> labels{2, 0, 4, 4, 1};
  for (float eps : {0.0f, 0.1f, 1.0f}) {
    CAPTURE(eps);
    expect_ok(gradcheck(
        [&](const std::vector<Tensor>& in) { return cross_entropy(in[0], labels, eps); }, {leaf({5, 5}, rng, 2.0f)}));
  }
  // One sample, two classes.
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return cross_entropy(in[0], std::vector<int>{1}, 0.2f); },
                      {leaf({1, 2}, rng)}));
}

TEST_CASE("cross_entropy against given target distributions") {
  Rng rng(33);
  // Soft targets: random rows of a softmax, so each is a distribution.
  auto distributions = [&](int64_t n, int64_t c) {
    Tensor t = Tensor::randn({n, c}, rng, 1.5f);
    for (int64_t i = 0; i < n; ++i) {
      float* row = t.data() + i * c;
      const float m = *std::max_element(row, row + c);
      double s = 0;
      for (int64_t j = 0; j < c; ++j) s += row[j] = std::exp(row[j] - m);
      for (int64_t j = 0; j < c; ++j) row[j] = static_cast<float>(row[j] / s);
    }
    return t;
  };
  Tensor t = distributions(4, 6);
  expect_ok(gradcheck([&](const std::vector<Tensor>& in) { return cross_entropy(in[0], t); },
                      {leaf({4, 6}, rng, 2.0f)}));
  // The smoothed one-hot rows as given targets: the label form's loss and gradient.
  const std::vector<int> labels{3, 0, 5};
  const float eps = 0.1f;
  Tensor onehot = Tensor::full({3, 6}, eps / 6);
  for (int64_t i = 0; i < 3; ++i) onehot.data()[i * 6 + labels[static_cast<size_t>(i)]] += 1 - eps;
  Tensor z1 = leaf({3, 6}, rng, 2.0f), z2 = Tensor::from({3, 6}, std::vector<float>(z1.data(), z1.data() + 18));
  z2.requires_grad_();
  Tensor a = cross_entropy(z1, labels, eps), b = cross_entropy(z2, onehot);
  CHECK(a.item() == doctest::Approx(b.item()).epsilon(1e-6));
  a.backward();
  b.backward();
  for (int64_t k = 0; k < 18; ++k) CHECK(z1.grad().data()[k] == doctest::Approx(z2.grad().data()[k]).epsilon(1e-6));
  // Against its own target the loss is the target's entropy: KL = 0, and the gradient vanishes.
  Tensor logp = Tensor::from({1, 3}, std::vector<float>{std::log(0.5f), std::log(0.3f), std::log(0.2f)});
  logp.requires_grad_();
  Tensor self = cross_entropy(logp, Tensor::from({1, 3}, std::vector<float>{0.5f, 0.3f, 0.2f}));
  const double entropy = -(0.5 * std::log(0.5) + 0.3 * std::log(0.3) + 0.2 * std::log(0.2));
  CHECK(self.item() == doctest::Approx(entropy).epsilon(1e-6));
  self.backward();
  for (int64_t j = 0; j < 3; ++j) CHECK(std::abs(logp.grad().data()[j]) < 1e-7);
}

TEST_CASE("softmax") {
  Rng rng(34);
  // Weighted sum of the outputs, so each output's gradient is a different number.
  Tensor w = Tensor::randn({3, 5}, rng, 1.0f);
  expect_ok(gradcheck([&](const std::vector<Tensor>& in) { return sum(mul(softmax(in[0]), w)); },
                      {leaf({3, 5}, rng, 2.0f)}));
  // Each row sums to 1, so a gradient of ones gives zero back.
  Tensor z = leaf({2, 4}, rng, 2.0f);
  sum(softmax(z)).backward();
  for (int64_t k = 0; k < 8; ++k) CHECK(std::abs(z.grad().data()[k]) < 1e-7);
}

TEST_CASE("sum and mean") {
  Rng rng(31);
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return sum(in[0]); }, {leaf({3, 5, 2}, rng)}));
  expect_ok(gradcheck([](const std::vector<Tensor>& in) { return mean(in[0]); }, {leaf({7, 3}, rng)}));
}

TEST_CASE("a residual block chaining the ops, shared input and all parameters") {
  Rng rng(32);
  Tensor rm1 = Tensor::zeros({4}), rv1 = Tensor::full({4}, 1.0f), rm2 = Tensor::zeros({4}),
         rv2 = Tensor::full({4}, 1.0f);
  const std::vector<int> labels{1, 0, 2};
  auto net = [&](const std::vector<Tensor>& in) {
    // x -> conv -> bn -> relu -> conv -> bn, + 1x1 projection of x, relu,
    // global pool, linear, cross-entropy. x feeds two branches.
    const Tensor &x = in[0], &w1 = in[1], &g1 = in[2], &b1 = in[3], &w2 = in[4], &g2 = in[5], &b2 = in[6],
                 &ws = in[7], &fc = in[8], &fb = in[9];
    Tensor y = relu(batch_norm(conv2d(x, w1, {}, {.stride = 2, .pad = 1}), g1, b1, rm1, rv1, true));
    y = batch_norm(conv2d(y, w2, {}, {.stride = 1, .pad = 1}), g2, b2, rm2, rv2, true);
    y = relu(add(y, conv2d(x, ws, {}, {.stride = 2})));
    Tensor logits = linear(flatten(global_avg_pool(y)), fc, fb);
    return cross_entropy(logits, labels, 0.1f);
  };
  std::vector<Tensor> params = {leaf({3, 2, 5, 5}, rng),
                                leaf({4, 2, 3, 3}, rng, 0.5f),
                                Tensor::uniform({4}, rng, 0.5f, 1.5f).requires_grad_(),
                                leaf({4}, rng, 0.1f),
                                leaf({4, 4, 3, 3}, rng, 0.3f),
                                Tensor::uniform({4}, rng, 0.5f, 1.5f).requires_grad_(),
                                leaf({4}, rng, 0.1f),
                                leaf({4, 2, 1, 1}, rng),
                                leaf({3, 4}, rng),
                                leaf({3}, rng)};
  // relu kinks make a few elements of a deep chain fragile under a 1e-2
  // step; a smaller step is safe here because the loss is O(1).
  test::GradcheckOptions opt;
  opt.eps = 2e-3;
  opt.atol = 2e-3;
  expect_ok(gradcheck(net, params, opt));
}

TEST_CASE("the checker fails backward rules that are wrong") {
  Rng rng(33);
  // y = 3x with a backward rule that is wrong in a given way.
  auto times3 = [](int mode) {
    return [mode](const std::vector<Tensor>& in) {
      Tensor out = in[0].detach().clone();
      for (int64_t i = 0; i < out.numel(); ++i) out.data()[i] *= 3.0f;
      return record("times3_broken", out, {in[0]}, [mode](const Tensor& g) -> std::vector<Tensor> {
        Tensor d = g.clone();
        for (int64_t i = 0; i < d.numel(); ++i) d.data()[i] *= 3.0f;
        if (mode == 1)
          for (int64_t i = 0; i < d.numel(); ++i) d.data()[i] *= 1.05f;  // 5% too large
        if (mode == 2) d.data()[d.numel() / 2] = 0.0f;                    // one element dropped
        if (mode == 3) std::reverse(d.data(), d.data() + d.numel());      // misplaced
        return {d};
      });
    };
  };
  CHECK(gradcheck(times3(0), {leaf({4, 5}, rng)}).ok);
  for (int mode : {1, 2, 3}) {
    CAPTURE(mode);
    CHECK_FALSE(gradcheck(times3(mode), {leaf({4, 5}, rng)}).ok);
  }
}
