// engine/kernels.h: the integer kernels of the engine, the contract between
// the executor (which plans and calls them) and their implementations.
//
// Data inside the engine:
//   activations  int8, NHWC, with a zero point. A uint8 tensor of the model
//                file is carried as int8 with zero point zp - 128 (q8 = q - 128);
//                real = scale * (q - zp) is unchanged, so every kernel sees int8.
//   weights      int8, [Cout][KH][KW][Cin/groups], symmetric per output
//                channel (zero point 0), already expanded from 2..8-bit storage.
//   bias         int32 [Cout], at scale s_in * s_w[c].
//   accumulator  int32: acc = bias[c] + sum (x - x_zp) * w.
//   output       y = clamp(zp_out + MultiplyByQuantizedMultiplier(acc, M0[c], shift[c]),
//                          act_min, act_max)            (engine/fixedpoint.h)
// Zero padding pads with real 0, i.e. with x_zp, so it adds nothing to acc.
//
// Every op has a plain reference kernel (*_ref), the oracle of the tests. The
// fast paths (prepared kernels below) must equal it bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace octet::engine {

// Per-output-channel requantization and the activation clamp (ReLU and ReLU6
// are clamps: act_min = zp_out, act_max = min(127, zp_out + round(6 / s_out))).
struct Requant {
  std::vector<int32_t> multiplier;  // [Cout] M0 in [2^30, 2^31)
  std::vector<int32_t> shift;       // [Cout]
  int32_t zp_out = 0;
  int32_t act_min = -128;
  int32_t act_max = 127;
};

struct ConvGeometry {
  int batch = 1;
  int in_h = 1, in_w = 1, in_c = 1;
  int out_c = 1;
  int kernel_h = 1, kernel_w = 1;
  int stride = 1, pad = 0, groups = 1;
  int out_h() const { return (in_h + 2 * pad - kernel_h) / stride + 1; }
  int out_w() const { return (in_w + 2 * pad - kernel_w) / stride + 1; }
  int in_c_per_group() const { return in_c / groups; }
  int out_c_per_group() const { return out_c / groups; }
};

// ---- reference kernels (plain loops; the oracle) ---------------------------

// x [N,H,W,Cin] int8 -> y [N,OH,OW,Cout] int8. Fully connected is the 1x1 conv
// of a [N,1,1,Cin] input.
void conv2d_ref(const ConvGeometry& g, const int8_t* x, int32_t x_zp, const int8_t* w,
                const int32_t* bias, const Requant& rq, int8_t* y);

// Add of two differently scaled int8 tensors of n elements (TFLite's scheme):
//   a' = MBQM((a - a_zp) << left_shift, a_mult, a_shift), b' likewise,
//   y  = clamp(zp_out + MBQM(a' + b', out_mult, out_shift), act_min, act_max).
struct AddParams {
  int32_t a_zp = 0, b_zp = 0;
  int32_t left_shift = 20;
  int32_t a_mult = 0, b_mult = 0, out_mult = 0;
  int32_t a_shift = 0, b_shift = 0, out_shift = 0;
  int32_t zp_out = 0, act_min = -128, act_max = 127;
};
void add_ref(size_t n, const int8_t* a, const int8_t* b, const AddParams& p, int8_t* y);

// Pools on NHWC int8, output in the input's scale and zero point.
// avg: the rounded mean (RoundedDivide, ties away from zero) of the raw values
// over the window's in-image elements.
void max_pool_ref(const ConvGeometry& g, const int8_t* x, int8_t* y);  // uses kernel/stride/pad
void avg_pool_ref(const ConvGeometry& g, const int8_t* x, int8_t* y);
void global_avg_pool_ref(int batch, int hw, int c, const int8_t* x, int8_t* y);  // -> [N, C]

// Raw uint8 pixels [N,H,W,C] -> int8 with zero point -128 (q8 = pixel - 128).
void input_u8_ref(size_t n, const uint8_t* pixels, int8_t* y);

// ---- fast kernels -----------------------------------------------------------

// The instruction sets of the fast kernels (engine/kernels_internal.h has the
// scheme; every one equals the reference bit for bit):
//   avx2         int16 pairs, vpmaddwd                 (engine/kernels_avx2.cpp)
//   avx512_vnni  u8 x s8 dot products, vpdpbusd        (engine/kernels_avx512.cpp)
//   amx          AMX-INT8 tiles, tdpbusd, for the convolutions with one group
//                and rows of >= 4 output pixels; the rest as avx512_vnni
//   neon         int16 multiply-accumulate, smlal      (engine/kernels_neon.cpp, aarch64)
//   neon_dot     s8 x s8 dot products, sdot            (engine/kernels_neon_dot.cpp, aarch64)
// Threads only through parallel_for below. ConvKernel throws
// std::invalid_argument for an ISA this CPU or build cannot run.
enum class Isa { reference, avx2, avx512_vnni, neon, neon_dot, amx };
Isa best_isa();               // detected once at run time (env OCTET_ISA=<name> may pick a lower one)
const char* isa_name(Isa isa);
bool isa_supported(Isa isa);  // this CPU (and this build) can run isa's kernels

// Splits [0, n) into chunks over the engine's threads (oneTBB inside engine/;
// kernels call this, never TBB). grain: smallest chunk worth a task.
void parallel_for(size_t n, size_t grain, const void* ctx, void (*fn)(const void* ctx, size_t begin, size_t end));
void set_num_threads(int threads);  // <= 0: all cores
int num_threads();

// add_ref with the vector instructions of `isa` (any ISA; the NEON one serves
// neon and neon_dot), bit for bit the same result.
void add_fast(size_t n, const int8_t* a, const int8_t* b, const AddParams& p, int8_t* y, Isa isa = best_isa());

// A convolution prepared at load: packs the weights for `isa` and precomputes
// what the inner loop needs (e.g. per-channel sum of weights for the zero
// point and the u8 x s8 VNNI offset). run() allocates nothing: it writes its
// temporaries into `scratch` of at least scratch_bytes(batch) bytes.
class ConvKernel {
 public:
  ConvKernel(const ConvGeometry& g, const int8_t* w, const int32_t* bias, int32_t x_zp, Requant rq,
             Isa isa = best_isa());
  ~ConvKernel();
  ConvKernel(ConvKernel&&) noexcept;
  ConvKernel& operator=(ConvKernel&&) noexcept;

  size_t scratch_bytes(int batch) const;
  // x [batch,H,W,Cin] -> y [batch,OH,OW,Cout]; batch <= the geometry's batch.
  void run(int batch, const int8_t* x, int8_t* y, std::span<std::byte> scratch) const;
  Isa isa() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace octet::engine
