// core/ops.cpp: elementwise ops with broadcasting, relu, reductions, views,
// matmul/linear and cross-entropy, forward and backward. Convolution lives in
// ops_conv.cpp, batch norm in ops_norm.cpp, pools in ops_pool.cpp.
// Over 600 lines: every op is a forward and its backward side by side, and
// splitting the elementwise family from the reductions would split the one
// broadcasting helper they share.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/blas.h"
#include "core/ops.h"
#include "core/ops_internal.h"
#include "core/profile.h"

namespace octet {

namespace detail {

namespace {
OCTET_SIMD_CLONES void add_loop(const float* __restrict a, const float* __restrict b, float* __restrict o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = a[i] + b[i];
}
OCTET_SIMD_CLONES void add_into_loop(float* __restrict d, const float* __restrict s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] += s[i];
}
}  // namespace

void add_into(float* dst, const float* src, int64_t n) {
  parallel_elementwise(n, [dst, src](int64_t b, int64_t e) { add_into_loop(dst + b, src + b, e - b); });
}

Tensor add_raw(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape());
  const float* pa = a.data();
  const float* pb = b.data();
  float* po = out.data();
  parallel_elementwise(a.numel(), [pa, pb, po](int64_t s, int64_t e) { add_loop(pa + s, pb + s, po + s, e - s); });
  return out;
}

}  // namespace detail

using detail::fail;
using detail::needs_grad;
using detail::parallel_elementwise;
using detail::require_defined;
using detail::require_ndim;

namespace {

// Sum of p[0..n) in double, by fixed chunks combined in order: the result
// does not depend on the thread count.
double sum_double(const float* p, int64_t n) {
  constexpr int64_t kChunk = int64_t(1) << 14;
  int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks), 0.0);
  parallel_for(0, chunks, 4, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      int64_t b = c * kChunk, e = std::min(n, b + kChunk);
      double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t i = b;
      for (; i + 8 <= e; i += 8)
        for (int j = 0; j < 8; ++j) lane[j] += p[i + j];
      double s = 0;
      for (; i < e; ++i) s += p[i];
      for (int j = 0; j < 8; ++j) s += lane[j];
      part[static_cast<size_t>(c)] = s;
    }
  });
  double s = 0;
  for (double v : part) s += v;
  return s;
}

// ---------------------------------------------------------------- broadcasting

// How b [right-aligned, 1 or a's size per dim] maps onto a's (= the output's)
// index space, with size-1 dims dropped and mergeable neighbours merged:
// out is a sequence of rows of `inner` elements; row r starts at r * inner in
// a/out and at boffset(r) in b; within a row b advances by inner_stride (0 or 1).
struct Broadcast {
  std::vector<int64_t> size;     // outer dims (without the inner one)
  std::vector<int64_t> bstride;  // b's stride per outer dim (0 = broadcast)
  int64_t inner = 1, inner_stride = 1, rows = 1;

  int64_t boffset(int64_t row) const {
    int64_t off = 0;
    for (size_t d = size.size(); d-- > 0;) {
      off += (row % size[d]) * bstride[d];
      row /= size[d];
    }
    return off;
  }
};

Broadcast plan_broadcast(const char* op, const Shape& a, const Shape& b) {
  auto bad = [&] {
    fail(op, "shapes " + shape_str(a) + " and " + shape_str(b) +
                 " do not broadcast (b, right-aligned, must have 1 or a's size in each dim)");
  };
  if (b.size() > a.size()) bad();
  size_t lead = a.size() - b.size();
  std::vector<int64_t> size, stride;
  int64_t bs = 1;
  std::vector<int64_t> bstrides(a.size(), 0);
  for (size_t d = a.size(); d-- > 0;) {
    int64_t bd = d >= lead ? b[d - lead] : 1;
    if (bd != a[d] && bd != 1) bad();
    bstrides[d] = (bd == a[d] && bd != 1) ? bs : 0;
    bs *= bd;
  }
  for (size_t d = 0; d < a.size(); ++d) {
    if (a[d] == 1) continue;
    if (!size.empty()) {
      int64_t& ls = size.back();
      int64_t& lst = stride.back();
      bool both_bcast = lst == 0 && bstrides[d] == 0;
      bool contiguous = bstrides[d] != 0 && lst == bstrides[d] * a[d];
      if (both_bcast || contiguous) {
        ls *= a[d];
        if (contiguous) lst = bstrides[d];
        continue;
      }
    }
    size.push_back(a[d]);
    stride.push_back(bstrides[d]);
  }
  Broadcast p;
  if (!size.empty()) {
    p.inner = size.back();
    p.inner_stride = stride.back();
    size.pop_back();
    stride.pop_back();
  }
  p.size = size;
  p.bstride = stride;
  for (int64_t s : size) p.rows *= s;
  return p;
}

