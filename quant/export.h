// quant/export.h: a prepared (QAT or PTQ-calibrated) ResNet -> an Octet
// integer model (engine/format.h), the bridge between training and the engine.
//
// The steps of export_model, in order (each a member of the Exporter in
// quant/export.cpp, which says what it does and what it refuses):
//
//   1. input           uint8 pixels in, H x W x C (the training images' shape,
//                      ExportOptions); picks the pad pixel z and s_px (below)
//   2. the layers      quant_edges() in forward order, one step per kind:
//        conv            a ConvBn; the stem (the conv that reads the pixels)
//                        first folds the preprocessing (stem_weights)
//        linear          the fc, whose output (the logits) must be signed int8
//        add             a residual add
//        max_pool        a MaxPool2d
//        avg_pool        a GlobalAvgPool or an AvgPool2d
//   3. output          the last op's output is the logits
//   4. metadata        class names, the folded preprocessing, the QAT config,
//                      ExportOptions::metadata
//   5. prove_headroom  the int32 accumulator bound of every conv and fc
//   6. serialize       through the engine's own reader; sizes and notes
//
// What the exporter does, layer by layer (quant_edges() of quant/qat_prepare.h
// gives the graph and the ActQuant that holds each tensor's grid):
//
//   activations  every engine tensor takes its ActQuant's grid: scale, zero
//                point, codes [qmin, qmax] (int8 if signed, uint8 if not).
//                Every op's output clamp is [qmin, qmax] (so 4-bit grids stay
//                4-bit), raised to the zero point when a ReLU is fused; the
//                exporter hands it to the builder with the op (engine::Clamp).
//   conv         ConvBn's folded weight, fake-quantized by the model's own
//                weight quantizer: the codes are exactly the ones QAT trained
//                (per-channel symmetric, 2..8 bits), relaid out [Cout][KH][KW][Cin].
//                bias_q[c] = round(b_fold[c] / (s_in * s_w[c])), int32.
//                (M0, shift)[c] = QuantizeMultiplier(s_in * s_w[c] / s_out), by
//                the engine's own ModelBuilder.
//   fc           the same from the Linear and its weight quantizer.
//   add          TFLite's rescale (ModelBuilder::add_add) of the two producer
//                grids into the output grid; a fused ReLU is a clamp. With
//                Add-input quantizers (add_inputs tied | untied) each input is
//                first requantized onto its slot's grid, as in training: a
//                depthwise 1x1 conv with unit weights, no new engine op.
//   pools        global average pool (and max pool) keep their input's grid.
//
// The input: the first conv absorbs the preprocessing, so the engine eats raw
// uint8 pixels. Preprocessing is x[c] = pixel * a[c] + o[c] (core/augment.h).
// Write it around an integer pixel z:
//
//   x[c] = a[c] * (pixel - z) + e[c],      e[c] = a[c] * z + o[c]
//
// The engine input tensor is real = s_px * (pixel - z) (zero point z), the
// stem weights become w[o,c] * a[c] / s_px and the stem bias absorbs
// sum_{c,kh,kw} w[o,c,kh,kw] * e[c]. Away from the border this is exact.
// At the border the float model pads x with 0, while the engine pads with
// pixel z, whose preprocessed value is e[c], not 0. No single integer z makes
// e[c] = 0 for every channel in any of the three preprocessings (the pixel
// that maps to 0 is 127.5 for inception, the channel means for standard and
// vgg), and a uint8 zero point cannot be 127.5, so the fold is exact only
// in the interior. The exporter picks the z that minimizes max_c |e[c]| and
// reports that bound (inception: 0.5/127.5 = 0.0039, one quarter of an input
// pixel step; standard: about 0.09 standard deviations; vgg: about 10 pixel
// levels) and the worst error it causes at a corner of the stem's output, in
// output quantization steps (ExportResult::border_*).
//
// The alternative, a first 1x1 layer that quantizes the preprocessed image
// to int8 so that padding is an exact real 0, would trade the border-only
// error for rounding every input value (256 pixel levels of a channel plus a
// half-level offset do not fit 256 codes with 0 on the grid): worse.
//
// When a[c] is the same for every channel (vgg, inception) s_px = a and the
// stem keeps its QAT weight codes. With per-channel a[c] (standard) the
// products w * a[c] / s_px no longer share one grid per output channel, so
// the stem's weights are requantized per output channel on a grid of the same
// bitwidth (ExportResult::stem_requantized, and a note).
//
// A model the engine cannot run is refused with ExportError naming the layer
// and why: weights wider than 8 bits or asymmetric, an activation grid wider
// than 8 bits, unsigned logits, a bias or accumulator outside int32 (the
// headroom proof: K * max|w| * max|x - zp| + |bias| <= 2^31 - 1 for every
// output channel), a pool whose output grid differs from its input's.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/augment.h"
#include "engine/builder.h"
#include "engine/format.h"
#include "nn/resnet.h"
#include "quant/qat.h"

