// quant/onnx_export.h: an Octet integer model (engine::ModelDesc, what
// `octet export` writes to .oct) -> the same integer model as an ONNX file,
// for ONNX Runtime and the other tools of that world. The protobuf bytes are
// written by hand (quant/protobuf.h).
//
// The ONNX model: IR version 7, opset 13 (the default domain only), in QDQ
// form: every engine activation tensor T is QuantizeLinear -> DequantizeLinear
// with T's scale and zero point, every layer a float op between them, so a
// runtime that fuses QDQ (ONNX Runtime) runs the integer model and any other
// runtime runs its float reading. For a conv and an add:
//
//   pixels (uint8 [batch,H,W,C], NHWC raw pixels: the bytes the engine eats)
//     Transpose(0,3,1,2) -> DequantizeLinear(s_px, z_px)              (int8: -> Q -> DQ)
//   conv  DQ(weight int8 [Cout,Cin/g,KH,KW], s_w[c], 0, axis 0)
//         DQ(bias int32 [Cout], s_in*s_w[c], 0, axis 0)
//         Conv(x, w, b) -> [Relu | Clip] -> QuantizeLinear(s, zp) -> DequantizeLinear(s, zp)
//   add   Add(DQ a, DQ b) -> [Relu | Clip] -> QuantizeLinear -> DequantizeLinear
//   fc    a Conv whose kernel covers its whole input ([C] is [N,C,1,1] in ONNX)
//   pools MaxPool / AveragePool (count_include_pad 0) / GlobalAveragePool, Q -> DQ
//         on their input's grid
//   logits  the output's DQ -> Flatten(axis 1): "logits", float32 [batch, classes]
//
// The .oct stores no per-channel weight scales, only each channel's
// requantization (M0, shift); the exporter picks the float32 s_w[c] for which
// s_in * s_w[c] / s_out, computed in float32 as ONNX Runtime computes it,
// is closest to the engine's real multiplier M0 * 2^(shift - 31). An op's
// output clamp (act_min, act_max) becomes nothing (the full range of the
// emitted type: QuantizeLinear saturates), a Relu (from the zero point up)
// or a Clip at the real values of its bounds (sub-8-bit grids, ReLU6).
//
// Activations are emitted as uint8 (default) or int8, every tensor in the
// same type, converted exactly: uint8 codes = int8 codes + 128, zero point
// + 128, the real values unchanged (engine::carry_offset). uint8 is the
// default because ONNX Runtime on x86 runs U8S8 QDQ models (uint8
// activations, int8 weights) in integer kernels end to end; with int8
// activations it leaves most convs and every Add in float, since its
// int8 -> uint8 rewrite applies only to Q/DQ pairs with a single consumer.
//
// The float reading of the ONNX model rounds once per op where the engine's
// fixed-point requantization (engine/fixedpoint.h) may round twice, and the
// engine's add rescales in fixed point: the two agree to within a code, not
// bit for bit (docs/quantization.md section 16).
//
// The integer form (OnnxForm::integer) is the engine's own arithmetic in
// ONNX integer ops, bit for bit: a runtime that executes it gives the
// engine's logits exactly. Activations are carried as codes (uint8 or int8
// tensors), and each engine op becomes
//
//   conv  ConvInteger(x, w int8, x_zp, 0) -> Cast int64 -> + bias
//         -> MultiplyByQuantizedMultiplier (below, per channel) -> + zp -> Clip -> Cast
//   add   (Cast(a) - a_zp) * 2^left_shift -> MBQM(a_mult, a_shift), the same for b,
//         their sum -> MBQM(out_mult, out_shift) -> + zp -> Clip -> Cast
//   pools MaxPool on the codes; the averages as the engine forms them: the sum
//         of the int8 codes (ReduceSum, or a depthwise float Conv of ones,
//         exact for these small integers) -> rounded division -> Cast
//   logits  DequantizeLinear of the output codes -> Flatten
//
// with MBQM(x, M0, shift) in int64 as engine/fixedpoint.h defines it:
//   left   x * 2^max(shift, 0), saturated to int32 (a Clip in float64)  (only if a shift > 0)
//   SRDHM  (x * M0 + 2^30 + 2^62) / 2^31 - 2^31  = floor((x M0 + 2^30) / 2^31),
//          gemmlowp's rounding (ties up); the 2^62 keeps the dividend >= 0,
//          where ONNX's integer Div (truncation) is the floor
//   right  Sign(v) * ((Abs(v) + d / 2) / d), d = 2^max(-shift, 0): ties away
//          from zero, RoundingDivideByPOT        (only if a shift < 0)
// The same rounded division (d = the window's element count) is the
// engine's RoundedDivide of the average pools. The output clamp is applied
// before the zero point is added, so that no int64 Clip or Sign sees a value
// outside int32: ONNX Runtime 1.31.1 on x86 misorders int64 values in
// [2^31, 2^32) there (Clip(2^31 + 129, 0, 255) gives 0). Only ConvInteger
// runs in integer kernels; the requantization is a dozen int64 elementwise
// ops per layer, so the integer form is a checker, not a fast model: ONNX
// Runtime runs it about 10x slower than the QDQ form.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/format.h"

namespace octet::quant {

// Why a model cannot be exported to ONNX; what() names the op.
class OnnxExportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What the ONNX graph is made of (see the top of this file).
enum class OnnxForm {
  qdq,      // QuantizeLinear/DequantizeLinear around float ops: what runtimes fuse into int8 kernels
  integer,  // the engine's integer arithmetic in ONNX integer ops: its logits bit for bit
  // The float twin: weights and biases dequantized into float32 initializers
  // (code * scale), no Q/DQ on the activations, the clamps as Relu / Clip.
  // The same network as float arithmetic, without the grids' rounding and
  // saturation: what scripts/bench.sh times as ONNX Runtime's fp32 peer, and
  // a reference for runtimes without QDQ support.
  float_twin,
};
const char* onnx_form_name(OnnxForm f);  // "qdq", "integer", "float"

struct OnnxOptions {
  OnnxForm form = OnnxForm::qdq;
  // uint8 or int8 (see the top of this file); the type of the activation
  // codes of the qdq and integer forms (the float twin has none).
  engine::DType activations = engine::DType::uint8;
  std::string producer_version = "unknown";           // the Octet version (OCTET_VERSION_STRING)
  std::string source;  // where the model comes from, for the doc string; "" = metadata source_checkpoint
};

// The ONNX ModelProto bytes. The model is validated with the engine's own
// reader first (engine::FormatError if it would not load).
std::vector<uint8_t> export_onnx(const engine::ModelDesc& model, const OnnxOptions& opt = {});
// export_onnx + engine::write_file_atomic; returns the file's size in bytes.
uint64_t write_onnx(const std::string& path, const engine::ModelDesc& model, const OnnxOptions& opt = {});

}  // namespace octet::quant
