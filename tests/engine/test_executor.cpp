// The executor: a hand-computed model, the engine against an independent
// interpreter built from the reference kernels (every op type, uint8
// activations, 4-bit weights, several batch sizes, every ISA), the arena
// planner, and top-k.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <stdexcept>
#include <vector>

#include "engine/builder.h"
#include "engine/engine.h"
#include "engine/plan.h"
#include "engine/samples.h"

using namespace octet::engine;

namespace {

int32_t carry_offset(const TensorDesc& t) { return t.dtype == DType::uint8 ? 128 : 0; }
int32_t carry_zp(const TensorDesc& t) { return t.zero_point - carry_offset(t); }

// The oracle: runs the model op by op with the *_ref kernels, one plain
// vector per tensor (no arena, no prepared kernels, no threads).
std::vector<int8_t> reference_run(const ModelDesc& m, const uint8_t* px, int batch) {
  std::vector<std::vector<int8_t>> val(m.tensors.size());
  for (const OpDesc& op : m.ops) {
    const TensorDesc& x = m.tensors[op.inputs[0]];
    const TensorDesc& y = m.tensors[op.output];
    std::vector<int8_t>& out = val[op.output];
    out.assign(static_cast<size_t>(batch * y.numel()), 0);
    const auto& p = op.params;
    switch (op.type) {
      case OpType::input:
        input_u8_ref(out.size(), px, out.data());
        break;
      case OpType::conv2d:
      case OpType::fully_connected: {
        const bool conv = op.type == OpType::conv2d;
        const TensorDesc& w = m.tensors[op.inputs[1]];
        ConvGeometry g;
        g.batch = batch;
        g.out_c = static_cast<int>(w.shape[0]);
        if (conv) {
          g.in_h = static_cast<int>(x.shape[0]);
          g.in_w = static_cast<int>(x.shape[1]);
          g.in_c = static_cast<int>(x.shape[2]);
          g.kernel_h = static_cast<int>(w.shape[1]);
          g.kernel_w = static_cast<int>(w.shape[2]);
          g.stride = p[param::kStride];
          g.pad = p[param::kPad];
          g.groups = p[param::kGroups];
        } else {
          g.in_c = static_cast<int>(x.numel());
        }
        Requant rq;
        rq.multiplier = m.tensors[op.inputs[3]].i32;
        rq.shift = m.tensors[op.inputs[4]].i32;
        rq.zp_out = carry_zp(y);
        rq.act_min = p[conv ? param::kConvActMin : param::kFcActMin] - carry_offset(y);
        rq.act_max = p[conv ? param::kConvActMax : param::kFcActMax] - carry_offset(y);
        conv2d_ref(g, val[op.inputs[0]].data(), carry_zp(x), w.i8.data(), m.tensors[op.inputs[2]].i32.data(), rq,
                   out.data());
        break;
      }
      case OpType::add: {
        AddParams a;
        a.a_zp = carry_zp(x);
        a.b_zp = carry_zp(m.tensors[op.inputs[1]]);
        a.left_shift = p[param::kLeftShift];
        a.a_mult = p[param::kAMult];
        a.a_shift = p[param::kAShift];
        a.b_mult = p[param::kBMult];
        a.b_shift = p[param::kBShift];
        a.out_mult = p[param::kOutMult];
        a.out_shift = p[param::kOutShift];
        a.zp_out = carry_zp(y);
        a.act_min = p[param::kAddActMin] - carry_offset(y);
        a.act_max = p[param::kAddActMax] - carry_offset(y);
        add_ref(out.size(), val[op.inputs[0]].data(), val[op.inputs[1]].data(), a, out.data());
        break;
      }
      case OpType::max_pool:
      case OpType::avg_pool: {
        ConvGeometry g;
        g.batch = batch;
        g.in_h = static_cast<int>(x.shape[0]);
        g.in_w = static_cast<int>(x.shape[1]);
        g.in_c = g.out_c = static_cast<int>(x.shape[2]);
        g.kernel_h = p[param::kPoolKH];
        g.kernel_w = p[param::kPoolKW];
        g.stride = p[param::kPoolStride];
        g.pad = p[param::kPoolPad];
        (op.type == OpType::max_pool ? max_pool_ref : avg_pool_ref)(g, val[op.inputs[0]].data(), out.data());
        break;
      }
      case OpType::global_avg_pool:
        global_avg_pool_ref(batch, static_cast<int>(x.shape[0] * x.shape[1]), static_cast<int>(x.shape[2]),
                            val[op.inputs[0]].data(), out.data());
        break;
    }
  }
  return val[m.output];
}

std::vector<uint8_t> random_pixels(size_t n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<uint8_t> px(n);
  for (auto& p : px) p = static_cast<uint8_t>(gen());
  return px;
}

void check_against_reference(const ModelBuilder& b, int max_batch, const std::vector<int>& batches) {
  const auto model = Model::from_bytes(b.serialize(), "model");
  std::vector<Isa> isas{Isa::reference};
  if (best_isa() != Isa::reference) isas.push_back(best_isa());
  for (Isa isa : isas) {
    Session s(model, max_batch, isa);
    for (int batch : batches) {
      const auto px = random_pixels(model->input_bytes() * batch, 100 + batch);
      const std::vector<int8_t> want = reference_run(model->desc(), px.data(), batch);
      const auto got = s.run(px.data(), batch);
      INFO("isa " << isa_name(isa) << ", batch " << batch);
      REQUIRE(got.size() == want.size());
      CHECK(std::equal(got.begin(), got.end(), want.begin()));
      // The logits are not degenerate (not all equal, not all saturated).
      const auto [lo, hi] = std::minmax_element(want.begin(), want.end());
      CHECK(*lo < *hi);
    }
  }
}

}  // namespace

