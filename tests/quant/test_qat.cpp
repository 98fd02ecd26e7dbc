// Tests of quant/qat.h: placement of the quantizers, the fused ConvBn, the
// schedule, observe-only and tied ranges, the grids the exporter reads,
// PTQ calibration, the configuration and QAT checkpoints. Over 600 lines: it
// covers all of quant/qat_*.h, one case per documented guarantee.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "core/checkpoint.h"
#include "nn/trainer.h"
#include "quant/qat.h"
#include "quant/qat_training.h"

using namespace octet;
using namespace octet::quant;
namespace fs = std::filesystem;

namespace {

std::set<std::string> act_quant_names(nn::Module& m) {
  std::set<std::string> s;
  for (auto& [n, a] : act_quants(m)) s.insert(n);
  return s;
}

// A small Bottleneck ResNet: stem 8, one block per stage (4 and 8 wide, x4).
std::shared_ptr<nn::ResNet> tiny_bottleneck(uint64_t seed) {
  nn::ResNetConfig c;
  c.name = "tiny_bottleneck";
  c.bottleneck = true;
  c.blocks = {1, 1};
  c.widths = {4, 8};
  c.stem_channels = 8;
  c.num_classes = 5;
  Rng rng(seed);
  return std::make_shared<nn::ResNet>(c, rng);
}

Tensor random_input(const Shape& s, uint64_t seed, float std = 1.0f) {
  Rng rng(seed, 3);
  return Tensor::randn(s, rng, std);
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.numel() == b.numel());
  float m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(a.data()[i] - b.data()[i]));
  return m;
}

float max_abs(const Tensor& a) {
  float m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(a.data()[i]));
  return m;
}

// Random BN parameters and statistics, so folding is not trivial.
void randomize_bn(nn::BatchNorm2d& bn, uint64_t seed) {
  Rng rng(seed, 9);
  for (int c = 0; c < bn.channels; ++c) {
    bn.weight().data()[c] = rng.uniform(0.5f, 1.5f) * (c % 3 == 2 ? -1.0f : 1.0f);
    bn.bias().data()[c] = rng.uniform(-0.5f, 0.5f);
    bn.running_mean().data()[c] = rng.uniform(-0.3f, 0.3f);
    bn.running_var().data()[c] = rng.uniform(0.3f, 2.0f);
  }
}

void randomize_all_bn(nn::Module& m, uint64_t seed) {
  for (auto& [n, mod] : m.named_modules())
    if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(mod)) randomize_bn(*bn, seed++);
}

// every value of t is dequantize(quantize(v)) of the grid p
bool on_grid(const float* v, int64_t n, const QuantParams& p) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t q = quantize(v[i], p);
    if (dequantize(q, p) != v[i] || q < p.qmin || q > p.qmax) return false;
  }
  return true;
}

Dataset learnable_dataset(int64_t n, uint64_t seed) {
  // 4 classes told apart by which channel is bright: learnable in a few steps.
  Dataset d;
  d.channels = 3;
  d.height = d.width = 8;
  d.class_names = {"r", "g", "b", "none"};
  d.source = "generated";
  Rng rng(seed);
  d.images.resize(static_cast<size_t>(n * d.image_numel()));
  for (int64_t i = 0; i < n; ++i) {
    const int label = static_cast<int>(rng.below(4));
    d.labels.push_back(label);
    uint8_t* img = d.image(i);
    for (int c = 0; c < 3; ++c)
      for (int k = 0; k < 64; ++k)
        img[c * 64 + k] = static_cast<uint8_t>((c == label ? 150 : 0) + rng.below(100));
  }
  return d;
}

}  // namespace

// ---------------------------------------------------------------- placement

TEST_CASE("prepare places ConvBn and ActQuants as documented (resnet20)") {
  auto model = nn::make_model("resnet20", 10, 1);
  const auto groups = model->conv_bn_relu_groups();
  prepare(*model, QatConfig{});
  CHECK(is_prepared(*model));
  for (auto& g : groups) {
    CHECK(model->find(g.conv).type() == "ConvBn");
    if (g.relu.empty()) {
      CHECK(model->find(g.bn + ".0").type() == "Identity");
      CHECK(model->find(g.bn + ".1").type() == "ActQuant");
    } else {
      CHECK(model->find(g.bn).type() == "Identity");
      CHECK(model->find(g.relu + ".0").type() == "ReLU");
    }
  }
  std::set<std::string> expected = {"relu.1", "avgpool.1", "fc.1"};
  for (int s = 1; s <= 3; ++s)
    for (int b = 0; b < 3; ++b) {
      const std::string p = "layer" + std::to_string(s) + "." + std::to_string(b) + ".";
      expected.insert(p + "relu1.1");
      expected.insert(p + "bn2.1");
      expected.insert(p + "relu2.1");
      CHECK(model->find(p + "add.input_a").type() == "Identity");
    }
  expected.insert("layer2.0.shortcut.1.1");
  expected.insert("layer3.0.shortcut.1.1");
  CHECK(act_quant_names(*model) == expected);
  CHECK(model->find("fc.0").type() == "Linear");
  CHECK(dynamic_cast<nn::Linear&>(model->find("fc.0")).weight_transform()->type() == "WeightQuant");
  CHECK(conv_bns(*model).size() == groups.size());
  // follower: the average pool uses the last block's grid
  auto* pool = dynamic_cast<ActQuant*>(&model->find("avgpool.1"));
  CHECK(pool->leader() == dynamic_cast<ActQuant*>(&model->find("layer3.2.relu2.1")));
  CHECK_THROWS_AS(prepare(*model, QatConfig{}), std::logic_error);
  // the prepared model still runs, same output shape
  Tensor y = model->forward(random_input({2, 3, 8, 8}, 1));
  CHECK(y.shape() == Shape{2, 10});
}

