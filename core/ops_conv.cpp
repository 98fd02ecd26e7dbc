// core/ops_conv.cpp: conv2d forward and backward.
//
// Padding is per axis: pad_h zero rows above and below (the kh, H, OH axis),
// pad_w zero columns left and right (the kw, W, OW axis), resolved from
// Conv2dOptions (pad unless pad_h / pad_w override it), so rectangular
// kernels such as 1x3 with (pad_h, pad_w) = (0, 1) keep the input size.
//
// Three routes, chosen per call from the geometry (results agree to float
// rounding; each is independent of the thread count):
//  1. 3x3 stride 1 with pad_h == pad_w on a CPU with AVX-512 or AVX2+FMA: the direct
//     kernels of core/ops_conv_direct.cpp (forward and weight gradient).
//  2. Input gradient of any stride-1 conv with pad_h <= KH-1 and
//     pad_w <= KW-1: a forward convolution of dY with the kernel rotated by
//     180 degrees and in/out channels swapped (pad_h' = KH-1-pad_h,
//     pad_w' = KW-1-pad_w), so it goes through route 1 or 3 and writes dx
//     directly instead of scatter-adding a col matrix.
//  3. Everything else: im2col + sgemm, tiled over the batch.
//
// Route 3: the batch is cut into tiles of T images (T from the layer's
// geometry only, never from the thread count). One TBB task handles one
// (tile, group):
//   forward:  col[K, T*OHW] = im2col(x tile)           K = Cin/G * KH * KW
//             Y[Og, T*OHW]  = W_g[Og, K] * col          one wide sgemm
//             scatter Y into y's NCHW layout (+ bias)
//   backward: dY[Og, T*OHW] gathered from gy
//             dW_tile[Og, K] = dY * col^T               (col recomputed from x)
//             dcol[K, T*OHW] = W_g^T * dY, col2im-added into dx
// With T == 1 the gathers/scatters vanish (sgemm reads/writes NCHW directly),
// and for 1x1 stride-1 unpadded convs x itself is the col matrix.
// dW: each tile writes its own slot and the slots are summed in tile order,
// so dW is bit-identical for any thread count.
// Buffers: the im2col scratch is thread-local and bounded by kMaxColFloats,
// whatever the batch size.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "core/blas.h"
#include "core/ops.h"
#include "core/ops_conv_direct.h"
#include "core/ops_internal.h"
#include "core/profile.h"

