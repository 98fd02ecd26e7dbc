// Outputs identical across machines: the int8 logits of fixed ResNet-20-shaped
// models (random weights from a fixed seed, 8- and 4-bit) on fixed pixels,
// through every ISA this machine runs, equal the reference kernels' logits,
// and their hash equals the golden hash computed on x86 with the reference
// kernels. scripts/ci_arm.sh runs this under qemu-aarch64: a pass there means
// the Arm build produces the x86 bytes. (The model bytes are hashed too, so a
// difference in building the model is told apart from one in the kernels.)
//
// The model is built here rather than by engine/samples.h random_resnet:
// that one draws weights and bias in the arguments of one call, whose order
// of evaluation C++ leaves to the compiler (GCC for x86-64 and for aarch64
// differ), so it builds other models on the two machines.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "engine/builder.h"
#include "engine/engine.h"

using namespace octet::engine;

namespace {

uint64_t fnv1a(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

std::vector<uint8_t> pixels(size_t n) {
  std::vector<uint8_t> px(n);
  uint32_t state = 2026;
  for (auto& p : px) {
    state = state * 1664525u + 1013904223u;
    p = static_cast<uint8_t>(state >> 24);
  }
  return px;
}

// splitmix64, one draw per statement (a fixed order on every compiler).
struct Random {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int uniform(int lo, int hi) { return lo + static_cast<int>(next() % static_cast<uint64_t>(hi - lo + 1)); }
};

Weights weights(Random& rng, int out_c, int k, int in_c, int bits, double gain) {
  Weights w;
  w.out_c = out_c;
  w.kernel_h = w.kernel_w = k;
  w.in_c = in_c;
  w.bits = bits;
  const int wmax = (1 << (bits - 1)) - 1;
  w.values.resize(static_cast<size_t>(out_c) * k * k * in_c);
  for (int8_t& v : w.values) v = static_cast<int8_t>(rng.uniform(-wmax, wmax));
  // Per-channel scales that keep the activations' spread: gain / (std(w) sqrt(K)), +-20%.
  const double base = gain / (wmax / std::sqrt(3.0) * std::sqrt(static_cast<double>(k * k * in_c)));
  for (int c = 0; c < out_c; ++c) w.scales.push_back(base * (0.8 + 0.4 * rng.uniform(0, 1000) / 1000.0));
  return w;
}

std::vector<int32_t> bias(Random& rng, int out_c, int spread) {
  std::vector<int32_t> b(out_c);
  for (int32_t& v : b) v = rng.uniform(-spread, spread);
  return b;
}

// ResNet-20 for CIFAR (3 stages of 3 BasicBlocks, 16/32/64 channels, 1x1
// projection shortcuts), as random_resnet builds it.
std::vector<uint8_t> resnet20(int bits, uint64_t seed) {
  Random rng{seed};
  ModelBuilder b("resnet20-portable");
  const double s = 0.05;
  const OutQuant relu_q{s, -128}, lin_q{s, 0};
  TensorId x = b.add_input("image", 32, 32, 3, 1.0 / 64, 128);
  Weights w = weights(rng, 16, 3, 3, bits, std::sqrt(2.0) * s * 64);
  std::vector<int32_t> bb = bias(rng, 16, 200);
  x = b.add_conv("stem", x, w, bb, {.stride = 1, .pad = 1}, relu_q, Act::relu);
  int cin = 16;
  for (int stage = 0; stage < 3; ++stage) {
    const int cout = 16 << stage;
    for (int blk = 0; blk < 3; ++blk) {
      const int stride = (stage > 0 && blk == 0) ? 2 : 1;
      const std::string name = "layer" + std::to_string(stage + 1) + "." + std::to_string(blk);
      w = weights(rng, cout, 3, cin, bits, std::sqrt(2.0));
      bb = bias(rng, cout, 500);
      TensorId y = b.add_conv(name + ".conv1", x, w, bb, {.stride = stride, .pad = 1}, relu_q, Act::relu);
      w = weights(rng, cout, 3, cout, bits, 0.7);
      bb = bias(rng, cout, 500);
      y = b.add_conv(name + ".conv2", y, w, bb, {.stride = 1, .pad = 1}, lin_q);
      TensorId shortcut = x;
      if (stride != 1 || cin != cout) {
        w = weights(rng, cout, 1, cin, bits, 0.7);
        bb = bias(rng, cout, 100);
        shortcut = b.add_conv(name + ".shortcut", x, w, bb, {.stride = stride, .pad = 0}, lin_q);
      }
      x = b.add_add(name + ".add", y, shortcut, relu_q, Act::relu);
      cin = cout;
    }
  }
  x = b.add_global_avg_pool("pool", x);
  w = weights(rng, 10, 1, cin, bits, 1.0);
  bb = bias(rng, 10, 1000);
  b.set_output(b.add_fc("fc", x, w, bb, {0.1, 0}));
  return b.serialize();
}

struct Golden {
  int bits;
  uint64_t model, logits;
};

}  // namespace

TEST_CASE("ResNet-20-shaped int8 logits: every ISA, and the golden hash of x86") {
  const Isa all[] = {Isa::reference, Isa::avx2, Isa::avx512_vnni, Isa::amx, Isa::neon, Isa::neon_dot};
  // Computed on x86-64 with Isa::reference (the oracle); see the file comment.
  const Golden golden[] = {
      {8, 13073033681492233555ull, 15214966291903066414ull},
      {4, 14298964072711038441ull, 248073781188767503ull},
  };
  constexpr int kBatch = 3;
  for (const Golden& g : golden) {
    const std::vector<uint8_t> bytes = resnet20(g.bits, 7);
    const auto model = Model::from_bytes(bytes, "resnet20");
    const std::vector<uint8_t> px = pixels(model->input_bytes() * kBatch);

    Session ref(model, kBatch, Isa::reference);
    const std::span<const int8_t> out = ref.run(px.data(), kBatch);
    const std::vector<int8_t> want(out.begin(), out.end());
    const uint64_t model_hash = fnv1a(bytes.data(), bytes.size());
    const uint64_t logits_hash = fnv1a(want.data(), want.size());
    MESSAGE("bits " << g.bits << ": model hash " << model_hash << ", logits hash " << logits_hash);
    CHECK_MESSAGE(model_hash == g.model, "the model's bytes differ from x86's (its offline double math)");
    CHECK(logits_hash == g.logits);
    // The logits are not degenerate (a constant output would hash the same everywhere).
    CHECK(std::set<int8_t>(want.begin(), want.end()).size() > 5);

    for (Isa isa : all) {
      if (isa == Isa::reference || !isa_supported(isa)) continue;
      INFO("isa " << isa_name(isa));
      Session s(model, kBatch, isa);
      const std::span<const int8_t> got = s.run(px.data(), kBatch);
      CHECK(std::vector<int8_t>(got.begin(), got.end()) == want);
      const std::span<const int8_t> one = s.run(px.data() + model->input_bytes(), 1);  // image 1 alone
      CHECK(std::vector<int8_t>(one.begin(), one.end()) ==
            std::vector<int8_t>(want.begin() + model->num_classes(), want.begin() + 2 * model->num_classes()));
    }
  }
}