TEST_CASE("a model small enough to compute by hand") {
  // pixels [2,2,1] (zero point 128) -> conv 1x1 (w = 2, bias 10, M = 0.5)
  // -> global average pool -> fc 1 -> 2 (w = {3, -1}, bias {0, 100}, M = 0.25).
  const ModelBuilder b = hand_model("hand");
  const auto model = Model::from_bytes(b.serialize());
  Session s(model, 1);
  const uint8_t px[4] = {0, 128, 200, 255};
  // x - zp = {-128, 0, 72, 127}; acc = 10 + 2 (x - zp) = {-246, 10, 154, 264};
  // * 0.5 = {-123, 5, 77, 132 -> clamp 127}; mean = 86 / 4 = 21.5 -> 22 (ties away from zero);
  // fc: acc = {66, 100 - 22 = 78}; * 0.25 = {16.5, 19.5} -> {17, 20} (double rounding: 33 / 2, 39 / 2).
  const auto logits = s.run(px, 1);
  REQUIRE(logits.size() == 2);
  CHECK(logits[0] == 17);
  CHECK(logits[1] == 20);
  CHECK(argmax(logits) == 1);
  CHECK(model->logit_real(logits[1]) == doctest::Approx(10.0));
}

TEST_CASE("engine == reference interpreter: every op type, uint8 activations, batches 1..8") {
  check_against_reference(tiny_model(11), 8, {1, 3, 8, 2});
}

TEST_CASE("engine == reference interpreter: 2-, 4- and 6-bit weights") {
  for (int bits : {2, 4, 6}) {
    INFO("bits " << bits);
    check_against_reference(tiny_model(20 + bits, bits), 4, {4, 1});
  }
}

TEST_CASE("engine == reference interpreter: a ResNet (option B shortcuts)") {
  ResNetSpec spec;
  spec.blocks_per_stage = 1;
  spec.width = 8;
  spec.image = 16;
  check_against_reference(random_resnet(spec), 5, {5, 1});
}

