// core/ops_conv_direct.cpp: direct (im2col-free) AVX-512 and AVX2 kernels for
// 3x3, stride-1 convolutions, the bulk of a CIFAR ResNet's work. See
// core/ops_conv_direct.h for the contract; ops_conv.cpp calls them when the
// CPU has AVX-512F or AVX2 with FMA and falls back to im2col + sgemm
// otherwise. The kernels are compiled for their ISA by function attribute and
// chosen at run time, so the binary still runs on any x86-64. The AVX-512
// kernels are described first; the AVX2 ones ("on AVX2 + FMA" below) are the
// same ideas with half the lanes and half the registers. Over 600 lines: two
// ISAs x (forward, weight gradient) with their padding and blocking, kept in
// one file because they share the padded-grid layout described below.
//
// The idea: flatten each image plane. With zero padding to Hp x Wp
// (Hp = H + 2*pad, Wp = W + 2*pad) and the output computed on a grid of the
// same width Wp, output j = oh*Wp + ow reads input j + kh*Wp + kw: a 3x3
// convolution becomes nine shifted 1-D multiply-adds of contiguous vectors,
// with no gather and no edge cases. The grid columns ow >= OW are junk and
// are dropped when the result is copied out.
//
// Forward, pad 1 (every ResNet 3x3; also the input gradient, which is a
// convolution of dY with rotated weights): no padded copy at all. Output
// pixel q reads input q + (kh-1)*W + (kw-1) of the unpadded plane, and the
// lanes whose tap falls off the image (it would wrap into the neighbouring
// row) are masked off in the load. A block of 8 output channels x 32 pixels
// is held in 16 zmm accumulators; each step loads 2 input vectors and
// broadcasts 8 weights for 16 FMAs. Other paddings use the padded grid.
//
// Weight gradient: dW[co, ci, kh, kw] = sum_j dYgrid[co, j] * Xpad[ci, j + kh*Wp + kw]
// with dY placed on the grid (junk columns zero), over a chunk of images
// padded into an L2-sized scratch. All 9 taps of 3 output channels are 27
// accumulators; each step loads 3 dY vectors and 9 shifted input vectors for
// 27 FMAs. Chunks are fixed by the geometry and their partial sums are added
// in chunk order, so dW does not depend on the thread count.
#include "core/ops_conv_direct.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

#include "core/alloc.h"
#include "core/parallel.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define OCTET_HAVE_DIRECT 1
#define OCTET_AVX512 __attribute__((target("avx512f")))
#define OCTET_AVX2 __attribute__((target("avx2,fma")))
#define OCTET_INLINE __attribute__((always_inline)) inline
#else
#define OCTET_HAVE_DIRECT 0
#endif

