// engine/kernels_neon.h: the NEON requantization shared by engine/kernels_neon.cpp
// and engine/kernels_neon_dot.cpp (internal linkage: each file keeps its own
// copy, compiled with its own flags). Bit-exact with engine/fixedpoint.h:
//   left shift         vqshlq_s32: saturates to int32 exactly as the scalar code;
//   SRDHM              vqrdmulhq_s32, its hardware twin (saturating MIN * MIN);
//   RoundingDivideByPOT remainder and threshold, as the scalar code.
#pragma once

#if defined(__aarch64__)

#include <arm_neon.h>

#include <cstddef>
#include <cstdint>

namespace octet::engine::detail {
namespace {

inline int32x4_t mbqm4(int32x4_t x, int32x4_t mult, int32x4_t ls, int32x4_t rs) {
  x = vqshlq_s32(x, ls);
  x = vqrdmulhq_s32(x, mult);
  const int32x4_t one = vdupq_n_s32(1);
  const int32x4_t mask = vsubq_s32(vshlq_s32(one, rs), one);
  const int32x4_t remainder = vandq_s32(x, mask);
  const int32x4_t negative = vreinterpretq_s32_u32(vshrq_n_u32(vreinterpretq_u32_s32(x), 31));
  const int32x4_t threshold = vaddq_s32(vshrq_n_s32(mask, 1), negative);
  const int32x4_t up = vreinterpretq_s32_u32(vcgtq_s32(remainder, threshold));  // -1 where rounding up
  return vsubq_s32(vshlq_s32(x, vnegq_s32(rs)), up);
}

// clamp(zp + MBQM(x)) with lo = act_min - zp, hi = act_max - zp (no overflow).
inline int32x4_t requant4(int32x4_t x, int32x4_t mult, int32x4_t ls, int32x4_t rs, int32x4_t lo, int32x4_t hi,
                          int32x4_t zp) {
  x = mbqm4(x, mult, ls, rs);
  return vaddq_s32(vminq_s32(vmaxq_s32(x, lo), hi), zp);
}

// The low bytes of 4 lanes in [-128, 127]: `count` (<= 4) of them to p.
inline void store4(int8_t* p, int32x4_t x, int count) {
  const int8x8_t b = vmovn_s16(vcombine_s16(vmovn_s32(x), vdup_n_s16(0)));
  if (count >= 4) {
    const int32_t word = vget_lane_s32(vreinterpret_s32_s8(b), 0);
    __builtin_memcpy(p, &word, 4);
  } else {
    int8_t tmp[8];
    vst1_s8(tmp, b);
    for (int i = 0; i < count; ++i) p[i] = tmp[i];
  }
}

}  // namespace
}  // namespace octet::engine::detail

#endif  // __aarch64__
