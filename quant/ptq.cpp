// quant/ptq.cpp: calibrate, equalize_cross_layer, correct_bias.
#include "quant/ptq.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/loader.h"
#include "nn/trainer.h"
#include "quant/qat_modules.h"
#include "quant/qat_prepare.h"
#include "quant/qat_schedule.h"

namespace octet::quant {

int equalize_cross_layer(nn::ResNet& model, int iterations) {
  if (!is_prepared(model)) throw std::logic_error("equalize_cross_layer: the model is not prepared");
  const auto& rc = model.config();
  std::vector<std::pair<ConvBn*, ConvBn*>> pairs;
  for (size_t s = 0; s < rc.blocks.size(); ++s)
    for (int b = 0; b < rc.blocks[s]; ++b) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      auto cb = [&](const char* n) { return &dynamic_cast<ConvBn&>(model.find(p + n)); };
      pairs.emplace_back(cb("conv1"), cb("conv2"));
      if (rc.bottleneck) pairs.emplace_back(cb("conv2"), cb("conv3"));
    }
  NoGradGuard ng;
  for (int it = 0; it < iterations; ++it) {
    for (auto [a, b] : pairs) {
      const Tensor wa = a->folded_weight(), wb = b->folded_weight();
      const int64_t c = a->out_channels, ia = wa.numel() / c;
      const int64_t ob = b->out_channels, kb = static_cast<int64_t>(b->kernel) * b->kernel;
      Tensor& w2 = b->weight();
      nn::BatchNorm2d& bn = a->bn();
      Tensor bias = a->bias();
      for (int64_t i = 0; i < c; ++i) {
        float r1 = 0, r2 = 0;
        for (int64_t k = 0; k < ia; ++k) r1 = std::max(r1, std::fabs(wa.data()[i * ia + k]));
        for (int64_t o = 0; o < ob; ++o)
          for (int64_t k = 0; k < kb; ++k) r2 = std::max(r2, std::fabs(wb.data()[(o * c + i) * kb + k]));
        if (!(r1 > 0) || !(r2 > 0)) continue;
        const float s = std::sqrt(r1 / r2);
        bn.weight().data()[i] /= s;
        bn.bias().data()[i] /= s;
        if (bias.defined()) bias.data()[i] /= s;
        for (int64_t o = 0; o < ob; ++o)
          for (int64_t k = 0; k < kb; ++k) w2.data()[(o * c + i) * kb + k] *= s;
      }
    }
  }
  return static_cast<int>(pairs.size());
}

namespace {
// w fake-quantized by wq, whether or not wq's fake quant is on at the moment.
Tensor quantized_weight(WeightQuant& wq, const Tensor& w) {
  const bool was = wq.fake_quant_enabled();
  wq.set_fake_quant(true);
  Tensor q = wq.forward(w);
  wq.set_fake_quant(was);
  return q;
}

// The mean output shift of quantizing w to q, for a weight [co, ci, kk] (kk = 1 for a
// Linear) and inputs of per-channel mean `mean`: sum_{c,k} (q - w)[o, c, k] * mean[c].
std::vector<double> mean_output_shift(const Tensor& w, const Tensor& q, const std::vector<double>& mean, int64_t co,
                                      int64_t ci, int64_t kk) {
  std::vector<double> shift(static_cast<size_t>(co), 0.0);
  for (int64_t o = 0; o < co; ++o) {
    double d = 0;
    for (int64_t c = 0; c < ci; ++c) {
      double e = 0;
      for (int64_t k = 0; k < kk; ++k) {
        const int64_t at = (o * ci + c) * kk + k;
        e += static_cast<double>(q.data()[at]) - static_cast<double>(w.data()[at]);
      }
      d += e * mean[static_cast<size_t>(c)];
    }
    shift[static_cast<size_t>(o)] = d;
  }
  return shift;
}
}  // namespace

void correct_bias(nn::Module& model) {
  NoGradGuard ng;
  for (auto& [name, cb] : conv_bns(model)) {
    const Tensor w = cb->folded_weight();
    const int64_t kk = static_cast<int64_t>(cb->kernel) * cb->kernel;
    const std::vector<double> shift = mean_output_shift(w, quantized_weight(cb->weight_quant(), w), cb->input_mean(),
                                                        cb->out_channels, cb->in_channels, kk);
    for (int64_t o = 0; o < cb->out_channels; ++o) cb->bn().bias().data()[o] -= static_cast<float>(shift[o]);
  }
}

