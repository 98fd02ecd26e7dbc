// quant/qat_prepare.h: prepare(), which puts the quantizers into a float
// ResNet, and the exporter's view of the result (act_quants, conv_bns,
// QuantEdge / quant_edges).
//
// prepare(model, config) rewrites a float ResNet IN PLACE so that it computes
// in training what the integer engine will compute at inference:
//
//   1. every (conv, BN) pair becomes one fused ConvBn module at the conv's
//      dotted name (the BN's name holds nn::Identity): the BN is folded into
//      the conv's weight and bias, and the FOLDED weight is fake-quantized
//      (Jacob et al. 2018, PyTorch's ConvBn2d QAT module);
//   2. the fc (Linear) gets a per-channel weight quantizer (its weight_transform);
//   3. EVERY tensor the engine holds as int8 gets one ActQuant module, which
//      observes the tensor's range and, once enabled, fake-quantizes it.
//
// ---- Where the ActQuants sit (placement by dotted name) -------------------
//
// A module M whose output is an engine tensor is replaced by
// nn::Sequential{"0": M, "1": ActQuant}. For a CIFAR ResNet-20:
//
//   conv1                 ConvBn (stem; fused conv1 + bn1), bn1 = Identity
//   relu.1                ActQuant of the stem output            (relu.0 = ReLU)
//   layer1.0.conv1        ConvBn, layer1.0.bn1 = Identity
//   layer1.0.relu1.1      ActQuant of the block's first conv (+ReLU) output
//   layer1.0.conv2        ConvBn, layer1.0.bn2 = Sequential{"0": Identity, "1": ActQuant}
//   layer1.0.bn2.1        ActQuant of the second conv output (feeds the Add; may be negative)
//   layer2.0.shortcut.0   ConvBn of a projection shortcut, shortcut.1 = Sequential{Identity, ActQuant}
//   layer2.0.shortcut.1.1 ActQuant of the projection output (feeds the Add)
//   layer1.0.add.input_a  ActQuant only when add_inputs = tied | untied (else Identity)
//   layer1.0.add.input_b  same; tied: shares input_a's range (one observer, one grid)
//   layer1.0.relu2.1      ActQuant of the block output (Add + ReLU)
//   avgpool.1             ActQuant following the last block output's grid (the engine's
//                         average pool keeps its input's scale and zero point)
//   fc.0                  the Linear, with weight_transform = WeightQuant
//   fc.1                  ActQuant of the logits
//
// A Bottleneck is the same with conv1/relu1.1, conv2/relu2.1, conv3/bn3.1 and
// the block output at relu3.1. An ImageNet stem's max pool needs no ActQuant
// (the max of values on a grid is on that grid).
//
// The engine graph of one block, in QuantEdge terms (quant_edges() lists it):
//
//   BasicBlock(x: block input, grid = previous block output ActQuant)
//     conv  conv1      in x              out relu1.1   relu fused
//     conv  conv2      in relu1.1        out bn2.1     no relu
//     conv  shortcut.0 in x              out shortcut.1.1  (projection blocks only)
//     add   add        a bn2.1, b shortcut.1.1 (or x for an identity shortcut)
//                                         out relu2.1   relu fused
//   Bottleneck: conv1 (relu1.1, relu) -> conv2 (relu2.1, relu) -> conv3 (bn3.1),
//     [shortcut.0 (shortcut.1.1)], add -> relu3.1 (relu fused).
//
// The add-input slot ActQuants (tied/untied) are the study's "also quantize
// the inputs of Add" knob: in training they round the add's inputs once more
// onto their own grid(s). The engine's add rescales each input itself, so the
// exporter uses the producer tensors' grids (bn2.1 etc.) and QuantEdge lists
// the slots only for information (add_slot_a/b).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"
#include "nn/resnet.h"
#include "quant/qat_config.h"
#include "quant/qat_modules.h"

namespace octet::quant {

// Rewrites `model` in place (see the top of this file). The model keeps its
// current weights and BN statistics (prepare a loaded float model to fine-tune
// it). Fake quant starts disabled (phase "observe only"). Throws
// std::invalid_argument for an invalid config, std::logic_error if the model
// is already prepared.
void prepare(nn::ResNet& model, const QatConfig& config);
bool is_prepared(const nn::Module& model);

// Every ActQuant / ConvBn of a prepared model with its dotted name, in tree order.
std::vector<std::pair<std::string, ActQuant*>> act_quants(nn::Module& model);
std::vector<std::pair<std::string, ConvBn*>> conv_bns(nn::Module& model);

// One engine op of a prepared model, with the ActQuants giving its input and
// output grids (see "The engine graph of one block" above).
struct QuantEdge {
  enum class Kind { conv, linear, add, max_pool, avg_pool };
  Kind kind = Kind::conv;
  std::string name;                 // ConvBn ("layer1.0.conv1"), Linear ("fc.0"), Add ("layer1.0.add"),
                                    // pools ("maxpool", "avgpool.0")
  ConvBn* conv = nullptr;           // conv
  nn::Linear* linear = nullptr;     // linear
  const ActQuant* input = nullptr;  // grid of the (first) input; nullptr: the model input (stem conv)
  const ActQuant* input_b = nullptr;  // add: the second input (the shortcut)
  const ActQuant* output = nullptr;   // grid of the output (maxpool: == input)
  bool relu = false;                // ReLU fused into the op (clamp at the output zero point)
  const ActQuant* add_slot_a = nullptr;  // add with add_inputs != off: the slot quantizers (training only)
  const ActQuant* add_slot_b = nullptr;
};
// In forward (topological) order. Throws std::logic_error if `model` is not prepared.
std::vector<QuantEdge> quant_edges(nn::ResNet& model);

}  // namespace octet::quant
