// conv2d with per-axis padding (Conv2dOptions::pad_h / pad_w): rectangular
// kernels such as 1x3 with (pad_h, pad_w) = (0, 1) and 3x1 with (1, 0), as
// used by ACNet-style asymmetric branches.
//  - forward, dx, dw and db against a plain-loop reference written here (the
//    one in core/ops_ref.h knows a single pad), at stride 1 and 2, batch 1
//    (one image per im2col tile) and 5 (several images per tile; on a 28x28
//    plane several tiles, the last one partial), groups 1 and 2, with the
//    direct 3x3 kernels on and off;
//  - the same gradients against finite differences (tests/core/gradcheck.h);
//  - pad_h == pad_w == p is bit-identical to pad = p (the direct 3x3 route and
//    everything else unchanged);
//  - the ACNet identity: a 1x3 conv with padding (0, 1) equals a 3x3 conv with
//    padding 1 whose kernel is zero outside the middle row (and 3x1 / the
//    middle column), to float rounding;
//  - bad paddings and kernels that do not fit throw std::invalid_argument
//    naming the value or the shapes.
// Tolerances as in test_ops.cpp: |fast - ref| <= 5e-5 * (1 + |ref|) (4x that
// for dw and db, which sum over the whole batch); gradcheck as in
// test_gradcheck.cpp.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/ops_conv_direct.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "tests/skip.h"
#include "tests/core/gradcheck.h"
#include "tests/core/compare.h"

using namespace octet;
using octet::test::max_err;
using octet::test::same_bits;
using octet::test::ConvRun;
using octet::test::run_conv;
using octet::test::gradcheck;
using octet::test::GradcheckResult;

namespace {

// Whether this run checks the direct kernels of isa: every one the CPU runs, or
// only $OCTET_TEST_ISA (the core.isa.<name> ctest entries; skipped on a CPU
// without it). The portable "none" path is checked only in the full run.
bool checked(detail::DirectIsa isa) {
  return octet::testing::isa_selected(detail::direct_isa_name(isa), detail::direct_conv3x3_supported(isa));
}

constexpr double kConvTol = 5e-5;

// The padding conv2d uses on each axis: pad_h / pad_w when set, else pad.
int pad_h_of(const Conv2dOptions& o) { return o.pad_h >= 0 ? o.pad_h : o.pad; }
int pad_w_of(const Conv2dOptions& o) { return o.pad_w >= 0 ? o.pad_w : o.pad; }

std::string describe(const Shape& x, const Shape& w, const Conv2dOptions& o) {
  return "x " + shape_str(x) + " w " + shape_str(w) + " stride " + std::to_string(o.stride) + " pad_h " +
         std::to_string(pad_h_of(o)) + " pad_w " + std::to_string(pad_w_of(o)) + " groups " + std::to_string(o.groups);
}

Tensor to_tensor(const Shape& shape, const std::vector<double>& v) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<float>(v[static_cast<size_t>(i)]);
  return t;
}

// Plain loops over every term of the definition, accumulated in double:
//   y[n, co, oh, ow] = b[co] + sum over ci, kh, kw of w[co, ci, kh, kw] *
//                      x[n, g*Cg + ci, oh*stride - pad_h + kh, ow*stride - pad_w + kw]
// with g = co / (Cout/groups) and x zero outside the image. Given gy, each
// term also adds its share to dx and dw, and gy itself to db.
struct Ref {
  Tensor y, dx, dw, db;
};
Ref reference_conv(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& gy, const Conv2dOptions& o) {
  const int64_t N = x.dim(0), Cin = x.dim(1), H = x.dim(2), W = x.dim(3);
  const int64_t Cout = w.dim(0), Cg = w.dim(1), KH = w.dim(2), KW = w.dim(3);
  const int64_t Og = Cout / o.groups, s = o.stride, ph = pad_h_of(o), pw = pad_w_of(o);
  const int64_t OH = (H + 2 * ph - KH) / s + 1, OW = (W + 2 * pw - KW) / s + 1;
  std::vector<double> y(static_cast<size_t>(N * Cout * OH * OW)), dx(static_cast<size_t>(x.numel())),
      dw(static_cast<size_t>(w.numel())), db(static_cast<size_t>(Cout));
  const float* px = x.data();
  const float* pwt = w.data();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t co = 0; co < Cout; ++co)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const int64_t yi = ((n * Cout + co) * OH + oh) * OW + ow;
          const double g = gy.defined() ? gy.data()[yi] : 0.0;
          double acc = b.defined() ? b.data()[co] : 0.0;
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t kh = 0; kh < KH; ++kh)
              for (int64_t kw = 0; kw < KW; ++kw) {
                const int64_t ih = oh * s - ph + kh, iw = ow * s - pw + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const size_t xi = static_cast<size_t>(((n * Cin + (co / Og) * Cg + ci) * H + ih) * W + iw);
                const size_t wi = static_cast<size_t>(((co * Cg + ci) * KH + kh) * KW + kw);
                acc += double(px[xi]) * pwt[wi];
                dx[xi] += g * pwt[wi];
                dw[wi] += g * px[xi];
              }
          y[static_cast<size_t>(yi)] = acc;
          db[static_cast<size_t>(co)] += g;
        }
  return {to_tensor({N, Cout, OH, OW}, y), to_tensor(x.shape(), dx), to_tensor(w.shape(), dw),
          to_tensor({Cout}, db)};
}