namespace octet::detail {

namespace {
DirectIsa g_max_isa = DirectIsa::avx512;
}

void set_direct_conv3x3_max_isa(DirectIsa isa) { g_max_isa = isa; }

const char* direct_isa_name(DirectIsa isa) {
  switch (isa) {
    case DirectIsa::avx512: return "avx512";
    case DirectIsa::avx2: return "avx2";
    default: return "none";
  }
}

DirectIsa direct_conv3x3_isa() {
  const DirectIsa cpu = direct_conv3x3_supported(DirectIsa::avx512) ? DirectIsa::avx512
                        : direct_conv3x3_supported(DirectIsa::avx2) ? DirectIsa::avx2
                                                                    : DirectIsa::none;
  return std::min(cpu, g_max_isa);
}

bool direct_conv3x3_available() { return direct_conv3x3_isa() != DirectIsa::none; }

#if OCTET_HAVE_DIRECT

namespace {

constexpr int64_t kVec = 16;        // floats per zmm
constexpr int64_t kJBlock = 32;     // grid positions per forward block (2 zmm; AVX2: 16, 2 ymm)
// Weight gradient: images per chunk so that a chunk's padded x and dY take
// about kChunkFloats (1 MB, half of L2), and at least 8 chunks; from the
// geometry and batch size only, never from the thread count, so the chunk sums
// (and dW) are the same at any thread count.
constexpr int64_t kChunkFloats = int64_t(1) << 18;

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

// jblock: the grid positions of one forward block (kJBlock, or 16 on AVX2,
// where rounding an 8x8 plane's 80 positions to 32 would waste a sixth more).
Grid make_grid(const Conv3x3& c, int64_t jblock = kJBlock) {
  Grid g{};
  g.Hp = c.H + 2 * c.pad, g.Wp = c.W + 2 * c.pad;
  g.OH = g.Hp - 2, g.OW = g.Wp - 2;
  g.J = g.OH * g.Wp;
  g.Jr = round_up(g.J, jblock);
  // The last block reads up to Jr - 1 + 2*Wp + 2.
  g.plane = round_up(std::max(g.Hp * g.Wp, g.Jr + 2 * g.Wp + 2), kVec);
  return g;
}

// src [C][H][W] -> dst [C][plane], zero border and slack. (The copy loops
// are inlined into each ISA's kernels and vectorized there; a memcpy call per
// 32-float row costs more than the copy.)
OCTET_INLINE void pad_planes(const float* src, int64_t C, int64_t H, int64_t W, int64_t pad, const Grid& g,
                             float* dst) {
  const int64_t Wp = g.Wp;
  for (int64_t c = 0; c < C; ++c) {
    float* __restrict d = dst + c * g.plane;
    const float* __restrict s = src + c * H * W;
    for (int64_t i = 0; i < pad * Wp; ++i) d[i] = 0.0f;
    for (int64_t h = 0; h < H; ++h) {
      float* __restrict row = d + (h + pad) * Wp;
      const float* __restrict in = s + h * W;
      for (int64_t i = 0; i < pad; ++i) row[i] = 0.0f, row[pad + W + i] = 0.0f;
      for (int64_t i = 0; i < W; ++i) row[pad + i] = in[i];
    }
    for (int64_t i = (H + pad) * Wp; i < g.plane; ++i) d[i] = 0.0f;
  }
}

// dY plane [OH][OW] -> the grid [OH][Wp] with zero junk columns and tail up to n.
OCTET_INLINE void grid_plane(const float* __restrict src, const Grid& g, int64_t n, float* __restrict d) {
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    for (int64_t ow = 0; ow < g.OW; ++ow) d[oh * g.Wp + ow] = src[oh * g.OW + ow];
    for (int64_t ow = g.OW; ow < g.Wp; ++ow) d[oh * g.Wp + ow] = 0.0f;
  }
  for (int64_t j = g.J; j < n; ++j) d[j] = 0.0f;
}

// The grid [OH][Wp] -> a plane [OH][OW], plus b.
OCTET_INLINE void ungrid_plane(const float* __restrict src, const Grid& g, float b, float* __restrict d) {
  for (int64_t oh = 0; oh < g.OH; ++oh)
    for (int64_t ow = 0; ow < g.OW; ++ow) d[oh * g.OW + ow] = src[oh * g.Wp + ow] + b;
}

// Sum of the 16 lanes by a fixed tree of shuffles (the same bits every run).
// A sequential scalar sum would be a 16-add dependency chain per weight,
// which costs as much as the products for 8x8 planes.
// (The masked forms with an all-ones mask: gcc 12's unmasked ones trip
// -Wmaybe-uninitialized inside its own header.)
OCTET_AVX512 inline float lane_sum(__m512 v) {
  const __mmask16 all = 0xFFFF;
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, all, v, v, 0x4E));  // + the other 256-bit half
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, all, v, v, 0xB1));  // + the neighbouring 128 bits
  v = _mm512_add_ps(v, _mm512_mask_shuffle_ps(v, all, v, v, 0x4E));     // + the other 64 bits
  v = _mm512_add_ps(v, _mm512_mask_shuffle_ps(v, all, v, v, 0xB1));     // + the neighbouring float
  return _mm512_cvtss_f32(v);
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
            __m512 xv = _mm512_loadu_ps(xp + j + kh * Wp + kw);
            // Keep xv in a register: otherwise gcc folds the (line-splitting,
            // unaligned) load into each of the CB FMAs and loads it CB times.
            asm("" : "+v"(xv));
            for (int c = 0; c < CB; ++c) acc[c][kh * 3 + kw] = _mm512_fmadd_ps(d[c], xv, acc[c][kh * 3 + kw]);
          }
      }
    }
    for (int c = 0; c < CB; ++c)
      for (int k = 0; k < 9; ++k) dst[c * dst_stride + ci * 9 + k] = lane_sum(acc[c][k]);
  }
}