TEST_CASE("prepare on a Bottleneck model, add slots, input quant") {
  auto model = tiny_bottleneck(2);
  QatConfig cfg;
  cfg.add_inputs = AddInputs::untied;
  cfg.quantize_input = true;
  prepare(*model, cfg);
  const std::set<std::string> expected = {
      "conv1.input_quant", "relu.1",
      "layer1.0.relu1.1",  "layer1.0.relu2.1", "layer1.0.bn3.1", "layer1.0.shortcut.1.1",
      "layer1.0.add.input_a", "layer1.0.add.input_b", "layer1.0.relu3.1",
      "layer2.0.relu1.1",  "layer2.0.relu2.1", "layer2.0.bn3.1", "layer2.0.shortcut.1.1",
      "layer2.0.add.input_a", "layer2.0.add.input_b", "layer2.0.relu3.1",
      "avgpool.1", "fc.1"};
  CHECK(act_quant_names(*model) == expected);
  CHECK(dynamic_cast<ConvBn&>(model->find("conv1")).input_quant() != nullptr);
  auto* b = dynamic_cast<ActQuant*>(&model->find("layer1.0.add.input_b"));
  CHECK(b->leader() == nullptr);  // untied
  // edges: stem, per block conv1 conv2 conv3 shortcut add, avgpool, fc
  const auto edges = quant_edges(*model);
  REQUIRE(edges.size() == 1 + 2 * 5 + 2);
  CHECK(edges[0].name == "conv1");
  CHECK(edges[0].input == nullptr);
  CHECK(edges[0].output == &model->find("relu.1"));
  CHECK(edges[1].name == "layer1.0.conv1");
  CHECK(edges[1].input == edges[0].output);
  CHECK(edges[2].name == "layer1.0.conv2");
  CHECK(edges[2].relu);
  CHECK(edges[3].name == "layer1.0.conv3");
  CHECK_FALSE(edges[3].relu);
  CHECK(edges[3].output == &model->find("layer1.0.bn3.1"));
  CHECK(edges[4].name == "layer1.0.shortcut.0");
  CHECK(edges[4].input == edges[0].output);
  CHECK(edges[5].kind == QuantEdge::Kind::add);
  CHECK(edges[5].input == edges[3].output);
  CHECK(edges[5].input_b == edges[4].output);
  CHECK(edges[5].output == &model->find("layer1.0.relu3.1"));
  CHECK(edges[5].add_slot_a == &model->find("layer1.0.add.input_a"));
  CHECK(edges[6].input == edges[5].output);  // layer2.0.conv1 reads the first block's output
  CHECK(edges[11].kind == QuantEdge::Kind::avg_pool);
  CHECK(edges[11].input == edges[10].output);
  CHECK(edges[12].kind == QuantEdge::Kind::linear);
  CHECK(edges[12].input == edges[11].output);
  CHECK(edges[12].output == &model->find("fc.1"));
  Tensor y = model->forward(random_input({2, 3, 8, 8}, 2));
  CHECK(y.shape() == Shape{2, 5});
}

TEST_CASE("quant_edges of resnet20: identity and projection shortcuts") {
  auto model = nn::make_model("resnet20", 10, 3);
  CHECK_THROWS_AS(quant_edges(*model), std::logic_error);
  prepare(*model, QatConfig{});
  const auto edges = quant_edges(*model);
  CHECK(edges.size() == 1 + 9 * 3 + 2 + 2);
  const ActQuant* stem_out = edges[0].output;
  // layer1.0: conv1, conv2, add (identity shortcut: b is the block input)
  CHECK(edges[3].kind == QuantEdge::Kind::add);
  CHECK(edges[3].input == edges[2].output);
  CHECK(edges[3].input_b == stem_out);
  CHECK(edges[3].add_slot_a == nullptr);
  // every conv edge's input is the output of an earlier edge
  std::set<const ActQuant*> seen = {nullptr};
  for (auto& e : edges) {
    CHECK(seen.count(e.input) == 1);
    if (e.input_b) CHECK(seen.count(e.input_b) == 1);
    seen.insert(e.output);
  }
}

// ---------------------------------------------------------------- ConvBn

