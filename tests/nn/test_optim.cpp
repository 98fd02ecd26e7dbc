#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "core/tensor.h"
#include "core/ops.h"
#include "core/rng.h"
#include "nn/optim.h"
#include "nn/sam.h"

// Every case: one parameter p = [1, -2] and a hand-set gradient, either
// g = p (the gradient of 0.5 * |p|^2) or the constant c = [0.5, -1]. The
// expected values are worked out by hand in the comments (and agree with
// torch.optim on the same numbers to float precision).

using namespace octet;
using namespace octet::nn;

namespace {

Tensor make_param() { return Tensor::from({2}, std::vector<float>{1.0f, -2.0f}).requires_grad_(true); }

void set_grad(Tensor& p, std::vector<float> g) { p.impl()->grad = Tensor::from({2}, g).impl(); }

enum class Grad { equals_p, constant };

// Runs `steps` steps, returning p after each.
std::vector<std::vector<float>> run(const OptimizerConfig& cfg, Grad kind, int steps) {
  Tensor p = make_param();
  auto opt = make_optimizer(cfg, {{"w", p}});
  std::vector<std::vector<float>> out;
  for (int s = 0; s < steps; ++s) {
    if (kind == Grad::equals_p)
      set_grad(p, {p.data()[0], p.data()[1]});
    else
      set_grad(p, {0.5f, -1.0f});
    opt->step();
    out.push_back({p.data()[0], p.data()[1]});
  }
  return out;
}

void check(const std::vector<float>& got, double a, double b) {
  CHECK(got[0] == doctest::Approx(a).epsilon(1e-6));
  CHECK(got[1] == doctest::Approx(b).epsilon(1e-6));
}

}  // namespace

TEST_CASE("SGD with momentum (PyTorch: the buffer starts as the first gradient)") {
  OptimizerConfig c{.kind = "sgd", .lr = 0.1f, .momentum = 0.9f};
  auto p = run(c, Grad::equals_p, 3);
  // 1: g = 1,    buf = 1,                  p = 1 - 0.1*1      = 0.9
  // 2: g = 0.9,  buf = 0.9*1 + 0.9 = 1.8,  p = 0.9 - 0.18     = 0.72
  // 3: g = 0.72, buf = 0.9*1.8+0.72 = 2.34, p = 0.72 - 0.234  = 0.486   (second entry: -2x)
  check(p[0], 0.9, -1.8);
  check(p[1], 0.72, -1.44);
  check(p[2], 0.486, -0.972);
}

TEST_CASE("SGD Nesterov") {
  OptimizerConfig c{.kind = "sgd", .lr = 0.1f, .momentum = 0.9f, .nesterov = true};
  auto p = run(c, Grad::equals_p, 3);
  // 1: g = 1, buf = 1, d = g + 0.9 buf = 1.9, p = 1 - 0.19 = 0.81
  // 2: g = 0.81, buf = 0.9 + 0.81 = 1.71, d = 0.81 + 1.539 = 2.349, p = 0.81 - 0.2349 = 0.5751
  // 3: g = 0.5751, buf = 1.539 + 0.5751 = 2.1141, d = 0.5751 + 1.90269 = 2.47779,
  //    p = 0.5751 - 0.247779 = 0.327321
  check(p[0], 0.81, -1.62);
  check(p[1], 0.5751, -1.1502);
  check(p[2], 0.327321, -0.654642);
}

TEST_CASE("SGD weight decay is coupled (added to the gradient)") {
  // No momentum: g = c + 0.1 p.
  // 1: g = 0.5 + 0.1 = 0.6,     p = 1 - 0.06 = 0.94;      g2 = -1 - 0.2 = -1.2, p = -2 + 0.12 = -1.88
  // 2: g = 0.5 + 0.094 = 0.594, p = 0.94 - 0.0594 = 0.8806; g2 = -1.188, p = -1.88 + 0.1188 = -1.7612
  auto p = run(OptimizerConfig{.kind = "sgd", .lr = 0.1f, .momentum = 0.0f, .weight_decay = 0.1f}, Grad::constant, 2);
  check(p[0], 0.94, -1.88);
  check(p[1], 0.8806, -1.7612);
  // With momentum 0.9: step 2 buf = 0.9*0.6 + 0.594 = 1.134, p = 0.94 - 0.1134 = 0.8266
  auto q = run(OptimizerConfig{.kind = "sgd", .lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.1f}, Grad::constant, 2);
  check(q[0], 0.94, -1.88);
  check(q[1], 0.8266, -1.6532);
}