// ---- the same two kernels on AVX2 + FMA (8 floats per ymm, 16 registers).
//
// Half the lanes and half the registers of AVX-512: the forward block holds 4
// output channels x 2 vectors (16 grid positions) in 8 accumulators, and the
// weight gradient one kernel row (3 taps) of 3 output channels in 9. Pad 1
// goes through the padded grid too (AVX2 has no cheap lane masks for
// fwd_same's loads).

constexpr int64_t kVec8 = 8;  // floats per ymm
// Forward block: kCB8 output channels x kNV8 vectors. 4 x 2, 5 x 2 and 6 x 2
// (and 4 x 3) measured within the VM's noise of each other on ResNet-20
// (bench ops, Zen 1); 4 divides every ResNet width, so no channel is left
// to the one-channel block.
constexpr int64_t kCB8 = 4;
constexpr int kNV8 = 2;

// Sum of the 8 lanes by a fixed tree (the same bits every run).
OCTET_AVX2 inline float lane_sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// fwd_block on ymm: out[c][j] for c < CB, j in [0, Jr), NV vectors a step.
template <int CB, int NV>
OCTET_AVX2 void fwd_block8(const float* xpad, int64_t Cg, const Grid& g, const float* w, int64_t wstride,
                           float* out) {
  const int64_t Wp = g.Wp;
  for (int64_t j0 = 0; j0 < g.Jr; j0 += NV * kVec8) {
    __m256 acc[NV][CB];
    for (int v = 0; v < NV; ++v)
      for (int c = 0; c < CB; ++c) acc[v][c] = _mm256_setzero_ps();
    for (int64_t ci = 0; ci < Cg; ++ci) {
      const float* xp = xpad + ci * g.plane + j0;
      const float* wp = w + ci * 9;
      for (int kh = 0; kh < 3; ++kh)
        for (int kw = 0; kw < 3; ++kw) {
          const float* p = xp + kh * Wp + kw;
          __m256 xv[NV];
          for (int v = 0; v < NV; ++v) xv[v] = _mm256_loadu_ps(p + v * kVec8);
          const int k = kh * 3 + kw;
          for (int c = 0; c < CB; ++c) {
            const __m256 wv = _mm256_broadcast_ss(wp + c * wstride + k);
            for (int v = 0; v < NV; ++v) acc[v][c] = _mm256_fmadd_ps(wv, xv[v], acc[v][c]);
          }
        }
    }
    for (int c = 0; c < CB; ++c)
      for (int v = 0; v < NV; ++v) _mm256_storeu_ps(out + c * g.Jr + j0 + v * kVec8, acc[v][c]);
  }
}

// dw_channels on ymm: CB output channels, one kernel row kh at a time (3 taps
// x CB channels = 3 CB accumulators; each step loads CB dY vectors and 3
// shifted input vectors for 3 CB FMAs). All 9 taps of even one channel plus
// the operands would overflow the 16 registers' budget for sharing loads.
template <int CB>
OCTET_AVX2 void dw_rows8(const float* dy, int64_t dy_plane, int64_t img_dy, const float* xpad, int64_t img_x,
                         int64_t Cg, const Grid& g, int64_t T, int64_t nvec8, float* dst, int64_t dst_stride) {
  const int64_t Wp = g.Wp;
  for (int64_t ci = 0; ci < Cg; ++ci)
    for (int kh = 0; kh < 3; ++kh) {
      __m256 acc[CB][3];
      for (int c = 0; c < CB; ++c)
        for (int kw = 0; kw < 3; ++kw) acc[c][kw] = _mm256_setzero_ps();
      for (int64_t t = 0; t < T; ++t) {
        const float* xp = xpad + t * img_x + ci * g.plane + kh * Wp;
        const float* dp = dy + t * img_dy;
        for (int64_t v = 0; v < nvec8; ++v) {
          const int64_t j = v * kVec8;
          __m256 d[CB];
          for (int c = 0; c < CB; ++c) d[c] = _mm256_load_ps(dp + c * dy_plane + j);
          for (int kw = 0; kw < 3; ++kw) {
            __m256 xv = _mm256_loadu_ps(xp + j + kw);
            asm("" : "+x"(xv));  // one load for the CB FMAs (see dw_channels)
            for (int c = 0; c < CB; ++c) acc[c][kw] = _mm256_fmadd_ps(d[c], xv, acc[c][kw]);
          }
        }
      }
      for (int c = 0; c < CB; ++c)
        for (int kw = 0; kw < 3; ++kw) dst[c * dst_stride + ci * 9 + kh * 3 + kw] = lane_sum8(acc[c][kw]);
    }
}