// out = f(a, b) with b broadcast onto a's shape. f is applied as f(x, y).
template <class F>
Tensor broadcast_apply(const char* op, const Tensor& a, const Tensor& b, F f) {
  Broadcast p = plan_broadcast(op, a.shape(), b.shape());
  Tensor out = Tensor::empty(a.shape());
  const float* pa = a.data();
  const float* pb = b.data();
  float* po = out.data();
  if (p.rows == 1 && p.inner_stride == 1) {  // same number of elements: plain elementwise
    parallel_elementwise(a.numel(), [pa, pb, po, f](int64_t s, int64_t e) {
      const float* __restrict x = pa + s;
      const float* __restrict y = pb + s;
      float* __restrict o = po + s;
      for (int64_t i = 0; i < e - s; ++i) o[i] = f(x[i], y[i]);
    });
  } else if (p.rows == 1) {  // b is one value
    const float v = pb[0];
    parallel_elementwise(a.numel(), [pa, po, v, f](int64_t s, int64_t e) {
      const float* __restrict x = pa + s;
      float* __restrict o = po + s;
      for (int64_t i = 0; i < e - s; ++i) o[i] = f(x[i], v);
    });
  } else {
    int64_t grain = std::max<int64_t>(1, detail::kElementwiseGrain / std::max<int64_t>(1, p.inner));
    parallel_for(0, p.rows, grain, [&p, pa, pb, po, f](int64_t rb, int64_t re) {
      const int64_t inner = p.inner;
      for (int64_t r = rb; r < re; ++r) {
        const float* __restrict ra = pa + r * inner;
        const float* __restrict rbp = pb + p.boffset(r);
        float* __restrict ro = po + r * inner;
        if (p.inner_stride == 0) {
          const float v = rbp[0];
          for (int64_t i = 0; i < inner; ++i) ro[i] = f(ra[i], v);
        } else {
          for (int64_t i = 0; i < inner; ++i) ro[i] = f(ra[i], rbp[i]);
        }
      }
    });
  }
  return out;
}

// The gradient of a broadcast operand: g (a's shape) summed down to b_shape.
// Serial and in a fixed order, so deterministic; accumulates in double.
Tensor reduce_to(const Tensor& g, const Shape& b_shape) {
  if (g.shape() == b_shape) return g;
  Broadcast p = plan_broadcast("reduce_to", g.shape(), b_shape);
  int64_t bn = numel_of(b_shape);
  std::vector<double> acc(static_cast<size_t>(bn), 0.0);
  const float* pg = g.data();
  if (bn == 1) {
    acc[0] = sum_double(pg, g.numel());
  } else {
    for (int64_t r = 0; r < p.rows; ++r) {
      const float* row = pg + r * p.inner;
      double* dst = acc.data() + p.boffset(r);
      if (p.inner_stride == 0) {
        double s = 0;
        for (int64_t i = 0; i < p.inner; ++i) s += row[i];
        dst[0] += s;
      } else {
        for (int64_t i = 0; i < p.inner; ++i) dst[i] += row[i];
      }
    }
  }
  Tensor out = Tensor::empty(b_shape);
  for (int64_t i = 0; i < bn; ++i) out.data()[i] = static_cast<float>(acc[static_cast<size_t>(i)]);
  return out;
}

Tensor scale_raw(const Tensor& x, float s) {
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data();
  float* po = out.data();
  parallel_elementwise(x.numel(), [px, po, s](int64_t b, int64_t e) {
    const float* __restrict in = px + b;
    float* __restrict o = po + b;
    for (int64_t i = 0; i < e - b; ++i) o[i] = in[i] * s;
  });
  return out;
}

void check_binary(const char* op, const Tensor& a, const Tensor& b) {
  require_defined(op, a, "a");
  require_defined(op, b, "b");
}

}  // namespace

// ---------------------------------------------------------------- elementwise