TEST_CASE("ConvBn equals conv + BN before quantization (train: batch stats, eval: running)") {
  Rng rng(4);
  auto conv = std::make_shared<nn::Conv2d>(3, 6, 3, 2, 1, false, rng);
  auto bn = std::make_shared<nn::BatchNorm2d>(6);
  randomize_bn(*bn, 4);
  // reference copies
  Rng rng2(4);
  nn::Conv2d rconv(3, 6, 3, 2, 1, false, rng2);
  nn::BatchNorm2d rbn(6);
  rbn.load_state(bn->named_state());
  ConvBn cb(conv, bn, QuantizerSpec{}, true);
  Tensor x = random_input({4, 3, 7, 7}, 5);

  SUBCASE("train") {
    cb.train();
    rbn.train();
    Tensor y = cb.forward(x);
    Tensor r = rbn.forward(rconv.forward(x));
    CHECK(max_abs_diff(y, r) < 1e-4f * std::max(1.0f, max_abs(r)));
    CHECK(max_abs_diff(cb.bn().running_mean(), rbn.running_mean()) < 1e-6f);
    CHECK(max_abs_diff(cb.bn().running_var(), rbn.running_var()) < 1e-5f);
    // gradients agree too
    sum(mul(y, y)).backward();
    sum(mul(r, r)).backward();
    CHECK(max_abs_diff(cb.named_parameters()[0].second.grad(), rconv.weight().grad()) <
          1e-3f * std::max(1.0f, max_abs(rconv.weight().grad())));
    CHECK(max_abs_diff(cb.bn().bias().grad(), rbn.bias().grad()) < 1e-3f);
    CHECK(max_abs_diff(cb.bn().weight().grad(), rbn.weight().grad()) < 1e-2f);
  }
  SUBCASE("eval") {
    cb.eval();
    rbn.eval();
    Tensor y = cb.forward(x);
    Tensor r = rbn.forward(rconv.forward(x));
    CHECK(max_abs_diff(y, r) < 1e-5f * std::max(1.0f, max_abs(r)));
  }
  SUBCASE("BN frozen in training: running statistics, no update") {
    cb.train();
    cb.freeze_bn(true);
    rbn.eval();
    Tensor rm = cb.bn().running_mean().clone();
    Tensor y = cb.forward(x);
    Tensor r = rbn.forward(rconv.forward(x));
    CHECK(max_abs_diff(y, r) < 1e-5f * std::max(1.0f, max_abs(r)));
    CHECK(max_abs_diff(cb.bn().running_mean(), rm) == 0.0f);
  }
}

TEST_CASE("folded weight and bias are the hand-folded numbers") {
  Rng rng(6);
  auto conv = std::make_shared<nn::Conv2d>(2, 3, 1, 1, 0, false, rng);
  auto bn = std::make_shared<nn::BatchNorm2d>(3);
  const float w[6] = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.5f};
  for (int i = 0; i < 6; ++i) conv->weight().data()[i] = w[i];
  const float gamma[3] = {2.0f, -1.0f, 0.5f}, beta[3] = {0.1f, 0.2f, -0.3f};
  const float mean[3] = {1.0f, -2.0f, 0.5f}, var[3] = {4.0f, 0.25f, 1.0f};
  for (int c = 0; c < 3; ++c) {
    bn->weight().data()[c] = gamma[c];
    bn->bias().data()[c] = beta[c];
    bn->running_mean().data()[c] = mean[c];
    bn->running_var().data()[c] = var[c];
  }
  bn->eps = 0.0f;  // exact square roots: 2, 0.5, 1
  ConvBn cb(conv, bn, QuantizerSpec{}, true);
  const Tensor fw = cb.folded_weight(), fb = cb.folded_bias();
  const float ew[6] = {0.5f * 2 / 2, -1.0f * 2 / 2, 2.0f * -1 / 0.5f, 0.25f * -1 / 0.5f, -0.75f * 0.5f, 1.5f * 0.5f};
  for (int i = 0; i < 6; ++i) CHECK(fw.data()[i] == doctest::Approx(ew[i]));
  // b = beta - gamma * mean / sigma
  CHECK(fb.data()[0] == doctest::Approx(0.1f - 2.0f * 1.0f / 2.0f));
  CHECK(fb.data()[1] == doctest::Approx(0.2f - (-1.0f) * (-2.0f) / 0.5f));
  CHECK(fb.data()[2] == doctest::Approx(-0.3f - 0.5f * 0.5f / 1.0f));
}

TEST_CASE("weight_params is the exact grid of the weight fake quant (each op)") {
  for (QuantOp op : {QuantOp::qdq_v2, QuantOp::fake_quant, QuantOp::lsq}) {
    for (int bits : {8, 4}) {
      CAPTURE(quant_op_name(op));
      CAPTURE(bits);
      Rng rng(7);
      auto conv = std::make_shared<nn::Conv2d>(3, 5, 3, 1, 1, false, rng);
      auto bn = std::make_shared<nn::BatchNorm2d>(5);
      randomize_bn(*bn, 7);
      QuantizerSpec s;
      s.op = op;
      s.bits = bits;
      s.narrow = true;
      ConvBn cb(conv, bn, s, true);
      cb.eval();
      cb.weight_quant().set_fake_quant(true);
      Tensor wq = cb.weight_quant().forward(cb.folded_weight());
      const auto params = cb.weight_params();
      REQUIRE(params.size() == 5);
      const int64_t inner = wq.numel() / 5;
      for (int c = 0; c < 5; ++c) {
        CAPTURE(c);
        CHECK(params[c].zero_point == 0);
        CHECK(params[c].qmin < 0);
        CHECK(on_grid(wq.data() + c * inner, inner, params[c]));
      }
      // eval forward == conv with the quantized folded weight + folded bias
      Tensor x = random_input({2, 3, 5, 5}, 8);
      Conv2dOptions o;
      o.pad = 1;
      Tensor ref = conv2d(x, wq, cb.folded_bias(), o);
      CHECK(max_abs_diff(cb.forward(x), ref) == 0.0f);
    }
  }
}