// ---- pad 1 (output size == input size): straight from the NCHW planes.
//
// Output pixel q = oh*W + ow reads input q + (kh-1)*W + (kw-1): the flattened
// plane shifted, as on the grid, except where the tap falls off the image
// (first/last row, first/last column), which would wrap into the neighbour
// row or plane. Those lanes are masked off in the loads (masked-off lanes are
// not read, so the shifted vectors may start outside the plane). No padded
// copies, no junk columns, and output is stored in place.

// Lane masks of every 16-pixel vector v of an H x W plane: masks[v*10 + k]
// (k = kh*3 + kw) has bit l set when pixel 16v + l exists and its tap (kh, kw)
// is inside the image; masks[v*10 + 9]: pixel 16v + l exists.
std::vector<uint16_t> same_masks(int64_t H, int64_t W) {
  const int64_t HW = H * W;
  std::vector<uint16_t> m(static_cast<size_t>((HW + kVec - 1) / kVec * 10 + 10), 0);  // + a zero row
  for (int64_t q = 0; q < HW; ++q) {
    const int64_t v = q / kVec, oh = q / W, ow = q % W;
    const uint16_t bit = static_cast<uint16_t>(1u << (q % kVec));
    m[static_cast<size_t>(v * 10 + 9)] |= bit;
    for (int64_t kh = 0; kh < 3; ++kh)
      for (int64_t kw = 0; kw < 3; ++kw)
        if (oh + kh - 1 >= 0 && oh + kh - 1 < H && ow + kw - 1 >= 0 && ow + kw - 1 < W)
          m[static_cast<size_t>(v * 10 + kh * 3 + kw)] |= bit;
  }
  return m;
}

// p + off as an address only (it may lie outside the buffer; the masked
// load does not touch the lanes that would).
inline const float* shifted(const float* p, int64_t off) {
  return reinterpret_cast<const float*>(reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(off * 4));
}

// y[c] (c < CB planes of H*W, stride HW) = sum over the Cg input planes at x
// of the 3x3 taps w[c*wstride + ci*9 + k], plus bias[c] if bias. Two vectors
// (32 pixels) x CB channels of accumulators per step.
//
// When planes are a multiple of 4 KB apart (32x32 floats and up) they map to
// the same L1 sets, and reading 16 or more of them at once evicts the rows the
// next vector pair reuses; the input channels are then taken 8 at a time, the
// partial sums waiting in y between chunks (the float summation order is
// unchanged).

template <int CB>
OCTET_AVX512 void fwd_same(const float* x, int64_t Cg, int64_t H, int64_t W, const uint16_t* masks,
                           const float* w, int64_t wstride, const float* bias, float* y) {
  const int64_t HW = H * W, nvec = (HW + kVec - 1) / kVec;
  const uint16_t* zero = masks + nvec * 10;
  int64_t off[9];
  for (int k = 0; k < 9; ++k) off[k] = (k / 3 - 1) * W + (k % 3 - 1);
  const int64_t chunk = HW % 1024 == 0 ? 8 : Cg;
  for (int64_t c0 = 0; c0 < Cg; c0 += chunk)
  for (int64_t v0 = 0; v0 < nvec; v0 += 2) {
    const uint16_t* m0 = masks + v0 * 10;
    const uint16_t* m1 = v0 + 1 < nvec ? m0 + 10 : zero;
    __m512 acc0[CB], acc1[CB];
    if (c0 == 0) {
      for (int c = 0; c < CB; ++c) acc0[c] = acc1[c] = _mm512_set1_ps(bias ? bias[c] : 0.0f);
    } else {
      for (int c = 0; c < CB; ++c) {
        acc0[c] = _mm512_maskz_loadu_ps(m0[9], y + c * HW + v0 * kVec);
        acc1[c] = _mm512_maskz_loadu_ps(m1[9], y + c * HW + v0 * kVec + kVec);
      }
    }
    for (int64_t ci = c0; ci < std::min(Cg, c0 + chunk); ++ci) {
      const float* xp = x + ci * HW + v0 * kVec;
      const float* wp = w + ci * 9;
      for (int k = 0; k < 9; ++k) {
        const __m512 x0 = _mm512_maskz_loadu_ps(m0[k], shifted(xp, off[k]));
        const __m512 x1 = _mm512_maskz_loadu_ps(m1[k], shifted(xp, off[k] + kVec));
        for (int c = 0; c < CB; ++c) {
          const __m512 wv = _mm512_set1_ps(wp[c * wstride + k]);
          acc0[c] = _mm512_fmadd_ps(wv, x0, acc0[c]);
          acc1[c] = _mm512_fmadd_ps(wv, x1, acc1[c]);
        }
      }
    }
    for (int c = 0; c < CB; ++c) {
      _mm512_mask_storeu_ps(y + c * HW + v0 * kVec, m0[9], acc0[c]);
      _mm512_mask_storeu_ps(y + c * HW + v0 * kVec + kVec, m1[9], acc1[c]);
    }
  }
}

}  // namespace

