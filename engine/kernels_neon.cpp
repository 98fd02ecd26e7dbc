// engine/kernels_neon.cpp: the NEON (ARMv8-A Advanced SIMD) tile loop of
// ConvKernel (family s16 of engine/kernels_internal.h) and the NEON add.
// Built for aarch64 only; every ARMv8-A core has these instructions.
//
// Register tile: MR output pixels x NR vectors of 4 output channels. The
// pre-pass stored x - x_zp as int16, the weights are packed as int8
// [k][4 channels] and widened to int16 as they are loaded (sxtl, 8 weights
// at a time); smlal (vmlal_n_s16) multiplies 4 weights by one input value
// and adds the exact int32 products to the accumulators.
#if defined(__aarch64__)

#include "engine/kernels_internal.h"
#include "engine/kernels_neon.h"

namespace octet::engine::detail {

namespace {

// 4 int8 weights widened to int16 (a 4-byte load: the packed array may end there).
inline int16x4_t widen4(const int8_t* p) {
  int32_t bytes;
  __builtin_memcpy(&bytes, p, 4);
  return vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(bytes))));
}

// The micro-kernel of this ISA's conv_pixels<Kernel> (engine/kernels_internal.h).
// tile is defined outside the class: defined inside, it would be implicitly
// inline, which gives it GCC's larger inlining limits than a plain function.
struct Kernel {
  using T = int16_t;
  static constexpr int kMr[] = {8, 6, 5, 4};  // MR for NR = 1..4
  template <int MR, int NR>
  static void tile(const ConvView& v, const ConvBlock& b, const int16_t* const* base, int8_t* const* out);
};

template <int MR, int NR>
void Kernel::tile(const ConvView& v, const ConvBlock& b, const int16_t* const* base, int8_t* const* out) {
  int32x4_t acc[MR][NR];
  for (int n = 0; n < NR; ++n) {
    const int32x4_t bias = vld1q_s32(v.bias + b.param + 4 * n);
    for (int m = 0; m < MR; ++m) acc[m][n] = bias;
  }
  const int8_t* w = static_cast<const int8_t*>(v.w) + b.w_offset;
  const size_t row = static_cast<size_t>(v.wp) * v.cp;
  for (int kh = 0; kh < v.kernel_h; ++kh)
    for (int kw = 0; kw < v.kernel_w; ++kw) {
      const size_t off = kh * row + static_cast<size_t>(kw) * v.cp;
      for (int c = 0; c < v.cin_gp; ++c) {
        int16x4_t wv[NR];
        for (int n = 0; n + 1 < NR; n += 2) {
          const int16x8_t pair = vmovl_s8(vld1_s8(w + 4 * n));
          wv[n] = vget_low_s16(pair);
          wv[n + 1] = vget_high_s16(pair);
        }
        if constexpr (NR % 2 == 1) wv[NR - 1] = widen4(w + 4 * (NR - 1));
        w += 4 * NR;
        for (int m = 0; m < MR; ++m) {
          const int16_t a = base[m][off + c];
          for (int n = 0; n < NR; ++n) acc[m][n] = vmlal_n_s16(acc[m][n], wv[n], a);
        }
      }
    }
  const int32x4_t lo = vdupq_n_s32(v.act_min - v.zp_out), hi = vdupq_n_s32(v.act_max - v.zp_out);
  const int32x4_t zp = vdupq_n_s32(v.zp_out);
  for (int n = 0; n < NR; ++n) {
    const size_t q = b.param + 4 * n;
    const int32x4_t mult = vld1q_s32(v.mult + q), ls = vld1q_s32(v.lshift + q), rs = vld1q_s32(v.rshift + q);
    const int valid = b.count - 4 * n;
    for (int m = 0; m < MR; ++m) store4(out[m] + 4 * n, requant4(acc[m][n], mult, ls, rs, lo, hi, zp), valid);
  }
}

}  // namespace

void conv_pixels_neon(const ConvView& v, const uint8_t* xp, int8_t* y, size_t p0, size_t p1) {
  conv_pixels<Kernel>(v, xp, y, p0, p1);
}

// 4 elements at a time: a' and b' rescaled, summed, requantized.
void add_neon(size_t n, const int8_t* a, const int8_t* b, const AddParamsView& p, int8_t* y) {
  const int32x4_t a_zp = vdupq_n_s32(p.a_zp), b_zp = vdupq_n_s32(p.b_zp);
  const int32x4_t lift = vdupq_n_s32(p.left_shift);
  auto left = [](int32_t s) { return vdupq_n_s32(s > 0 ? s : 0); };
  auto right = [](int32_t s) { return vdupq_n_s32(s > 0 ? 0 : -s); };
  const int32x4_t a_mult = vdupq_n_s32(p.a_mult), a_ls = left(p.a_shift), a_rs = right(p.a_shift);
  const int32x4_t b_mult = vdupq_n_s32(p.b_mult), b_ls = left(p.b_shift), b_rs = right(p.b_shift);
  const int32x4_t o_mult = vdupq_n_s32(p.out_mult), o_ls = left(p.out_shift), o_rs = right(p.out_shift);
  const int32x4_t lo = vdupq_n_s32(p.act_min - p.zp_out), hi = vdupq_n_s32(p.act_max - p.zp_out);
  const int32x4_t zp = vdupq_n_s32(p.zp_out);
  for (size_t i = 0; i < n; i += 4) {
    const int count = n - i >= 4 ? 4 : static_cast<int>(n - i);
    int32_t av[4] = {0, 0, 0, 0}, bv[4] = {0, 0, 0, 0};
    for (int j = 0; j < count; ++j) {
      av[j] = a[i + j];
      bv[j] = b[i + j];
    }
    const int32x4_t as = mbqm4(vshlq_s32(vsubq_s32(vld1q_s32(av), a_zp), lift), a_mult, a_ls, a_rs);
    const int32x4_t bs = mbqm4(vshlq_s32(vsubq_s32(vld1q_s32(bv), b_zp), lift), b_mult, b_ls, b_rs);
    store4(y + i, requant4(vaddq_s32(as, bs), o_mult, o_ls, o_rs, lo, hi, zp), count);
  }
}

}  // namespace octet::engine::detail

#endif  // __aarch64__
