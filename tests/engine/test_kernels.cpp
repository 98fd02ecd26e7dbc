// The reference kernels (the engine's oracle) against small cases computed by
// hand: padding with x_zp, per-channel requantization with double rounding,
// clamps, groups and depthwise, strides, the add of two differently scaled
// inputs, pools rounding ties away from zero, the uint8 input.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <thread>
#include <vector>

#include "engine/fixedpoint.h"
#include "engine/kernels.h"

using namespace octet::engine;

namespace {

// A requantization that is the identity: real multiplier 1.0 = 2^30 * 2^(1-31).
Requant identity(int out_c, int32_t zp_out = 0) {
  Requant rq;
  rq.multiplier.assign(out_c, 1 << 30);
  rq.shift.assign(out_c, 1);
  rq.zp_out = zp_out;
  return rq;
}

std::vector<int8_t> conv(const ConvGeometry& g, const std::vector<int8_t>& x, int32_t x_zp,
                         const std::vector<int8_t>& w, const std::vector<int32_t>& bias, const Requant& rq) {
  std::vector<int8_t> y(static_cast<size_t>(g.batch) * g.out_h() * g.out_w() * g.out_c);
  conv2d_ref(g, x.data(), x_zp, w.data(), bias.empty() ? nullptr : bias.data(), rq, y.data());
  return y;
}

}  // namespace

TEST_CASE("conv2d_ref: 3x3, padding 1 pads with the input zero point") {
  ConvGeometry g;
  g.in_h = g.in_w = 3;
  g.kernel_h = g.kernel_w = 3;
  g.pad = 1;
  const std::vector<int8_t> x{1, 2, 3, 4, 5, 6, 7, 8, 9};  // x - x_zp = -1..7 with x_zp 2
  const std::vector<int8_t> w(9, 1);
  const auto y = conv(g, x, 2, w, {10}, identity(1, -5));
  // center: 10 + (45 - 9*2) - 5 = 32; corner (0,0) sees 1,2,4,5: 10 + (12 - 8) - 5 = 9;
  // edge (0,1) sees 1..6: 10 + (21 - 12) - 5 = 14.
  REQUIRE(y.size() == 9);
  CHECK(int(y[4]) == 32);
  CHECK(int(y[0]) == 9);
  CHECK(int(y[1]) == 14);
  // corner (2,2) sees 5,6,8,9: 10 + (28 - 8) - 5 = 25
  CHECK(int(y[8]) == 25);
}

TEST_CASE("conv2d_ref: per-channel requantization rounds twice (SRDHM, then RDBPOT ties away)") {
  ConvGeometry g;
  g.in_c = 1;
  g.out_c = 3;
  Requant rq;
  rq.multiplier = {1 << 30, 1 << 30, 1 << 30};  // 0.5, 0.25, 0.125
  rq.shift = {0, -1, -2};
  const std::vector<int8_t> w{1, 1, 1};
  // acc 5: 2.5 -> 3 (SRDHM rounds half up); 1.25 -> SRDHM 3 then 3/2 -> 2; 0.625 -> 3/4 -> 1
  CHECK(conv(g, {5}, 0, w, {}, rq) == std::vector<int8_t>{3, 2, 1});
  // acc -5: -2.5 -> -2; -1.25 -> SRDHM -2, -2/2 = -1; -0.625 -> -2/4 = -0.5 -> -1 (ties away)
  CHECK(conv(g, {-5}, 0, w, {}, rq) == std::vector<int8_t>{-2, -1, -1});
  // x_zp is subtracted and the bias added before requantization: (10 - 3) + 1 = 8
  CHECK(conv(g, {10}, 3, w, {1, 1, 1}, rq) == std::vector<int8_t>{4, 2, 1});
}

TEST_CASE("conv2d_ref: clamps (ReLU, ReLU6-like) and saturation") {
  ConvGeometry g;
  g.in_c = 1;
  g.out_c = 1;
  Requant rq = identity(1, 10);
  rq.act_min = 10;  // ReLU: real 0 = zp_out
  rq.act_max = 40;
  const std::vector<int8_t> w{1};
  CHECK(int(conv(g, {-20}, 0, w, {}, rq)[0]) == 10);
  CHECK(int(conv(g, {20}, 0, w, {}, rq)[0]) == 30);
  CHECK(int(conv(g, {50}, 0, w, {}, rq)[0]) == 40);
  const Requant plain = identity(1, 100);
  CHECK(int(conv(g, {100}, 0, w, {}, plain)[0]) == 127);
  CHECK(int(conv(g, {-128}, 127, w, {}, plain)[0]) == -128);  // 100 - 255
}