// ---------------------------------------------------------------- ActQuant

TEST_CASE("observe-only passes through exactly and measures the range") {
  QatConfig cfg;
  cfg.act_observer.kind = "minmax";
  QuantizerSpec s;
  ActQuant aq(s, cfg);
  aq.train();
  Tensor x = random_input({3, 4, 5, 5}, 9, 3.0f);
  Tensor y = aq.forward(x);
  CHECK(max_abs_diff(x, y) == 0.0f);
  REQUIRE(aq.has_range());
  float mn = x.data()[0], mx = x.data()[0];
  for (int64_t i = 0; i < x.numel(); ++i) mn = std::min(mn, x.data()[i]), mx = std::max(mx, x.data()[i]);
  CHECK(aq.range().min == mn);
  CHECK(aq.range().max == mx);
  // eval does not observe
  aq.eval();
  aq.forward(mul(x, 10.0f));
  CHECK(aq.range().max == mx);
  // not in a location: stays a pass-through even with fake quant on
  QuantizerSpec off = s;
  off.in_location = false;
  ActQuant aq2(off, cfg);
  aq2.train();
  aq2.set_fake_quant(true);
  CHECK(max_abs_diff(aq2.forward(x), x) == 0.0f);
  CHECK(aq2.has_range());
  CHECK_FALSE(aq2.fake_quant_enabled());
}

TEST_CASE("ActQuant output lies on params() for every op and signedness") {
  for (QuantOp op : {QuantOp::qdq_v2, QuantOp::fake_quant, QuantOp::lsq}) {
    for (bool is_signed : {true, false}) {
      CAPTURE(quant_op_name(op));
      CAPTURE(is_signed);
      QatConfig cfg;
      cfg.act_observer.kind = "minmax";
      QuantizerSpec s;
      s.op = op;
      s.is_signed = is_signed;
      ActQuant aq(s, cfg);
      aq.train();
      Tensor x = random_input({2, 3, 4, 4}, 10, 2.0f);
      if (!is_signed) x = relu(x);
      aq.forward(x);
      aq.set_fake_quant(true);
      aq.freeze_observer(true);
      Tensor y = aq.forward(x);
      const QuantParams p = aq.params();
      CHECK(p.qmin == (is_signed ? -128 : 0));
      CHECK(p.qmax == (is_signed ? 127 : 255));
      CHECK(on_grid(y.data(), y.numel(), p));
      CHECK(max_abs_diff(y, x) <= p.scale);  // within one step (range covers x)
    }
  }
}

TEST_CASE("tied add inputs share one range, untied do not") {
  for (AddInputs mode : {AddInputs::tied, AddInputs::untied}) {
    CAPTURE(add_inputs_name(mode));
    auto model = nn::make_model("resnet20", 10, 11);
    QatConfig cfg;
    cfg.add_inputs = mode;
    cfg.act_observer.kind = "minmax";
    prepare(*model, cfg);
    model->train();
    model->forward(random_input({4, 3, 8, 8}, 11));
    auto& a = dynamic_cast<ActQuant&>(model->find("layer1.1.add.input_a"));
    auto& b = dynamic_cast<ActQuant&>(model->find("layer1.1.add.input_b"));
    REQUIRE(a.has_range());
    REQUIRE(b.has_range());
    if (mode == AddInputs::tied) {
      CHECK(b.leader() == &a);
      CHECK(a.params().scale == b.params().scale);
      // the shared range covers both inputs: the conv branch and the block input
      auto& bn2 = dynamic_cast<ActQuant&>(model->find("layer1.1.bn2.1"));
      auto& in = dynamic_cast<ActQuant&>(model->find("layer1.0.relu2.1"));
      CHECK(a.range().max == std::max(bn2.range().max, in.range().max));
      CHECK(a.range().min == std::min(bn2.range().min, in.range().min));
    } else {
      CHECK(b.leader() == nullptr);
      CHECK(a.params().scale != b.params().scale);
    }
  }
}

// ---------------------------------------------------------------- schedule

TEST_CASE("the schedule switches at the configured steps") {
  QatConfig c;
  CHECK(c.quant_delay_at(1000) == 800);
  CHECK_FALSE(phase_at(c, 799, 1000).fake_quant);
  CHECK(phase_at(c, 800, 1000).fake_quant);
  CHECK_FALSE(phase_at(c, 999, 1000).observers_frozen);
  CHECK_FALSE(phase_at(c, 999, 1000).bn_frozen);
  c.quant_delay_step = 5;
  c.observer_freeze = 0.5;
  c.bn_freeze_step = 7;
  CHECK_FALSE(phase_at(c, 4, 100).fake_quant);
  CHECK(phase_at(c, 5, 100).fake_quant);
  CHECK_FALSE(phase_at(c, 49, 100).observers_frozen);
  CHECK(phase_at(c, 50, 100).observers_frozen);
  CHECK_FALSE(phase_at(c, 6, 100).bn_frozen);
  CHECK(phase_at(c, 7, 100).bn_frozen);
}

