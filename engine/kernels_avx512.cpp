// engine/kernels_avx512.cpp: the AVX-512 VNNI and AMX-INT8 tile loops of ConvKernel
// (family dot_u8 of engine/kernels_internal.h). Compiled with
// -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mamx-tile -mamx-int8 and entered only when
// isa_supported(Isa::avx512_vnni) (the AMX loop: isa_supported(Isa::amx)).
//
// Register tile: MR output pixels x NR vectors of 16 output channels, int32
// accumulators starting at bias'. For each group of 4 k values, vpdpbusd adds
// the 4 products u8(xp) x s8(w) of every lane to its accumulator; the pixel's
// 4 input bytes are broadcast to all 16 lanes, the packed weights hold
// [16 channels][4 k]. vpdpbusd neither saturates nor rounds: the int32 sum
// wraps, and since the true accumulator fits int32 the result is exact.
#if defined(__x86_64__)

// GCC 12's AVX-512 headers build _mm512_set1_* etc. on _mm512_undefined_*
// (a self-initialized __Y), which -W(maybe-)uninitialized reports at every
// use (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "engine/kernels_internal.h"

namespace octet::engine::detail {

namespace {

// MultiplyByQuantizedMultiplier(x, M0, shift) on 16 lanes (ls = max(shift,
// 0), rs = max(-shift, 0)), bit-exact with engine/fixedpoint.h:
//   left shift, saturating to int32;
//   SaturatingRoundingDoublingHighMul = (x * M0 + 2^30) >> 31 (floor); this
//     equals gemmlowp's nudge-and-truncate form for either sign, and its one
//     saturating case needs M0 = INT32_MIN, which a multiplier never is;
//   RoundingDivideByPOT with remainder and threshold, as in fixedpoint.h.
// kLeft = false: every lane's shift is <= 0 (no left shift to do).
template <bool kLeft = true>
inline __m512i mbqm16(__m512i x, __m512i mult, __m512i ls, __m512i rs) {
  if constexpr (kLeft) {
    const __m512i shifted = _mm512_sllv_epi32(x, ls);
    const __mmask16 overflow = _mm512_cmpneq_epi32_mask(_mm512_srav_epi32(shifted, ls), x);
    const __m512i saturated = _mm512_xor_si512(_mm512_srai_epi32(x, 31), _mm512_set1_epi32(0x7fffffff));
    x = _mm512_mask_blend_epi32(overflow, shifted, saturated);
  }

  const __m512i nudge = _mm512_set1_epi64(int64_t{1} << 30);
  __m512i even = _mm512_add_epi64(_mm512_mul_epi32(x, mult), nudge);
  __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(mult, 32)), nudge);
  even = _mm512_srli_epi64(even, 31);  // bits 31..62 into the low dword
  odd = _mm512_slli_epi64(odd, 1);     // bits 31..62 into the high dword
  x = _mm512_mask_blend_epi32(0xAAAA, even, odd);

  const __m512i one = _mm512_set1_epi32(1);
  const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, rs), one);
  const __m512i remainder = _mm512_and_si512(x, mask);
  const __m512i threshold = _mm512_add_epi32(_mm512_srli_epi32(mask, 1), _mm512_srli_epi32(x, 31));
  const __mmask16 up = _mm512_cmpgt_epi32_mask(remainder, threshold);
  const __m512i down = _mm512_srav_epi32(x, rs);
  return _mm512_mask_add_epi32(down, up, down, one);
}

// clamp(zp_out + MBQM(x), act_min, act_max), with lo = act_min - zp_out and
// hi = act_max - zp_out: clamping before adding zp_out cannot overflow.
template <bool kLeft = true>
inline __m512i requant16(__m512i x, __m512i mult, __m512i ls, __m512i rs, __m512i lo, __m512i hi, __m512i zp) {
  x = mbqm16<kLeft>(x, mult, ls, rs);
  x = _mm512_min_epi32(_mm512_max_epi32(x, lo), hi);
  return _mm512_add_epi32(x, zp);
}

// Stores the low bytes of 16 int32 lanes (already in [-128, 127]): `count`
// of them (a plain 16-byte store when all 16).
inline void store16(int8_t* p, __m512i x, int count) {
  const __m128i b = _mm512_cvtepi32_epi8(x);
  if (count >= 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), b);
  else
    _mm_mask_storeu_epi8(p, static_cast<__mmask16>((1u << count) - 1), b);
}