Tensor add(const Tensor& a, const Tensor& b) {
  const profile::Scope scope("add forward");
  check_binary("add", a, b);
  // Equal shapes (the residual add) take the vectorized loop of add_raw.
  Tensor out = a.shape() == b.shape() ? detail::add_raw(a, b)
                                      : broadcast_apply("add", a, b, [](float x, float y) { return x + y; });
  bool ga = needs_grad(a), gb = needs_grad(b);
  if (!ga && !gb) return out;
  Shape bs = b.shape();
  return record("add", out, {a, b}, [ga, gb, bs](const Tensor& g) -> std::vector<Tensor> {
    return {ga ? g : Tensor(), gb ? reduce_to(g, bs) : Tensor()};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  check_binary("sub", a, b);
  Tensor out = broadcast_apply("sub", a, b, [](float x, float y) { return x - y; });
  bool ga = needs_grad(a), gb = needs_grad(b);
  if (!ga && !gb) return out;
  Shape bs = b.shape();
  return record("sub", out, {a, b}, [ga, gb, bs](const Tensor& g) -> std::vector<Tensor> {
    return {ga ? g : Tensor(), gb ? scale_raw(reduce_to(g, bs), -1.0f) : Tensor()};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  check_binary("mul", a, b);
  Tensor out = broadcast_apply("mul", a, b, [](float x, float y) { return x * y; });
  bool ga = needs_grad(a), gb = needs_grad(b);
  if (!ga && !gb) return out;
  Tensor sa = gb ? a.detach() : Tensor();
  Tensor sb = ga ? b.detach() : Tensor();
  Shape bs = b.shape();
  return record("mul", out, {a, b}, [sa, sb, bs](const Tensor& g) -> std::vector<Tensor> {
    auto times = [](float x, float y) { return x * y; };
    Tensor da = sb.defined() ? broadcast_apply("mul", g, sb, times) : Tensor();
    Tensor db = sa.defined() ? reduce_to(broadcast_apply("mul", g, sa, times), bs) : Tensor();
    return {da, db};
  });
}

Tensor mul(const Tensor& a, float s) {
  require_defined("mul", a, "a");
  Tensor out = scale_raw(a, s);
  if (!needs_grad(a)) return out;
  return record("mul_scalar", out, {a}, [s](const Tensor& g) -> std::vector<Tensor> { return {scale_raw(g, s)}; });
}

// Both relu loops are written branch-free over restrict pointers so that
// they vectorize (a conditional load of the gradient would not).
namespace {
OCTET_SIMD_CLONES void relu_forward(const float* __restrict in, float* __restrict o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = in[i] > 0.0f ? in[i] : 0.0f;
}
OCTET_SIMD_CLONES void relu_backward(const float* __restrict y, const float* __restrict g, float* __restrict d,
                                     int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = g[i];
    d[i] = y[i] > 0.0f ? v : 0.0f;
  }
}
}  // namespace

Tensor relu(const Tensor& x) {
  const profile::Scope scope("relu forward");
  require_defined("relu", x, "x");
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data();
  float* po = out.data();
  parallel_elementwise(x.numel(), [px, po](int64_t b, int64_t e) { relu_forward(px + b, po + b, e - b); });
  if (!needs_grad(x)) return out;
  Tensor saved = out.detach();  // the mask comes from the output; never capture `out` itself (cycle)
  return record("relu", out, {x}, [saved](const Tensor& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(g.shape());
    const float* py = saved.data();
    const float* pg = g.data();
    float* pd = dx.data();
    parallel_elementwise(g.numel(), [py, pg, pd](int64_t b, int64_t e) { relu_backward(py + b, pg + b, pd + b, e - b); });
    return {dx};
  });
}

// ---------------------------------------------------------------- reductions

Tensor sum(const Tensor& x) {
  require_defined("sum", x, "x");
  Tensor out = Tensor::scalar(static_cast<float>(sum_double(x.data(), x.numel())));
  if (!needs_grad(x)) return out;
  Shape xs = x.shape();
  return record("sum", out, {x},
                [xs](const Tensor& g) -> std::vector<Tensor> { return {Tensor::full(xs, g.item())}; });
}

Tensor mean(const Tensor& x) {
  require_defined("mean", x, "x");
  if (x.numel() == 0) fail("mean", "mean of an empty tensor " + shape_str(x.shape()));
  double n = static_cast<double>(x.numel());
  Tensor out = Tensor::scalar(static_cast<float>(sum_double(x.data(), x.numel()) / n));
  if (!needs_grad(x)) return out;
  Shape xs = x.shape();
  return record("mean", out, {x}, [xs, n](const Tensor& g) -> std::vector<Tensor> {
    return {Tensor::full(xs, static_cast<float>(g.item() / n))};
  });
}

// ---------------------------------------------------------------- views

Tensor reshape(const Tensor& x, const Shape& shape) {
  require_defined("reshape", x, "x");
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0) fail("reshape", "more than one -1 in " + shape_str(shape));
      infer = static_cast<int>(i);
    } else if (s[i] < 0) {
      fail("reshape", "negative dimension in " + shape_str(shape));
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known != 0)
      fail("reshape", "cannot reshape " + shape_str(x.shape()) + " to " + shape_str(shape));
    s[static_cast<size_t>(infer)] = x.numel() / known;
  }
  if (numel_of(s) != x.numel())
    fail("reshape", "cannot reshape " + shape_str(x.shape()) + " (" + std::to_string(x.numel()) + " elements) to " +
                        shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = s;
  impl->numel = x.numel();
  impl->storage = x.impl()->storage;  // a view: same buffer
  Tensor out(std::move(impl));
  if (!needs_grad(x)) return out;
  Shape xs = x.shape();
  return record("reshape", out, {x}, [xs](const Tensor& g) -> std::vector<Tensor> {
    auto gi = std::make_shared<TensorImpl>();
    gi->shape = xs;
    gi->numel = g.numel();
    gi->storage = g.impl()->storage;
    return {Tensor(std::move(gi))};
  });
}

Tensor flatten(const Tensor& x) {
  require_defined("flatten", x, "x");
  if (x.ndim() < 1) fail("flatten", "needs at least one dim, got a scalar");
  return reshape(x, {x.dim(0), x.dim(0) == 0 ? 0 : x.numel() / x.dim(0)});
}

// ---------------------------------------------------------------- matmul / linear

namespace {
// C[M, N] = A[M, K] * op(B): rows of A/C split across tasks, one sgemm each.
void gemm_rows(int64_t M, int64_t N, int64_t K, const float* A, const float* B, bool trans_b, float* C) {
  int64_t grain = std::max<int64_t>(16, (int64_t(1) << 22) / std::max<int64_t>(1, N * K));
  parallel_for(0, M, grain, [&](int64_t b, int64_t e) {
    sgemm(false, trans_b, e - b, N, K, 1.0f, A + b * K, K, B, trans_b ? K : N, 0.0f, C + b * N, N);
  });
}
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  require_ndim("matmul", a, "a", 2);
  require_ndim("matmul", b, "b", 2);
  if (a.dim(1) != b.dim(0))
    fail("matmul", "inner dims differ: a " + shape_str(a.shape()) + ", b " + shape_str(b.shape()));
  int64_t M = a.dim(0), K = a.dim(1), N = b.dim(1);
  Tensor out = Tensor::empty({M, N});
  gemm_rows(M, N, K, a.data(), b.data(), false, out.data());
  bool ga = needs_grad(a), gb = needs_grad(b);
  if (!ga && !gb) return out;
  Tensor sa = gb ? a.detach() : Tensor();
  Tensor sb = ga ? b.detach() : Tensor();
  return record("matmul", out, {a, b}, [sa, sb, M, N, K](const Tensor& g) -> std::vector<Tensor> {
    Tensor da, db;
    if (sb.defined()) {  // da[M, K] = g[M, N] b^T
      da = Tensor::empty({M, K});
      gemm_rows(M, K, N, g.data(), sb.data(), true, da.data());
    }
    if (sa.defined()) {  // db[K, N] = a^T g
      db = Tensor::empty({K, N});
      sgemm(true, false, K, N, M, 1.0f, sa.data(), K, g.data(), N, 0.0f, db.data(), N);
    }
    return {da, db};
  });
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const profile::Scope scope("linear forward");
  require_ndim("linear", x, "x", 2);
  require_ndim("linear", w, "w", 2);
  if (x.dim(1) != w.dim(1))
    fail("linear", "x " + shape_str(x.shape()) + " has " + std::to_string(x.dim(1)) + " features but w " +
                       shape_str(w.shape()) + " expects " + std::to_string(w.dim(1)));
  int64_t N = x.dim(0), in = x.dim(1), outf = w.dim(0);
  if (bias.defined() && bias.shape() != Shape{outf})
    fail("linear", "bias " + shape_str(bias.shape()) + " must be " + shape_str({outf}) + " for w " + shape_str(w.shape()));
  Tensor out = Tensor::empty({N, outf});
  gemm_rows(N, outf, in, x.data(), w.data(), true, out.data());
  if (bias.defined()) {
    const float* pb = bias.data();
    float* po = out.data();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < outf; ++o) po[n * outf + o] += pb[o];
  }
  bool gx = needs_grad(x), gw = needs_grad(w), gbias = needs_grad(bias);
  if (!gx && !gw && !gbias) return out;
  Tensor sx = gw ? x.detach() : Tensor();
  Tensor sw = gx ? w.detach() : Tensor();
  return record("linear", out, {x, w, bias},
                [sx, sw, gbias, N, in, outf](const Tensor& g) -> std::vector<Tensor> {
                  Tensor dx, dw, db;
                  if (sw.defined()) {  // dx[N, in] = g[N, out] w[out, in]
                    dx = Tensor::empty({N, in});
                    gemm_rows(N, in, outf, g.data(), sw.data(), false, dx.data());
                  }
                  if (sx.defined()) {  // dw[out, in] = g^T x
                    dw = Tensor::empty({outf, in});
                    sgemm(true, false, outf, in, N, 1.0f, g.data(), outf, sx.data(), in, 0.0f, dw.data(), in);
                  }
                  if (gbias) db = reduce_to(g, {outf});
                  return {dx, dw, db};
                });
}