TEST_CASE("results do not depend on the batch a row is run in") {
  const auto model = Model::from_bytes(tiny_model(4).serialize());
  Session s(model, 6);
  const auto px = random_pixels(model->input_bytes() * 6, 9);
  const auto all = s.run(px.data(), 6);
  const std::vector<int8_t> batch6(all.begin(), all.end());
  const size_t k = model->num_classes();
  for (int i = 0; i < 6; ++i) {
    const auto one = s.run(px.data() + i * model->input_bytes(), 1);
    CHECK(std::equal(one.begin(), one.end(), batch6.begin() + i * k));
  }
  CHECK_THROWS_WITH_AS(s.run(px.data(), 7), doctest::Contains("batch 7 is outside [1, 6]"), std::invalid_argument);
  CHECK_THROWS_AS(s.run(px.data(), 0), std::invalid_argument);
  CHECK_THROWS_AS(s.run(nullptr, 1), std::invalid_argument);
  CHECK_THROWS_AS(Session(model, 0), std::invalid_argument);
}

TEST_CASE("plan_arena: buffers alive at the same time never overlap") {
  std::mt19937_64 gen(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<Lifetime> bufs(1 + gen() % 30);
    for (auto& b : bufs) {
      b.bytes = gen() % 5 == 0 ? 0 : 1 + gen() % 5000;
      b.first = static_cast<int>(gen() % 20);
      b.last = b.first + static_cast<int>(gen() % 6);
    }
    size_t total = 0;
    const auto off = plan_arena(bufs, 64, &total);
    size_t peak_live = 0;  // a lower bound: the most bytes alive at one step
    for (int step = 0; step < 26; ++step) {
      size_t live = 0;
      for (const auto& b : bufs) live += (b.first <= step && step <= b.last) ? b.bytes : 0;
      peak_live = std::max(peak_live, live);
    }
    CHECK(total >= peak_live);
    CHECK(total % 64 == 0);
    for (size_t i = 0; i < bufs.size(); ++i) {
      if (bufs[i].bytes == 0) continue;
      CHECK(off[i] % 64 == 0);
      CHECK(off[i] + bufs[i].bytes <= total);
      for (size_t j = i + 1; j < bufs.size(); ++j) {
        if (bufs[j].bytes == 0) continue;
        const bool alive_together = bufs[i].first <= bufs[j].last && bufs[j].first <= bufs[i].last;
        const bool overlap = off[i] < off[j] + bufs[j].bytes && off[j] < off[i] + bufs[i].bytes;
        CHECK_FALSE((alive_together && overlap));
      }
    }
  }
  // A chain a -> b -> c: a and c can share, b cannot share with either.
  size_t total = 0;
  const auto off = plan_arena({{1000, 0, 1}, {1000, 1, 2}, {1000, 2, 3}}, 64, &total);
  CHECK(off[0] == off[2]);
  CHECK(off[1] != off[0]);
  CHECK(total == 2 * 1024);
}

TEST_CASE("the arena of a ResNet-20 is much smaller than the sum of its activations") {
  const auto model = Model::from_bytes(random_resnet({}).serialize());
  const int batch = 10;
  const size_t sum = model->activation_bytes_per_image() * batch;
  // The reference kernels need no scratch: that arena holds activations only.
  Session plain(model, batch, Isa::reference);
  MESSAGE("ResNet-20, batch " << batch << ", reference kernels: arena " << plain.arena_bytes() << " bytes, unshared "
                              << plain.unshared_bytes() << ", sum of activations " << sum);
  CHECK(plain.arena_bytes() < plain.unshared_bytes());
  CHECK(plain.arena_bytes() * 4 < sum);
  // At least the two largest activations alive at once (input of the stem + its output).
  CHECK(plain.arena_bytes() >= 2 * 32 * 32 * 16 * batch);

  // The fast kernels add one scratch buffer per conv (the padded copy of its
  // input; int16 on AVX2 and NEON's smlal family, so twice as large as with
  // the dot-product ones). The scratch buffers share the arena too: what they
  // add to it is a small part of their sum.
  Session fast(model, batch);
  const size_t scratch_sum = fast.unshared_bytes() - plain.unshared_bytes();
  MESSAGE(std::string(isa_name(fast.isa())) << " kernels: arena " << fast.arena_bytes() << " bytes, scratch buffers " << scratch_sum
                               << " bytes in all");
  CHECK(fast.arena_bytes() >= plain.arena_bytes());
  if (scratch_sum > 0) CHECK((fast.arena_bytes() - plain.arena_bytes()) * 4 < scratch_sum);
}