namespace octet {

using detail::fail;
using detail::needs_grad;

namespace {

// Tile sizing: aim for sgemm N (= T*OHW columns) near kTargetCols, but keep
// the col buffer (K x T*OHW floats) under kMaxColFloats (about L2 size).
constexpr int64_t kTargetCols = 2048;
constexpr int64_t kMaxColFloats = int64_t(1) << 18;  // 1 MiB

struct Geom {
  int64_t N, Cin, H, W, Cout, KH, KW, G, Cg, Og, OH, OW, stride;
  int64_t pad_h, pad_w;  // zero padding of the rows (H axis) and columns (W axis)
  int64_t HW, OHW, K;    // K = Cg*KH*KW, rows of the col matrix of one group
  int64_t T, ntiles;     // images per tile, number of tiles
  bool pointwise;        // 1x1, stride 1, no padding: col == x
};

// Derived sizes and the tile size, from the validated N, Cin, H, W, Cout,
// Cg, KH, KW, G, stride, pad_h, pad_w.
void finish_geom(Geom& g) {
  g.Og = g.Cout / g.G;
  g.OH = (g.H + 2 * g.pad_h - g.KH) / g.stride + 1;
  g.OW = (g.W + 2 * g.pad_w - g.KW) / g.stride + 1;
  g.HW = g.H * g.W, g.OHW = g.OH * g.OW, g.K = g.Cg * g.KH * g.KW;
  g.pointwise = g.KH == 1 && g.KW == 1 && g.stride == 1 && g.pad_h == 0 && g.pad_w == 0;
  int64_t t = std::max<int64_t>(1, kTargetCols / g.OHW);
  t = std::min(t, std::max<int64_t>(1, kMaxColFloats / (g.K * g.OHW)));
  g.T = std::max<int64_t>(1, std::min(t, g.N));
  g.ntiles = g.N == 0 ? 0 : (g.N + g.T - 1) / g.T;
}

Geom make_geom(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dOptions& opt) {
  const char* op = "conv2d";
  detail::require_ndim(op, x, "x", 4);
  detail::require_ndim(op, w, "w", 4);
  if (opt.stride < 1) fail(op, "stride must be >= 1, got " + std::to_string(opt.stride));
  if (opt.pad < 0) fail(op, "pad must be >= 0, got " + std::to_string(opt.pad));
  if (opt.pad_h < -1) fail(op, "pad_h must be >= 0 (or -1 to use pad), got " + std::to_string(opt.pad_h));
  if (opt.pad_w < -1) fail(op, "pad_w must be >= 0 (or -1 to use pad), got " + std::to_string(opt.pad_w));
  if (opt.groups < 1) fail(op, "groups must be >= 1, got " + std::to_string(opt.groups));
  Geom g{};
  g.N = x.dim(0), g.Cin = x.dim(1), g.H = x.dim(2), g.W = x.dim(3);
  g.Cout = w.dim(0), g.Cg = w.dim(1), g.KH = w.dim(2), g.KW = w.dim(3);
  g.G = opt.groups, g.stride = opt.stride;
  g.pad_h = opt.pad_h >= 0 ? opt.pad_h : opt.pad;
  g.pad_w = opt.pad_w >= 0 ? opt.pad_w : opt.pad;
  if (g.Cin % g.G || g.Cout % g.G)
    fail(op, "groups=" + std::to_string(g.G) + " must divide Cin and Cout; x " + shape_str(x.shape()) + ", w " +
                 shape_str(w.shape()));
  if (g.Cg * g.G != g.Cin)
    fail(op, "x " + shape_str(x.shape()) + " has " + std::to_string(g.Cin) + " channels but w " + shape_str(w.shape()) +
                 " with groups=" + std::to_string(g.G) + " expects " + std::to_string(g.Cg * g.G));
  if (g.KH < 1 || g.KW < 1 || g.Cout < 1) fail(op, "empty kernel w " + shape_str(w.shape()));
  if (g.H + 2 * g.pad_h < g.KH)
    fail(op, "kernel of w " + shape_str(w.shape()) + " is taller than the padded input x " + shape_str(x.shape()) +
                 " (pad_h " + std::to_string(g.pad_h) + ")");
  if (g.W + 2 * g.pad_w < g.KW)
    fail(op, "kernel of w " + shape_str(w.shape()) + " is wider than the padded input x " + shape_str(x.shape()) +
                 " (pad_w " + std::to_string(g.pad_w) + ")");
  if (bias.defined() && bias.shape() != Shape{g.Cout})
    fail(op, "bias " + shape_str(bias.shape()) + " must be [" + std::to_string(g.Cout) + "] for w " + shape_str(w.shape()));
  finish_geom(g);
  return g;
}

// Grow-only, 64-byte aligned, one set per thread (TBB workers live as long as
// the process, so this is a fixed cost per thread).
float* scratch(int slot, int64_t n) {
  struct Buf {
    std::unique_ptr<float, decltype(&std::free)> p{nullptr, &std::free};
    int64_t cap = 0;
  };
  thread_local Buf bufs[3];
  Buf& b = bufs[slot];
  if (b.cap < n) {
    size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    b.p.reset(static_cast<float*>(p));
    b.cap = n;
  }
  return b.p.get();
}

// Valid outputs [lo, hi) along one axis for kernel offset k:
// 0 <= o*stride - pad + k < in (pad is that axis's pad_h or pad_w).
inline void valid_cols(int64_t stride, int64_t pad, int64_t k, int64_t in, int64_t out, int64_t& lo, int64_t& hi) {
  int64_t off = pad - k;  // i = o*stride - off
  lo = off <= 0 ? 0 : (off + stride - 1) / stride;
  hi = (in - 1 + off) < 0 ? 0 : (in - 1 + off) / stride + 1;
  lo = std::min(lo, out);
  hi = std::clamp(hi, lo, out);
}

// One row of im2col: d[ow] = s[ow * stride - off] for ow in [lo, hi), 0 elsewhere.
inline void im2col_row(const float* __restrict s, float* __restrict d, int64_t OW, int64_t lo, int64_t hi,
                       int64_t stride, int64_t off) {
  for (int64_t ow = 0; ow < lo; ++ow) d[ow] = 0.0f;
  if (stride == 1) {
    const float* __restrict sp = s - off;
    for (int64_t ow = lo; ow < hi; ++ow) d[ow] = sp[ow];
  } else {
    for (int64_t ow = lo; ow < hi; ++ow) d[ow] = s[ow * stride - off];
  }
  for (int64_t ow = hi; ow < OW; ++ow) d[ow] = 0.0f;
}

// x [N, Cin, H, W]: images n0..n0+T, channels of group g -> col [K, T*OHW].
OCTET_SIMD_CLONES void im2col(const Geom& c, const float* x, int64_t n0, int64_t T, int64_t g, float* col) {
  const int64_t cols = T * c.OHW;
  // Stride 1 with OW == W: an output row is the input row shifted by
  // (kw - pad_w), so the valid rows of one (ci, kh, kw) plane are a single
  // shifted block copy, after which the columns that fell outside the image
  // are zeroed.
  const bool block = c.stride == 1 && c.OW == c.W;
  for (int64_t ci = 0; ci < c.Cg; ++ci)
    for (int64_t kh = 0; kh < c.KH; ++kh) {
      // Valid output rows [oh_lo, oh_hi): 0 <= oh*stride - pad_h + kh < H.
      int64_t oh_lo, oh_hi;
      valid_cols(c.stride, c.pad_h, kh, c.H, c.OH, oh_lo, oh_hi);
      for (int64_t kw = 0; kw < c.KW; ++kw) {
        float* dst = col + ((ci * c.KH + kh) * c.KW + kw) * cols;
        int64_t lo, hi;
        valid_cols(c.stride, c.pad_w, kw, c.W, c.OW, lo, hi);
        const int64_t off = c.pad_w - kw;
        for (int64_t t = 0; t < T; ++t) {
          const float* src = x + ((n0 + t) * c.Cin + g * c.Cg + ci) * c.HW;
          float* d = dst + t * c.OHW;
          if (oh_lo > 0) std::memset(d, 0, static_cast<size_t>(oh_lo * c.OW) * sizeof(float));
          if (oh_hi < c.OH) std::memset(d + oh_hi * c.OW, 0, static_cast<size_t>((c.OH - oh_hi) * c.OW) * sizeof(float));
          if (oh_hi <= oh_lo) continue;
          if (block) {
            // d[oh*W + ow] = src[(oh - pad_h + kh)*W + ow - off] over the valid rows.
            const int64_t n = (oh_hi - oh_lo) * c.W;
            const float* __restrict sp = src + (oh_lo - c.pad_h + kh) * c.W - off;
            float* __restrict dp = d + oh_lo * c.W;
            // The first/last elements may read just outside the plane: clamp
            // the copied range to the plane and fix the edges below.
            const int64_t first = (oh_lo - c.pad_h + kh) * c.W - off;  // plane index of dp[0]
            const int64_t a = std::max<int64_t>(0, -first), z = std::min<int64_t>(n, c.HW - first);
            for (int64_t i = 0; i < a; ++i) dp[i] = 0.0f;
            for (int64_t i = a; i < z; ++i) dp[i] = sp[i];
            for (int64_t i = z; i < n; ++i) dp[i] = 0.0f;
            for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
              float* r = d + oh * c.OW;
              for (int64_t ow = 0; ow < lo; ++ow) r[ow] = 0.0f;
              for (int64_t ow = hi; ow < c.OW; ++ow) r[ow] = 0.0f;
            }
          } else {
            for (int64_t oh = oh_lo; oh < oh_hi; ++oh)
              im2col_row(src + (oh * c.stride - c.pad_h + kh) * c.W, d + oh * c.OW, c.OW, lo, hi, c.stride, off);
          }
        }
      }
    }
}

// col [K, T*OHW] added into dx [N, Cin, H, W] (images n0..n0+T, group g).
OCTET_SIMD_CLONES void col2im_add(const Geom& c, const float* col, int64_t n0, int64_t T, int64_t g, float* dx) {
  const int64_t cols = T * c.OHW;
  for (int64_t ci = 0; ci < c.Cg; ++ci)
    for (int64_t kh = 0; kh < c.KH; ++kh) {
      int64_t oh_lo, oh_hi;
      valid_cols(c.stride, c.pad_h, kh, c.H, c.OH, oh_lo, oh_hi);
      for (int64_t kw = 0; kw < c.KW; ++kw) {
        const float* src = col + ((ci * c.KH + kh) * c.KW + kw) * cols;
        int64_t lo, hi;
        valid_cols(c.stride, c.pad_w, kw, c.W, c.OW, lo, hi);
        const int64_t off = c.pad_w - kw;
        for (int64_t t = 0; t < T; ++t) {
          float* dst = dx + ((n0 + t) * c.Cin + g * c.Cg + ci) * c.HW;
          for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
            const int64_t ih = oh * c.stride - c.pad_h + kh;
            const float* __restrict s = src + t * c.OHW + oh * c.OW;
            float* __restrict d = dst + ih * c.W;  // dx row ih; column of ow is ow*stride - off
            if (c.stride == 1) {
              float* __restrict dp = d - off;
              for (int64_t ow = lo; ow < hi; ++ow) dp[ow] += s[ow];
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) d[ow * c.stride - off] += s[ow];
            }
          }
        }
      }
    }
}

