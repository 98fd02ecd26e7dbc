// core/ops_conv_direct.cpp: direct (im2col-free) AVX-512 kernels for 3x3,
// stride-1 convolutions, the bulk of a CIFAR ResNet's work. See
// core/ops_conv_direct.h for the contract; ops_conv.cpp calls them when the
// CPU has AVX-512 and falls back to im2col + sgemm otherwise.
//
// The trick: zero-pad each input plane to Hp x Wp (Hp = H + 2*pad,
// Wp = W + 2*pad) and compute the output on a grid of the same width Wp:
// output j = oh*Wp + ow reads input j + kh*Wp + kw. Over the flattened index
// j a 3x3 convolution is then nine shifted 1-D multiply-adds of contiguous
// vectors, with no gather and no edge cases; the columns ow >= OW of the grid
// are junk and are dropped when the result is copied out (6% of the work for
// 32x32 planes, 11% for 16x16, 20% for 8x8).
//
// Forward (also the input gradient, as a convolution with rotated weights):
// per image and group, a block of 8 output channels x 32 grid positions is
// held in 16 zmm accumulators; each step loads 2 input vectors and broadcasts
// 8 weights for 16 FMAs.
// Weight gradient: dW[co, ci, kh, kw] = sum_j dYgrid[co, j] * Xpad[ci, j + kh*Wp + kw]
// with dY placed on the same grid (junk columns zero). A block of 4 output
// channels x 3 kw for one (ci, kh) is 12 accumulators; each step loads 4 dY
// vectors and 3 shifted input vectors for 12 FMAs. Images are processed in
// fixed chunks whose partial sums are added in chunk order, so dW does not
// depend on the thread count.
#include "core/ops_conv_direct.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>

#include "core/alloc.h"
#include "core/parallel.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define OCTET_HAVE_DIRECT 1
#define OCTET_AVX512 __attribute__((target("avx512f")))
#else
#define OCTET_HAVE_DIRECT 0
#endif