TEST_CASE("top_k: ordering, ties by lowest index, k clamped") {
  const std::vector<int8_t> row{5, -3, 9, 9, 5, 127, -128, 5};
  const auto top = top_k(row, 5);
  REQUIRE(top.size() == 5);
  const int want_idx[] = {5, 2, 3, 0, 4};
  const int8_t want_val[] = {127, 9, 9, 5, 5};
  for (int i = 0; i < 5; ++i) {
    CHECK(top[i].index == want_idx[i]);
    CHECK(top[i].value == want_val[i]);
  }
  CHECK(top_k(row, 100).size() == row.size());
  CHECK(top_k(row, 100).back().index == 6);
  CHECK(top_k(row, 0).empty());
  CHECK(top_k(row, -1).empty());
  CHECK(argmax(row) == 5);
  const std::vector<int8_t> ties{-7, 3, 3, -7, 3};
  CHECK(argmax(ties) == 1);
  CHECK(top_k(ties, 1)[0].index == 1);
  CHECK(argmax(std::vector<int8_t>{}) == -1);
  const std::vector<int8_t> all_min(4, -128);
  CHECK(argmax(all_min) == 0);
}

TEST_CASE("Sessions share the model's prepared kernels; an inference-only model holds its weights once") {
  ResNetSpec spec;
  spec.blocks_per_stage = 1;
  spec.width = 8;
  spec.image = 16;
  const std::vector<uint8_t> bytes = random_resnet(spec).serialize();
  const auto model = Model::from_bytes(bytes, "r.oct");
  const ModelDesc& d = model->desc();
  size_t conv = d.ops.size(), pool = d.ops.size();
  for (size_t i = 0; i < d.ops.size(); ++i) {
    if (d.ops[i].type == OpType::conv2d && conv == d.ops.size()) conv = i;
    if (d.ops[i].type == OpType::global_avg_pool) pool = i;
  }
  REQUIRE(conv < d.ops.size());
  REQUIRE(pool < d.ops.size());

  const auto px = random_pixels(model->input_bytes() * 3, 4);
  Session a(model, 3), b(model, 1);
  const auto first = a.run(px.data(), 3);
  const std::vector<int8_t> want(first.begin(), first.end());
  // Both sessions (different max batches) run the one kernel the model made.
  CHECK(model->kernel(conv, a.isa()) == model->kernel(conv, b.isa()));
  CHECK(model->kernel(conv, a.isa()).use_count() >= 3);
  CHECK_THROWS_WITH_AS(model->kernel(pool, a.isa()), doctest::Contains("not a conv2d or fully_connected"),
                       std::invalid_argument);
  CHECK_THROWS_AS(model->kernel(d.ops.size(), a.isa()), std::invalid_argument);

  ModelOptions o;
  o.inference_only = true;
  const auto lean = Model::from_bytes(bytes, "r.oct", o);
  CHECK(lean->inference_only());
  CHECK(lean->weight_bytes_stored() == model->weight_bytes_stored());
  for (const OpDesc& op : lean->desc().ops)
    if (op.type == OpType::conv2d || op.type == OpType::fully_connected)
      CHECK(lean->desc().tensors[op.inputs[1]].i8.empty());
  Session c(lean, 3);
  const auto got = c.run(px.data(), 3);
  CHECK(std::equal(got.begin(), got.end(), want.begin(), want.end()));
  if (o.isa != Isa::reference)
    CHECK_THROWS_WITH_AS(Session(lean, 1, Isa::reference), doctest::Contains("opened for inference on isa"),
                         std::invalid_argument);
}

