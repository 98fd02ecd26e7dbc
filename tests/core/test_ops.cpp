// Forward (and conv backward) results of the fast kernels against the
// plain-loop references in core/ops_ref.h and against hand-computed values:
// conv2d (stride, padding, groups, pointwise, batches large enough that the
// im2col tiling splits), pools, batchnorm (training statistics, PyTorch's
// running-statistics update, eval), cross-entropy, matmul/linear, sgemm.
// The fast kernels accumulate in float, the references in double, so results
// are compared with
//     |fast - ref| <= kTol * (1 + |ref|),   kTol = 2e-5 (5e-5 for convs)
// with inputs of unit scale (4x that for conv weight and bias gradients,
// which sum over the whole batch). Kernels whose output is documented to be
// independent of the thread count are also compared bit for bit at 1 and 2
// threads.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/blas.h"
#include "core/ops.h"
#include "core/ops_conv_direct.h"
#include "core/ops_ref.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "tests/core/compare.h"

using namespace octet;
using octet::test::max_err;
using octet::test::same_bits;
using octet::test::ConvRun;
using octet::test::run_conv;

namespace {

constexpr double kTol = 2e-5;
constexpr double kConvTol = 5e-5;

struct ConvCase {
  Shape x, w;
  Conv2dOptions opt;
  bool bias;
};

std::string describe(const ConvCase& c) {
  return "x " + shape_str(c.x) + " w " + shape_str(c.w) + " stride " + std::to_string(c.opt.stride) + " pad " +
         std::to_string(c.opt.pad) + " groups " + std::to_string(c.opt.groups) + (c.bias ? " bias" : "");
}

}  // namespace

TEST_CASE("sgemm matches the reference for every transpose combination") {
  Rng rng(5);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t M = 13, N = 21, K = 37;
      // Leading dims larger than the logical width: sub-matrices.
      const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
      Tensor A = Tensor::randn({ta ? K : M, lda}, rng);
      Tensor B = Tensor::randn({tb ? N : K, ldb}, rng);
      Tensor C0 = Tensor::randn({M, ldc}, rng);
      for (float beta : {0.0f, 0.5f}) {
        Tensor c1 = C0.clone(), c2 = C0.clone();
        sgemm(ta, tb, M, N, K, 1.5f, A.data(), lda, B.data(), ldb, beta, c1.data(), ldc);
        sgemm_ref(ta, tb, M, N, K, 1.5f, A.data(), lda, B.data(), ldb, beta, c2.data(), ldc);
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(beta);
        CHECK(max_err(c1, c2) < kConvTol);
        // Padding columns beyond N are untouched.
        bool untouched = true;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = N; j < ldc; ++j) untouched &= c1.data()[i * ldc + j] == C0.data()[i * ldc + j];
        CHECK(untouched);
      }
    }
}

TEST_CASE("sgemm with beta 0 ignores NaN in C; K == 0 scales C") {
  Tensor a = Tensor::full({2, 3}, 1.0f), b = Tensor::full({3, 2}, 2.0f);
  Tensor c = Tensor::full({2, 2}, NAN);
  sgemm(false, false, 2, 2, 3, 1.0f, a.data(), 3, b.data(), 2, 0.0f, c.data(), 2);
  for (int i = 0; i < 4; ++i) CHECK(c.data()[i] == 6.0f);
  Tensor d = Tensor::full({2, 2}, 4.0f);
  sgemm(false, false, 2, 2, 0, 1.0f, a.data(), 3, b.data(), 2, 0.5f, d.data(), 2);
  for (int i = 0; i < 4; ++i) CHECK(d.data()[i] == 2.0f);
  Tensor e = Tensor::full({2, 2}, NAN);
  sgemm(false, false, 2, 2, 0, 1.0f, a.data(), 3, b.data(), 2, 0.0f, e.data(), 2);
  for (int i = 0; i < 4; ++i) CHECK(e.data()[i] == 0.0f);
  CHECK(!openblas_corename().empty());
}

