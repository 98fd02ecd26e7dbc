// engine/kernels_avx2.cpp: the AVX2 tile loop of ConvKernel (family s16 of
// engine/kernels_internal.h). Compiled with -mavx2 and entered only when
// isa_supported(Isa::avx2).
//
// Register tile: MR output pixels x NR vectors of 8 output channels. The
// pre-pass stored x - x_zp as int16 (in [-255, 255]; padding is 0), the
// weights are packed as int8 [8 channels][2 k] and widened to int16 as they
// are loaded (vpmovsxbw: one instruction per NR vectors of MR pixels, and
// half the bytes to keep in cache). vpmaddwd multiplies int16 pairs and adds
// each pair into one int32: |2 * 255 * 128| < 2^31, so it is exact (unlike
// vpmaddubsw, whose int16 pair sums saturate for u8 x s8).
#if defined(__x86_64__)

#include <immintrin.h>

#include "engine/kernels_internal.h"

namespace octet::engine::detail {

namespace {

// MultiplyByQuantizedMultiplier on 8 lanes, bit-exact with
// engine/fixedpoint.h; the same steps as mbqm16 of engine/kernels_avx512.cpp,
// which explains them. kLeft = false: every lane's shift is <= 0 (no left
// shift to do).
template <bool kLeft = true>
inline __m256i mbqm8(__m256i x, __m256i mult, __m256i ls, __m256i rs) {
  if constexpr (kLeft) {
    const __m256i shifted = _mm256_sllv_epi32(x, ls);
    const __m256i exact = _mm256_cmpeq_epi32(_mm256_srav_epi32(shifted, ls), x);
    const __m256i saturated = _mm256_xor_si256(_mm256_srai_epi32(x, 31), _mm256_set1_epi32(0x7fffffff));
    x = _mm256_blendv_epi8(saturated, shifted, exact);
  }

  const __m256i nudge = _mm256_set1_epi64x(int64_t{1} << 30);
  __m256i even = _mm256_add_epi64(_mm256_mul_epi32(x, mult), nudge);
  __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(mult, 32)), nudge);
  even = _mm256_srli_epi64(even, 31);
  odd = _mm256_slli_epi64(odd, 1);
  x = _mm256_blend_epi32(even, odd, 0xAA);

  const __m256i one = _mm256_set1_epi32(1);
  const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, rs), one);
  const __m256i remainder = _mm256_and_si256(x, mask);
  const __m256i threshold = _mm256_add_epi32(_mm256_srli_epi32(mask, 1), _mm256_srli_epi32(x, 31));
  const __m256i up = _mm256_cmpgt_epi32(remainder, threshold);  // -1 where rounding up
  return _mm256_sub_epi32(_mm256_srav_epi32(x, rs), up);
}

template <bool kLeft = true>
inline __m256i requant8(__m256i x, __m256i mult, __m256i ls, __m256i rs, __m256i lo, __m256i hi, __m256i zp) {
  x = mbqm8<kLeft>(x, mult, ls, rs);
  x = _mm256_min_epi32(_mm256_max_epi32(x, lo), hi);
  return _mm256_add_epi32(x, zp);
}

// The low byte of each of 8 int32 lanes (all in [-128, 127]) -> 8 bytes.
inline int64_t narrow8(__m256i x) {
  const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i b = _mm256_shuffle_epi8(x, pick);
  const __m128i packed = _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
  return _mm_cvtsi128_si64(packed);
}

inline __m256i broadcast2(const int16_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// The micro-kernel of this ISA's conv_pixels<Kernel> (engine/kernels_internal.h).
// tile is defined outside the class: defined inside, it would be implicitly
// inline, which gives it GCC's larger inlining limits than a plain function.
struct Kernel {
  using T = int16_t;
  static constexpr int kMr[] = {8, 6};  // MR for NR = 1, 2
  template <int MR, int NR>
  static void tile(const ConvView& v, const ConvBlock& b, const int16_t* const* base, int8_t* const* out);
};

template <int MR, int NR>
void Kernel::tile(const ConvView& v, const ConvBlock& b, const int16_t* const* base, int8_t* const* out) {
  __m256i acc[MR][NR];
  for (int n = 0; n < NR; ++n) {
    const __m256i bias = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.bias + b.param + 8 * n));
    for (int m = 0; m < MR; ++m) acc[m][n] = bias;
  }
  const int8_t* w = static_cast<const int8_t*>(v.w) + b.w_offset;
  const size_t row = static_cast<size_t>(v.wp) * v.cp;
  for (int kh = 0; kh < v.kernel_h; ++kh)
    for (int kw = 0; kw < v.kernel_w; ++kw) {
      const size_t off = kh * row + static_cast<size_t>(kw) * v.cp;
      for (int c = 0; c < v.cin_gp; c += 2) {
        __m256i wv[NR];
        for (int n = 0; n < NR; ++n)
          wv[n] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * n)));
        w += 16 * NR;
        for (int m = 0; m < MR; ++m) {
          const __m256i a = broadcast2(base[m] + off + c);
          for (int n = 0; n < NR; ++n) acc[m][n] = _mm256_add_epi32(acc[m][n], _mm256_madd_epi16(a, wv[n]));
        }
      }
    }
  const __m256i lo = _mm256_set1_epi32(v.act_min - v.zp_out), hi = _mm256_set1_epi32(v.act_max - v.zp_out);
  const __m256i zp = _mm256_set1_epi32(v.zp_out);
  for (int n = 0; n < NR; ++n) {
    const size_t q = b.param + 8 * n;
    const __m256i mult = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.mult + q));
    const __m256i ls = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.lshift + q));
    const __m256i rs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.rshift + q));
    const int valid = b.count - 8 * n;
    for (int m = 0; m < MR; ++m) {
      const __m256i r = b.left ? requant8<true>(acc[m][n], mult, ls, rs, lo, hi, zp)
                               : requant8<false>(acc[m][n], mult, ls, rs, lo, hi, zp);
      const int64_t bytes = narrow8(r);
      if (valid >= 8)
        __builtin_memcpy(out[m] + 8 * n, &bytes, 8);
      else
        __builtin_memcpy(out[m] + 8 * n, &bytes, static_cast<size_t>(valid));
    }
  }
}

}  // namespace