// A kernel size and its padding; stride and groups are varied by the tests.
struct PadCase {
  int64_t KH, KW;
  Conv2dOptions opt;
};
const std::vector<PadCase> kPadCases = {
    {1, 3, {.pad_h = 0, .pad_w = 1}},   // ACNet horizontal branch
    {3, 1, {.pad_h = 1, .pad_w = 0}},   // ACNet vertical branch
    {3, 3, {.pad_h = 0, .pad_w = 2}},   // square kernel, unequal pads: not the direct route
    {2, 3, {.pad_h = 1, .pad_w = 0}},   // even kernel height
    {3, 1, {.pad = 1, .pad_w = 0}},     // pad_h from pad, pad_w overridden
    {1, 3, {.pad_h = 1, .pad_w = 2}},   // stride 1: pad_h > KH-1, so dx is col2im-added
    {3, 3, {.pad_h = 2, .pad_w = 1}},   // im2col's block copy (OW == W) with OH != H
};

std::string error_of(const Tensor& x, const Tensor& w, Conv2dOptions opt) {
  try {
    conv2d(x, w, {}, opt);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no exception)";
}

void expect_ok(const GradcheckResult& r) {
  INFO("worst: " << r.worst << "; checked " << r.checked << " elements, max abs err " << r.max_abs_err);
  CHECK(r.checked > 0);
  CHECK(r.ok);
}

}  // namespace

TEST_CASE("per-axis padding: forward and backward match the plain-loop reference") {
  Rng rng(31);
  auto check = [&](const Shape& xs, const Shape& ws, const Conv2dOptions& opt) {
    CAPTURE(describe(xs, ws, opt));
    Tensor x = Tensor::randn(xs, rng);
    Tensor w = Tensor::randn(ws, rng, 0.3f);
    Tensor b = Tensor::randn({ws[0]}, rng);
    Tensor yref = reference_conv(x, w, b, {}, opt).y;
    Tensor gy = Tensor::randn(yref.shape(), rng);
    Ref ref = reference_conv(x, w, b, gy, opt);
    for (detail::DirectIsa isa : detail::kDirectIsas) {
      if (!checked(isa)) continue;
      detail::set_direct_conv3x3_max_isa(isa);
      const std::string isa_name = detail::direct_isa_name(isa);
      CAPTURE(isa_name);
      ConvRun r = run_conv(x, w, b, gy, opt);
      CHECK(max_err(r.y, ref.y) < kConvTol);
      CHECK(max_err(r.dx, ref.dx) < kConvTol);
      CHECK(max_err(r.dw, ref.dw) < 4 * kConvTol);
      CHECK(max_err(r.db, ref.db) < 4 * kConvTol);
    }
    detail::set_direct_conv3x3_max_isa(detail::DirectIsa::avx512);
  };
  for (const PadCase& c : kPadCases)
    for (int stride : {1, 2})
      for (int groups : {1, 2})
        for (int64_t n : {1, 5}) {
          Conv2dOptions opt = c.opt;
          opt.stride = stride, opt.groups = groups;
          check({n, 4, 7, 8}, {6, 4 / groups, c.KH, c.KW}, opt);
        }
  // A 28x28 plane holds two images per im2col tile: batch 5 is tiles of 2, 2, 1.
  for (const PadCase& c : kPadCases) check({5, 4, 28, 28}, {6, 4, c.KH, c.KW}, c.opt);
}

TEST_CASE("per-axis padding: x, w and bias gradients against finite differences") {
  Rng rng(32);
  for (const PadCase& c : kPadCases)
    for (int stride : {1, 2})
      for (int groups : {1, 2}) {
        Conv2dOptions opt = c.opt;
        opt.stride = stride, opt.groups = groups;
        const Shape xs{2, 4, 5, 6}, ws{4, 4 / groups, c.KH, c.KW};
        CAPTURE(describe(xs, ws, opt));
        expect_ok(gradcheck([opt](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], opt); },
                            {Tensor::randn(xs, rng).requires_grad_(), Tensor::randn(ws, rng, 0.5f).requires_grad_(),
                             Tensor::randn({ws[0]}, rng).requires_grad_()}));
      }
}