// 3x3 stride-1 convolutions with the same padding on both axes go to the
// direct kernels (core/ops_conv_direct.h, which take a single pad) when the
// CPU has them.
bool use_direct(const Geom& c) {
  return c.KH == 3 && c.KW == 3 && c.stride == 1 && c.pad_h == c.pad_w && detail::direct_conv3x3_available();
}
detail::Conv3x3 direct_shape(const Geom& c) { return {c.N, c.Cin, c.H, c.W, c.Cout, c.G, c.pad_h}; }  // == pad_w

// y [N, Cout, OH, OW] = conv(x, w) + bias.
void conv_forward(const Geom& c, const float* x, const float* w, const float* bias, float* y) {
  if (c.N == 0) return;
  if (use_direct(c)) {
    detail::direct_conv3x3_forward(direct_shape(c), x, w, bias, y);
    return;
  }
  const int64_t tasks = c.ntiles * c.G;
  parallel_for(0, tasks, 1, [&](int64_t tb, int64_t te) {
    for (int64_t task = tb; task < te; ++task) {
      const int64_t tile = task / c.G, g = task % c.G;
      const int64_t n0 = tile * c.T, T = std::min(c.T, c.N - n0), cols = T * c.OHW;
      const float* wg = w + g * c.Og * c.K;
      const float* B;
      int64_t ldb;
      if (c.pointwise && T == 1) {
        B = x + (n0 * c.Cin + g * c.Cg) * c.HW, ldb = c.HW;
      } else {
        float* col = scratch(0, c.K * cols);
        im2col(c, x, n0, T, g, col);
        B = col, ldb = cols;
      }
      if (T == 1) {
        float* out = y + (n0 * c.Cout + g * c.Og) * c.OHW;
        sgemm(false, false, c.Og, cols, c.K, 1.0f, wg, c.K, B, ldb, 0.0f, out, c.OHW);
        if (bias)
          for (int64_t o = 0; o < c.Og; ++o) {
            const float b = bias[g * c.Og + o];
            for (int64_t i = 0; i < c.OHW; ++i) out[o * c.OHW + i] += b;
          }
      } else {
        float* buf = scratch(1, c.Og * cols);
        sgemm(false, false, c.Og, cols, c.K, 1.0f, wg, c.K, B, ldb, 0.0f, buf, cols);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t o = 0; o < c.Og; ++o) {
            const float* s = buf + o * cols + t * c.OHW;
            float* d = y + ((n0 + t) * c.Cout + g * c.Og + o) * c.OHW;
            const float b = bias ? bias[g * c.Og + o] : 0.0f;
            for (int64_t i = 0; i < c.OHW; ++i) d[i] = s[i] + b;
          }
      }
    }
  });
}