TEST_CASE("QAT training: the delay switches fake quant on at the right global step, no divergence") {
  const Dataset data = learnable_dataset(96, 12);
  nn::TrainConfig tc;
  tc.epochs = 2;
  tc.batch = 16;  // 6 steps per epoch, 12 in all
  tc.schedule.lr = 0.05;
  tc.progress = false;
  tc.seed = 3;
  auto model = nn::make_model("resnet20", 4, tc.seed);
  QatConfig q;
  q.quant_delay = 0.5;  // step 6
  q.bn_freeze_step = 9;
  prepare(*model, q);
  nn::Trainer t(tc, data, &data, model);
  const int64_t total = t.steps_per_epoch() * tc.epochs;
  REQUIRE(total == 12);
  std::vector<int> fq_at_step;
  auto& probe = dynamic_cast<ActQuant&>(model->find("layer2.1.relu1.1"));
  auto& probe_cb = dynamic_cast<ConvBn&>(model->find("layer2.1.conv1"));
  std::vector<int> bn_at_step;
  attach_qat(t, q);
  t.on_step_begin = [&, schedule = t.on_step_begin](int64_t step) {
    schedule(step);
    fq_at_step.push_back(probe.fake_quant_enabled());
    bn_at_step.push_back(probe_cb.bn_frozen());
  };
  auto stats = t.fit();
  REQUIRE(fq_at_step.size() == 12);
  for (int s = 0; s < 12; ++s) {
    CHECK(fq_at_step[s] == (s >= 6));
    CHECK(bn_at_step[s] == (s >= 9));
  }
  REQUIRE(stats.size() == 2);
  CHECK(std::isfinite(stats.back().train_loss));
  CHECK(stats.back().train_loss < stats.front().train_loss * 1.5);
  CHECK(stats.back().test_top1 > 0.3);  // 4 classes, learnable from the brightest channel
}

// ---------------------------------------------------------------- PTQ

TEST_CASE("PTQ calibration: minmax ranges are the observed extremes, output close to float") {
  auto fmodel = nn::make_model("resnet20", 10, 13);
  randomize_all_bn(*fmodel, 13);
  auto model = nn::make_model("resnet20", 10, 13);
  randomize_all_bn(*model, 13);
  std::vector<Tensor> batches = {random_input({8, 3, 8, 8}, 14), random_input({8, 3, 8, 8}, 15)};
  QatConfig cfg;
  cfg.act_observer.kind = "minmax";
  calibrate(*model, cfg, batches);
  // the stem's output range is the min/max of relu(bn(conv(x))) in float, over both batches
  fmodel->eval();
  float mx = 0;
  {
    NoGradGuard ng;
    for (auto& x : batches) {
      Tensor s = fmodel->child("relu").forward(fmodel->child("bn1").forward(fmodel->child("conv1").forward(x)));
      mx = std::max(mx, max_abs(s));
    }
  }
  auto& stem = dynamic_cast<ActQuant&>(model->find("relu.1"));
  CHECK(stem.range().min == 0.0f);
  CHECK(stem.range().max == doctest::Approx(mx).epsilon(1e-5));
  for (auto& [n, a] : act_quants(*model)) {
    CAPTURE(n);
    CHECK(a->fake_quant_enabled());
    CHECK(a->observer_frozen());
    CHECK(a->has_range());
  }
  for (auto& [n, c] : conv_bns(*model)) CHECK(c->bn_frozen());
  // int8 fake quant stays close to the float model
  model->eval();
  NoGradGuard ng;
  Tensor yq = model->forward(batches[0]);
  Tensor yf = fmodel->forward(batches[0]);
  CHECK(max_abs_diff(yq, yf) < 0.1f * std::max(1.0f, max_abs(yf)));
  CHECK(max_abs_diff(yq, yf) > 0.0f);  // it did quantize
  // calibrating again does not observe (frozen) and keeps the grid
  const QuantParams before = stem.params();
  model->forward(mul(batches[1], 3.0f));
  CHECK(stem.params().scale == before.scale);
}

TEST_CASE("PTQ with histogram observers gives narrower ranges than minmax") {
  std::vector<Tensor> batches = {random_input({8, 3, 8, 8}, 16)};
  float widths[2];
  int i = 0;
  for (const char* kind : {"minmax", "percentile"}) {
    auto model = nn::make_model("resnet20", 10, 16);
    QatConfig cfg;
    cfg.act_observer.kind = kind;
    cfg.act_observer.percentile = 99.0;
    calibrate(*model, cfg, batches);
    widths[i++] = dynamic_cast<ActQuant&>(model->find("layer1.0.relu1.1")).range().max;
  }
  CHECK(widths[1] < widths[0]);
}

// ---------------------------------------------------------------- configuration

