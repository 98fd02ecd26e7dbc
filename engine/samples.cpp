// engine/samples.cpp: synthetic models (see samples.h).
#include "engine/samples.h"

#include <cmath>
#include <string>
#include <vector>

namespace octet::engine {

namespace {

// splitmix64: a small deterministic generator, enough for random weights.
class Random {
 public:
  explicit Random(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int uniform_int(int lo, int hi) { return lo + static_cast<int>(next() % static_cast<uint64_t>(hi - lo + 1)); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * static_cast<double>(next() >> 11) / 9007199254740992.0; }

 private:
  uint64_t s_;
};

// Random symmetric weights of `bits` bits (narrow range [-(2^(b-1)-1), 2^(b-1)-1])
// with per-channel scales that keep the output spread equal to the input's
// when input and output share a scale: s_w[c] ~ gain / (std(w_q) sqrt(K)).
Weights random_weights(Random& rng, int out_c, int kh, int kw, int in_c, int bits, double gain) {
  Weights w;
  w.out_c = out_c;
  w.kernel_h = kh;
  w.kernel_w = kw;
  w.in_c = in_c;
  w.bits = bits;
  const int wmax = (1 << (bits - 1)) - 1;
  w.values.resize(static_cast<size_t>(out_c) * kh * kw * in_c);
  for (int8_t& v : w.values) v = static_cast<int8_t>(rng.uniform_int(-wmax, wmax));
  const double k = static_cast<double>(kh) * kw * in_c;
  const double std_w = wmax / std::sqrt(3.0);
  for (int c = 0; c < out_c; ++c) w.scales.push_back(gain / (std_w * std::sqrt(k)) * rng.uniform(0.8, 1.2));
  return w;
}

std::vector<int32_t> random_bias(Random& rng, int out_c, int spread) {
  std::vector<int32_t> b(out_c);
  for (int32_t& v : b) v = rng.uniform_int(-spread, spread);
  return b;
}

// Weights then bias, drawn in this order on every compiler: the elements of a
// braced initializer are evaluated left to right, whereas two arguments of one
// call are not (the same seed must give the same model on x86 and Arm).
struct Layer {
  Weights w;
  std::vector<int32_t> bias;
};
Layer random_layer(Random& rng, int out_c, int kh, int kw, int in_c, int bits, double gain, int spread) {
  return Layer{random_weights(rng, out_c, kh, kw, in_c, bits, gain), random_bias(rng, out_c, spread)};
}

}  // namespace

ModelBuilder random_resnet(const ResNetSpec& spec) {
  Random rng(spec.seed);
  const int nb = spec.blocks_per_stage;
  ModelBuilder b("resnet" + std::to_string(6 * nb + 2) + "-random");
  b.set_preprocessing("inception: real = (pixel - 128) / 64");
  // Activations: a single scale; outputs of a ReLU are int8 with zero point
  // -128 (the unsigned range), the others are centred (zero point 0).
  const double s = 0.05;
  const OutQuant relu_q{s, -128}, lin_q{s, 0};
  TensorId x = b.add_input("image", spec.image, spec.image, 3, 1.0 / 64, 128);
  const double relu_gain = std::sqrt(2.0) * 0.05 / (1.0 / 64);  // the stem maps the input scale to s
  const Layer l1 = random_layer(rng, spec.width, 3, 3, 3, spec.bits, relu_gain, 200);
  x = b.add_conv("stem", x, l1.w, l1.bias,
                 {.stride = 1, .pad = 1}, relu_q, Act::relu);
  int cin = spec.width;
  for (int stage = 0; stage < 3; ++stage) {
    const int cout = spec.width << stage;
    for (int blk = 0; blk < nb; ++blk) {
      const int stride = (stage > 0 && blk == 0) ? 2 : 1;
      const std::string name = "layer" + std::to_string(stage + 1) + "." + std::to_string(blk);
      const Layer l2 = random_layer(rng, cout, 3, 3, cin, spec.bits, std::sqrt(2.0), 500);
      TensorId y = b.add_conv(name + ".conv1", x, l2.w, l2.bias, {.stride = stride, .pad = 1}, relu_q, Act::relu);
      const Layer l3 = random_layer(rng, cout, 3, 3, cout, spec.bits, 0.7, 500);
      y = b.add_conv(name + ".conv2", y, l3.w, l3.bias,
                     {.stride = 1, .pad = 1}, lin_q);
      TensorId shortcut = x;
      if (stride != 1 || cin != cout) {
        const Layer l4 = random_layer(rng, cout, 1, 1, cin, spec.bits, 0.7, 100);
        shortcut = b.add_conv(name + ".shortcut", x, l4.w, l4.bias, {.stride = stride, .pad = 0}, lin_q);
      }
      x = b.add_add(name + ".add", y, shortcut, relu_q, Act::relu);
      cin = cout;
    }
  }
  x = b.add_global_avg_pool("pool", x);
  // Logits: wider range (scale 0.1) so the 10 classes spread over int8.
  const Layer l5 = random_layer(rng, spec.classes, 1, 1, cin, spec.bits, 1.0, 1000);
  b.set_output(b.add_fc("fc", x, l5.w, l5.bias, {0.1, 0}));
  std::vector<std::string> names;
  for (int c = 0; c < spec.classes; ++c) names.push_back("class" + std::to_string(c));
  b.set_class_names(names);
  return b;
}

ModelBuilder tiny_model(uint64_t seed, int bits) {
  Random rng(seed);
  ModelBuilder b("tiny");
  TensorId x = b.add_input("image", 8, 8, 3, 1.0 / 255, 0);
  // conv 3x3 pad 1 -> [8,8,8], ReLU into uint8 (zero point 0: the unsigned range).
  const Layer l6 = random_layer(rng, 8, 3, 3, 3, bits, 1.4, 300);
  TensorId c1 = b.add_conv("conv1", x, l6.w, l6.bias,
                           {.stride = 1, .pad = 1}, {0.04, 0, DType::uint8}, Act::relu);
  // depthwise 3x3 stride 2 -> [4,4,8], relu6
  const Layer l7 = random_layer(rng, 8, 3, 3, 1, bits, 1.4, 100);
  TensorId dw = b.add_conv("dw", c1, l7.w, l7.bias,
                           {.stride = 2, .pad = 1, .groups = 8}, {0.03, -128}, Act::relu6);
  TensorId mp = b.add_pool("maxpool", c1, ModelBuilder::Pool::max, 2, 2);  // [4,4,8] uint8
  TensorId pw = b.add_conv("pw", mp, random_weights(rng, 8, 1, 1, 8, bits, 1.0), {}, {}, {0.05, 3});
  TensorId sum = b.add_add("add", dw, pw, {0.06, -10}, Act::relu);
  TensorId ap = b.add_pool("avgpool", sum, ModelBuilder::Pool::avg, 3, 1, 1);  // [4,4,8]
  TensorId g = b.add_global_avg_pool("gap", ap);                              // [8]
  const Layer l8 = random_layer(rng, 5, 1, 1, 8, bits, 1.0, 200);
  b.set_output(b.add_fc("fc", g, l8.w, l8.bias, {0.1, 2}));
  b.set_class_names({"a", "b", "c", "d", "e"});
  return b;
}

ModelBuilder hand_model(const std::string& name) {
  ModelBuilder b(name);
  TensorId x = b.add_input("px", 2, 2, 1, 1.0, 128);
  Weights w1;
  w1.out_c = 1;
  w1.in_c = 1;
  w1.values = {2};
  w1.scales = {1.0};
  x = b.add_conv("conv", x, w1, {10}, {}, {1.0, 0}, Act::none, std::vector<QuantizedMultiplier>{{1 << 30, 0}});
  x = b.add_global_avg_pool("gap", x);
  Weights w2;
  w2.out_c = 2;
  w2.in_c = 1;
  w2.values = {3, -1};
  w2.scales = {1.0};
  b.set_output(b.add_fc("fc", x, w2, {0, 100}, {0.5, 0}, Act::none,
                        std::vector<QuantizedMultiplier>{{1 << 30, -1}, {1 << 30, -1}}));
  return b;
}

}  // namespace octet::engine
