// quant/analysis.h: where the quantization error comes from, layer by layer.
//
// For a prepared model (QAT or PTQ) and its exported integer model, every
// engine tensor is compared in four versions of the network, on the same
// images:
//
//   float        every quantizer off (the float network, BN folded)
//   weights      only the weight quantizers on          -> weight rounding
//   fakequant    every quantizer on (the QAT forward)   -> + activation rounding and clipping
//   integer      the integer simulation of the model file (quant/intsim.h), dequantized
//                                                       -> + the integer arithmetic's rounding
//                                                          (requantization, add rescale, pools)
//
// Per tensor: RMSE and SQNR = 10 log10(sum ref^2 / sum (x - ref)^2) of each
// version against float, and an attribution of the integer model's error:
//
//   weight share    E(weights - float)
//   clip share      A * c,         A = max(0, E(fakequant - float) - E(weights - float)):
//   round share     A * (1 - c)    what the activation quantizers add on top of the
//                                  weights' error (else the weight error counts twice);
//                                  c = the clipped part of this tensor's own
//                                  activation quantization error
//   integer share   E(integer - fakequant): the integer arithmetic's rounding
//                   (requantization, add rescale, pool ties) and the export's own
//                   changes: the stem's border padding and, with per-channel
//                   preprocessing scales, its requantized weights (quant/export.h)
//
// with E the error energy (sum of squares) and c the fraction of the local
// error energy (fakequant ActQuant output - its input) that comes from values
// outside the grid's range. The four energies are reported as shares of their
// sum. This is an attribution, not a decomposition: errors of earlier layers
// propagate (a one-step difference early on moves many codes later: two
// quantized networks that differ by rounding drift apart layer by layer), and
// the energies of correlated errors do not add exactly.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "engine/format.h"
#include "nn/resnet.h"
#include "quant/intsim.h"
#include "quant/qat.h"

namespace octet::quant {

// Which quantizers of a prepared model are on.
enum class QuantMode { float32, weights_only, fake_quant };
const char* quant_mode_name(QuantMode m);

// Switches every ActQuant and WeightQuant of a prepared model (fake quant on
// or off; quantizers outside their configured location stay observe-only).
// Returns what it changed, so restore_quant_mode() can put it back.
struct QuantSwitches {
  std::vector<std::pair<ActQuant*, bool>> acts;
  std::vector<std::pair<WeightQuant*, bool>> weights;
};
QuantSwitches set_quant_mode(nn::Module& model, QuantMode mode);
void restore_quant_mode(const QuantSwitches& s);

// Runs a batch [N, C, H, W] through the model (eval mode, no grad) and keeps
// the input and output of every ActQuant, by dotted name.
struct Capture {
  Tensor logits;
  std::map<std::string, Tensor> in, out;
};
Capture capture_activations(nn::ResNet& model, const Tensor& batch, QuantMode mode);

struct LayerError {
  std::string name;    // the ActQuant's dotted name
  std::string op;      // the engine op producing the tensor
  uint32_t tensor = 0;  // engine tensor id
  int64_t values = 0;  // per image
  double float_rms = 0;
  double rmse_weights = 0, rmse_fakequant = 0, rmse_integer = 0, rmse_int_vs_fq = 0;
  double sqnr_weights = 0, sqnr_fakequant = 0, sqnr_integer = 0;  // dB vs float (inf if exact)
  double clip_fraction = 0;  // of the local activation quantization error energy
  double share_weight = 0, share_clip = 0, share_round = 0, share_integer = 0;
};

struct Comparison {
  int images = 0;
  std::vector<LayerError> layers;  // in engine order
  int argmax_float_fq = 0, argmax_fq_int = 0, argmax_float_int = 0;  // images whose argmax agree
};

// images_nchw: preprocessed floats [N, C, H, W]; pixels_nhwc: the same images
// as raw uint8 NHWC for the integer simulation. tensor_of: ActQuant dotted
// name -> tensor id in sim's model (quant::ExportResult::tensor_of_actquant).
// op_of: the engine op name of each ActQuant's tensor (optional, for display).
Comparison compare_layers(nn::ResNet& model, const IntSim& sim, const std::map<std::string, uint32_t>& tensor_of,
                          const std::map<std::string, std::string>& op_of, const Tensor& images_nchw,
                          const uint8_t* pixels_nhwc);

// A fixed-width table of a Comparison.
std::string format_comparison(const Comparison& c);

// How often the engine's requantization rounds differently from one rounding
// (docs/quantization.md section 16): the share of outputs for which
// MultiplyByQuantizedMultiplier(acc, m0, shift) (gemmlowp's two roundings)
// differs from acc * M rounded once, half to even, as ONNX's QuantizeLinear
// does, M = m0 * 2^(shift - 31). Deterministic: the accumulators nearest to
// the exact results -128, -128 + 1/256, ..., 128 - 1/256 (65,536 of them,
// an int8 output's range).
double double_rounding_share(int32_t m0, int32_t shift);

}  // namespace octet::quant