TEST_CASE("QatConfig: key=value round trip, file, errors name the key") {
  QatConfig c;
  c.op = QuantOp::fake_quant;
  c.round = RoundMode::half_up;
  c.weight_bits = 4;
  c.act_bits = 6;
  c.signed_activations = false;
  c.add_inputs = AddInputs::tied;
  c.range_given = true;
  c.range_min = -3.5f;
  c.range_max = 7.25f;
  c.quant_delay = 0.4;
  c.bn_freeze_step = 123;
  c.act_observer.decay = 0.99;
  c.bits_overrides["layer1.0.conv1"] = 2;
  const auto kv = c.to_kv();
  const QatConfig back = QatConfig::from_kv(kv);
  CHECK(back.to_kv() == kv);
  CHECK(back.bits_overrides.at("layer1.0.conv1") == 2);
  CHECK(back.op == QuantOp::fake_quant);
  CHECK(back.range_max == 7.25f);
  // defaults
  const auto d = QatConfig{}.to_kv();
  CHECK(d.at("op") == "qdq_v2");
  CHECK(d.at("round") == "half_to_even");
  CHECK(d.at("quant_delay") == "0.8");
  CHECK(d.at("observer") == "ema");
  CHECK(d.at("observer_decay") == "0.999");

  auto throws_naming = [](std::map<std::string, std::string> m, const std::string& needle) {
    try {
      QatConfig::from_kv(m);
      FAIL("no exception for " << needle);
    } catch (const std::invalid_argument& e) {
      CHECK_MESSAGE(std::string(e.what()).find(needle) != std::string::npos, e.what());
    }
  };
  throws_naming({{"weight_bitz", "8"}}, "weight_bitz");
  throws_naming({{"weight_bits", "x"}}, "weight_bits");
  throws_naming({{"weight_bits", "1"}}, "weight_bits");
  throws_naming({{"op", "magic"}}, "op");
  throws_naming({{"round", "up"}}, "round");
  throws_naming({{"quant_delay", "1.5"}}, "quant_delay");
  throws_naming({{"observer", "nope"}}, "observer");
  throws_naming({{"add_inputs", "both"}}, "add_inputs");
  throws_naming({{"signed_activations", "yes"}}, "signed_activations");
  throws_naming({{"bits.layer1.0.conv1", "40"}}, "bits.layer1.0.conv1");

  const fs::path f = fs::temp_directory_path() / ("octet_qat_cfg_" + std::to_string(::getpid()) + ".txt");
  {
    std::ofstream o(f);
    o << "# a QAT config\nop = lsq\n\nweight_bits = 4   # low\nact_bits=4\n";
  }
  const QatConfig fc = QatConfig::from_file(f.string());
  CHECK(fc.op == QuantOp::lsq);
  CHECK(fc.weight_bits == 4);
  CHECK(fc.act_bits == 4);
  {
    std::ofstream o(f);
    o << "op = lsq\nthis line is wrong\n";
  }
  try {
    QatConfig::from_file(f.string());
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find(":2") != std::string::npos);
  }
  fs::remove(f);
  // an override naming no layer is an error at prepare time
  auto model = nn::make_model("resnet20", 10, 0);
  QatConfig bad;
  bad.bits_overrides["layer9.conv"] = 4;
  CHECK_THROWS_WITH_AS(prepare(*model, bad), doctest::Contains("layer9.conv"), std::invalid_argument);
}

TEST_CASE("mixed precision overrides reach the layers") {
  auto model = nn::make_model("resnet20", 10, 17);
  QatConfig c;
  c.bits_overrides["layer1.0.conv1"] = 4;
  c.bits_overrides["layer1.0.relu1.1"] = 5;
  c.bits_overrides["fc.0"] = 6;
  prepare(*model, c);
  CHECK(dynamic_cast<ConvBn&>(model->find("layer1.0.conv1")).weight_bits() == 4);
  CHECK(dynamic_cast<ConvBn&>(model->find("layer1.0.conv2")).weight_bits() == 8);
  CHECK(dynamic_cast<ActQuant&>(model->find("layer1.0.relu1.1")).spec().bits == 5);
  auto& fc = dynamic_cast<nn::Linear&>(model->find("fc.0"));
  CHECK(dynamic_cast<WeightQuant*>(fc.weight_transform())->spec().bits == 6);
}

// ---------------------------------------------------------------- checkpoints