// The requantization of a block's vector n, with or without left shifts.
inline __m512i requant_block(bool left, __m512i x, __m512i mult, __m512i ls, __m512i rs, __m512i lo, __m512i hi,
                             __m512i zp) {
  return left ? requant16<true>(x, mult, ls, rs, lo, hi, zp) : requant16<false>(x, mult, ls, rs, lo, hi, zp);
}

inline __m512i broadcast4(const uint8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// The micro-kernel of this ISA's conv_pixels<Kernel> (engine/kernels_internal.h).
// tile is defined outside the class: defined inside, it would be implicitly
// inline, which gives it GCC's larger inlining limits than a plain function.
struct Kernel {
  using T = uint8_t;
  static constexpr int kMr[] = {12, 8, 6, 6};  // MR for NR = 1..4
  template <int MR, int NR>
  static void tile(const ConvView& v, const ConvBlock& b, const uint8_t* const* base, int8_t* const* out);
};

template <int MR, int NR>
void Kernel::tile(const ConvView& v, const ConvBlock& b, const uint8_t* const* base, int8_t* const* out) {
  __m512i acc[MR][NR];
  for (int n = 0; n < NR; ++n) {
    const __m512i bias = _mm512_loadu_si512(v.bias + b.param + 16 * n);
    for (int m = 0; m < MR; ++m) acc[m][n] = bias;
  }
  const int8_t* w = static_cast<const int8_t*>(v.w) + b.w_offset;
  const size_t row = static_cast<size_t>(v.wp) * v.cp;
  for (int kh = 0; kh < v.kernel_h; ++kh)
    for (int kw = 0; kw < v.kernel_w; ++kw) {
      const size_t off = kh * row + static_cast<size_t>(kw) * v.cp;
      for (int c = 0; c < v.cin_gp; c += 4) {
        __m512i wv[NR];
        for (int n = 0; n < NR; ++n) wv[n] = _mm512_loadu_si512(w + 64 * n);
        w += 64 * NR;
        for (int m = 0; m < MR; ++m) {
          const __m512i a = broadcast4(base[m] + off + c);
          for (int n = 0; n < NR; ++n) acc[m][n] = _mm512_dpbusd_epi32(acc[m][n], a, wv[n]);
        }
      }
    }
  const __m512i lo = _mm512_set1_epi32(v.act_min - v.zp_out), hi = _mm512_set1_epi32(v.act_max - v.zp_out);
  const __m512i zp = _mm512_set1_epi32(v.zp_out);
  for (int n = 0; n < NR; ++n) {
    const size_t q = b.param + 16 * n;
    const __m512i mult = _mm512_loadu_si512(v.mult + q), ls = _mm512_loadu_si512(v.lshift + q);
    const __m512i rs = _mm512_loadu_si512(v.rshift + q);
    const int valid = b.count - 16 * n;
    for (int m = 0; m < MR; ++m)
      store16(out[m] + 16 * n, requant_block(b.left, acc[m][n], mult, ls, rs, lo, hi, zp), valid);
  }
}

}  // namespace

void conv_pixels_avx512_vnni(const ConvView& v, const uint8_t* xp, int8_t* y, size_t p0, size_t p1) {
  conv_pixels<Kernel>(v, xp, y, p0, p1);
}

