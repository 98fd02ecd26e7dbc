// The fast convolution kernels (ConvKernel with every ISA this machine can
// run) against the reference conv2d_ref, bit for bit, on randomized shapes:
// strides 1..3, padding 0..2, groups 1 / depthwise / other, odd sizes, batch
// 1..3, every zero point, 1x1 and fully connected shapes, positive and
// negative shifts, narrow clamps. An ISA the CPU lacks is skipped with a
// message.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "tests/skip.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "engine/kernels.h"

using namespace octet::engine;

namespace {

const Isa kFast[] = {Isa::avx2, Isa::avx512_vnni, Isa::amx, Isa::neon, Isa::neon_dot};

// Whether this run checks isa: every one the CPU runs, or only $OCTET_TEST_ISA
// (the engine.isa.<name> ctest entries; skipped on a CPU without it).
bool checked(Isa isa) { return octet::testing::isa_selected(isa_name(isa), isa_supported(isa)); }

struct Case {
  ConvGeometry g;
  int32_t x_zp = 0;
  std::vector<int8_t> x, w;
  std::vector<int32_t> bias;
  Requant rq;
};

std::string describe(const Case& c) {
  const ConvGeometry& g = c.g;
  return "batch " + std::to_string(g.batch) + " in " + std::to_string(g.in_h) + "x" + std::to_string(g.in_w) + "x" +
         std::to_string(g.in_c) + " out_c " + std::to_string(g.out_c) + " k " + std::to_string(g.kernel_h) + "x" +
         std::to_string(g.kernel_w) + " stride " + std::to_string(g.stride) + " pad " + std::to_string(g.pad) +
         " groups " + std::to_string(g.groups) + " x_zp " + std::to_string(c.x_zp) + " zp_out " +
         std::to_string(c.rq.zp_out) + " clamp [" + std::to_string(c.rq.act_min) + ", " +
         std::to_string(c.rq.act_max) + "]";
}

// Fills the data of a geometry: random int8 input and weights (full range or
// a narrow 4-bit-like range), a bias, and a requantization whose real
// multiplier is about 2^-(log2 of the accumulator's spread) so that outputs
// spread over the int8 range, with some channels far off (saturating).
void fill(Case& c, std::mt19937& rng) {
  const ConvGeometry& g = c.g;
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  c.x.resize(static_cast<size_t>(g.batch) * g.in_h * g.in_w * g.in_c);
  for (auto& v : c.x) v = static_cast<int8_t>(uni(-128, 127));
  const int k = g.kernel_h * g.kernel_w * g.in_c_per_group();
  const int wmax = uni(0, 3) == 0 ? 7 : 127;
  c.w.resize(static_cast<size_t>(g.out_c) * k);
  for (auto& v : c.w) v = static_cast<int8_t>(uni(-wmax - (wmax == 127), wmax));
  c.bias.resize(g.out_c);
  for (auto& v : c.bias) v = uni(-200000, 200000);
  c.rq = {};
  int spread_bits = 0;
  while ((1 << spread_bits) < 128 * wmax * std::max(1, static_cast<int>(std::sqrt(static_cast<double>(k)))))
    ++spread_bits;
  for (int oc = 0; oc < g.out_c; ++oc) {
    c.rq.multiplier.push_back(uni(1 << 30, INT32_MAX));
    int shift = -(spread_bits - 7) + uni(-2, 2);
    if (uni(0, 15) == 0) shift = uni(-31, 30);  // far off: saturates or rounds to 0
    c.rq.shift.push_back(std::clamp(shift, -31, 30));
  }
  c.rq.zp_out = uni(-128, 127);
  c.rq.act_min = -128;
  c.rq.act_max = 127;
  if (uni(0, 2) == 0) {  // a ReLU-like clamp
    c.rq.act_min = c.rq.zp_out;
    c.rq.act_max = std::min(127, c.rq.zp_out + uni(0, 100));
  }
  if (uni(0, 4) == 0) c.x_zp = uni(0, 1) ? -128 : 127;
}

Case random_case(std::mt19937& rng) {
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Case c;
  ConvGeometry& g = c.g;
  g.batch = uni(1, 3);
  g.in_h = uni(1, 9);
  g.in_w = uni(1, 11);
  const int cins[] = {1, 2, 3, 4, 5, 8, 12, 16, 17, 32};
  g.in_c = cins[uni(0, 9)];
  g.kernel_h = uni(1, 3);
  g.kernel_w = uni(0, 3) == 0 ? uni(1, 3) : g.kernel_h;
  g.stride = uni(0, 5) == 0 ? 3 : uni(1, 2);
  g.pad = uni(0, 2);
  switch (uni(0, 3)) {
    case 0:  // depthwise, channel multiplier 1 or 2
      g.groups = g.in_c;
      g.out_c = g.in_c * uni(1, 2);
      break;
    case 1: {  // another divisor of in_c
      std::vector<int> divisors;
      for (int d = 1; d <= g.in_c; ++d)
        if (g.in_c % d == 0) divisors.push_back(d);
      g.groups = divisors[uni(0, static_cast<int>(divisors.size()) - 1)];
      g.out_c = g.groups * uni(1, 5);
      break;
    }
    default:
      g.groups = 1;
      g.out_c = uni(1, 80);
  }
  g.pad = std::min(g.pad, std::max(g.kernel_h, g.kernel_w) - 1);
  if (g.in_h + 2 * g.pad < g.kernel_h) g.in_h = g.kernel_h;
  if (g.in_w + 2 * g.pad < g.kernel_w) g.in_w = g.kernel_w;
  c.x_zp = uni(-128, 127);
  fill(c, rng);
  return c;
}

std::vector<int8_t> reference(const Case& c, int batch) {
  ConvGeometry g = c.g;
  g.batch = batch;
  std::vector<int8_t> y(static_cast<size_t>(batch) * g.out_h() * g.out_w() * g.out_c);
  conv2d_ref(g, c.x.data(), c.x_zp, c.w.data(), c.bias.data(), c.rq, y.data());
  return y;
}

std::vector<int8_t> fast(const Case& c, Isa isa, int batch) {
  const ConvKernel k(c.g, c.w.data(), c.bias.data(), c.x_zp, c.rq, isa);
  REQUIRE(k.isa() == isa);
  std::vector<std::byte> scratch(k.scratch_bytes(batch) + 1);
  const ConvGeometry& g = c.g;
  // Sentinel after the output: the kernel writes exactly the output.
  std::vector<int8_t> y(static_cast<size_t>(batch) * g.out_h() * g.out_w() * g.out_c + 16, int8_t{0x5a});
  // An odd offset into the scratch: the kernel must align it itself.
  k.run(batch, c.x.data(), y.data(), std::span<std::byte>(scratch).subspan(1));
  for (size_t i = y.size() - 16; i < y.size(); ++i) REQUIRE(y[i] == 0x5a);
  y.resize(y.size() - 16);
  return y;
}

void check_all_isas(const Case& c, int batch) {
  const std::vector<int8_t> want = reference(c, batch);
  for (Isa isa : kFast) {
    if (!checked(isa)) continue;
    const std::vector<int8_t> got = fast(c, isa, batch);
    if (got != want) {
      size_t i = 0;
      while (got[i] == want[i]) ++i;
      FAIL_CHECK(std::string(isa_name(isa)) << ": " << describe(c) << " batch " << batch << ": first difference at " << i
                               << ": " << int(got[i]) << " != reference " << int(want[i]));
    }
  }
}

}  // namespace

