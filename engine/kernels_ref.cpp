// engine/kernels_ref.cpp: the reference kernels, plain loops that spell out
// the integer contract of engine/kernels.h one output element at a time. They
// are the oracle of every fast kernel (tests compare bit for bit) and the
// engine's path for the cheap ops (add, pools, input).
#include <algorithm>

#include "engine/fixedpoint.h"
#include "engine/kernels.h"

namespace octet::engine {

namespace {

// clamp(zp_out + MBQM(acc), act_min, act_max); the sum is formed in 64 bits
// (MBQM may return nearly +-2^31 when a left shift saturates).
inline int8_t requantize(int32_t acc, int32_t multiplier, int32_t shift, const Requant& rq) {
  const int64_t v = int64_t{rq.zp_out} + MultiplyByQuantizedMultiplier(acc, multiplier, shift);
  return static_cast<int8_t>(std::clamp<int64_t>(v, rq.act_min, rq.act_max));
}

}  // namespace

// x [N,H,W,Cin], w [Cout][KH][KW][Cin/groups], bias [Cout] (may be null: 0)
// -> y [N,OH,OW,Cout]. Output channel oc belongs to group oc / (Cout/groups)
// and reads the input channels of that group. Taps outside the image are the
// padding: x = x_zp, so they add nothing and are skipped.
void conv2d_ref(const ConvGeometry& g, const int8_t* x, int32_t x_zp, const int8_t* w, const int32_t* bias,
                const Requant& rq, int8_t* y) {
  const int oh_n = g.out_h(), ow_n = g.out_w();
  const int cin_g = g.in_c_per_group(), cout_g = g.out_c_per_group();
  for (int n = 0; n < g.batch; ++n) {
    const int8_t* xn = x + static_cast<size_t>(n) * g.in_h * g.in_w * g.in_c;
    for (int oh = 0; oh < oh_n; ++oh) {
      for (int ow = 0; ow < ow_n; ++ow) {
        int8_t* yp = y + ((static_cast<size_t>(n) * oh_n + oh) * ow_n + ow) * g.out_c;
        for (int oc = 0; oc < g.out_c; ++oc) {
          const int c0 = (oc / cout_g) * cin_g;  // first input channel of the group
          int32_t acc = bias ? bias[oc] : 0;
          for (int kh = 0; kh < g.kernel_h; ++kh) {
            const int ih = oh * g.stride - g.pad + kh;
            if (ih < 0 || ih >= g.in_h) continue;
            for (int kw = 0; kw < g.kernel_w; ++kw) {
              const int iw = ow * g.stride - g.pad + kw;
              if (iw < 0 || iw >= g.in_w) continue;
              const int8_t* xp = xn + (static_cast<size_t>(ih) * g.in_w + iw) * g.in_c + c0;
              const int8_t* wp = w + ((static_cast<size_t>(oc) * g.kernel_h + kh) * g.kernel_w + kw) * cin_g;
              for (int ic = 0; ic < cin_g; ++ic) acc += (static_cast<int32_t>(xp[ic]) - x_zp) * wp[ic];
            }
          }
          yp[oc] = requantize(acc, rq.multiplier[oc], rq.shift[oc], rq);
        }
      }
    }
  }
}

// y[i] = clamp(zp_out + MBQM(a' + b', out_mult, out_shift)), with each input
// first brought to a common scale: a' = MBQM((a - a_zp) << left_shift, ...).
void add_ref(size_t n, const int8_t* a, const int8_t* b, const AddParams& p, int8_t* y) {
  const int32_t lift = int32_t{1} << p.left_shift;
  for (size_t i = 0; i < n; ++i) {
    const int32_t av = MultiplyByQuantizedMultiplier((a[i] - p.a_zp) * lift, p.a_mult, p.a_shift);
    const int32_t bv = MultiplyByQuantizedMultiplier((b[i] - p.b_zp) * lift, p.b_mult, p.b_shift);
    const int64_t v = int64_t{p.zp_out} + MultiplyByQuantizedMultiplier(av + bv, p.out_mult, p.out_shift);
    y[i] = static_cast<int8_t>(std::clamp<int64_t>(v, p.act_min, p.act_max));
  }
}

namespace {

// Shared walk of max and average pool: x [N,H,W,C] -> y [N,OH,OW,C], the
// window of each output restricted to the in-image elements.
template <bool kMax>
void pool_ref(const ConvGeometry& g, const int8_t* x, int8_t* y) {
  const int oh_n = g.out_h(), ow_n = g.out_w(), c_n = g.in_c;
  for (int n = 0; n < g.batch; ++n) {
    const int8_t* xn = x + static_cast<size_t>(n) * g.in_h * g.in_w * c_n;
    for (int oh = 0; oh < oh_n; ++oh) {
      const int h0 = std::max(oh * g.stride - g.pad, 0), h1 = std::min(oh * g.stride - g.pad + g.kernel_h, g.in_h);
      for (int ow = 0; ow < ow_n; ++ow) {
        const int w0 = std::max(ow * g.stride - g.pad, 0), w1 = std::min(ow * g.stride - g.pad + g.kernel_w, g.in_w);
        int8_t* yp = y + ((static_cast<size_t>(n) * oh_n + oh) * ow_n + ow) * c_n;
        for (int c = 0; c < c_n; ++c) {
          int32_t acc = kMax ? -128 : 0;
          for (int ih = h0; ih < h1; ++ih)
            for (int iw = w0; iw < w1; ++iw) {
              const int32_t v = xn[(static_cast<size_t>(ih) * g.in_w + iw) * c_n + c];
              acc = kMax ? std::max(acc, v) : acc + v;
            }
          const int32_t count = (h1 - h0) * (w1 - w0);
          // A window entirely in the padding (possible only with pad >= kernel)
          // has no element: max gives -128 and the mean of nothing is 0.
          yp[c] = static_cast<int8_t>(kMax ? acc : (count > 0 ? RoundedDivide(acc, count) : 0));
        }
      }
    }
  }
}

}  // namespace

void max_pool_ref(const ConvGeometry& g, const int8_t* x, int8_t* y) { pool_ref<true>(g, x, y); }
void avg_pool_ref(const ConvGeometry& g, const int8_t* x, int8_t* y) { pool_ref<false>(g, x, y); }

// x [N, hw, C] -> y [N, C]: the rounded mean over the hw positions.
void global_avg_pool_ref(int batch, int hw, int c, const int8_t* x, int8_t* y) {
  for (int n = 0; n < batch; ++n) {
    const int8_t* xn = x + static_cast<size_t>(n) * hw * c;
    for (int ch = 0; ch < c; ++ch) {
      int32_t acc = 0;
      for (int i = 0; i < hw; ++i) acc += xn[static_cast<size_t>(i) * c + ch];
      y[static_cast<size_t>(n) * c + ch] = static_cast<int8_t>(hw > 0 ? RoundedDivide(acc, hw) : 0);
    }
  }
}

// The uint8 pixel q becomes the int8 carry q - 128 (zero point -128).
void input_u8_ref(size_t n, const uint8_t* pixels, int8_t* y) {
  for (size_t i = 0; i < n; ++i) y[i] = static_cast<int8_t>(static_cast<int32_t>(pixels[i]) - 128);
}

}  // namespace octet::engine