// ---------------------------------------------------------------- softmax and cross-entropy

namespace {

// log(sum_j exp(row_j)), shifted by the row's maximum so no exp overflows.
double logsumexp(const float* row, int64_t C) {
  double m = row[0];
  for (int64_t j = 1; j < C; ++j) m = std::max(m, double(row[j]));
  double se = 0;
  for (int64_t j = 0; j < C; ++j) se += std::exp(double(row[j]) - m);
  return m + std::log(se);
}

// p[n, :] = softmax(z[n, :]) for rows of C classes.
void softmax_rows(const float* z, float* p, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    const float* row = z + n * C;
    const double lse = logsumexp(row, C);
    for (int64_t j = 0; j < C; ++j) p[n * C + j] = static_cast<float>(std::exp(double(row[j]) - lse));
  }
}

void require_logits(const char* op, const Tensor& logits) {
  require_ndim(op, logits, "logits", 2);
  if (logits.dim(0) == 0 || logits.dim(1) == 0) fail(op, "empty logits " + shape_str(logits.shape()));
}

void require_labels(const char* op, std::span<const int> labels, int64_t C) {
  for (size_t n = 0; n < labels.size(); ++n)
    if (labels[n] < 0 || labels[n] >= C)
      fail(op, "label " + std::to_string(labels[n]) + " at index " + std::to_string(n) + " is outside [0, " +
                   std::to_string(C) + ")");
}