namespace {

// kLeft: the inputs' multipliers have a left shift (never, for a valid model);
// kOutLeft: the output multiplier has one.
template <bool kLeft, bool kOutLeft>
void add16(size_t n, const int8_t* a, const int8_t* b, const AddParamsView& p, int8_t* y) {
  const __m512i a_zp = _mm512_set1_epi32(p.a_zp), b_zp = _mm512_set1_epi32(p.b_zp);
  const __m512i a_mult = _mm512_set1_epi32(p.a_mult), a_ls = _mm512_set1_epi32(p.a_shift > 0 ? p.a_shift : 0),
                a_rs = _mm512_set1_epi32(p.a_shift > 0 ? 0 : -p.a_shift);
  const __m512i b_mult = _mm512_set1_epi32(p.b_mult), b_ls = _mm512_set1_epi32(p.b_shift > 0 ? p.b_shift : 0),
                b_rs = _mm512_set1_epi32(p.b_shift > 0 ? 0 : -p.b_shift);
  const __m512i o_mult = _mm512_set1_epi32(p.out_mult), o_ls = _mm512_set1_epi32(p.out_shift > 0 ? p.out_shift : 0),
                o_rs = _mm512_set1_epi32(p.out_shift > 0 ? 0 : -p.out_shift);
  const __m512i lo = _mm512_set1_epi32(p.act_min - p.zp_out), hi = _mm512_set1_epi32(p.act_max - p.zp_out);
  const __m512i zp = _mm512_set1_epi32(p.zp_out);
  const int lift = p.left_shift;
  auto one = [&](const int8_t* pa, const int8_t* pb, int8_t* py, int count) {
    const __mmask16 m = static_cast<__mmask16>(count == 16 ? 0xffff : (1u << count) - 1);
    const __m512i av = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, pa));
    const __m512i bv = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, pb));
    // (x - zp) << left_shift: exact, |x - zp| << 22 < 2^31
    const __m512i as = mbqm16<kLeft>(_mm512_slli_epi32(_mm512_sub_epi32(av, a_zp), lift), a_mult, a_ls, a_rs);
    const __m512i bs = mbqm16<kLeft>(_mm512_slli_epi32(_mm512_sub_epi32(bv, b_zp), lift), b_mult, b_ls, b_rs);
    store16(py, requant16<kOutLeft>(_mm512_add_epi32(as, bs), o_mult, o_ls, o_rs, lo, hi, zp), count);
  };
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {  // two independent vectors per iteration
    one(a + i, b + i, y + i, 16);
    one(a + i + 16, b + i + 16, y + i + 16, 16);
  }
  for (; i < n; i += 16) one(a + i, b + i, y + i, n - i >= 16 ? 16 : static_cast<int>(n - i));
}

}  // namespace

void add_avx512(size_t n, const int8_t* a, const int8_t* b, const AddParamsView& p, int8_t* y) {
  const bool left = p.a_shift > 0 || p.b_shift > 0, out_left = p.out_shift > 0;
  if (left)
    out_left ? add16<true, true>(n, a, b, p, y) : add16<true, false>(n, a, b, p, y);
  else
    out_left ? add16<false, true>(n, a, b, p, y) : add16<false, false>(n, a, b, p, y);
}

// ---- AMX-INT8 ------------------------------------------------------------------
// Tiles: C (int32 accumulators, amx_rows pixels x 16 channels) in tmm0..3,
// A (amx_rows pixels x 64 bytes of K) in tmm4/5, B (16 k4 rows x 16 channels
// x 4) in tmm5 or tmm6/7. One weight vector: 4 units share each B tile;
// two vectors: 2 units x 2 vectors. TDPBUSD is u8 x s8 -> int32 without
// saturation, like vpdpbusd. The tile numbers are immediates, hence the
// spelled-out cases below.