// For stride 1, dx is itself a convolution: dx = conv(gy, w') with
// pad_h' = KH-1-pad_h, pad_w' = KW-1-pad_w (each axis on its own, so KH != KW
// is fine) and w'[g*Cg + ci, co, kh, kw] = w[g*Og + co, ci, KH-1-kh, KW-1-kw]
// (swap the in/out channels within each group, rotate the kernel by 180
// degrees). Per axis, OH + 2*pad_h' - KH + 1 == H (and likewise for W), so dx
// comes out at the input size. Its sgemm has inner dimension Og*KH*KW instead of Og, and it
// writes dx directly instead of scatter-adding a col matrix into a zeroed dx.
// A pad larger than KH-1 (or KW-1) would make pad' negative: route 3.
bool dx_as_conv(const Geom& c) { return c.stride == 1 && c.pad_h <= c.KH - 1 && c.pad_w <= c.KW - 1; }

void conv_forward(const Geom& c, const float* x, const float* w, const float* bias, float* y);

void conv_dx_as_conv(const Geom& c, const float* w, const float* gy, float* dx) {
  Geom t{};
  t.N = c.N, t.Cin = c.Cout, t.H = c.OH, t.W = c.OW, t.Cout = c.Cin, t.Cg = c.Og, t.KH = c.KH, t.KW = c.KW;
  t.G = c.G, t.stride = 1, t.pad_h = c.KH - 1 - c.pad_h, t.pad_w = c.KW - 1 - c.pad_w;
  finish_geom(t);
  Tensor wt = Tensor::empty({c.Cin, c.Og, c.KH, c.KW});
  float* pw = wt.data();
  const int64_t kk = c.KH * c.KW;
  for (int64_t g = 0; g < c.G; ++g)
    for (int64_t ci = 0; ci < c.Cg; ++ci)
      for (int64_t co = 0; co < c.Og; ++co) {
        const float* src = w + ((g * c.Og + co) * c.Cg + ci) * kk;
        float* dst = pw + ((g * c.Cg + ci) * c.Og + co) * kk;
        // Reversing the flat index kh*KW + kw reverses both axes.
        for (int64_t k = 0; k < kk; ++k) dst[k] = src[kk - 1 - k];
      }
  conv_forward(t, gy, pw, nullptr, dx);
}

