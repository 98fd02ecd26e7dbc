// core/ops_conv_direct.h: direct AVX-512 and AVX2 kernels for 3x3, stride-1
// convolutions (internal to core; used by conv2d in ops_conv.cpp, which falls
// back to im2col + sgemm when the CPU has neither or they are capped off).
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

// The instruction sets of the kernels: AVX-512F (16 floats a vector), or AVX2
// with FMA (8 floats; pad 1 goes through the padded grid too). Each is
// deterministic and independent of the thread count; the two differ from
// each other in the float summation order only.
enum class DirectIsa { none, avx2, avx512 };
inline constexpr DirectIsa kDirectIsas[] = {DirectIsa::avx512, DirectIsa::avx2, DirectIsa::none};  // best first
const char* direct_isa_name(DirectIsa isa);
bool direct_conv3x3_supported(DirectIsa isa);  // this CPU (and build) runs isa's kernels
// The ISA the kernels use: the best one supported, capped by the setting
// below; none means conv2d takes the im2col path.
DirectIsa direct_conv3x3_isa();
bool direct_conv3x3_available();  // direct_conv3x3_isa() != none
// Caps the ISA (process-wide; default: no cap). Tests use it to run every
// supported ISA and the fallback on the same cases.
void set_direct_conv3x3_max_isa(DirectIsa isa);

// y = conv(x, w) + bias (bias [Cout] or null).
void direct_conv3x3_forward(const Conv3x3& c, const float* x, const float* w, const float* bias, float* y);
// dw [Cout, Cin/G, 3, 3] = dL/dw for output gradient gy (overwritten, not accumulated).
void direct_conv3x3_weight_grad(const Conv3x3& c, const float* x, const float* gy, float* dw);

}  // namespace octet::detail