namespace {

struct TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void store_tile(int t, int32_t* buf) {
  switch (t) {
    case 0: _tile_stored(0, buf, 64); break;
    case 1: _tile_stored(1, buf, 64); break;
    case 2: _tile_stored(2, buf, 64); break;
    default: _tile_stored(3, buf, 64); break;
  }
}

template <int NR>
void amx_block(const ConvView& v, const ConvBlock& b, const uint8_t* xp, int8_t* y, size_t u0, size_t u1) {
  constexpr int kUnits = NR == 1 ? 4 : 2;
  const int rows = v.amx_rows;
  const size_t segs = static_cast<size_t>(v.amx_segs);
  const size_t a_stride = static_cast<size_t>(v.stride) * v.cp;
  const size_t in_row = static_cast<size_t>(v.wp) * v.cp;
  const int8_t* w0 = static_cast<const int8_t*>(v.w) + b.w_offset;
  const __m512i lo = _mm512_set1_epi32(v.act_min - v.zp_out), hi = _mm512_set1_epi32(v.act_max - v.zp_out);
  const __m512i zp = _mm512_set1_epi32(v.zp_out);
  alignas(64) int32_t buf[16 * 16];
  for (size_t u = u0; u < u1; u += kUnits) {
    const int mt = u1 - u < kUnits ? static_cast<int>(u1 - u) : kUnits;
    const uint8_t* a[kUnits];
    size_t pix0[kUnits];
    int own[kUnits];
    for (int i = 0; i < mt; ++i) {
      const size_t unit = u + i, row = unit / segs, seg = unit % segs;
      const size_t n = row / v.out_h, oh = row % v.out_h;
      const size_t start = seg * rows;
      const size_t ow0 = start + rows <= static_cast<size_t>(v.out_w) ? start : v.out_w - rows;
      own[i] = static_cast<int>(start - ow0);
      a[i] = xp + n * v.image_stride + ((oh * v.stride) * v.wp + ow0 * v.stride) * v.cp;
      pix0[i] = row * v.out_w + ow0;
    }
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const int8_t* w = w0;
    for (int kh = 0; kh < v.kernel_h; ++kh)
      for (int j = 0; j < v.amx_chunks; ++j, w += 16 * 64 * NR) {
        const size_t off = kh * in_row + static_cast<size_t>(j) * 64;
        if constexpr (NR == 1) {
          _tile_loadd(5, w, 64);
          _tile_loadd(4, a[0] + off, a_stride);
          _tile_dpbusd(0, 4, 5);
          if (mt > 1) {
            _tile_loadd(4, a[1] + off, a_stride);
            _tile_dpbusd(1, 4, 5);
          }
          if (mt > 2) {
            _tile_loadd(4, a[2] + off, a_stride);
            _tile_dpbusd(2, 4, 5);
          }
          if (mt > 3) {
            _tile_loadd(4, a[3] + off, a_stride);
            _tile_dpbusd(3, 4, 5);
          }
        } else {
          _tile_loadd(6, w, 128);
          _tile_loadd(7, w + 64, 128);
          _tile_loadd(4, a[0] + off, a_stride);
          _tile_dpbusd(0, 4, 6);
          _tile_dpbusd(1, 4, 7);
          if (mt > 1) {
            _tile_loadd(5, a[1] + off, a_stride);
            _tile_dpbusd(2, 5, 6);
            _tile_dpbusd(3, 5, 7);
          }
        }
      }
    for (int i = 0; i < mt; ++i)
      for (int n = 0; n < NR; ++n) {
        store_tile(i * NR + n, buf);
        const size_t q = b.param + 16 * n;
        const __m512i bias = _mm512_loadu_si512(v.bias + q), mult = _mm512_loadu_si512(v.mult + q);
        const __m512i ls = _mm512_loadu_si512(v.lshift + q), rs = _mm512_loadu_si512(v.rshift + q);
        const int valid = b.count - 16 * n;
        int8_t* out = y + pix0[i] * v.out_c + b.oc0 + 16 * n;
        if (b.left) {
          for (int r = own[i]; r < rows; ++r) {
            const __m512i acc = _mm512_add_epi32(_mm512_load_si512(buf + 16 * r), bias);
            store16(out + static_cast<size_t>(r) * v.out_c, requant16<true>(acc, mult, ls, rs, lo, hi, zp), valid);
          }
        } else {
          for (int r = own[i]; r < rows; ++r) {
            const __m512i acc = _mm512_add_epi32(_mm512_load_si512(buf + 16 * r), bias);
            store16(out + static_cast<size_t>(r) * v.out_c, requant16<false>(acc, mult, ls, rs, lo, hi, zp), valid);
          }
        }
      }
  }
}

}  // namespace

void conv_units_amx(const ConvView& v, const uint8_t* xp, int8_t* y, size_t u0, size_t u1) {
  TileConfig cfg;
  for (int t = 0; t < 6; ++t) {  // C and A tiles: amx_rows rows of 64 bytes
    cfg.rows[t] = static_cast<uint8_t>(v.amx_rows);
    cfg.colsb[t] = 64;
  }
  for (int t = 5; t < 8; ++t) {  // B tiles (tmm5 is B for one vector, A for two)
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  for (int i = 0; i < v.n_blocks; ++i) {
    const ConvBlock& b = v.blocks[i];
    // tmm5 is a B tile (16 rows) for one vector, the second A tile for two.
    cfg.rows[5] = static_cast<uint8_t>(b.nr == 1 ? 16 : v.amx_rows);
    _tile_loadconfig(&cfg);
    if (b.nr == 1)
      amx_block<1>(v, b, xp, y, u0, u1);
    else
      amx_block<2>(v, b, xp, y, u0, u1);
  }
  _tile_release();
}

}  // namespace octet::engine::detail

#endif  // __x86_64__