void correct_bias(nn::Linear& fc, const std::vector<double>& input_mean) {
  auto* wq = dynamic_cast<WeightQuant*>(fc.weight_transform());
  if (!wq) throw std::logic_error("correct_bias: the Linear has no WeightQuant (not prepared)");
  Tensor b = fc.bias();
  if (!b.defined()) throw std::invalid_argument("correct_bias: the Linear has no bias to correct");
  if (input_mean.size() != static_cast<size_t>(fc.in_features))
    throw std::invalid_argument("correct_bias: " + std::to_string(input_mean.size()) + " input means for a Linear of " +
                                std::to_string(fc.in_features) + " inputs");
  NoGradGuard ng;
  const Tensor w = fc.weight();
  const std::vector<double> shift =
      mean_output_shift(w, quantized_weight(*wq, w), input_mean, fc.out_features, fc.in_features, 1);
  for (int64_t o = 0; o < fc.out_features; ++o) b.data()[o] -= static_cast<float>(shift[o]);
}

void calibrate(nn::ResNet& model, const QatConfig& config, const std::vector<Tensor>& batches) {
  if (batches.empty()) throw std::invalid_argument("calibrate: no calibration batches");
  if (!is_prepared(model)) prepare(model, config);
  const bool was_training = model.training();
  model.eval();
  auto aqs = act_quants(model);
  apply_phase(model, QatPhase{.fake_quant = false, .observers_frozen = false, .bn_frozen = true});
  if (config.cross_layer_equalization) equalize_cross_layer(model);
  auto cbs = conv_bns(model);
  if (config.bias_correction)
    for (auto& [n, c] : cbs) c->collect_input_mean(true);
  for (auto& [n, a] : aqs) a->set_calibrating(true);
  // The fc's input mean (bias correction) is summed on the way: a ResNet's forward is
  // its children in order, so the input of the child "fc" is the pooled features.
  auto& fc = dynamic_cast<nn::Linear&>(model.find("fc.0"));
  std::vector<double> fc_sum(static_cast<size_t>(fc.in_features), 0.0);
  int64_t fc_rows = 0;
  {
    NoGradGuard ng;
    for (const Tensor& x : batches) {
      Tensor y = x;
      for (auto& [name, child] : model.children()) {
        if (name == "fc" && config.bias_correction) {
          const int64_t rows = y.numel() / fc.in_features;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < fc.in_features; ++i)
              fc_sum[static_cast<size_t>(i)] += y.data()[r * fc.in_features + i];
          fc_rows += rows;
        }
        y = child->forward(y);
      }
    }
  }
  if (config.bias_correction) {
    for (auto& [n, c] : cbs) c->collect_input_mean(false);
    correct_bias(model);
    for (double& m : fc_sum) m /= static_cast<double>(std::max<int64_t>(fc_rows, 1));
    correct_bias(fc, fc_sum);
  }
  for (auto& [n, a] : aqs) {
    a->set_calibrating(false);
    if (!a->leader() && !a->has_range())
      throw std::runtime_error("calibrate: ActQuant '" + n + "' saw no data (is it on the forward path?)");
  }
  apply_phase(model, QatPhase{.fake_quant = true, .observers_frozen = true, .bn_frozen = true});
  model.train(was_training);
}

void calibrate(nn::ResNet& model, const QatConfig& config, const Dataset& data, const Preprocess& pre, int64_t images,
               int batch, uint64_t seed) {
  if (images < 1) throw std::invalid_argument("calibrate: images must be >= 1");
  if (batch < 1) throw std::invalid_argument("calibrate: batch must be >= 1");
  const Dataset sample = nn::take_subset(data, images, seed);
  Loader loader(sample, LoaderOptions::in_order(batch, pre));
  loader.start_epoch(0);
  std::vector<Tensor> batches;
  Batch b;
  while (loader.next(b)) batches.push_back(Tensor::from({b.n, b.c, b.h, b.w}, b.images));
  calibrate(model, config, batches);
}

}  // namespace octet::quant