TEST_CASE("conv2d_ref: groups and depthwise read their own channels") {
  ConvGeometry g;
  g.in_c = 4;
  g.out_c = 2;
  g.groups = 2;
  // channel 0: inputs 0,1 with weights 1,2; channel 1: inputs 2,3 with weights 3,4
  const std::vector<int8_t> w{1, 2, 3, 4};
  CHECK(conv(g, {1, 2, 3, 4}, 0, w, {}, identity(2)) == std::vector<int8_t>{5, 25});
  ConvGeometry dw;
  dw.in_h = 1;
  dw.in_w = 3;
  dw.in_c = dw.out_c = dw.groups = 2;
  dw.kernel_w = 3;
  dw.pad = 1;
  // w [2][1][3][1]: channel 0 weights 1,1,1; channel 1 weights 0,0,2 (the right neighbour)
  const std::vector<int8_t> wd{1, 1, 1, 0, 0, 2};
  const std::vector<int8_t> x{1, 10, 2, 20, 3, 30};  // NHWC: pixel 0 (1, 10), pixel 1 (2, 20), pixel 2 (3, 30)
  // Padding 1 applies to both sides of both axes: output rows 0 and 2 see
  // only padding (0). Row 1: channel 0: 1+2, 1+2+3, 2+3; channel 1: 2*20, 2*30, 0.
  const std::vector<int8_t> pad_row(6, 0);
  std::vector<int8_t> want = pad_row;
  for (int v : {3, 40, 6, 60, 5, 0}) want.push_back(static_cast<int8_t>(v));
  want.insert(want.end(), pad_row.begin(), pad_row.end());
  CHECK(conv(dw, x, 0, wd, {}, identity(2)) == want);
}

TEST_CASE("conv2d_ref: stride 2 and batch") {
  ConvGeometry g;
  g.batch = 2;
  g.in_h = g.in_w = 4;
  g.kernel_h = g.kernel_w = 1;
  g.stride = 2;
  CHECK(g.out_h() == 2);
  std::vector<int8_t> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<int8_t>(i);
  // picks pixels (0,0), (0,2), (2,0), (2,2) of each image
  CHECK(conv(g, x, 0, {1}, {}, identity(1)) == std::vector<int8_t>{0, 2, 8, 10, 16, 18, 24, 26});
}

TEST_CASE("add_ref: golden values") {
  // Both inputs at 0.5 * 2^-20 after the lift; the output multiplier 2^-19
  // brings a' + b' back: y = a + b (all zero points 0).
  AddParams p;
  p.left_shift = 20;
  p.a_mult = p.b_mult = 1 << 30;  // 0.5
  p.a_shift = p.b_shift = 0;
  const QuantizedMultiplier out = QuantizeMultiplier(1.0 / (1 << 19));
  CHECK(out.multiplier == (1 << 30));
  CHECK(out.shift == -18);
  p.out_mult = out.multiplier;
  p.out_shift = out.shift;
  const std::vector<int8_t> a{3, 100, -128, -7, 0};
  const std::vector<int8_t> b{4, 100, -128, 5, 0};
  std::vector<int8_t> y(5);
  add_ref(5, a.data(), b.data(), p, y.data());
  CHECK(y == std::vector<int8_t>{7, 127, -128, -2, 0});

  // a at half the weight: y = a / 2 + b, rounded to nearest, ties away from zero.
  p.a_shift = -1;
  const std::vector<int8_t> a2{3, -3, 5, -5}, b2{0, 0, 1, 1};
  add_ref(4, a2.data(), b2.data(), p, y.data());
  CHECK(std::vector<int8_t>(y.begin(), y.begin() + 4) == std::vector<int8_t>{2, -2, 4, -2});  // 1.5, -1.5, 3.5, -1.5

  // zero points on every side and a ReLU clamp
  p.a_shift = 0;
  p.a_zp = 10;
  p.b_zp = -10;
  p.zp_out = 5;
  p.act_min = 5;
  const std::vector<int8_t> a3{12, 0}, b3{-7, -10};
  add_ref(2, a3.data(), b3.data(), p, y.data());
  CHECK(int(y[0]) == 10);  // 5 + (2 + 3)
  CHECK(int(y[1]) == 5);   // 5 + (-10 + 0) clamped at 5
}