TEST_CASE("the OpenBLAS banner says when OPENBLAS_CORETYPE chose the core") {
  const char* was = std::getenv("OPENBLAS_CORETYPE");
  const std::string saved = was ? was : "";
  ::unsetenv("OPENBLAS_CORETYPE");
  CHECK(openblas_core_banner() == openblas_corename());
  ::setenv("OPENBLAS_CORETYPE", "Haswell", 1);
  const std::string forced = openblas_core_banner();
  CHECK(forced.rfind(openblas_corename(), 0) == 0);
  CHECK(forced.find("OPENBLAS_CORETYPE=Haswell") != std::string::npos);
  if (was)
    ::setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
  else
    ::unsetenv("OPENBLAS_CORETYPE");
}

TEST_CASE("conv2d forward and backward match the plain-loop reference") {
  const std::vector<ConvCase> cases = {
      {{2, 3, 7, 7}, {4, 3, 3, 3}, {.stride = 1, .pad = 1}, true},
      {{3, 3, 8, 9}, {5, 3, 3, 3}, {.stride = 2, .pad = 0}, false},
      {{2, 4, 9, 7}, {6, 4, 3, 3}, {.stride = 2, .pad = 1}, true},
      {{2, 4, 6, 5}, {6, 2, 3, 3}, {.stride = 1, .pad = 1, .groups = 2}, true},
      {{2, 6, 7, 7}, {6, 1, 3, 3}, {.stride = 2, .pad = 1, .groups = 6}, false},  // depthwise
      {{2, 3, 5, 6}, {4, 3, 2, 3}, {.stride = 1, .pad = 0}, true},               // non-square kernel
      {{2, 4, 5, 5}, {3, 4, 5, 5}, {.stride = 1, .pad = 2}, false},              // 5x5, big pad
      {{3, 8, 6, 6}, {5, 8, 1, 1}, {.stride = 1, .pad = 0}, true},               // pointwise, tiled
      {{2, 8, 7, 7}, {4, 8, 1, 1}, {.stride = 2, .pad = 0}, false},              // 1x1 projection
      {{1, 5, 48, 48}, {3, 5, 1, 1}, {.stride = 1, .pad = 0}, true},             // pointwise, one image per tile
      {{2, 2, 50, 47}, {3, 2, 3, 3}, {.stride = 1, .pad = 1}, false},            // large plane: one image per tile
      // Batches whose im2col tiling splits into several tiles (the last one partial):
      {{37, 16, 8, 8}, {8, 16, 3, 3}, {.stride = 1, .pad = 1}, true},
      {{90, 3, 5, 5}, {4, 3, 3, 3}, {.stride = 1, .pad = 1, .groups = 1}, false},
      {{70, 4, 12, 12}, {4, 2, 3, 3}, {.stride = 2, .pad = 1, .groups = 2}, true},
      {{90, 6, 7, 7}, {4, 6, 2, 2}, {.stride = 1, .pad = 0}, true},
      // 3x3 stride 1 with other paddings (the direct kernels' padded grid):
      {{3, 4, 7, 9}, {6, 2, 3, 3}, {.stride = 1, .pad = 0, .groups = 2}, true},
      {{2, 3, 6, 5}, {4, 3, 3, 3}, {.stride = 1, .pad = 2}, false},
      {{12, 16, 32, 32}, {16, 16, 3, 3}, {.stride = 1, .pad = 1}, false},  // a ResNet stage-1 conv
  };
  // 3x3 stride-1 convs run on the direct kernels of each ISA the CPU has
  // (AVX-512, AVX2); every case also runs on the im2col path with them capped off.
  MESSAGE("direct 3x3 kernels: " << std::string(detail::direct_isa_name(detail::direct_conv3x3_isa())));
  Rng rng(7);
  for (const ConvCase& c : cases) {
    CAPTURE(describe(c));
    Tensor x = Tensor::randn(c.x, rng);
    Tensor w = Tensor::randn(c.w, rng, 0.3f);
    Tensor b = c.bias ? Tensor::randn({c.w[0]}, rng) : Tensor();
    Tensor yref = ref::conv2d(x, w, b, c.opt);
    Tensor gy = Tensor::randn(yref.shape(), rng);
    ref::Conv2dGrads g = ref::conv2d_backward(x, w, gy, c.opt);
    for (detail::DirectIsa isa : detail::kDirectIsas) {
      if (!detail::direct_conv3x3_supported(isa)) continue;
      detail::set_direct_conv3x3_max_isa(isa);
      const std::string isa_name = detail::direct_isa_name(isa);
      CAPTURE(isa_name);
      ConvRun r = run_conv(x, w, b, gy, c.opt);
      CHECK(max_err(r.y, yref) < kConvTol);
      CHECK(max_err(r.dx, g.dx) < kConvTol);
      // dW and db sum N*OH*OW products (12288 for the largest case) in float.
      CHECK(max_err(r.dw, g.dw) < 4 * kConvTol);
      if (c.bias) CHECK(max_err(r.db, g.dbias) < 4 * kConvTol);
    }
  }
  detail::set_direct_conv3x3_max_isa(detail::DirectIsa::avx512);
}