void conv_pixels_avx2(const ConvView& v, const uint8_t* xp, int8_t* y, size_t p0, size_t p1) {
  conv_pixels<Kernel>(v, xp, y, p0, p1);
}

namespace {

// kLeft: the inputs' multipliers have a left shift (never, for a valid model);
// kOutLeft: the output multiplier has one. Whole blocks of 8 are loaded and
// stored with one instruction each; only the tail goes through memcpy.
template <bool kLeft, bool kOutLeft>
void add8(size_t n, const int8_t* a, const int8_t* b, const AddParamsView& p, int8_t* y) {
  const __m256i a_zp = _mm256_set1_epi32(p.a_zp), b_zp = _mm256_set1_epi32(p.b_zp);
  const __m256i a_mult = _mm256_set1_epi32(p.a_mult), a_ls = _mm256_set1_epi32(p.a_shift > 0 ? p.a_shift : 0),
                a_rs = _mm256_set1_epi32(p.a_shift > 0 ? 0 : -p.a_shift);
  const __m256i b_mult = _mm256_set1_epi32(p.b_mult), b_ls = _mm256_set1_epi32(p.b_shift > 0 ? p.b_shift : 0),
                b_rs = _mm256_set1_epi32(p.b_shift > 0 ? 0 : -p.b_shift);
  const __m256i o_mult = _mm256_set1_epi32(p.out_mult), o_ls = _mm256_set1_epi32(p.out_shift > 0 ? p.out_shift : 0),
                o_rs = _mm256_set1_epi32(p.out_shift > 0 ? 0 : -p.out_shift);
  const __m256i lo = _mm256_set1_epi32(p.act_min - p.zp_out), hi = _mm256_set1_epi32(p.act_max - p.zp_out);
  const __m256i zp = _mm256_set1_epi32(p.zp_out);
  const __m128i lift = _mm_cvtsi32_si128(p.left_shift);
  // 8 codes of a and b (in the low 8 bytes) -> 8 output codes.
  auto eight = [&](__m128i a8, __m128i b8) {
    // (x - zp) << left_shift: exact, |x - zp| << 22 < 2^31
    const __m256i av = _mm256_sll_epi32(_mm256_sub_epi32(_mm256_cvtepi8_epi32(a8), a_zp), lift);
    const __m256i bv = _mm256_sll_epi32(_mm256_sub_epi32(_mm256_cvtepi8_epi32(b8), b_zp), lift);
    const __m256i sum = _mm256_add_epi32(mbqm8<kLeft>(av, a_mult, a_ls, a_rs), mbqm8<kLeft>(bv, b_mult, b_ls, b_rs));
    return narrow8(requant8<kOutLeft>(sum, o_mult, o_ls, o_rs, lo, hi, zp));
  };
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const int64_t out = eight(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a + i)),
                              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + i)));
    __builtin_memcpy(y + i, &out, 8);
  }
  if (i < n) {
    const size_t m = n - i;
    int64_t a8 = 0, b8 = 0;
    __builtin_memcpy(&a8, a + i, m);
    __builtin_memcpy(&b8, b + i, m);
    const int64_t out = eight(_mm_cvtsi64_si128(a8), _mm_cvtsi64_si128(b8));
    __builtin_memcpy(y + i, &out, m);
  }
}

}  // namespace

void add_avx2(size_t n, const int8_t* a, const int8_t* b, const AddParamsView& p, int8_t* y) {
  const bool left = p.a_shift > 0 || p.b_shift > 0, out_left = p.out_shift > 0;
  if (left)
    out_left ? add8<true, true>(n, a, b, p, y) : add8<true, false>(n, a, b, p, y);
  else
    out_left ? add8<false, true>(n, a, b, p, y) : add8<false, false>(n, a, b, p, y);
}

}  // namespace octet::engine::detail

#endif  // __x86_64__