namespace {

// The padded-grid forward of tasks [tb, te) (task = image * G + group), with
// the kernels of ISA I: a body without intrinsics, inlined into one wrapper per ISA
// so that its copy loops are vectorized for that ISA.
template <DirectIsa I>
OCTET_INLINE void forward_grid(const Conv3x3& c, const Grid& g, const float* x, const float* w, const float* bias,
                               float* y, int64_t tb, int64_t te) {
  constexpr int64_t kCB = I == DirectIsa::avx512 ? 8 : kCB8;  // output channels per block
  const int64_t Og = c.Cout / c.G, Cg = c.Cin / c.G, OHW = g.OH * g.OW;
  float* xpad = thread_scratch(0, Cg * g.plane);
  float* out = thread_scratch(1, kCB * g.Jr);
  for (int64_t task = tb; task < te; ++task) {
    const int64_t n = task / c.G, gi = task % c.G;
    pad_planes(x + (n * c.Cin + gi * Cg) * c.H * c.W, Cg, c.H, c.W, c.pad, g, xpad);
    for (int64_t o0 = 0; o0 < Og;) {
      const int64_t cb = Og - o0 >= kCB ? kCB : 1;
      const float* wb = w + (gi * Og + o0) * Cg * 9;
      if constexpr (I == DirectIsa::avx512) {
        if (cb == kCB)
          fwd_block<kCB>(xpad, Cg, g, wb, Cg * 9, out);
        else
          fwd_block<1>(xpad, Cg, g, wb, Cg * 9, out);
      } else {
        if (cb == kCB)
          fwd_block8<kCB, kNV8>(xpad, Cg, g, wb, Cg * 9, out);
        else
          fwd_block8<1, kNV8>(xpad, Cg, g, wb, Cg * 9, out);
      }
      for (int64_t cc = 0; cc < cb; ++cc) {
        const int64_t co = gi * Og + o0 + cc;
        ungrid_plane(out + cc * g.Jr, g, bias ? bias[co] : 0.0f, y + (n * c.Cout + co) * OHW);
      }
      o0 += cb;
    }
  }
}

OCTET_AVX512 void forward_grid_avx512(const Conv3x3& c, const Grid& g, const float* x, const float* w,
                                      const float* bias, float* y, int64_t tb, int64_t te) {
  forward_grid<DirectIsa::avx512>(c, g, x, w, bias, y, tb, te);
}
OCTET_AVX2 void forward_grid_avx2(const Conv3x3& c, const Grid& g, const float* x, const float* w, const float* bias,
                                  float* y, int64_t tb, int64_t te) {
  forward_grid<DirectIsa::avx2>(c, g, x, w, bias, y, tb, te);
}

// The weight gradient's plan: images per chunk and the chunk layout.
struct WgradPlan {
  Grid g;
  int64_t dy_plane;     // floats per dY plane on the grid (a multiple of 16)
  int64_t img_x, img_dy;  // floats per padded image of x / of dY
  int64_t wsize;        // floats of dW
  int64_t per_chunk, chunks;
};

// Chunks [cb, ce) of the weight gradient with the kernels of ISA I, each
// chunk's partial dW into slots + chunk * wsize (inlined per ISA, as above).
template <DirectIsa I>
OCTET_INLINE void weight_grad_chunks(const Conv3x3& c, const WgradPlan& p, const float* x, const float* gy,
                                     float* slots, int64_t cb, int64_t ce) {
  const Grid& g = p.g;
  const int64_t Og = c.Cout / c.G, Cg = c.Cin / c.G, OHW = g.OH * g.OW;
  // The chunk on the padded grid (x [T][Cin][plane], dy [T][Cout][dy_plane],
  // dy's junk columns and tail zero so they add nothing): about 1 MB for
  // 8 images of 16 channels at 32x32, so it stays in L2 while every
  // (output, input) channel pair is reduced over it.
  float* xpad = thread_scratch(0, p.per_chunk * p.img_x);
  float* dyg = thread_scratch(1, p.per_chunk * p.img_dy);
  for (int64_t chunk = cb; chunk < ce; ++chunk) {
    const int64_t n0 = chunk * p.per_chunk, T = std::min(p.per_chunk, c.N - n0);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = n0 + t;
      pad_planes(x + n * c.Cin * c.H * c.W, c.Cin, c.H, c.W, c.pad, g, xpad + t * p.img_x);
      for (int64_t co = 0; co < c.Cout; ++co)
        grid_plane(gy + (n * c.Cout + co) * OHW, g, p.dy_plane, dyg + t * p.img_dy + co * p.dy_plane);
    }
    for (int64_t gi = 0; gi < c.G; ++gi)
      for (int64_t o0 = 0; o0 < Og;) {
        const int64_t co0 = gi * Og + o0;
        const float* dyb = dyg + co0 * p.dy_plane;
        const float* xb = xpad + gi * Cg * g.plane;
        float* dst = slots + chunk * p.wsize + co0 * Cg * 9;
        if constexpr (I == DirectIsa::avx512) {
          const int64_t nvec = p.dy_plane / kVec;
          if (Og - o0 >= 3) {
            dw_channels<3>(dyb, p.dy_plane, p.img_dy, xb, p.img_x, Cg, g, T, nvec, dst, Cg * 9);
            o0 += 3;
          } else if (Og - o0 >= 2) {
            dw_channels<2>(dyb, p.dy_plane, p.img_dy, xb, p.img_x, Cg, g, T, nvec, dst, Cg * 9);
            o0 += 2;
          } else {
            dw_channels<1>(dyb, p.dy_plane, p.img_dy, xb, p.img_x, Cg, g, T, nvec, dst, Cg * 9);
            o0 += 1;
          }
        } else {
          const int64_t nvec8 = p.dy_plane / kVec8;
          if (Og - o0 >= 3) {
            dw_rows8<3>(dyb, p.dy_plane, p.img_dy, xb, p.img_x, Cg, g, T, nvec8, dst, Cg * 9);
            o0 += 3;
          } else {
            dw_rows8<1>(dyb, p.dy_plane, p.img_dy, xb, p.img_x, Cg, g, T, nvec8, dst, Cg * 9);
            o0 += 1;
          }
        }
      }
  }
}

