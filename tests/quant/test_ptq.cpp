// Tests of the PTQ extras of quant/qat.h: cross-layer equalization and bias
// correction (Nagel et al. 2019), and calibration with them.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>

#include "quant/qat.h"

using namespace octet;
using namespace octet::quant;

namespace {

Tensor random_input(const Shape& s, uint64_t seed, float std = 1.0f, float shift = 0.0f) {
  Rng rng(seed, 3);
  Tensor t = Tensor::randn(s, rng, std);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] += shift;
  return t;
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

// Uneven BN scales per channel: the situation CLE is for.
void randomize_all_bn(nn::Module& m, uint64_t seed) {
  for (auto& [n, mod] : m.named_modules())
    if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(mod)) {
      Rng rng(seed++, 9);
      for (int c = 0; c < bn->channels; ++c) {
        bn->weight().data()[c] = rng.uniform(0.05f, 3.0f);
        bn->bias().data()[c] = rng.uniform(-0.5f, 0.5f);
        bn->running_mean().data()[c] = rng.uniform(-0.3f, 0.3f);
        bn->running_var().data()[c] = rng.uniform(0.3f, 2.0f);
      }
    }
}

std::vector<float> out_channel_ranges(const Tensor& w) {
  const int64_t c = w.dim(0), inner = w.numel() / c;
  std::vector<float> r(static_cast<size_t>(c), 0.0f);
  for (int64_t i = 0; i < c; ++i)
    for (int64_t k = 0; k < inner; ++k) r[i] = std::max(r[i], std::fabs(w.data()[i * inner + k]));
  return r;
}

std::vector<float> in_channel_ranges(const Tensor& w) {
  const int64_t o = w.dim(0), c = w.dim(1), kk = w.dim(2) * w.dim(3);
  std::vector<float> r(static_cast<size_t>(c), 0.0f);
  for (int64_t a = 0; a < o; ++a)
    for (int64_t i = 0; i < c; ++i)
      for (int64_t k = 0; k < kk; ++k) r[i] = std::max(r[i], std::fabs(w.data()[(a * c + i) * kk + k]));
  return r;
}

}  // namespace

TEST_CASE("cross-layer equalization keeps the float function and equalizes the ranges") {
  for (const char* name : {"resnet20", "bottleneck"}) {
    CAPTURE(name);
    std::shared_ptr<nn::ResNet> model;
    if (std::string(name) == "resnet20") {
      model = nn::make_model("resnet20", 10, 1);
    } else {
      nn::ResNetConfig c;
      c.name = "tiny_bottleneck";
      c.bottleneck = true;
      c.blocks = {1, 1};
      c.widths = {4, 8};
      c.stem_channels = 8;
      Rng rng(1);
      model = std::make_shared<nn::ResNet>(c, rng);
    }
    randomize_all_bn(*model, 1);
    prepare(*model, QatConfig{});
    model->eval();
    NoGradGuard ng;
    Tensor x = random_input({2, 3, 8, 8}, 2);
    Tensor before = model->forward(x);
    const int pairs = equalize_cross_layer(*model);
    CHECK(pairs == (std::string(name) == "resnet20" ? 9 : 4));
    Tensor after = model->forward(x);
    CHECK(max_abs_diff(before, after) < 1e-4f * std::max(1.0f, max_abs(before)));
    // conv1's output channel i and conv2's input channel i now have the same range
    auto& a = dynamic_cast<ConvBn&>(model->find("layer1.0.conv1"));
    auto& b = dynamic_cast<ConvBn&>(model->find("layer1.0.conv2"));
    const auto r1 = out_channel_ranges(a.folded_weight());
    const auto r2 = in_channel_ranges(b.folded_weight());
    for (size_t i = 0; i < r1.size(); ++i) CHECK(r1[i] == doctest::Approx(r2[i]).epsilon(1e-3));
  }
}

TEST_CASE("bias correction removes the mean output shift of weight quantization (1x1 conv, exact)") {
  Rng rng(3);
  auto conv = std::make_shared<nn::Conv2d>(6, 4, 1, 1, 0, false, rng);
  auto bn = std::make_shared<nn::BatchNorm2d>(4);
  QuantizerSpec s;
  s.bits = 3;  // coarse: a visible shift
  s.narrow = true;
  auto cb = std::make_shared<ConvBn>(conv, bn, s, true);
  nn::Sequential net;
  net.append(cb);
  net.eval();
  NoGradGuard ng;
  Tensor x = random_input({8, 6, 5, 5}, 4, 1.0f, 0.7f);  // inputs with a nonzero mean
  Tensor yf = cb->forward(x);                            // float weights
  cb->collect_input_mean(true);
  cb->forward(x);
  cb->collect_input_mean(false);
  cb->weight_quant().set_fake_quant(true);
  Tensor yq_raw = cb->forward(x);
  correct_bias(net);
  Tensor yq = cb->forward(x);
  auto mean_shift = [&](const Tensor& y, int c) {
    double d = 0;
    int64_t n = 0;
    for (int64_t i = 0; i < 8; ++i)
      for (int64_t k = 0; k < 25; ++k, ++n) d += y.data()[(i * 4 + c) * 25 + k] - yf.data()[(i * 4 + c) * 25 + k];
    return d / static_cast<double>(n);
  };
  double raw = 0;
  for (int c = 0; c < 4; ++c) {
    raw = std::max(raw, std::fabs(mean_shift(yq_raw, c)));
    CHECK(std::fabs(mean_shift(yq, c)) < 1e-5);
  }
  CHECK(raw > 1e-3);  // there was a shift to correct
}