TEST_CASE("ISAs this machine runs") {
  if (const std::string want = octet::testing::selected_isa(); !want.empty()) {
    bool known = false;
    for (Isa isa : kFast) known = known || (want == isa_name(isa) && checked(isa));
    REQUIRE_MESSAGE(known, "OCTET_TEST_ISA=" << want << " names no fast ISA of the engine");
  }
  for (Isa isa : kFast) {
    if (!isa_supported(isa)) MESSAGE("skipping " << std::string(isa_name(isa)) << ": not supported by this CPU or build");
  }
  MESSAGE("best_isa: " << std::string(isa_name(best_isa())));
  CHECK(isa_supported(Isa::reference));
  CHECK(isa_supported(best_isa()));
  for (Isa isa : kFast)
    if (!isa_supported(isa)) {
      ConvGeometry g;
      Requant rq;
      rq.multiplier = {1 << 30};
      rq.shift = {0};
      const int8_t w = 1;
      CHECK_THROWS_AS(ConvKernel(g, &w, nullptr, 0, rq, isa), std::invalid_argument);
    }
}

TEST_CASE("fast conv equals the reference on randomized shapes") {
  std::mt19937 rng(20261123);
  for (int t = 0; t < 400; ++t) {
    const Case c = random_case(rng);
    check_all_isas(c, c.g.batch);
    if (c.g.batch > 1) check_all_isas(c, 1);  // a smaller batch than prepared
  }
}