namespace octet::quant {

// Why a model cannot be exported; what() names the layer.
class ExportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ExportOptions {
  std::string model_name;                // "" = the ResNet config's name
  std::vector<std::string> class_names;  // "" entries not allowed; empty = none stored
  // The engine's input image, input_h x input_w x input_c uint8 pixels: what
  // the model was trained on. 0 = export_model(LoadedModel&) takes the
  // checkpoint's shape (the training images'; 32x32 for checkpoints older
  // than that metadata), export_model(ResNet&) 32x32. The channels are the
  // model's stem's (ResNetConfig::in_channels, which the preprocessing must
  // have too); input_c 0 takes them, another value must equal them.
  int input_h = 0, input_w = 0;
  int input_c = 0;
  std::vector<std::pair<std::string, std::string>> metadata;  // extra keys (source checkpoint, ...)
};

// The headroom proof of one conv / fc op, computed from a model description
// alone (the exporter, `octet inspect` and `octet compare` use it).
struct LayerHeadroom {
  std::string name;
  std::string kind;     // "conv2d" or "fully_connected"
  int64_t k = 0;        // products per accumulator: KH * KW * Cin / groups, or the fc's K
  int weight_bits = 8;
  int32_t max_w = 0;    // max |w| over all output channels
  int32_t max_x = 0;    // max |x - x_zp| the input can hold (its producer's clamp)
  int64_t max_bias = 0;  // max |bias|
  int64_t bound = 0;    // max over channels of K * max|w[c]| * max_x + |bias[c]|
  // log2((2^31 - 1) / bound): the spare bits of the int32 accumulator.
  double spare_bits() const;
};
std::vector<LayerHeadroom> headroom_report(const engine::ModelDesc& model);

struct ExportResult {
  engine::ModelBuilder builder;  // the model; builder.serialize() / write(path)
  // The engine activation tensor of each ActQuant (dotted name -> tensor id);
  // followers share their leader's tensor where the engine does.
  std::map<std::string, uint32_t> tensor_of_actquant;
  // conv/fc/add op name in the engine (the QuantEdge name) -> the ActQuant
  // name of its output.
  std::vector<std::pair<std::string, std::string>> op_output;
  std::vector<LayerHeadroom> headroom;

  // The input fold (see the top of this file).
  int32_t input_zero_point = 0;        // the pixel z
  double input_scale = 1.0;            // s_px
  std::vector<double> padding_value;   // e[c]: the preprocessed value the engine pads with
  double border_error_steps = 0;       // worst |error| of a stem output at a corner, in output steps
  bool stem_requantized = false;

  uint64_t file_bytes = 0;          // the serialized model
  uint64_t weight_bytes = 0;        // packed weights alone
  uint64_t float_weight_bytes = 0;  // 4 bytes per parameter of the float model
  std::vector<std::string> notes;   // things a user should know (requantized stem, ...)

  // A few lines: sizes, the input fold, the tightest headroom.
  std::string summary() const;
};

// Exports a prepared model (is_prepared(model)); `pre` is the float
// preprocessing the model was trained with, `config` its QatConfig. The
// model is switched to eval mode. Throws ExportError (what and where), or
// std::logic_error for an unprepared model.
ExportResult export_model(nn::ResNet& model, const QatConfig& config, const Preprocess& pre,
                          const ExportOptions& opt = {});
// A loaded checkpoint (must be prepared: QAT or PTQ). Class names, the model
// name and the input shape come from its metadata unless opt sets them.
ExportResult export_model(LoadedModel& loaded, ExportOptions opt = {});

// The 4-bytes-per-parameter size of the float model of `config` (what the
// model file is compared with).
uint64_t float_weight_bytes(const nn::ResNetConfig& config);

}  // namespace octet::quant