TEST_CASE("QAT checkpoint round trip: load_model rebuilds the prepared model exactly") {
  auto model = nn::make_model("resnet20", 10, 18);
  QatConfig cfg;
  cfg.add_inputs = AddInputs::tied;
  prepare(*model, cfg);
  model->train();
  for (int i = 0; i < 3; ++i) model->forward(random_input({4, 3, 8, 8}, 19 + i));
  apply_phase(*model, QatPhase{.fake_quant = true});
  model->forward(random_input({4, 3, 8, 8}, 30));

  Checkpoint ck;
  ck.meta["model"] = "resnet20";
  ck.meta["classes"] = "10";
  ck.meta["preprocess.mode"] = "standard";
  ck.meta["preprocess.scale"] = "1,1,1";
  ck.meta["preprocess.offset"] = "0,0,0";
  for (auto& [n, t] : model->named_state()) ck.tensors.emplace_back("model." + n, t);
  write_qat_meta(*model, cfg, ck);
  CHECK(ck.meta.count("qat.op") == 1);
  CHECK(ck.meta.count("qat.observer.relu.1") == 1);
  const Checkpoint back = decode_checkpoint(encode_checkpoint(ck), "memory");
  LoadedModel lm = load_model(back);
  REQUIRE(lm.qat.has_value());
  CHECK(lm.qat->to_kv() == cfg.to_kv());
  // same outputs in eval, bit for bit
  model->eval();
  lm.model->eval();
  NoGradGuard ng;
  Tensor x = random_input({2, 3, 8, 8}, 31);
  CHECK(max_abs_diff(model->forward(x), lm.model->forward(x)) == 0.0f);
  // same observer state: one more training observation gives the same range
  auto& a = dynamic_cast<ActQuant&>(model->find("layer2.0.relu1.1"));
  auto& b = dynamic_cast<ActQuant&>(lm.model->find("layer2.0.relu1.1"));
  CHECK(a.observer()->state().encode() == b.observer()->state().encode());
  CHECK(b.fake_quant_enabled());
  // a float checkpoint loads as a float model
  Checkpoint fck = back;
  fck.tensors.clear();
  for (auto it = fck.meta.begin(); it != fck.meta.end();)
    it = it->first.rfind("qat.", 0) == 0 ? fck.meta.erase(it) : std::next(it);
  auto fmodel = nn::make_model("resnet20", 10, 0);
  for (auto& [n, t] : fmodel->named_state()) fck.tensors.emplace_back("model." + n, t);
  LoadedModel fl = load_model(fck);
  CHECK_FALSE(fl.qat.has_value());
  CHECK_FALSE(is_prepared(*fl.model));
  // a QAT config against float tensors: a clear error
  Checkpoint mixed = fck;
  mixed.meta["qat.op"] = "qdq_v2";
  CHECK_THROWS_WITH_AS(load_model(mixed), doctest::Contains("missing"), std::runtime_error);
}