OCTET_AVX512 void weight_grad_avx512(const Conv3x3& c, const WgradPlan& p, const float* x, const float* gy,
                                     float* slots, int64_t cb, int64_t ce) {
  weight_grad_chunks<DirectIsa::avx512>(c, p, x, gy, slots, cb, ce);
}
OCTET_AVX2 void weight_grad_avx2(const Conv3x3& c, const WgradPlan& p, const float* x, const float* gy, float* slots,
                                 int64_t cb, int64_t ce) {
  weight_grad_chunks<DirectIsa::avx2>(c, p, x, gy, slots, cb, ce);
}

// dw = sum over chunks (in chunk order) of the chunk's partial sums.
void sum_slots(const float* slots, int64_t chunks, int64_t wsize, float* dw) {
  parallel_for(0, wsize, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dw[i] = 0.0f;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const float* s = slots + ch * wsize;
      for (int64_t i = b; i < e; ++i) dw[i] += s[i];
    }
  });
}

}  // namespace

bool direct_conv3x3_supported(DirectIsa isa) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  switch (isa) {
    case DirectIsa::avx512: return avx512;
    case DirectIsa::avx2: return avx2;
    default: return true;
  }
}

void direct_conv3x3_forward(const Conv3x3& c, const float* x, const float* w, const float* bias, float* y) {
  const DirectIsa isa = direct_conv3x3_isa();
  if (isa == DirectIsa::none) throw std::logic_error("direct_conv3x3_forward: no kernels for this CPU");
  const int64_t Og = c.Cout / c.G, Cg = c.Cin / c.G;
  if (c.pad == 1 && isa == DirectIsa::avx512) {
    const int64_t HW = c.H * c.W;
    const std::vector<uint16_t> masks = same_masks(c.H, c.W);
    parallel_for(0, c.N * c.G, 1, [&](int64_t tb, int64_t te) {
      for (int64_t task = tb; task < te; ++task) {
        const int64_t n = task / c.G, gi = task % c.G;
        const float* xg = x + (n * c.Cin + gi * Cg) * HW;
        for (int64_t o0 = 0; o0 < Og;) {
          const int64_t co = gi * Og + o0;
          const float* wb = w + co * Cg * 9;
          const float* bb = bias ? bias + co : nullptr;
          float* yb = y + (n * c.Cout + co) * HW;
          if (Og - o0 >= 8) {
            fwd_same<8>(xg, Cg, c.H, c.W, masks.data(), wb, Cg * 9, bb, yb);
            o0 += 8;
          } else {
            fwd_same<1>(xg, Cg, c.H, c.W, masks.data(), wb, Cg * 9, bb, yb);
            o0 += 1;
          }
        }
      }
    });
    return;
  }
  const Grid g = make_grid(c, isa == DirectIsa::avx512 ? kJBlock : kNV8 * kVec8);
  parallel_for(0, c.N * c.G, 1, [&](int64_t tb, int64_t te) {
    if (isa == DirectIsa::avx512)
      forward_grid_avx512(c, g, x, w, bias, y, tb, te);
    else
      forward_grid_avx2(c, g, x, w, bias, y, tb, te);
  });
}