TEST_CASE("conv2d without the tape gives the same output; one input may lack grad") {
  Rng rng(8);
  Tensor x = Tensor::randn({4, 3, 9, 9}, rng), w = Tensor::randn({5, 3, 3, 3}, rng, 0.3f);
  Tensor y1 = conv2d(x, w, {}, {.stride = 2, .pad = 1});
  Tensor wl = w.detach().requires_grad_();
  Tensor y2 = conv2d(x, wl, {}, {.stride = 2, .pad = 1});
  CHECK(same_bits(y1, y2));
  Tensor gy = Tensor::randn(y2.shape(), rng);
  y2.backward(gy);
  CHECK(max_err(wl.grad(), ref::conv2d_backward(x, w, gy, {.stride = 2, .pad = 1}).dw) < kConvTol);
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("conv2d forward and backward are bit-identical at 1 and 2 threads") {
  Rng rng(9);
  Tensor x = Tensor::randn({40, 8, 10, 10}, rng), w = Tensor::randn({12, 4, 3, 3}, rng, 0.3f),
         b = Tensor::randn({12}, rng);
  const Conv2dOptions opt{.stride = 1, .pad = 1, .groups = 2};
  Tensor gy = Tensor::randn({40, 12, 10, 10}, rng);
  set_num_threads(1);
  ConvRun r1 = run_conv(x, w, b, gy, opt);
  set_num_threads(2);
  ConvRun r2 = run_conv(x, w, b, gy, opt);
  set_num_threads(0);
  CHECK(same_bits(r1.y, r2.y));
  CHECK(same_bits(r1.dx, r2.dx));
  CHECK(same_bits(r1.dw, r2.dw));
  CHECK(same_bits(r1.db, r2.db));
}

TEST_CASE("max and average pooling match the reference") {
  struct PoolCase {
    Shape x;
    int k, s, p;
  };
  const std::vector<PoolCase> cases = {
      {{2, 3, 8, 8}, 2, 2, 0}, {{2, 3, 7, 9}, 3, 2, 1}, {{1, 4, 5, 5}, 3, 1, 1},
      {{3, 2, 6, 7}, 2, 1, 0}, {{1, 1, 9, 9}, 5, 3, 2}, {{2, 2, 1, 1}, 1, 1, 0},
  };
  Rng rng(10);
  for (const PoolCase& c : cases) {
    CAPTURE(shape_str(c.x));
    CAPTURE(c.k);
    CAPTURE(c.s);
    CAPTURE(c.p);
    Tensor x = Tensor::randn(c.x, rng);
    CHECK(max_err(max_pool2d(x, c.k, c.s, c.p), ref::max_pool2d(x, c.k, c.s, c.p)) == 0.0);
    CHECK(max_err(avg_pool2d(x, c.k, c.s, c.p), ref::avg_pool2d(x, c.k, c.s, c.p)) < kTol);
  }
  // Padding never wins the max, even when every input is negative.
  Tensor neg = Tensor::full({1, 1, 3, 3}, -5.0f);
  Tensor m = max_pool2d(neg, 3, 1, 1);
  for (int64_t i = 0; i < m.numel(); ++i) CHECK(m.data()[i] == -5.0f);
  // Average pooling counts padding as zeros: the corner window of a 3x3 of
  // ones with kernel 3, pad 1 covers 4 ones out of 9.
  Tensor a = avg_pool2d(Tensor::full({1, 1, 3, 3}, 1.0f), 3, 1, 1);
  CHECK(a.data()[0] == doctest::Approx(4.0 / 9.0));
  CHECK(a.data()[4] == doctest::Approx(1.0));
}

TEST_CASE("global average pooling is the mean of each plane") {
  Rng rng(11);
  Tensor x = Tensor::randn({3, 5, 4, 7}, rng);
  Tensor y = global_avg_pool(x);
  REQUIRE(y.shape() == Shape{3, 5});
  for (int64_t p = 0; p < 15; ++p) {
    double s = 0;
    for (int64_t i = 0; i < 28; ++i) s += x.data()[p * 28 + i];
    CHECK(y.data()[p] == doctest::Approx(s / 28).epsilon(1e-6));
  }
}

TEST_CASE("batch_norm in training mode: batch statistics and PyTorch's running update") {
  // One channel, values 1, 2, 3, 4 over (N=2, H*W=2): mean 2.5, biased
  // variance 1.25, unbiased 5/3. PyTorch: running = 0.9 * running + 0.1 * batch.
  Tensor x = Tensor::from({2, 1, 1, 2}, std::vector<float>{1, 2, 3, 4});
  Tensor rm = Tensor::full({1}, 1.0f), rv = Tensor::full({1}, 2.0f);
  Tensor gamma = Tensor::full({1}, 2.0f), beta = Tensor::full({1}, 0.5f);
  Tensor y = batch_norm(x, gamma, beta, rm, rv, true, 0.1f, 1e-5f);
  const double inv = 1.0 / std::sqrt(1.25 + 1e-5);
  const double xs[4] = {1, 2, 3, 4};
  for (int i = 0; i < 4; ++i) CHECK(y.data()[i] == doctest::Approx((xs[i] - 2.5) * inv * 2 + 0.5).epsilon(1e-6));
  CHECK(rm.data()[0] == doctest::Approx(0.9 * 1.0 + 0.1 * 2.5).epsilon(1e-7));
  CHECK(rv.data()[0] == doctest::Approx(0.9 * 2.0 + 0.1 * (5.0 / 3.0)).epsilon(1e-7));
  // momentum 1 replaces the running statistics by the batch's.
  batch_norm(x, gamma, beta, rm, rv, true, 1.0f, 1e-5f);
  CHECK(rm.data()[0] == doctest::Approx(2.5).epsilon(1e-7));
  CHECK(rv.data()[0] == doctest::Approx(5.0 / 3.0).epsilon(1e-7));

  Rng rng(12);
  for (Shape s : {Shape{8, 5, 6, 7}, Shape{3, 4, 1, 1}, Shape{33, 6}, Shape{2, 3, 17, 17}}) {
    CAPTURE(shape_str(s));
    // Offset mean and non-unit scale: the statistics must not cancel.
    Tensor xi = Tensor::randn(s, rng, 3.0f);
    for (int64_t i = 0; i < xi.numel(); ++i) xi.data()[i] += 10.0f;
    const int64_t C = s[1];
    Tensor g = Tensor::uniform({C}, rng, 0.5f, 1.5f), b = Tensor::randn({C}, rng);
    Tensor rm1 = Tensor::randn({C}, rng), rv1 = Tensor::uniform({C}, rng, 0.5f, 2.0f);
    Tensor rm2 = rm1.clone(), rv2 = rv1.clone();
    Tensor y1 = batch_norm(xi, g, b, rm1, rv1, true, 0.1f, 1e-5f);
    Tensor y2 = ref::batch_norm(xi, g, b, rm2, rv2, true, 0.1f, 1e-5f);
    CHECK(max_err(y1, y2) < 2e-4);  // (x - mean) of values near 10 in float
    CHECK(max_err(rm1, rm2) < kTol);
    CHECK(max_err(rv1, rv2) < kTol);
    // The output has zero mean and unit variance per channel before gamma/beta.
    Tensor rm3 = Tensor(), rv3 = Tensor();
    Tensor yn = batch_norm(xi, {}, {}, rm3, rv3, true);
    const int64_t N = s[0], HW = xi.numel() / (N * C);
    for (int64_t c = 0; c < C; ++c) {
      double m = 0, v = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < HW; ++i) m += yn.data()[(n * C + c) * HW + i];
      m /= double(N * HW);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < HW; ++i) v += std::pow(yn.data()[(n * C + c) * HW + i] - m, 2);
      v /= double(N * HW);
      CHECK(std::fabs(m) < 1e-4);
      if (N * HW > 1) CHECK(v == doctest::Approx(1.0).epsilon(1e-3));
    }
  }
}

