// The bit-exact contract: quant::IntSim (plain NCHW loops + engine/fixedpoint.h)
// against the engine's Session::run (arena, prepared kernels, threads) on the
// synthetic models of engine/samples.h, image for image, plus hand-computed
// cases that pin IntSim to the documented semantics on its own.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "engine/builder.h"
#include "engine/engine.h"
#include "engine/fixedpoint.h"
#include "engine/samples.h"
#include "quant/intsim.h"

using namespace octet;
using engine::ModelBuilder;

namespace {

std::vector<uint8_t> random_pixels(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> d(0, 255);
  std::vector<uint8_t> px(n);
  for (uint8_t& p : px) p = static_cast<uint8_t>(d(rng));
  return px;
}

// Runs `images` random images through both and counts logit rows that differ.
// *distinct receives the number of distinct logit rows (the comparison means
// something only if the logits vary with the image).
int mismatches(const ModelBuilder& b, int images, int batch, uint64_t seed, int* distinct = nullptr) {
  const auto model = engine::Model::from_bytes(b.serialize(), b.desc().find_metadata("model_name")
                                                                   ? *b.desc().find_metadata("model_name")
                                                                   : "model");
  engine::Session session(model, batch);
  const quant::IntSim sim(b.desc());
  REQUIRE(sim.input_bytes() == model->input_bytes());
  REQUIRE(sim.num_classes() == model->num_classes());
  const int classes = sim.num_classes();
  int bad = 0;
  std::set<std::vector<int8_t>> rows;
  for (int start = 0; start < images; start += batch) {
    const int n = std::min(batch, images - start);
    const std::vector<uint8_t> px = random_pixels(static_cast<size_t>(n) * sim.input_bytes(), seed + start);
    const std::span<const int8_t> e = session.run(px.data(), n);
    const std::vector<int8_t> s = sim.run(px.data(), n);
    REQUIRE(s.size() == e.size());
    for (int i = 0; i < n; ++i) {
      bool same = true;
      for (int c = 0; c < classes; ++c) same = same && s[static_cast<size_t>(i * classes + c)] == e[static_cast<size_t>(i * classes + c)];
      bad += same ? 0 : 1;
      const auto row = e.subspan(static_cast<size_t>(i * classes), static_cast<size_t>(classes));
      rows.emplace(row.begin(), row.end());
    }
  }
  if (distinct) *distinct = static_cast<int>(rows.size());
  return bad;
}

}  // namespace

TEST_CASE("intsim == engine on random ResNets, 8 and 4 bit weights") {
  for (int bits : {8, 4}) {
    engine::ResNetSpec spec;
    spec.blocks_per_stage = 1;
    spec.width = 8;
    spec.bits = bits;
    spec.seed = 11 + bits;
    CAPTURE(bits);
    int distinct = 0;
    CHECK(mismatches(engine::random_resnet(spec), 64, 16, 1000 + bits, &distinct) == 0);
    CHECK(distinct >= 32);
  }
}

TEST_CASE("intsim == engine on ResNet-20 (random weights)") {
  engine::ResNetSpec spec;  // 3 blocks per stage, width 16: ResNet-20's shapes
  spec.seed = 5;
  CHECK(mismatches(engine::random_resnet(spec), 48, 7, 77) == 0);  // odd batch: a short last batch
}

TEST_CASE("intsim == engine on the tiny model (every op, uint8 activations), many images") {
  for (uint64_t seed : {1, 2, 3}) {
    for (int bits : {8, 5, 2}) {
      CAPTURE(seed);
      CAPTURE(bits);
      int distinct = 0;
      CHECK(mismatches(engine::tiny_model(seed, bits), 500, 32, seed * 100 + bits, &distinct) == 0);
      CHECK(distinct >= 20);
    }
  }
}

// ---- IntSim on its own, against hand-computed values ----------------------

TEST_CASE("intsim: one conv by hand") {
  // Input 1x2x1 pixels, scale 1, zp 100 (carried zp -28); conv 1x1 weight 3,
  // bias 10, weight scale 0.5, output scale 1 -> multiplier 0.5 = (2^30, 0).
  ModelBuilder b("hand");
  auto x = b.add_input("px", 1, 2, 1, 1.0, 100);
  engine::Weights w;
  w.values = {3};
  w.out_c = 1;
  w.in_c = 1;
  w.scales = {0.5};
  b.set_output(b.add_conv("c", x, w, {10}, {}, {1.0, -5}));
  const quant::IntSim sim(b.desc());
  const uint8_t px[2] = {0, 200};
  const std::vector<int8_t> y = sim.run(px, 1);
  REQUIRE(y.size() == 2);
  // pixel 0:   acc = 10 + 3 * (0 - 100) = -290; MBQM(-290, 0.5) = -145; -5 - 145 = -150 -> clamp -128
  // pixel 200: acc = 10 + 3 * 100 = 310; 155 - 5 = 150 -> clamp 127
  CHECK(y[0] == -128);
  CHECK(y[1] == 127);
  const uint8_t px2[2] = {99, 101};
  const std::vector<int8_t> y2 = sim.run(px2, 1);
  // acc = 10 - 3 = 7 -> 7 * 0.5 = 3.5 rounds (ties away) to 4: -5 + 4 = -1
  // acc = 10 + 3 = 13 -> 6.5 -> 7: -5 + 7 = 2
  CHECK(y2[0] == -1);
  CHECK(y2[1] == 2);
}