void direct_conv3x3_weight_grad(const Conv3x3& c, const float* x, const float* gy, float* dw) {
  const DirectIsa isa = direct_conv3x3_isa();
  if (isa == DirectIsa::none) throw std::logic_error("direct_conv3x3_weight_grad: no kernels for this CPU");
  WgradPlan p;
  p.g = make_grid(c);
  p.dy_plane = round_up(p.g.J, kVec);
  p.wsize = c.Cout * (c.Cin / c.G) * 9;
  p.img_x = c.Cin * p.g.plane, p.img_dy = c.Cout * p.dy_plane;
  // Images per chunk from the geometry only (so dW does not depend on the
  // thread count), and at least 8 chunks, so that 2 or 4 threads get even shares.
  p.per_chunk = std::clamp<int64_t>(kChunkFloats / (p.img_x + p.img_dy), 1, std::max<int64_t>(1, (c.N + 7) / 8));
  p.chunks = (c.N + p.per_chunk - 1) / p.per_chunk;
  // One partial dW per chunk of images, added in chunk order below.
  std::shared_ptr<float[]> slot_buf = alloc_floats(p.chunks * p.wsize);
  float* slots = slot_buf.get();
  parallel_for(0, p.chunks, 1, [&](int64_t cb, int64_t ce) {
    if (isa == DirectIsa::avx512)
      weight_grad_avx512(c, p, x, gy, slots, cb, ce);
    else
      weight_grad_avx2(c, p, x, gy, slots, cb, ce);
  });
  sum_slots(slots, p.chunks, p.wsize, dw);
}

#else  // no x86 kernels on this compiler/architecture

bool direct_conv3x3_supported(DirectIsa isa) { return isa == DirectIsa::none; }
void direct_conv3x3_forward(const Conv3x3&, const float*, const float*, const float*, float*) {
  throw std::logic_error("direct_conv3x3_forward: not built for this architecture");
}
void direct_conv3x3_weight_grad(const Conv3x3&, const float*, const float*, float*) {
  throw std::logic_error("direct_conv3x3_weight_grad: not built for this architecture");
}

#endif

}  // namespace octet::detail