TEST_CASE("weight decay exemption of 1-d parameters") {
  Tensor w = Tensor::from({1, 1}, std::vector<float>{1.0f}).requires_grad_(true);
  Tensor b = Tensor::from({1}, std::vector<float>{1.0f}).requires_grad_(true);
  OptimizerConfig c{.kind = "sgd", .lr = 0.1f, .momentum = 0.0f, .weight_decay = 0.5f, .no_decay_1d = true};
  auto opt = make_optimizer(c, {{"w", w}, {"b", b}});
  w.impl()->grad = Tensor::zeros({1, 1}).impl();
  b.impl()->grad = Tensor::zeros({1}).impl();
  opt->step();
  CHECK(w.data()[0] == doctest::Approx(0.95));  // 1 - 0.1 * 0.5 * 1
  CHECK(b.data()[0] == 1.0f);                   // exempt
}

TEST_CASE("RMSProp, TensorFlow semantics (ms starts at 1, epsilon inside the sqrt)") {
  OptimizerConfig c{.kind = "rmsprop", .lr = 0.1f, .momentum = 0.9f, .rms_decay = 0.9f, .epsilon = 1.0f};
  auto p = run(c, Grad::constant, 3);
  // entry 0, g = 0.5:
  // 1: ms = 0.9*1 + 0.1*0.25 = 0.925, mom = 0.1*0.5/sqrt(1.925) = 0.0360375, p = 0.9639625
  // 2: ms = 0.8575, mom = 0.9*0.0360375 + 0.05/sqrt(1.8575) = 0.0691202, p = 0.8948423
  // 3: ms = 0.79675, mom = 0.0995097, p = 0.7953326
  // entry 1, g = -1: ms stays 0.9 + 0.1 = 1, so each step adds -0.1/sqrt(2) = -0.0707107 to mom:
  // 1: mom = -0.0707107, p = -1.9292893; 2: mom = -0.1343503, p = -1.7949390; 3: p = -1.6033131
  check(p[0], 0.9639625, -1.9292893);
  check(p[1], 0.8948423, -1.7949390);
  check(p[2], 0.7953326, -1.6033131);
}

TEST_CASE("Adam, PyTorch semantics") {
  OptimizerConfig c{.kind = "adam", .lr = 0.1f};
  auto p = run(c, Grad::equals_p, 2);
  // 1: g = 1: m = 0.1, v = 0.001, mhat = 1, vhat = 1, p = 1 - 0.1 * 1/(1 + 1e-8) = 0.9
  // 2: g = 0.9: m = 0.09 + 0.09 = 0.18, v = 0.000999 + 0.00081 = 0.001809,
  //    mhat = 0.18/0.19 = 0.947368, vhat = 0.001809/0.001999 = 0.904952, sqrt = 0.951290,
  //    p = 0.9 - 0.1 * 0.947368/0.951290 = 0.800412
  CHECK(p[0][0] == doctest::Approx(0.9).epsilon(1e-6));
  CHECK(p[1][0] == doctest::Approx(0.800412).epsilon(1e-5));
  // A constant gradient moves Adam by lr * sign(g) per step: -2 -> -1.9 -> -1.8.
  auto q = run(c, Grad::constant, 2);
  check(q[1], 0.8, -1.8);
}

TEST_CASE("optimizer state round trip continues identically") {
  OptimizerConfig c{.kind = "sgd", .lr = 0.1f, .momentum = 0.9f, .nesterov = true, .weight_decay = 0.01f};
  for (const char* kind : {"sgd", "rmsprop", "adam"}) {
    CAPTURE(kind);
    c.kind = kind;
    Tensor a = make_param();
    auto oa = make_optimizer(c, {{"w", a}});
    for (int s = 0; s < 2; ++s) {
      set_grad(a, {a.data()[0], a.data()[1]});
      oa->step();
    }
    // A second optimizer on a copy of the parameter, restored from the first.
    Tensor b = a.clone().requires_grad_(true);
    auto ob = make_optimizer(c, {{"w", b}});
    NamedTensors st = oa->state();
    CHECK(!st.empty());
    ob->load_state(st, oa->step_count());
    for (int s = 0; s < 2; ++s) {
      set_grad(a, {a.data()[0], a.data()[1]});
      set_grad(b, {b.data()[0], b.data()[1]});
      oa->step();
      ob->step();
    }
    CHECK(a.data()[0] == b.data()[0]);
    CHECK(a.data()[1] == b.data()[1]);
  }
}