TEST_CASE("intsim: pools round the carried int8 values (uint8 tensors shifted by 128)") {
  // input 2x2x1 (scale 1, zp 0) -> 1x1 conv, weight 1, output uint8 (scale 1,
  // zp 0): the uint8 codes equal the pixels, carried as pixel - 128 ->
  // global average pool -> fc, weight 1, int8 logits (scale 1, zp 0) = the
  // pooled uint8 code.
  ModelBuilder b("pool");
  auto x = b.add_input("px", 2, 2, 1, 1.0, 0);
  engine::Weights one;
  one.values = {1};
  one.out_c = 1;
  one.in_c = 1;
  one.scales = {1.0};
  auto u = b.add_conv("c", x, one, {}, {}, {1.0, 0, engine::DType::uint8});
  auto g = b.add_global_avg_pool("gap", u);
  b.set_output(b.add_fc("fc", g, one, {}, {1.0, 0}));
  const quant::IntSim sim(b.desc());
  // Pixels {0,0,0,2}: carried {-128,-128,-128,-126}, sum -510, /4 = -127.5
  // -> -128 (ties away from zero) = uint8 code 0. Rounding the uint8 mean 0.5
  // would give 1 instead.
  const uint8_t a[4] = {0, 0, 0, 2};
  CHECK(sim.run(a, 1)[0] == 0);
  // {2,2,2,4}: carried sum -502, /4 = -125.5 -> -126 = code 2 (uint8 mean 2.5 -> 3).
  const uint8_t c[4] = {2, 2, 2, 4};
  CHECK(sim.run(c, 1)[0] == 2);
  // {0,0,1,2}: -509/4 = -127.25 -> -127 = code 1.
  const uint8_t d[4] = {0, 0, 1, 2};
  CHECK(sim.run(d, 1)[0] == 1);
}

TEST_CASE("intsim: add by hand") {
  // a and b: the two pixels minus 128, both at scale 1; the add's output
  // scale is 2, so y = round((a + b) / 2); the fc turns y back into scale 1.
  ModelBuilder bld("add");
  auto x = bld.add_input("px", 1, 1, 2, 1.0, 128);  // carried x = pixel - 128, zp 0
  engine::Weights sel0, sel1;
  sel0.values = {1, 0};
  sel1.values = {0, 1};
  for (auto* w : {&sel0, &sel1}) {
    w->out_c = 1;
    w->in_c = 2;
    w->scales = {1.0};
  }
  auto a = bld.add_conv("a", x, sel0, {}, {}, {1.0, 0});
  auto b = bld.add_conv("b", x, sel1, {}, {}, {1.0, 0});
  auto y = bld.add_add("add", a, b, {2.0, 0});
  engine::Weights id;
  id.values = {1};
  id.out_c = 1;
  id.in_c = 1;
  id.scales = {1.0};
  bld.set_output(bld.add_fc("fc", y, id, {}, {1.0, 0}));  // logit = 2 * y (multiplier 2 / 1)
  const quant::IntSim sim(bld.desc());
  // pixels (128 + 3, 128 + 4): a = 3, b = 4, (a + b) / 2 = 3.5 -> 4 (the
  // left-shifted sum is exact, the one rounding ties away from zero); fc: 2 * 4 = 8.
  const uint8_t p1[2] = {131, 132};
  CHECK(sim.run(p1, 1)[0] == 8);
  // a = -3, b = -4: -3.5 -> -4; fc: -8.
  const uint8_t p2[2] = {125, 124};
  CHECK(sim.run(p2, 1)[0] == -8);
  // a = 10, b = -3: 3.5 -> 4 -> 8.
  const uint8_t p3[2] = {138, 125};
  CHECK(sim.run(p3, 1)[0] == 8);
}

TEST_CASE("intsim refuses a model the engine would refuse") {
  engine::ModelBuilder b = engine::tiny_model(1);
  engine::ModelDesc d = b.desc();
  // Break the headroom: a huge bias on the first conv.
  for (auto& op : d.ops)
    if (op.type == engine::OpType::conv2d) {
      d.tensors[op.inputs[2]].i32[0] = 2147483000;
      break;
    }
  CHECK_THROWS_AS(quant::IntSim{d}, engine::FormatError);
}
