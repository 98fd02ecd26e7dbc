// quant/ptq.h: post-training quantization (PTQ) of the ResNet family with the
// QAT mechanism (quant/qat_prepare.h), and its two extras from Nagel et al.
// 2019: cross-layer equalization and bias correction.
//
// PTQ (calibrate) runs the same prepared model in eval mode over a few
// hundred training images with fake quant disabled, freezes the observed
// ranges, and enables fake quant: the result is the same kind of model a QAT
// run produces, so the exporter (quant/export.h) treats both alike.
//
// Command line: `octet calibrate CKPT --observer K -o OUT`.
#pragma once

#include <cstdint>
#include <vector>

#include "core/augment.h"
#include "core/dataset.h"
#include "core/tensor.h"
#include "nn/module.h"
#include "nn/resnet.h"
#include "quant/qat_config.h"

namespace octet::quant {

// Post-training calibration: prepare(model, config) (config.act_observer is the
// calibration observer: minmax, percentile, entropy, mse, ema, meanstd), run
// `batches` (preprocessed images [N, C, H, W]) in eval mode with fake quant
// off, freeze every range and turn fake quant on (phase "quantized, BN frozen").
// With config.cross_layer_equalization the weights are equalized first; with
// config.bias_correction the biases are corrected after observing.
void calibrate(nn::ResNet& model, const QatConfig& config, const std::vector<Tensor>& batches);
// The same over the first `images` images of a seeded, class-mixed sample of
// `data`, preprocessed with `pre`, in batches of `batch`.
void calibrate(nn::ResNet& model, const QatConfig& config, const Dataset& data, const Preprocess& pre,
               int64_t images, int batch = 100, uint64_t seed = 0);

// Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization
// Through Weight Equalization and Bias Correction"): inside each block, for
// every ConvBn -> ReLU -> ConvBn pair, output channel i of the first and input
// channel i of the second are rescaled by s_i = sqrt(r1_i / r2_i) (r = max |w|
// of the folded weights), so both get the range sqrt(r1_i * r2_i). ReLU is
// positively homogeneous, so the float model computes the same function (eval
// mode, up to float rounding): the first layer's BN gamma and beta are divided
// by s_i, the second conv's input channel multiplied by it. Pairs across an Add
// are left alone. Repeats `iterations` sweeps; returns the number of pairs.
int equalize_cross_layer(nn::ResNet& model, int iterations = 20);

// Empirical bias correction (same paper): for each ConvBn, the mean output
// shift the weight quantization causes, sum_{c,k} (W_q - W)[o, c, k] * E[x_c]
// with E[x_c] the channel means of its input seen while collecting, is
// subtracted from the BN beta (so from the folded bias).
void correct_bias(nn::Module& model);
// The same for the fc of a prepared model: b[o] -= sum_i (W_q - W)[o, i] * input_mean[i],
// input_mean being the mean of the fc's input (the pooled features) per feature.
// calibrate() collects that mean in the same pass as the ConvBn ones.
void correct_bias(nn::Linear& fc, const std::vector<double>& input_mean);

}  // namespace octet::quant