TEST_CASE("fast conv equals the reference on ResNet-20 and fully connected shapes") {
  std::mt19937 rng(7);
  struct Shape {
    int hw, cin, cout, k, stride, pad;
  };
  const Shape shapes[] = {
      {32, 3, 16, 3, 1, 1},  {32, 16, 16, 3, 1, 1}, {32, 16, 32, 3, 2, 1}, {32, 16, 32, 1, 2, 0},
      {16, 32, 32, 3, 1, 1}, {16, 32, 64, 3, 2, 1}, {8, 64, 64, 3, 1, 1},  {1, 64, 10, 1, 1, 0},
      {1, 512, 100, 1, 1, 0}, {1, 7, 3, 1, 1, 0},
  };
  for (const Shape& s : shapes) {
    Case c;
    c.g.batch = 2;
    c.g.in_h = c.g.in_w = s.hw;
    c.g.in_c = s.cin;
    c.g.out_c = s.cout;
    c.g.kernel_h = c.g.kernel_w = s.k;
    c.g.stride = s.stride;
    c.g.pad = s.pad;
    c.x_zp = std::uniform_int_distribution<int>(-128, 127)(rng);
    fill(c, rng);
    check_all_isas(c, 2);
    check_all_isas(c, 1);
  }
}

TEST_CASE("fast conv: larger batches, 1 and 2 threads") {
  std::mt19937 rng(13);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int t = 0; t < 30; ++t) {
      Case c = random_case(rng);
      c.g.batch = 9 + t % 3;
      c.x.clear();
      fill(c, rng);
      check_all_isas(c, c.g.batch);
      check_all_isas(c, 2);
    }
  }
  set_num_threads(0);
}

TEST_CASE("fast conv: extreme values") {
  // Every input at one end of the range, weights at -128 or 127, zero points
  // at the ends, the largest left shift: the saturating paths of the
  // requantization and the u8 offset of VNNI.
  std::mt19937 rng(3);
  for (int t = 0; t < 40; ++t) {
    Case c;
    c.g.batch = 1;
    c.g.in_h = 5;
    c.g.in_w = 4;
    c.g.in_c = 8;
    c.g.out_c = 24;
    c.g.kernel_h = c.g.kernel_w = 3;
    c.g.pad = 1;
    c.x_zp = t % 2 ? 127 : -128;
    fill(c, rng);
    for (auto& v : c.x) v = static_cast<int8_t>(t % 4 < 2 ? -128 : 127);
    for (size_t i = 0; i < c.w.size(); ++i) c.w[i] = static_cast<int8_t>(i % 3 == 0 ? -128 : 127);
    for (int oc = 0; oc < c.g.out_c; ++oc) {
      c.rq.shift[oc] = oc % 3 == 0 ? 30 : (oc % 3 == 1 ? -31 : -10);
      c.rq.multiplier[oc] = oc % 2 ? INT32_MAX : (1 << 30);
    }
    check_all_isas(c, 1);
  }
}

TEST_CASE("fast conv: the same bytes at 1 and 2 threads") {
  std::mt19937 rng(11);
  Case c;
  c.g.batch = 3;
  c.g.in_h = c.g.in_w = 16;
  c.g.in_c = 32;
  c.g.out_c = 32;
  c.g.kernel_h = c.g.kernel_w = 3;
  c.g.pad = 1;
  fill(c, rng);
  for (Isa isa : kFast) {
    if (!checked(isa)) continue;
    set_num_threads(1);
    const std::vector<int8_t> one = fast(c, isa, 3);
    set_num_threads(2);
    const std::vector<int8_t> two = fast(c, isa, 3);
    CHECK(one == two);
    CHECK(one == reference(c, 3));
  }
  set_num_threads(0);
}