// dx [N, Cin, H, W] (if dx), dw [Cout, Cg, KH, KW] (if dw) from gy [N, Cout, OH, OW].
void conv_backward(const Geom& c, const float* x, const float* w, const float* gy, float* dx, float* dw) {
  if (c.N == 0) {
    if (dw) std::memset(dw, 0, static_cast<size_t>(c.Cout * c.K) * sizeof(float));
    return;
  }
  if (dx && dx_as_conv(c)) {
    const profile::Scope scope("conv2d input gradient");
    conv_dx_as_conv(c, w, gy, dx);
    dx = nullptr;
  }
  if (dw && use_direct(c)) {
    const profile::Scope scope("conv2d weight gradient");
    detail::direct_conv3x3_weight_grad(direct_shape(c), x, gy, dw);
    dw = nullptr;
  }
  if (!dx && !dw) return;
  const profile::Scope scope(dx && dw ? "conv2d input and weight gradients im2col"
                             : dx     ? "conv2d input gradient im2col"
                                      : "conv2d weight gradient im2col");
  const int64_t tasks = c.ntiles * c.G;
  const int64_t wsize = c.Cout * c.K;
  Tensor slots = dw ? Tensor::empty({c.ntiles, wsize}) : Tensor();  // per-tile partial dW
  float* slot_base = dw ? slots.data() : nullptr;
  parallel_for(0, tasks, 1, [&](int64_t tb, int64_t te) {
    for (int64_t task = tb; task < te; ++task) {
      const int64_t tile = task / c.G, g = task % c.G;
      const int64_t n0 = tile * c.T, T = std::min(c.T, c.N - n0), cols = T * c.OHW;
      const float* wg = w + g * c.Og * c.K;
      // dY [Og, cols]
      const float* dY;
      int64_t ldy;
      if (T == 1) {
        dY = gy + (n0 * c.Cout + g * c.Og) * c.OHW, ldy = c.OHW;
      } else {
        float* buf = scratch(1, c.Og * cols);
        for (int64_t o = 0; o < c.Og; ++o)
          for (int64_t t = 0; t < T; ++t)
            std::memcpy(buf + o * cols + t * c.OHW, gy + ((n0 + t) * c.Cout + g * c.Og + o) * c.OHW,
                        static_cast<size_t>(c.OHW) * sizeof(float));
        dY = buf, ldy = cols;
      }
      const bool direct = c.pointwise && T == 1;  // x / dx are the col matrices
      float* col = direct ? nullptr : scratch(0, c.K * cols);
      if (dw) {
        const float* B = direct ? x + (n0 * c.Cin + g * c.Cg) * c.HW : col;
        if (!direct) im2col(c, x, n0, T, g, col);
        // dW_tile[Og, K] = dY[Og, cols] * col[K, cols]^T
        sgemm(false, true, c.Og, c.K, cols, 1.0f, dY, ldy, B, direct ? c.HW : cols, 0.0f,
              slot_base + tile * wsize + g * c.Og * c.K, c.K);
      }
      if (dx) {
        if (direct) {
          sgemm(true, false, c.K, cols, c.Og, 1.0f, wg, c.K, dY, ldy, 0.0f, dx + (n0 * c.Cin + g * c.Cg) * c.HW, c.HW);
        } else {
          // dcol[K, cols] = W_g^T * dY, then added into the zeroed dx images.
          sgemm(true, false, c.K, cols, c.Og, 1.0f, wg, c.K, dY, ldy, 0.0f, col, cols);
          for (int64_t t = 0; t < T; ++t)
            std::memset(dx + ((n0 + t) * c.Cin + g * c.Cg) * c.HW, 0, static_cast<size_t>(c.Cg * c.HW) * sizeof(float));
          col2im_add(c, col, n0, T, g, dx);
        }
      }
    }
  });
  if (dw) {  // dw = sum of the tile slots, in tile order
    parallel_for(0, wsize, 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) dw[i] = 0.0f;
      for (int64_t t = 0; t < c.ntiles; ++t) {
        const float* s = slot_base + t * wsize;
        for (int64_t i = b; i < e; ++i) dw[i] += s[i];
      }
    });
  }
}