TEST_CASE("bad optimizer input") {
  Tensor a = make_param();
  CHECK_THROWS_WITH_AS(make_optimizer(OptimizerConfig{.kind = "lamb"}, {{"w", a}}),
                       doctest::Contains("valid: sgd, rmsprop, adam"), std::invalid_argument);
  auto opt = make_optimizer(OptimizerConfig{.kind = "sgd"}, {{"w", a}});
  CHECK_THROWS_WITH_AS(opt->load_state({{"w.momentum_buffer", Tensor::zeros({3})}}, 1), doctest::Contains("w.momentum_buffer"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(opt->load_state({{"v.momentum_buffer", Tensor::zeros({2})}}, 1), doctest::Contains("v.momentum_buffer"),
                       std::runtime_error);
  // No gradient: the parameter is left alone.
  opt->step();
  CHECK(a.data()[0] == 1.0f);
}

TEST_CASE("sharpness-aware minimization: the ascent step, the exact way back, one SAM + SGD step") {
  Tensor p = make_param();                                           // [1, -2]
  Tensor idle = Tensor::from({1}, std::vector<float>{7.0f}).requires_grad_(true);  // gets no gradient
  const NamedTensors params{{"w", p}, {"idle", idle}};
  set_grad(p, {1.5f, 2.0f});  // ||g|| = 2.5
  SharpnessAwareMinimization sam(0.5f);
  CHECK(sam.ascend(params) == doctest::Approx(2.5));
  // e = 0.5 * [1.5, 2] / 2.5 = [0.3, 0.4]
  CHECK(p.data()[0] == doctest::Approx(1.3f));
  CHECK(p.data()[1] == doctest::Approx(-1.6f));
  CHECK(idle.data()[0] == 7.0f);
  CHECK_THROWS_AS(sam.ascend(params), std::logic_error);  // already at w + e
  sam.descend(params);
  CHECK(p.data()[0] == 1.0f);  // exactly w again, not w + e - e
  CHECK(p.data()[1] == -2.0f);
  CHECK(p.grad().data()[1] == 2.0f);  // the gradients stay for the optimizer

  set_grad(p, {0.0f, 0.0f});  // a zero gradient: no direction, no move
  CHECK(sam.ascend(params) == 0.0);
  CHECK(p.data()[0] == 1.0f);
  sam.descend(params);

  // loss 0.5 |p|^2, so g = p. With rho = ||p|| = sqrt(5), e = p and the
  // gradient at p + e is 2p; SGD lr 0.1 then gives p - 0.2 p = [0.8, -1.6].
  SharpnessAwareMinimization wide(std::sqrt(5.0f));
  auto opt = make_optimizer({.kind = "sgd", .lr = 0.1f, .momentum = 0.0f}, {{"w", p}});
  set_grad(p, {p.data()[0], p.data()[1]});
  wide.ascend({{"w", p}});
  set_grad(p, {p.data()[0], p.data()[1]});  // the gradient at the perturbed point
  wide.descend({{"w", p}});
  opt->step();
  CHECK(p.data()[0] == doctest::Approx(0.8f));
  CHECK(p.data()[1] == doctest::Approx(-1.6f));

  CHECK_THROWS_AS(SharpnessAwareMinimization(0.0f), std::invalid_argument);
  CHECK_THROWS_AS(SharpnessAwareMinimization(-0.05f), std::invalid_argument);
}

TEST_CASE("FrozenBatchNormStatistics: batch statistics in the forward, running statistics unmoved") {
  BatchNorm2d bn(2);
  Rng rng(3);
  Tensor x = add(Tensor::randn({4, 2, 3, 3}, rng), Tensor::full({1}, 5.0f));  // batch mean near 5
  Tensor y;
  {
    FrozenBatchNormStatistics frozen(bn);
    y = bn.forward(x);
    CHECK(bn.momentum == 0.0f);
  }
  CHECK(bn.momentum == 0.1f);
  CHECK(bn.running_mean().data()[0] == 0.0f);
  CHECK(bn.running_var().data()[1] == 1.0f);
  double mean = 0;  // normalized with the batch's own statistics: mean 0, not ~5
  for (int64_t i = 0; i < 9; ++i) mean += y.data()[i] / 9.0;  // image 0, channel 0
  CHECK(std::abs(mean) < 2.0);
  bn.forward(x);  // outside the scope the statistics move again
  CHECK(bn.running_mean().data()[0] > 0.3f);
}