// Softmax cross-entropy of logits [N, C] against target distributions, one
// per row, averaged over the rows:
//   loss_n = logsumexp(z_n) - sum_j t_nj z_nj,   dL/dz_nj = (softmax(z_n)_j - t_nj) / N.
// Targets supplies t: at(n, j), and dot(n, row) = sum_j t_nj row_j (the
// one-hot form sums in fewer terms). The targets get no gradient.
template <class Targets>
Tensor softmax_cross_entropy(const char* op, const Tensor& logits, Targets targets) {
  const int64_t N = logits.dim(0), C = logits.dim(1);
  const float* z = logits.data();
  double total = 0;
  for (int64_t n = 0; n < N; ++n) total += logsumexp(z + n * C, C) - targets.dot(n, z + n * C);
  Tensor out = Tensor::scalar(static_cast<float>(total / static_cast<double>(N)));
  if (!needs_grad(logits)) return out;
  Tensor prob = Tensor::empty({N, C});  // saved for backward
  softmax_rows(z, prob.data(), N, C);
  return record(op, out, {logits}, [prob, targets = std::move(targets), N, C](const Tensor& go) -> std::vector<Tensor> {
    Tensor dz = Tensor::empty({N, C});
    const double scale = go.item() / static_cast<double>(N);
    const float* p = prob.data();
    float* d = dz.data();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < C; ++j) d[n * C + j] = static_cast<float>((p[n * C + j] - targets.at(n, j)) * scale);
    return {dz};
  });
}

