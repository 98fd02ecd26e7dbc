// core/ops_conv_direct.h: direct AVX-512 kernels for 3x3, stride-1
// convolutions (internal to core; used by conv2d in ops_conv.cpp, which falls
// back to im2col + sgemm when they are unavailable or disabled).
//
// Shapes: x [N, Cin, H, W], w [Cout, Cin/G, 3, 3], y and gy [N, Cout, OH, OW]
// with OH = H + 2*pad - 2, OW = W + 2*pad - 2; all NCHW, contiguous.
// Results equal the im2col path's up to float summation order; both are
// independent of the thread count.
#pragma once

#include <cstdint>

namespace octet::detail {

struct Conv3x3 {
  int64_t N, Cin, H, W, Cout, G, pad;
};

// True when the CPU runs AVX-512F and the kernels are enabled.
bool direct_conv3x3_available();
// Tests switch the kernels off to exercise the fallback path (process-wide).
void set_direct_conv3x3_enabled(bool on);

// y = conv(x, w) + bias (bias [Cout] or null).
void direct_conv3x3_forward(const Conv3x3& c, const float* x, const float* w, const float* bias, float* y);
// dw [Cout, Cin/G, 3, 3] = dL/dw for output gradient gy (overwritten, not accumulated).
void direct_conv3x3_weight_grad(const Conv3x3& c, const float* x, const float* gy, float* dw);

}  // namespace octet::detail