TEST_CASE("ConvKernel rejects bad input") {
  ConvGeometry g;
  g.in_c = 4;
  g.out_c = 2;
  Requant rq;
  rq.multiplier = {1 << 30, 1 << 30};
  rq.shift = {0, 0};
  const std::vector<int8_t> w(8, 1);
  CHECK_NOTHROW(ConvKernel(g, w.data(), nullptr, 0, rq, Isa::reference));
  ConvGeometry bad_groups = g;
  bad_groups.groups = 3;
  CHECK_THROWS_AS(ConvKernel(bad_groups, w.data(), nullptr, 0, rq, Isa::reference), std::invalid_argument);
  Requant bad_mult = rq;
  bad_mult.multiplier[1] = 5;
  CHECK_THROWS_AS(ConvKernel(g, w.data(), nullptr, 0, bad_mult, Isa::reference), std::invalid_argument);
  Requant short_rq = rq;
  short_rq.shift.pop_back();
  CHECK_THROWS_AS(ConvKernel(g, w.data(), nullptr, 0, short_rq, Isa::reference), std::invalid_argument);
  CHECK_THROWS_AS(ConvKernel(g, w.data(), nullptr, 300, rq, Isa::reference), std::invalid_argument);
  const ConvKernel k(g, w.data(), nullptr, 0, rq, best_isa());
  std::vector<int8_t> x(4), y(2);
  std::vector<std::byte> scratch(k.scratch_bytes(1));
  CHECK_THROWS_AS(k.run(2, x.data(), y.data(), scratch), std::invalid_argument);
  if (k.scratch_bytes(1) > 0)
    CHECK_THROWS_AS(k.run(1, x.data(), y.data(), std::span<std::byte>(scratch).first(1)), std::invalid_argument);
}

TEST_CASE("add_fast equals add_ref") {
  std::mt19937 rng(5);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int t = 0; t < 300; ++t) {
    AddParams p;
    p.a_zp = uni(-128, 127);
    p.b_zp = uni(-128, 127);
    p.left_shift = t % 3 ? 20 : uni(0, 22);
    p.a_mult = uni(0, 9) ? uni(1 << 30, INT32_MAX) : 0;
    p.b_mult = uni(1 << 30, INT32_MAX);
    p.a_shift = uni(-31, 0);
    p.b_shift = t % 2 ? p.a_shift : uni(-31, 0);
    p.out_mult = uni(1 << 30, INT32_MAX);
    // Mostly a plausible output shift, sometimes any (saturating either way).
    p.out_shift = t % 5 ? std::clamp(-(p.left_shift - 8) + uni(-3, 3), -31, 30) : uni(-31, 30);
    p.zp_out = uni(-128, 127);
    if (t % 4 == 0) {
      p.act_min = p.zp_out;
      p.act_max = uni(p.zp_out, 127);
    }
    const size_t n = static_cast<size_t>(uni(0, 100));
    std::vector<int8_t> a(n), b(n), want(n), got(n + 16, int8_t{0x5a});
    for (size_t i = 0; i < n; ++i) {
      a[i] = static_cast<int8_t>(uni(-128, 127));
      b[i] = static_cast<int8_t>(uni(-128, 127));
    }
    add_ref(n, a.data(), b.data(), p, want.data());
    for (Isa isa : kFast) {
      if (!checked(isa)) continue;
      std::fill(got.begin(), got.end(), int8_t{0x5a});
      add_fast(n, a.data(), b.data(), p, got.data(), isa);
      for (size_t i = n; i < n + 16; ++i) REQUIRE(got[i] == 0x5a);
      CHECK_MESSAGE(std::equal(want.begin(), want.end(), got.begin()),
                    std::string(isa_name(isa)) << " add differs from add_ref, case " << t);
    }
  }
}