// t = (1 - eps) * onehot(label) + eps / C: the one place this rule is written.
struct SmoothedOneHot {
  std::vector<int> labels;
  double on, off;  // t is on + off at the label, off elsewhere
  int64_t C;
  SmoothedOneHot(std::span<const int> l, int64_t classes, double eps)
      : labels(l.begin(), l.end()), on(1.0 - eps), off(eps / static_cast<double>(classes)), C(classes) {}
  double at(int64_t n, int64_t j) const { return off + (j == labels[static_cast<size_t>(n)] ? on : 0.0); }
  double dot(int64_t n, const float* row) const {
    double sz = 0;
    for (int64_t j = 0; j < C; ++j) sz += row[j];
    return on * row[labels[static_cast<size_t>(n)]] + off * sz;
  }
};

// t given as a [N, C] tensor.
struct GivenTargets {
  Tensor t;
  int64_t C;
  double at(int64_t n, int64_t j) const { return t.data()[n * C + j]; }
  double dot(int64_t n, const float* row) const {
    double s = 0;
    for (int64_t j = 0; j < C; ++j) s += double(t.data()[n * C + j]) * row[j];
    return s;
  }
};

}  // namespace

Tensor softmax(const Tensor& logits) {
  require_logits("softmax", logits);
  const int64_t N = logits.dim(0), C = logits.dim(1);
  Tensor p = Tensor::empty({N, C});
  softmax_rows(logits.data(), p.data(), N, C);
  if (!needs_grad(logits)) return p;
  const Tensor saved = p.detach();
  return record("softmax", p, {logits}, [saved, N, C](const Tensor& g) -> std::vector<Tensor> {
    Tensor dz = Tensor::empty({N, C});
    const float* pp = saved.data();
    const float* gg = g.data();
    float* d = dz.data();
    for (int64_t n = 0; n < N; ++n) {
      double gp = 0;
      for (int64_t j = 0; j < C; ++j) gp += double(gg[n * C + j]) * pp[n * C + j];
      for (int64_t j = 0; j < C; ++j) d[n * C + j] = static_cast<float>(pp[n * C + j] * (gg[n * C + j] - gp));
    }
    return {dz};
  });
}

Tensor one_hot(std::span<const int> labels, int64_t classes, float label_smoothing) {
  if (classes <= 0) fail("one_hot", "classes must be > 0, got " + std::to_string(classes));
  if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f))
    fail("one_hot", "label_smoothing must be in [0, 1], got " + std::to_string(label_smoothing));
  require_labels("one_hot", labels, classes);
  const SmoothedOneHot rule(labels, classes, label_smoothing);
  const int64_t N = static_cast<int64_t>(labels.size());
  Tensor t = Tensor::empty({N, classes});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < classes; ++j) t.data()[n * classes + j] = static_cast<float>(rule.at(n, j));
  return t;
}

Tensor cross_entropy(const Tensor& logits, std::span<const int> labels, float label_smoothing) {
  const profile::Scope scope("cross_entropy forward");
  require_logits("cross_entropy", logits);
  const int64_t N = logits.dim(0), C = logits.dim(1);
  if (static_cast<int64_t>(labels.size()) != N)
    fail("cross_entropy", "logits " + shape_str(logits.shape()) + " has " + std::to_string(N) + " rows but " +
                              std::to_string(labels.size()) + " labels were given");
  if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f))
    fail("cross_entropy", "label_smoothing must be in [0, 1], got " + std::to_string(label_smoothing));
  require_labels("cross_entropy", labels, C);
  return softmax_cross_entropy("cross_entropy", logits, SmoothedOneHot(labels, C, label_smoothing));
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets) {
  require_logits("cross_entropy", logits);
  const int64_t N = logits.dim(0), C = logits.dim(1);
  if (targets.shape() != logits.shape())
    fail("cross_entropy", "targets " + shape_str(targets.shape()) + " do not match logits " + shape_str(logits.shape()));
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0;
    for (int64_t j = 0; j < C; ++j) {
      const float v = targets.data()[n * C + j];
      if (!(v >= 0.0f && v <= 1.0f))
        fail("cross_entropy", "target row " + std::to_string(n) + " has entry " + std::to_string(v) +
                                  " at class " + std::to_string(j) + ", outside [0, 1]");
      sum += v;
    }
    if (std::abs(sum - 1.0) > 1e-3)
      fail("cross_entropy", "target row " + std::to_string(n) + " sums to " + std::to_string(sum) + ", not 1");
  }
  return softmax_cross_entropy("cross_entropy", logits, GivenTargets{targets, C});
}

}  // namespace octet