// db[Cout] = sum of gy over N, OH, OW (double per channel; deterministic).
void bias_backward(const Geom& c, const float* gy, float* db) {
  parallel_for(0, c.Cout, 1, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      double s = 0;
      for (int64_t n = 0; n < c.N; ++n) {
        const float* p = gy + (n * c.Cout + o) * c.OHW;
        float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t i = 0;
        for (; i + 8 <= c.OHW; i += 8)
          for (int j = 0; j < 8; ++j) lane[j] += p[i + j];
        for (; i < c.OHW; ++i) s += p[i];
        for (int j = 0; j < 8; ++j) s += lane[j];
      }
      db[o] = static_cast<float>(s);
    }
  });
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, Conv2dOptions opt) {
  const Geom c = make_geom(x, w, bias, opt);
  Tensor y = Tensor::empty({c.N, c.Cout, c.OH, c.OW});
  {
    const profile::Scope scope("conv2d forward");
    conv_forward(c, x.data(), w.data(), bias.defined() ? bias.data() : nullptr, y.data());
  }
  const bool gx = needs_grad(x), gw = needs_grad(w), gb = needs_grad(bias);
  if (!gx && !gw && !gb) return y;
  Tensor sx = gw ? x.detach() : Tensor();
  Tensor sw = gx || gw ? w.detach() : Tensor();  // w is read by the dx sgemm
  return record("conv2d", y, {x, w, bias}, [c, sx, sw, gx, gw, gb](const Tensor& gy) -> std::vector<Tensor> {
    Tensor dx = gx ? Tensor::empty({c.N, c.Cin, c.H, c.W}) : Tensor();
    Tensor dw = gw ? Tensor::empty({c.Cout, c.Cg, c.KH, c.KW}) : Tensor();
    Tensor db = gb ? Tensor::empty({c.Cout}) : Tensor();
    if (gx || gw)
      conv_backward(c, gw ? sx.data() : nullptr, sw.data(), gy.data(), gx ? dx.data() : nullptr,
                    gw ? dw.data() : nullptr);
    if (gb) bias_backward(c, gy.data(), db.data());
    return {dx, dw, db};
  });
}

}  // namespace octet