namespace {

void check_qat_resume(RoundMode round) {
  CAPTURE(round_mode_name(round));
  const Dataset data = learnable_dataset(48, 20);
  const fs::path dir = fs::temp_directory_path() /
                       ("octet_test_qat_resume_" + std::string(round_mode_name(round)) + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  QatConfig q;
  q.quant_delay = 0.25;  // inside epoch 1 of 2
  q.round = round;
  auto run = [&](const std::string& out, int epochs, bool resume) {
    nn::TrainConfig tc;
    tc.epochs = 2;
    tc.batch = 8;
    tc.progress = false;
    tc.seed = 4;
    tc.out = out;
    tc.resume = resume;  // fit() resumes, after the hooks below are set
    auto model = nn::make_model("resnet20", 4, tc.seed);
    prepare(*model, q);
    nn::Trainer t(tc, data, nullptr, model);
    attach_qat(t, q);
    if (epochs == 1) {
      // run only the first epoch: a second trainer object with epochs 1 would change the schedule,
      // so stop by throwing from the hook at the first step of epoch 2
      auto inner = t.on_step_begin;
      t.on_step_begin = [&, inner, spe = t.steps_per_epoch()](int64_t step) {
        if (step == spe) throw std::runtime_error("stop");
        inner(step);
      };
      CHECK_THROWS_WITH(t.fit(), "stop");
    } else {
      t.fit();
    }
    return model;
  };
  auto full = run((dir / "a").string(), 2, false);
  run((dir / "b").string(), 1, false);
  auto resumed = run((dir / "b").string(), 2, true);
  const auto sa = full->named_state(), sb = resumed->named_state();
  REQUIRE(sa.size() == sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    CAPTURE(sa[i].first);
    CHECK(max_abs_diff(sa[i].second, sb[i].second) == 0.0f);
  }
  // a different QAT config refuses to resume
  {
    QatConfig other = q;
    other.weight_bits = 4;
    nn::TrainConfig tc;
    tc.epochs = 2;
    tc.batch = 8;
    tc.progress = false;
    tc.seed = 4;
    tc.out = (dir / "b").string();
    auto model = nn::make_model("resnet20", 4, tc.seed);
    prepare(*model, other);
    nn::Trainer t(tc, data, nullptr, model);
    for (auto& [k, v] : other.to_kv()) t.extra_config["qat." + k] = v;
    CHECK_THROWS_WITH_AS(t.resume(), doctest::Contains("qat.weight_bits"), std::runtime_error);
  }
  fs::remove_all(dir);
}

}  // namespace

TEST_CASE("QAT resume: stop after epoch 1 and resume == uninterrupted") { check_qat_resume(RoundMode::half_to_even); }

TEST_CASE("QAT resume with stochastic rounding: the draws are keyed by the step, so resume == uninterrupted") {
  check_qat_resume(RoundMode::stochastic);
}

// ---------------------------------------------------------------- more knobs

TEST_CASE("unsigned activations: ReLU outputs unsigned, tensors that can be negative stay signed") {
  auto model = nn::make_model("resnet20", 10, 21);
  QatConfig c;
  c.signed_activations = false;
  prepare(*model, c);
  model->train();
  model->forward(random_input({4, 3, 8, 8}, 21));
  auto grid = [&](const char* n) { return dynamic_cast<ActQuant&>(model->find(n)).params(); };
  CHECK(grid("relu.1").qmin == 0);
  CHECK(grid("layer1.0.relu1.1").qmax == 255);
  CHECK(grid("layer1.0.relu2.1").qmin == 0);
  CHECK(grid("avgpool.1").qmin == 0);
  CHECK(grid("layer1.0.bn2.1").qmin == -128);
  CHECK(grid("fc.1").qmin == -128);
}

TEST_CASE("range given: fixed grid, nothing observed") {
  auto model = nn::make_model("resnet20", 10, 22);
  QatConfig c;
  c.range_given = true;
  c.range_min = -4;
  c.range_max = 4;
  prepare(*model, c);
  model->train();
  apply_phase(*model, QatPhase{.fake_quant = true});
  model->forward(random_input({4, 3, 8, 8}, 22, 5.0f));
  for (auto& [n, a] : act_quants(*model)) {
    CAPTURE(n);
    CHECK(a->observer() == nullptr);
    CHECK(a->observer_frozen());
    CHECK(a->range().min == -4.0f);
    CHECK(a->range().max == 4.0f);
    CHECK(a->params().scale == doctest::Approx(4.0f / 127));
  }
}

TEST_CASE("frozen observers keep their range; EMA moves otherwise") {
  QatConfig cfg;  // ema 0.999
  ActQuant aq(QuantizerSpec{}, cfg);
  aq.train();
  aq.forward(random_input({100}, 23));
  const Range r0 = aq.range();
  aq.forward(random_input({100}, 24, 10.0f));
  const Range r1 = aq.range();
  CHECK(r1.max > r0.max);
  CHECK(r1.max < r0.max + 0.01f * 40.0f);  // a small EMA step, not the new max
  aq.freeze_observer(true);
  aq.forward(random_input({100}, 25, 100.0f));
  CHECK(aq.range().max == r1.max);
}

TEST_CASE("LSQ: the steps are parameters, initialized on the switch and trained") {
  auto model = nn::make_model("resnet20", 10, 26);
  QatConfig c;
  c.op = QuantOp::lsq;
  c.weight_bits = c.act_bits = 4;
  prepare(*model, c);
  int steps = 0;
  for (auto& [n, t] : model->named_parameters())
    if (n.size() > 5 && n.substr(n.size() - 5) == ".step") ++steps;
  // one per ConvBn, the fc, and every ActQuant but the average pool (a follower):
  // stem 1 + 9 blocks x 3 + 2 projections + logits 1
  CHECK(conv_bns(*model).size() == 21);
  CHECK(steps == 21 + 1 + 1 + 27 + 2 + 1);
  model->train();
  model->forward(random_input({4, 3, 8, 8}, 26));
  apply_phase(*model, QatPhase{.fake_quant = true});
  Tensor loss = mean(model->forward(random_input({4, 3, 8, 8}, 27)));
  loss.backward();
  auto& stem = dynamic_cast<ActQuant&>(model->find("relu.1"));
  const QuantParams p = stem.params();
  CHECK(p.qmin == -8);
  CHECK(p.qmax == 7);
  CHECK(p.scale == doctest::Approx(stem.range().max / 7).epsilon(1e-5));
  Tensor g;
  for (auto& [n, t] : model->named_parameters())
    if (n == "relu.1.step") g = t.grad();
  REQUIRE(g.defined());
  CHECK(g.data()[0] != 0.0f);
}

TEST_CASE("stochastic rounding and fake_quant op run end to end") {
  for (QuantOp op : {QuantOp::fake_quant, QuantOp::qdq_v2}) {
    auto model = nn::make_model("resnet20", 10, 28);
    QatConfig c;
    c.op = op;
    c.round = RoundMode::stochastic;
    c.add_inputs = AddInputs::tied;
    prepare(*model, c);
    model->train();
    apply_phase(*model, QatPhase{.fake_quant = true});
    Tensor y = model->forward(random_input({4, 3, 8, 8}, 28));
    mean(y).backward();
    for (int64_t i = 0; i < y.numel(); ++i) REQUIRE(std::isfinite(y.data()[i]));
    const QuantParams p = dynamic_cast<ActQuant&>(model->find("fc.1")).params();
    CHECK(on_grid(y.data(), y.numel(), p));
  }
}

TEST_CASE("ActQuant's min/max shortcut gives the observers exactly the state of a full observe") {
  for (const char* kind : {"ema", "minmax"}) {
    CAPTURE(kind);
    QatConfig cfg;
    cfg.act_observer.kind = kind;
    ActQuant aq(QuantizerSpec{}, cfg);
    aq.train();
    ObserverConfig oc = cfg.act_observer;
    auto ref = make_observer(oc);
    for (int i = 0; i < 4; ++i) {
      // odd sizes (vector tails), different spreads
      Tensor x = random_input({3, 5, 7, 11 + i}, 40 + i, 1.0f + i);
      aq.forward(x);
      ref->observe(x);
    }
    CHECK(aq.observer()->state().encode() == ref->state().encode());
    // a NaN still throws, naming the offset
    Tensor bad = random_input({2, 3, 4, 4}, 50);
    bad.data()[37] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH_AS(aq.forward(bad), doctest::Contains("37"), std::invalid_argument);
    bad.data()[37] = std::numeric_limits<float>::infinity();
    CHECK_THROWS_AS(aq.forward(bad), std::invalid_argument);
  }
}