TEST_CASE("batch_norm in eval mode uses the running statistics and leaves them alone") {
  Rng rng(13);
  Tensor x = Tensor::randn({4, 3, 5, 5}, rng);
  Tensor g = Tensor::randn({3}, rng), b = Tensor::randn({3}, rng);
  Tensor rm = Tensor::randn({3}, rng), rv = Tensor::uniform({3}, rng, 0.5f, 2.0f);
  Tensor rm0 = rm.clone(), rv0 = rv.clone();
  Tensor rm2 = rm.clone(), rv2 = rv.clone();
  Tensor y = batch_norm(x, g, b, rm, rv, false, 0.1f, 1e-3f);
  CHECK(max_err(y, ref::batch_norm(x, g, b, rm2, rv2, false, 0.1f, 1e-3f)) < kTol);
  CHECK(same_bits(rm, rm0));
  CHECK(same_bits(rv, rv0));
  // By hand for one element.
  const int64_t c = 1, k = (2 * 3 + c) * 25 + 7;
  const double expect =
      (x.data()[k] - rm0.data()[c]) / std::sqrt(double(rv0.data()[c]) + 1e-3) * g.data()[c] + b.data()[c];
  CHECK(y.data()[k] == doctest::Approx(expect).epsilon(1e-5));
}