TEST_CASE("pools: rounding ties away from zero, padding ignored") {
  ConvGeometry g;
  g.in_h = g.in_w = 2;
  g.kernel_h = g.kernel_w = 2;
  g.stride = 2;
  int8_t y = 0;
  const std::vector<int8_t> pos{1, 2, 3, 4}, neg{-1, -2, -3, -4}, quarter{1, 2, 3, 3};
  avg_pool_ref(g, pos.data(), &y);
  CHECK(int(y) == 3);  // 2.5
  avg_pool_ref(g, neg.data(), &y);
  CHECK(int(y) == -3);  // -2.5
  avg_pool_ref(g, quarter.data(), &y);
  CHECK(int(y) == 2);  // 2.25
  max_pool_ref(g, neg.data(), &y);
  CHECK(int(y) == -1);

  // 3x3 input, kernel 2, stride 2, pad 1: the corner window holds one element.
  ConvGeometry p;
  p.in_h = p.in_w = 3;
  p.kernel_h = p.kernel_w = 2;
  p.stride = 2;
  p.pad = 1;
  const std::vector<int8_t> x{-5, 1, 2, 3, 4, 5, 6, 7, -9};
  std::vector<int8_t> out(4);
  max_pool_ref(p, x.data(), out.data());
  CHECK(out == std::vector<int8_t>{-5, 2, 6, 7});  // the padding is not a value (-5 stays -5)
  avg_pool_ref(p, x.data(), out.data());
  // windows: {-5}; {1, 2}; {3, 6}; {4, 5, 7, -9} -> -5, 1.5 -> 2, 4.5 -> 5, 7/4 -> 2
  CHECK(out == std::vector<int8_t>{-5, 2, 5, 2});

  // global average: [N=2, hw=2, C=2]
  const std::vector<int8_t> gx{1, -1, 2, -2, 100, 127, 101, 127};
  std::vector<int8_t> gy(4);
  global_avg_pool_ref(2, 2, 2, gx.data(), gy.data());
  CHECK(gy == std::vector<int8_t>{2, -2, 101, 127});  // 1.5 -> 2, -1.5 -> -2, 100.5 -> 101
}

TEST_CASE("input_u8_ref: pixel - 128") {
  const std::vector<uint8_t> px{0, 127, 128, 255};
  std::vector<int8_t> y(4);
  input_u8_ref(4, px.data(), y.data());
  CHECK(y == std::vector<int8_t>{-128, -1, 0, 127});
}

namespace {

// parallel_for's body for the tests below: counts the visits of every index
// (atomically: pieces of one range never overlap, but a wrong cut would).
struct Visits {
  std::vector<std::atomic<int>> hits;
  std::atomic<int> pieces{0};
  explicit Visits(size_t n) : hits(n) {}
  static void count(const void* c, size_t b, size_t e) {
    auto& v = *static_cast<Visits*>(const_cast<void*>(c));
    for (size_t i = b; i < e; ++i) v.hits[i].fetch_add(1, std::memory_order_relaxed);
    v.pieces.fetch_add(1, std::memory_order_relaxed);
  }
  bool each_once() const {
    return std::all_of(hits.begin(), hits.end(), [](const std::atomic<int>& h) { return h.load() == 1; });
  }
};

}  // namespace

TEST_CASE("parallel_for covers the range once, in chunks, on the threads asked for") {
  // Both thread back ends: oneTBB, and the engine's own std::thread pool of
  // builds without it (OCTET_ENGINE_NO_TBB, the Arm cross build).
  for (int threads : {1, 2, 3}) {
    CAPTURE(threads);
    set_num_threads(threads);
    CHECK(num_threads() == threads);
    for (size_t n : {size_t{1}, size_t{7}, size_t{8}, size_t{1000}, size_t{4099}}) {
      CAPTURE(n);
      Visits v(n);
      parallel_for(n, 7, &v, Visits::count);
      CHECK(v.each_once());
      CHECK(v.pieces.load() >= 1);
      if (threads == 1 || n <= 7) CHECK(v.pieces.load() == 1);  // nothing to split
    }
    parallel_for(0, 1, nullptr, [](const void*, size_t, size_t) { FAIL("called for an empty range"); });
    // Many small jobs back to back: each starts after the last one ended.
    for (int round = 0; round < 2000; ++round) {
      Visits v(64);
      parallel_for(64, 1, &v, Visits::count);
      REQUIRE(v.each_once());
    }
  }
  set_num_threads(0);
  CHECK(num_threads() >= 1);
}

TEST_CASE("parallel_for: nested calls run inline, concurrent callers each get their whole range") {
  set_num_threads(2);
  // A piece that calls parallel_for again.
  struct Outer {
    std::deque<Visits> inner;  // Visits holds atomics: not movable
  } outer;
  for (int i = 0; i < 16; ++i) outer.inner.emplace_back(100);
  parallel_for(16, 1, &outer, [](const void* c, size_t b, size_t e) {
    auto& o = *static_cast<Outer*>(const_cast<void*>(c));
    for (size_t i = b; i < e; ++i) parallel_for(100, 3, &o.inner[i], Visits::count);
  });
  for (const Visits& v : outer.inner) CHECK(v.each_once());
  // Two threads calling at once (two Sessions on two threads).
  std::deque<Visits> mine;
  for (int i = 0; i < 2; ++i) mine.emplace_back(200);
  std::vector<std::thread> callers;
  for (int i = 0; i < 2; ++i)
    callers.emplace_back([&mine, i] {
      for (int round = 0; round < 50; ++round) parallel_for(200, 2, &mine[static_cast<size_t>(i)], Visits::count);
    });
  for (std::thread& t : callers) t.join();
  for (const Visits& v : mine)
    CHECK(std::all_of(v.hits.begin(), v.hits.end(), [](const std::atomic<int>& h) { return h.load() == 50; }));
  set_num_threads(0);
}