TEST_CASE("pad_h == pad_w == p is bit-identical to pad = p (3x3, stride 1)") {
  Rng rng(33);
  Tensor x = Tensor::randn({5, 4, 9, 10}, rng), w = Tensor::randn({6, 4, 3, 3}, rng, 0.3f),
         b = Tensor::randn({6}, rng);
  for (int p : {0, 1, 2}) {
    CAPTURE(p);
    Tensor gy = Tensor::randn({5, 6, 9 + 2 * p - 2, 10 + 2 * p - 2}, rng);
    for (detail::DirectIsa isa : detail::kDirectIsas) {
      if (!checked(isa)) continue;
      detail::set_direct_conv3x3_max_isa(isa);
      const std::string isa_name = detail::direct_isa_name(isa);
      CAPTURE(isa_name);
      ConvRun a = run_conv(x, w, b, gy, {.stride = 1, .pad = p});
      ConvRun c = run_conv(x, w, b, gy, {.stride = 1, .pad_h = p, .pad_w = p});
      CHECK(same_bits(a.y, c.y));
      CHECK(same_bits(a.dx, c.dx));
      CHECK(same_bits(a.dw, c.dw));
      CHECK(same_bits(a.db, c.db));
    }
  }
  detail::set_direct_conv3x3_max_isa(detail::DirectIsa::avx512);
}

TEST_CASE("ACNet identity: 1x3 / 3x1 convs equal 3x3 convs with a zero-padded kernel") {
  Rng rng(34);
  Tensor x = Tensor::randn({5, 4, 9, 10}, rng), b = Tensor::randn({6}, rng);
  for (bool horizontal : {true, false}) {
    // 1x3 with padding (0, 1) is the middle row of a 3x3 with padding 1;
    // 3x1 with padding (1, 0) is its middle column.
    const int64_t KH = horizontal ? 1 : 3, KW = horizontal ? 3 : 1;
    Tensor w = Tensor::randn({6, 4, KH, KW}, rng, 0.3f);
    Tensor w3 = Tensor::zeros({6, 4, 3, 3});
    for (int64_t k = 0; k < 6 * 4; ++k)
      for (int64_t i = 0; i < 3; ++i) {
        const int64_t at = horizontal ? 1 * 3 + i : i * 3 + 1;  // middle row / middle column of the 3x3
        w3.data()[k * 9 + at] = w.data()[k * 3 + i];
      }
    for (int stride : {1, 2}) {
      CAPTURE(horizontal);
      CAPTURE(stride);
      const Conv2dOptions small{.stride = stride, .pad_h = horizontal ? 0 : 1, .pad_w = horizontal ? 1 : 0};
      Tensor y = conv2d(x, w, b, small);
      Tensor y3 = conv2d(x, w3, b, {.stride = stride, .pad = 1});
      Tensor gy = Tensor::randn(y3.shape(), rng);
      ConvRun r = run_conv(x, w, b, gy, small);
      ConvRun r3 = run_conv(x, w3, b, gy, {.stride = stride, .pad = 1});
      CHECK(max_err(y, y3) < 1e-5);
      CHECK(max_err(r.dx, r3.dx) < 1e-5);
      // dw of the small kernel is the matching row / column of the 3x3's dw.
      Tensor dw_part = Tensor::empty(w.shape());
      for (int64_t k = 0; k < 6 * 4; ++k)
        for (int64_t i = 0; i < 3; ++i)
          dw_part.data()[k * 3 + i] = r3.dw.data()[k * 9 + (horizontal ? 1 * 3 + i : i * 3 + 1)];
      CHECK(max_err(r.dw, dw_part) < 4 * kConvTol);
    }
  }
}

TEST_CASE("bad per-axis paddings and kernels that do not fit are rejected") {
  Rng rng(35);
  Tensor x = Tensor::randn({1, 2, 4, 3}, rng);
  Tensor w13 = Tensor::randn({2, 2, 1, 3}, rng);
  std::string e = error_of(x, w13, {.pad_h = 0, .pad_w = -2});
  CHECK(e.find("pad_w") != std::string::npos);
  CHECK(e.find("-2") != std::string::npos);
  e = error_of(x, w13, {.pad_h = -3, .pad_w = 1});
  CHECK(e.find("pad_h") != std::string::npos);
  CHECK(e.find("-3") != std::string::npos);

  // W 3 + 2*pad_w 1 < KW 6.
  Tensor wide = Tensor::randn({2, 2, 1, 6}, rng);
  e = error_of(x, wide, {.pad_h = 0, .pad_w = 1});
  CHECK(e.find("wider") != std::string::npos);
  CHECK(e.find(shape_str(wide.shape())) != std::string::npos);
  CHECK(e.find(shape_str(x.shape())) != std::string::npos);
  CHECK(e.find("pad_w 1") != std::string::npos);
  // The column padding alone makes it fit.
  CHECK(conv2d(x, wide, {}, {.pad_h = 0, .pad_w = 2}).shape() == Shape{1, 2, 4, 2});

  // H 4 + 2*pad_h 0 < KH 5, even though pad would have made it fit.
  Tensor tall = Tensor::randn({2, 2, 5, 1}, rng);
  e = error_of(x, tall, {.pad = 1, .pad_h = 0});
  CHECK(e.find("taller") != std::string::npos);
  CHECK(e.find(shape_str(tall.shape())) != std::string::npos);
  CHECK(e.find(shape_str(x.shape())) != std::string::npos);
  CHECK(e.find("pad_h 0") != std::string::npos);
}
