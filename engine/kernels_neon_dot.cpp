// engine/kernels_neon_dot.cpp: the NEON dot-product tile loop of ConvKernel
// (family dot_s8 of engine/kernels_internal.h). Compiled with
// -march=armv8.2-a+dotprod and entered only when the CPU reports
// HWCAP_ASIMDDP (isa_supported(Isa::neon_dot)).
//
// Register tile: MR output pixels x NR vectors of 4 output channels. sdot
// (vdotq_s32) adds, in every lane, the 4 products s8(x) x s8(w) of one group
// of 4 k values: the pixel's 4 input bytes are broadcast to the 4 lanes, the
// packed weights hold [4 channels][4 k]. The pre-pass keeps x as it is
// (padding x_zp) and bias' = bias - x_zp * sum w carries the zero point.
#if defined(__aarch64__)

#include "engine/kernels_internal.h"
#include "engine/kernels_neon.h"

namespace octet::engine::detail {

namespace {

inline int8x16_t broadcast4(const uint8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

// The micro-kernel of this ISA's conv_pixels<Kernel> (engine/kernels_internal.h).
// tile is defined outside the class: defined inside, it would be implicitly
// inline, which gives it GCC's larger inlining limits than a plain function.
struct Kernel {
  using T = uint8_t;
  static constexpr int kMr[] = {8, 6, 5, 4};  // MR for NR = 1..4
  template <int MR, int NR>
  static void tile(const ConvView& v, const ConvBlock& b, const uint8_t* const* base, int8_t* const* out);
};

template <int MR, int NR>
void Kernel::tile(const ConvView& v, const ConvBlock& b, const uint8_t* const* base, int8_t* const* out) {
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
      for (int c = 0; c < v.cin_gp; c += 4) {
        int8x16_t wv[NR];
        for (int n = 0; n < NR; ++n) wv[n] = vld1q_s8(w + 16 * n);
        w += 16 * NR;
        for (int m = 0; m < MR; ++m) {
          const int8x16_t a = broadcast4(base[m] + off + c);
          for (int n = 0; n < NR; ++n) acc[m][n] = vdotq_s32(acc[m][n], wv[n], a);
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

void conv_pixels_neon_dot(const ConvView& v, const uint8_t* xp, int8_t* y, size_t p0, size_t p1) {
  conv_pixels<Kernel>(v, xp, y, p0, p1);
}

}  // namespace octet::engine::detail

#endif  // __aarch64__