TEST_CASE("Model reports its shape, size and metadata") {
  const ModelBuilder b = random_resnet({});
  const auto model = Model::from_bytes(b.serialize(), "r20.oct");
  CHECK(model->input_h() == 32);
  CHECK(model->input_w() == 32);
  CHECK(model->input_c() == 3);
  CHECK(model->num_classes() == 10);
  CHECK(model->name() == "resnet20-random");
  CHECK(model->source() == "r20.oct");
  CHECK(model->class_names().size() == 10);
  CHECK(model->metadata("preprocessing").find("inception") == 0);
  // ResNet-20 has ~41 M multiply-adds per 32x32 image.
  CHECK(model->macs_per_image() > 39000000);
  CHECK(model->macs_per_image() < 43000000);
  // ... and they are the sum of the ops' own: 3x3 convs with 16 channels on
  // 32x32 are 32*32*16*9*16 each; adds and pools have none.
  uint64_t sum = 0;
  for (size_t i = 0; i < model->desc().ops.size(); ++i) {
    const OpDesc& op = model->desc().ops[i];
    if (op.type != OpType::conv2d && op.type != OpType::fully_connected) CHECK(model->op_macs(i) == 0);
    if (op.name == "layer1.0.conv1") CHECK(model->op_macs(i) == 32ull * 32 * 16 * 9 * 16);
    sum += model->op_macs(i);
  }
  CHECK(sum == model->macs_per_image());
  CHECK_THROWS_AS(model->op_macs(model->desc().ops.size()), std::out_of_range);
}

TEST_CASE("op profiling: per-op times of the runs while it is on, the same logits") {
  const auto model = Model::from_bytes(random_resnet({}).serialize(), "r20.oct");
  const size_t n_ops = model->desc().ops.size();
  std::vector<uint8_t> px(model->input_bytes() * 3);
  std::mt19937 rng(7);
  for (auto& p : px) p = static_cast<uint8_t>(rng());
  Session s(model, 3);
  const auto plain = s.run(px.data(), 3);
  const std::vector<int8_t> expected(plain.begin(), plain.end());
  CHECK(s.profile().runs == 0);  // off by default: nothing counted

  s.set_profiling(true);
  const auto a = s.run(px.data(), 3);
  CHECK(std::vector<int8_t>(a.begin(), a.end()) == expected);
  s.run(px.data(), 2);
  const Session::Profile p = s.profile();
  REQUIRE(p.op_ns.size() == n_ops);
  CHECK(p.runs == 2);
  CHECK(p.images == 5);
  uint64_t conv_ns = 0, total_ns = 0;
  for (size_t i = 0; i < n_ops; ++i) {
    total_ns += p.op_ns[i];
    if (model->desc().ops[i].type == OpType::conv2d) conv_ns += p.op_ns[i];
  }
  CHECK(conv_ns > 0);
  CHECK(conv_ns <= total_ns);
  // The table: a summary line, a header, one row per op in model order.
  const std::string table = profile_table(*model, p);
  CHECK(table.rfind("2 runs, 5 images", 0) == 0);
  CHECK(static_cast<size_t>(std::count(table.begin(), table.end(), '\n')) == n_ops + 2);
  size_t at = 0;
  for (const OpDesc& op : model->desc().ops) {
    const size_t found = table.find(" " + op.name + " ", at);
    CHECK_MESSAGE(found != std::string::npos, op.name);
    if (found != std::string::npos) at = found;
  }
  Session::Profile short_profile = p;
  short_profile.op_ns.pop_back();
  CHECK_THROWS_AS(profile_table(*model, short_profile), std::invalid_argument);

  s.set_profiling(false);  // off: the totals stay as they were
  s.run(px.data(), 3);
  CHECK(s.profile().runs == 2);
  CHECK(s.profile().op_ns == p.op_ns);
  s.set_profiling(true);  // on again: cleared
  CHECK(s.profile().runs == 0);
  CHECK(s.profile().images == 0);
  CHECK(s.profile().op_ns == std::vector<uint64_t>(n_ops, 0));
}
