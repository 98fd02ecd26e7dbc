// tests/quant/tiny_resnet.h: the small prepared model the quant suites share:
// a ResNet-8 with random weights and BN statistics away from the identity,
// smooth random images, and PTQ calibration on them (test_export.cpp,
// test_analysis.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/augment.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "nn/resnet.h"
#include "quant/qat.h"

namespace octet::testing {

inline constexpr int kImage = 32;

// A ResNet-8 with 8/16/32 channels: every op type of a CIFAR ResNet
// (identity and projection shortcuts) at a size a test can afford.
inline std::shared_ptr<nn::ResNet> tiny_resnet(uint64_t seed) {
  nn::ResNetConfig c;
  c.name = "resnet8-test";
  c.blocks = {1, 1, 1};
  c.widths = {8, 16, 32};
  c.stem_channels = 8;
  c.num_classes = 10;
  Rng rng(seed);
  auto m = std::make_shared<nn::ResNet>(c, rng);
  // BN statistics and affine parameters away from the identity, so folding matters.
  for (auto& [name, mod] : m->named_modules()) {
    auto* bn = dynamic_cast<nn::BatchNorm2d*>(mod);
    if (!bn) continue;
    for (int i = 0; i < bn->channels; ++i) {
      bn->weight().data()[i] = rng.uniform(0.6f, 1.4f);
      bn->bias().data()[i] = rng.uniform(-0.2f, 0.2f);
      bn->running_mean().data()[i] = rng.uniform(-0.3f, 0.3f);
      bn->running_var().data()[i] = rng.uniform(0.5f, 2.0f);
    }
  }
  return m;
}

// Smooth random images (a few sinusoids plus noise), uint8 CHW.
inline std::vector<uint8_t> random_images(int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint8_t> px(static_cast<size_t>(n) * 3 * kImage * kImage);
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c) {
      const float fx = rng.uniform(0.05f, 0.5f), fy = rng.uniform(0.05f, 0.5f), ph = rng.uniform(0.0f, 6.28f);
      const float base = rng.uniform(60.0f, 190.0f), amp = rng.uniform(20.0f, 70.0f);
      for (int y = 0; y < kImage; ++y)
        for (int x = 0; x < kImage; ++x) {
          const float v = base + amp * std::sin(fx * x + fy * y + ph) + rng.uniform(-20.0f, 20.0f);
          px[((static_cast<size_t>(i) * 3 + c) * kImage + y) * kImage + x] =
              static_cast<uint8_t>(std::lround(std::fmin(255.0f, std::fmax(0.0f, v))));
        }
    }
  return px;
}

inline Tensor preprocess_batch(const std::vector<uint8_t>& chw, int first, int n, const Preprocess& pre) {
  Tensor x = Tensor::empty({n, 3, kImage, kImage});
  const size_t per = 3 * kImage * kImage;
  for (int i = 0; i < n; ++i)
    preprocess_image(chw.data() + (first + i) * per, x.data() + i * per, 3, kImage, kImage, pre);
  return x;
}

inline std::vector<uint8_t> to_nhwc(const std::vector<uint8_t>& chw, int n) {
  std::vector<uint8_t> r(chw.size());
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < kImage * kImage; ++p)
        r[(static_cast<size_t>(i) * kImage * kImage + p) * 3 + c] = chw[(static_cast<size_t>(i) * 3 + c) * kImage * kImage + p];
  return r;
}

struct Prepared {
  std::shared_ptr<nn::ResNet> model;
  quant::QatConfig cfg;
  Preprocess pre;
};

inline Prepared calibrated(const quant::QatConfig& cfg, PreprocessMode mode, uint64_t seed) {
  Prepared p{tiny_resnet(seed), cfg, Preprocess::make(mode)};
  const std::vector<uint8_t> calib = random_images(64, seed + 100);
  std::vector<Tensor> batches;
  for (int b = 0; b < 64; b += 32) batches.push_back(preprocess_batch(calib, b, 32, p.pre));
  quant::calibrate(*p.model, cfg, batches);
  return p;
}

}  // namespace octet::testing