TEST_CASE("batch_norm is bit-identical at 1 and 2 threads") {
  Rng rng(14);
  Tensor x0 = Tensor::randn({16, 6, 9, 9}, rng), g0 = Tensor::randn({6}, rng), b0 = Tensor::randn({6}, rng);
  Tensor gy = Tensor::randn(x0.shape(), rng);
  std::vector<Tensor> outs[2];
  for (int t = 0; t < 2; ++t) {
    set_num_threads(t + 1);
    Tensor x = x0.detach().requires_grad_(), g = g0.detach().requires_grad_(), b = b0.detach().requires_grad_();
    Tensor rm = Tensor::zeros({6}), rv = Tensor::full({6}, 1.0f);
    Tensor y = batch_norm(x, g, b, rm, rv, true);
    y.backward(gy);
    outs[t] = {y, x.grad(), g.grad(), b.grad(), rm, rv};
  }
  set_num_threads(0);
  for (size_t i = 0; i < outs[0].size(); ++i) CHECK(same_bits(outs[0][i], outs[1][i]));
}

TEST_CASE("cross_entropy matches the definition, with and without label smoothing") {
  Rng rng(15);
  const int64_t N = 6, C = 5;
  Tensor z = Tensor::randn({N, C}, rng, 3.0f);
  std::vector<int> labels{0, 4, 2, 2, 1, 3};
  for (float eps : {0.0f, 0.1f, 0.5f, 1.0f}) {
    CAPTURE(eps);
    double total = 0;
    for (int64_t n = 0; n < N; ++n) {
      double se = 0;
      for (int64_t j = 0; j < C; ++j) se += std::exp(double(z.data()[n * C + j]));
      for (int64_t j = 0; j < C; ++j) {
        double logp = double(z.data()[n * C + j]) - std::log(se);
        double t = eps / C + (j == labels[static_cast<size_t>(n)] ? 1.0 - eps : 0.0);
        total -= t * logp;
      }
    }
    CHECK(cross_entropy(z, labels, eps).item() == doctest::Approx(total / N).epsilon(1e-6));
  }
  // Uniform logits: log C whatever the labels; huge logits stay finite.
  CHECK(cross_entropy(Tensor::zeros({2, 4}), std::vector<int>{1, 3}).item() == doctest::Approx(std::log(4.0)));
  Tensor big = Tensor::from({1, 3}, std::vector<float>{1000.0f, 0.0f, -1000.0f});
  CHECK(cross_entropy(big, std::vector<int>{0}).item() == doctest::Approx(0.0));
  CHECK(cross_entropy(big, std::vector<int>{1}).item() == doctest::Approx(1000.0));
}