namespace octet::detail {

namespace {
bool g_direct_enabled = true;
}

void set_direct_conv3x3_enabled(bool on) { g_direct_enabled = on; }

#if OCTET_HAVE_DIRECT

namespace {

constexpr int64_t kVec = 16;        // floats per zmm
constexpr int64_t kJBlock = 32;     // grid positions per forward block (2 zmm)
constexpr int64_t kImagesPerChunk = 8;  // weight-gradient chunk (fixed: determinism)

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Grow-only aligned scratch, one set per thread.
float* thread_scratch(int slot, int64_t n) {
  struct Buf {
    std::unique_ptr<float, decltype(&std::free)> p{nullptr, &std::free};
    int64_t cap = 0;
  };
  thread_local Buf bufs[2];
  Buf& b = bufs[slot];
  if (b.cap < n) {
    void* p = std::aligned_alloc(64, static_cast<size_t>(round_up(n, 16)) * sizeof(float));
    if (!p) throw std::bad_alloc();
    b.p.reset(static_cast<float*>(p));
    b.cap = n;
  }
  return b.p.get();
}

struct Grid {
  int64_t Hp, Wp, OH, OW;
  int64_t J;       // OH * Wp: grid positions that hold outputs (incl. junk columns)
  int64_t Jr;      // J rounded up to the block size
  int64_t plane;   // floats per padded input plane, incl. zeroed slack read by the last block
};

Grid make_grid(const Conv3x3& c) {
  Grid g{};
  g.Hp = c.H + 2 * c.pad, g.Wp = c.W + 2 * c.pad;
  g.OH = g.Hp - 2, g.OW = g.Wp - 2;
  g.J = g.OH * g.Wp;
  g.Jr = round_up(g.J, kJBlock);
  // The last block reads up to Jr - 1 + 2*Wp + 2.
  g.plane = round_up(std::max(g.Hp * g.Wp, g.Jr + 2 * g.Wp + 2), kVec);
  return g;
}

// src [C][H][W] -> dst [C][plane], zero border and slack.
void pad_planes(const float* src, int64_t C, int64_t H, int64_t W, int64_t pad, const Grid& g, float* dst) {
  for (int64_t c = 0; c < C; ++c) {
    float* d = dst + c * g.plane;
    const float* s = src + c * H * W;
    std::memset(d, 0, static_cast<size_t>(pad * g.Wp) * sizeof(float));
    for (int64_t h = 0; h < H; ++h) {
      float* row = d + (h + pad) * g.Wp;
      for (int64_t i = 0; i < pad; ++i) row[i] = 0.0f, row[pad + W + i] = 0.0f;
      std::memcpy(row + pad, s + h * W, static_cast<size_t>(W) * sizeof(float));
    }
    const int64_t used = (H + pad) * g.Wp;
    std::memset(d + used, 0, static_cast<size_t>(g.plane - used) * sizeof(float));
  }
}

// Sum of the 16 lanes, in lane order.
OCTET_AVX512 inline float lane_sum(__m512 v) {
  alignas(64) float t[kVec];
  _mm512_store_ps(t, v);
  float s = 0.0f;
  for (int i = 0; i < kVec; ++i) s += t[i];
  return s;
}

// out[c][j] for c < CB, j in [0, Jr): 3x3 over xpad [Cg][plane]; w rows of
// Cg*9 floats, row c at w + c*wstride.
template <int CB>
OCTET_AVX512 void fwd_block(const float* xpad, int64_t Cg, const Grid& g, const float* w, int64_t wstride,
                            float* out) {
  const int64_t Wp = g.Wp;
  for (int64_t j0 = 0; j0 < g.Jr; j0 += kJBlock) {
    __m512 acc0[CB], acc1[CB];
    for (int c = 0; c < CB; ++c) acc0[c] = _mm512_setzero_ps(), acc1[c] = _mm512_setzero_ps();
    for (int64_t ci = 0; ci < Cg; ++ci) {
      const float* xp = xpad + ci * g.plane + j0;
      const float* wp = w + ci * 9;
      for (int kh = 0; kh < 3; ++kh)
        for (int kw = 0; kw < 3; ++kw) {
          const float* p = xp + kh * Wp + kw;
          const __m512 x0 = _mm512_loadu_ps(p), x1 = _mm512_loadu_ps(p + kVec);
          const int k = kh * 3 + kw;
          for (int c = 0; c < CB; ++c) {
            const __m512 wv = _mm512_set1_ps(wp[c * wstride + k]);
            acc0[c] = _mm512_fmadd_ps(wv, x0, acc0[c]);
            acc1[c] = _mm512_fmadd_ps(wv, x1, acc1[c]);
          }
        }
    }
    for (int c = 0; c < CB; ++c) {
      _mm512_storeu_ps(out + c * g.Jr + j0, acc0[c]);
      _mm512_storeu_ps(out + c * g.Jr + j0 + kVec, acc1[c]);
    }
  }
}

// dW for output channels c < CB (dY planes at dy + c*dy_plane, image stride
// img_dy) against input channels ci < Cg (padded planes at xpad + ci*plane,
// image stride img_x), summed over T images:
// dst[c*dst_stride + ci*9 + kh*3 + kw] = sum_t sum_j dY[t][c][j] * Xpad[t][ci][j + kh*Wp + kw].
// The 9 taps of CB channels stay in registers (CB = 2: 18 accumulators); each
// step loads CB dY vectors and 9 shifted input vectors for 9*CB FMAs.
template <int CB>
OCTET_AVX512 void dw_channels(const float* dy, int64_t dy_plane, int64_t img_dy, const float* xpad, int64_t img_x,
                              int64_t Cg, const Grid& g, int64_t T, int64_t nvec, float* dst, int64_t dst_stride) {
  const int64_t Wp = g.Wp;
  for (int64_t ci = 0; ci < Cg; ++ci) {
    __m512 acc[CB][9];
    for (int c = 0; c < CB; ++c)
      for (int k = 0; k < 9; ++k) acc[c][k] = _mm512_setzero_ps();
    for (int64_t t = 0; t < T; ++t) {
      const float* xp = xpad + t * img_x + ci * g.plane;
      const float* dp = dy + t * img_dy;
      for (int64_t v = 0; v < nvec; ++v) {
        const int64_t j = v * kVec;
        __m512 d[CB];
        for (int c = 0; c < CB; ++c) d[c] = _mm512_load_ps(dp + c * dy_plane + j);
        for (int kh = 0; kh < 3; ++kh)
          for (int kw = 0; kw < 3; ++kw) {
            const __m512 xv = _mm512_loadu_ps(xp + j + kh * Wp + kw);
            for (int c = 0; c < CB; ++c) acc[c][kh * 3 + kw] = _mm512_fmadd_ps(d[c], xv, acc[c][kh * 3 + kw]);
          }
      }
    }
    for (int c = 0; c < CB; ++c)
      for (int k = 0; k < 9; ++k) dst[c * dst_stride + ci * 9 + k] = lane_sum(acc[c][k]);
  }
}

}  // namespace

bool direct_conv3x3_available() {
  static const bool cpu = __builtin_cpu_supports("avx512f");
  return cpu && g_direct_enabled;
}

void direct_conv3x3_forward(const Conv3x3& c, const float* x, const float* w, const float* bias, float* y) {
  const Grid g = make_grid(c);
  const int64_t Og = c.Cout / c.G, Cg = c.Cin / c.G, OHW = g.OH * g.OW;
  parallel_for(0, c.N * c.G, 1, [&](int64_t tb, int64_t te) {
    float* xpad = thread_scratch(0, Cg * g.plane);
    float* out = thread_scratch(1, 8 * g.Jr);
    for (int64_t task = tb; task < te; ++task) {
      const int64_t n = task / c.G, gi = task % c.G;
      pad_planes(x + (n * c.Cin + gi * Cg) * c.H * c.W, Cg, c.H, c.W, c.pad, g, xpad);
      for (int64_t o0 = 0; o0 < Og;) {
        const int64_t cb = Og - o0 >= 8 ? 8 : 1;
        const float* wb = w + (gi * Og + o0) * Cg * 9;
        if (cb == 8)
          fwd_block<8>(xpad, Cg, g, wb, Cg * 9, out);
        else
          fwd_block<1>(xpad, Cg, g, wb, Cg * 9, out);
        for (int64_t cc = 0; cc < cb; ++cc) {
          const int64_t co = gi * Og + o0 + cc;
          const float b = bias ? bias[co] : 0.0f;
          float* dst = y + (n * c.Cout + co) * OHW;
          const float* src = out + cc * g.Jr;
          for (int64_t oh = 0; oh < g.OH; ++oh)
            for (int64_t ow = 0; ow < g.OW; ++ow) dst[oh * g.OW + ow] = src[oh * g.Wp + ow] + b;
        }
        o0 += cb;
      }
    }
  });
}

void direct_conv3x3_weight_grad(const Conv3x3& c, const float* x, const float* gy, float* dw) {
  const Grid g = make_grid(c);
  const int64_t Og = c.Cout / c.G, Cg = c.Cin / c.G, OHW = g.OH * g.OW;
  const int64_t dy_plane = round_up(g.J, kVec), nvec = dy_plane / kVec;
  const int64_t chunks = (c.N + kImagesPerChunk - 1) / kImagesPerChunk;
  const int64_t wsize = c.Cout * Cg * 9;
  const int64_t img_x = c.Cin * g.plane, img_dy = c.Cout * dy_plane;
  // One partial dW per chunk of images, added in chunk order below.
  std::shared_ptr<float[]> slot_buf = alloc_floats(chunks * wsize);
  float* slots = slot_buf.get();
  parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    // The chunk on the padded grid (x [T][Cin][plane], dy [T][Cout][dy_plane],
    // dy's junk columns and tail zero so they add nothing): about 1 MB for
    // 8 images of 16 channels at 32x32, so it stays in L2 while every
    // (output, input) channel pair is reduced over it.
    float* xpad = thread_scratch(0, kImagesPerChunk * img_x);
    float* dyg = thread_scratch(1, kImagesPerChunk * img_dy);
    for (int64_t chunk = cb; chunk < ce; ++chunk) {
      const int64_t n0 = chunk * kImagesPerChunk, T = std::min(kImagesPerChunk, c.N - n0);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t n = n0 + t;
        pad_planes(x + n * c.Cin * c.H * c.W, c.Cin, c.H, c.W, c.pad, g, xpad + t * img_x);
        for (int64_t co = 0; co < c.Cout; ++co) {
          float* d = dyg + t * img_dy + co * dy_plane;
          const float* src = gy + (n * c.Cout + co) * OHW;
          for (int64_t oh = 0; oh < g.OH; ++oh) {
            for (int64_t ow = 0; ow < g.OW; ++ow) d[oh * g.Wp + ow] = src[oh * g.OW + ow];
            for (int64_t ow = g.OW; ow < g.Wp; ++ow) d[oh * g.Wp + ow] = 0.0f;
          }
          for (int64_t j = g.J; j < dy_plane; ++j) d[j] = 0.0f;
        }
      }
      for (int64_t gi = 0; gi < c.G; ++gi)
        for (int64_t o0 = 0; o0 < Og;) {
          const int64_t co0 = gi * Og + o0;
          const float* dyb = dyg + co0 * dy_plane;
          const float* xb = xpad + gi * Cg * g.plane;
          float* dst = slots + chunk * wsize + co0 * Cg * 9;
          if (Og - o0 >= 2) {
            dw_channels<2>(dyb, dy_plane, img_dy, xb, img_x, Cg, g, T, nvec, dst, Cg * 9);
            o0 += 2;
          } else {
            dw_channels<1>(dyb, dy_plane, img_dy, xb, img_x, Cg, g, T, nvec, dst, Cg * 9);
            o0 += 1;
          }
        }
    }
  });
  parallel_for(0, wsize, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dw[i] = 0.0f;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const float* s = slots + ch * wsize;
      for (int64_t i = b; i < e; ++i) dw[i] += s[i];
    }
  });
}

#else  // no AVX-512 kernels on this compiler/architecture

bool direct_conv3x3_available() { return false && g_direct_enabled; }
void direct_conv3x3_forward(const Conv3x3&, const float*, const float*, const float*, float*) {
  throw std::logic_error("direct_conv3x3_forward: not built for this architecture");
}
void direct_conv3x3_weight_grad(const Conv3x3&, const float*, const float*, float*) {
  throw std::logic_error("direct_conv3x3_weight_grad: not built for this architecture");
}

#endif

}  // namespace octet::detail