TEST_CASE("bias correction of a Linear removes the mean output shift of weight quantization") {
  Rng rng(5);
  nn::Linear fc(6, 4, true, rng);
  QuantizerSpec s;
  s.bits = 3;
  s.narrow = true;
  auto wq = std::make_shared<WeightQuant>(s, true, 4);
  fc.set_weight_transform(wq);
  NoGradGuard ng;
  Tensor x = random_input({32, 6}, 8, 1.0f, 0.6f);  // features with a nonzero mean
  Tensor yf = fc.forward(x);                        // fake quant still off: float weights
  std::vector<double> mean(6, 0.0);
  for (int64_t r = 0; r < 32; ++r)
    for (int64_t i = 0; i < 6; ++i) mean[static_cast<size_t>(i)] += x.data()[r * 6 + i] / 32.0;
  wq->set_fake_quant(true);
  Tensor yq_raw = fc.forward(x);
  correct_bias(fc, mean);
  Tensor yq = fc.forward(x);
  double raw = 0;
  for (int o = 0; o < 4; ++o) {
    double d_raw = 0, d = 0;
    for (int64_t r = 0; r < 32; ++r) {
      d_raw += (yq_raw.data()[r * 4 + o] - yf.data()[r * 4 + o]) / 32.0;
      d += (yq.data()[r * 4 + o] - yf.data()[r * 4 + o]) / 32.0;
    }
    raw = std::max(raw, std::fabs(d_raw));
    CHECK(std::fabs(d) < 1e-5);
  }
  CHECK(raw > 1e-3);
  CHECK_THROWS_AS(correct_bias(fc, std::vector<double>(5, 0.0)), std::invalid_argument);
  nn::Linear plain(6, 4, true, rng);
  CHECK_THROWS_AS(correct_bias(plain, mean), std::logic_error);  // no WeightQuant: not prepared
}

TEST_CASE("calibrate corrects the fc bias only when asked") {
  std::vector<Tensor> batches = {random_input({16, 3, 8, 8}, 5)};
  auto fc_bias = [&](bool bc) {
    auto model = nn::make_model("resnet20", 10, 7);
    QatConfig cfg;
    cfg.weight_bits = 4;
    cfg.act_observer.kind = "minmax";
    cfg.bias_correction = bc;
    calibrate(*model, cfg, batches);
    Tensor b = dynamic_cast<nn::Linear&>(model->find("fc.0")).bias();
    return std::vector<float>(b.data(), b.data() + b.numel());
  };
  const std::vector<float> off = fc_bias(false), on = fc_bias(true);
  auto fresh = nn::make_model("resnet20", 10, 7);
  Tensor b0 = dynamic_cast<nn::Linear&>(fresh->find("fc")).bias();
  float moved = 0;
  for (size_t o = 0; o < off.size(); ++o) {
    CHECK(off[o] == b0.data()[o]);  // without bias correction the fc bias is untouched
    moved = std::max(moved, std::fabs(on[o] - off[o]));
  }
  CHECK(moved > 1e-6f);
}

TEST_CASE("calibrate with CLE and bias correction: 4-bit weights closer to float") {
  std::vector<Tensor> batches = {random_input({16, 3, 8, 8}, 5), random_input({16, 3, 8, 8}, 6)};
  auto error = [&](bool cle, bool bc) {
    auto fmodel = nn::make_model("resnet20", 10, 7);
    randomize_all_bn(*fmodel, 7);
    auto model = nn::make_model("resnet20", 10, 7);
    randomize_all_bn(*model, 7);
    QatConfig cfg;
    cfg.weight_bits = 4;
    cfg.quantize_activations = false;  // isolate the weights
    cfg.quantize_output = false;
    cfg.act_observer.kind = "minmax";
    cfg.cross_layer_equalization = cle;
    cfg.bias_correction = bc;
    calibrate(*model, cfg, batches);
    fmodel->eval();
    model->eval();
    NoGradGuard ng;
    double e = 0;
    for (auto& x : batches) {
      Tensor d = sub(model->forward(x), fmodel->forward(x));
      for (int64_t i = 0; i < d.numel(); ++i) e += static_cast<double>(d.data()[i]) * d.data()[i];
    }
    return e;
  };
  const double plain = error(false, false), cle = error(true, false), both = error(true, true);
  MESSAGE("squared logit error: plain " << plain << ", CLE " << cle << ", CLE + bias correction " << both);
  CHECK(cle < plain);
  CHECK(both < plain);
}