TEST_CASE("softmax rows and one_hot targets match their definitions") {
  Rng rng(16);
  const int64_t N = 4, C = 7;
  Tensor z = Tensor::randn({N, C}, rng, 3.0f);
  const Tensor p = softmax(z);
  REQUIRE(p.shape() == Shape{N, C});
  for (int64_t n = 0; n < N; ++n) {
    double se = 0;
    for (int64_t j = 0; j < C; ++j) se += std::exp(double(z.data()[n * C + j]));
    for (int64_t j = 0; j < C; ++j)
      CHECK(p.data()[n * C + j] == doctest::Approx(std::exp(double(z.data()[n * C + j])) / se).epsilon(1e-6));
  }
  // Shift-invariant, and finite where a naive exp would overflow.
  const Tensor big = softmax(Tensor::from({1, 3}, std::vector<float>{1000.0f, 999.0f, -1000.0f}));
  CHECK(big.data()[0] == doctest::Approx(1.0 / (1.0 + std::exp(-1.0))));
  CHECK(big.data()[1] == doctest::Approx(std::exp(-1.0) / (1.0 + std::exp(-1.0))));
  CHECK(big.data()[2] == 0.0f);

  const std::vector<int> labels{2, 0, 6, 2};
  for (float eps : {0.0f, 0.1f, 1.0f}) {
    CAPTURE(eps);
    const Tensor t = one_hot(labels, C, eps);
    REQUIRE(t.shape() == Shape{N, C});
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < C; ++j)
        CHECK(t.data()[n * C + j] ==
              doctest::Approx(eps / C + (j == labels[static_cast<size_t>(n)] ? 1.0 - eps : 0.0)).epsilon(1e-7));
    // The tensor form is the label form's target: the same loss.
    CHECK(cross_entropy(z, t).item() == doctest::Approx(cross_entropy(z, labels, eps).item()).epsilon(1e-6));
  }
}

TEST_CASE("matmul and linear match sgemm_ref; bias is added per row") {
  Rng rng(16);
  Tensor a = Tensor::randn({67, 45}, rng), b = Tensor::randn({45, 29}, rng);
  Tensor ref = Tensor::empty({67, 29});
  sgemm_ref(false, false, 67, 29, 45, 1.0f, a.data(), 45, b.data(), 29, 0.0f, ref.data(), 29);
  CHECK(max_err(matmul(a, b), ref) < kConvTol);
  Tensor w = Tensor::randn({29, 45}, rng), bias = Tensor::randn({29}, rng);
  Tensor lin = linear(a, w, bias);
  Tensor lref = Tensor::empty({67, 29});
  sgemm_ref(false, true, 67, 29, 45, 1.0f, a.data(), 45, w.data(), 45, 0.0f, lref.data(), 29);
  for (int64_t n = 0; n < 67; ++n)
    for (int64_t o = 0; o < 29; ++o) lref.data()[n * 29 + o] += bias.data()[o];
  CHECK(max_err(lin, lref) < kConvTol);
}

TEST_CASE("broadcasting elementwise ops match explicit loops") {
  Rng rng(17);
  Tensor a = Tensor::randn({3, 4, 5, 2}, rng);
  for (Shape bs : {Shape{1, 4, 1, 1}, Shape{4, 1, 1}, Shape{5, 2}, Shape{2}, Shape{1}, Shape{3, 1, 5, 1},
                   Shape{3, 4, 5, 2}, Shape{}}) {
    CAPTURE(shape_str(bs));
    Tensor b = Tensor::randn(bs, rng);
    Tensor s = add(a, b), d = sub(a, b), m = mul(a, b);
    // b's index for a's index (i0, i1, i2, i3), right-aligned.
    const int64_t as[4] = {3, 4, 5, 2};
    bool ok = true;
    for (int64_t i = 0; i < a.numel(); ++i) {
      int64_t idx[4], r = i;
      for (int d4 = 3; d4 >= 0; --d4) idx[d4] = r % as[d4], r /= as[d4];
      int64_t bi = 0;
      const size_t lead = 4 - bs.size();
      for (size_t k = 0; k < bs.size(); ++k) bi = bi * bs[k] + (bs[k] == 1 ? 0 : idx[lead + k]);
      const float av = a.data()[i], bv = b.data()[bi];
      ok &= s.data()[i] == av + bv && d.data()[i] == av - bv && m.data()[i] == av * bv;
    }
    CHECK(ok);
  }
  Tensor r = relu(a);
  bool ok = true;
  for (int64_t i = 0; i < a.numel(); ++i) ok &= r.data()[i] == (a.data()[i] > 0 ? a.data()[i] : 0.0f);
  CHECK(ok);
  CHECK(sum(a).item() == doctest::Approx([&] {
          double t = 0;
          for (int64_t i = 0; i < a.numel(); ++i) t += a.data()[i];
          return t;
        }()).epsilon(1e-6));
}
