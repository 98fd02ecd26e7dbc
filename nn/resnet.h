// nn/resnet.h: the ResNet family (He et al. 2016), built from nn/module.h layers.
//
// Names follow torchvision, so a state dump reads like PyTorch's:
//   conv1, bn1, relu, [maxpool], layer1 .. layerK (Sequential of blocks "0".."n-1"),
//   avgpool (GlobalAvgPool -> [N, C]), fc.
// BasicBlock children: conv1 bn1 relu1 conv2 bn2 shortcut add relu2.
// Bottleneck children: conv1 bn1 relu1 conv2 bn2 relu2 conv3 bn3 shortcut add relu3.
// `shortcut` is Identity, or Sequential{"0": Conv2d 1x1 with the block's stride,
// "1": BatchNorm2d} when the block changes shape (projection shortcut, "option B").
//
//   resnet20/32/44/56/110: CIFAR ResNets, depth 6n+2: a 3x3 conv of 16
//     channels, 3 stages of n BasicBlocks with 16/32/64 channels (stride 2 at
//     the first block of stages 2 and 3), global average pool, fc. Same model
//     as ../shared/bench/torch_resnet20.py: resnet20 has 272,474 parameters.
//   resnet18: BasicBlocks [2,2,2,2], 64..512 channels, CIFAR stem (3x3 conv
//     stride 1, no max pool).
//   resnet50: Bottlenecks [3,4,6,3], expansion 4, ResNet v1 as in the paper
//     (and the QAT study): the stride of a downsampling block sits on its
//     first 1x1 conv. "resnet50_v1.5" puts it on the 3x3 conv (torchvision).
//     Both with the CIFAR stem.
//   "<name>_imagenet" (resnet18, resnet50, resnet50_v1.5): the ImageNet stem,
//     7x7 conv stride 2 + 3x3 max pool stride 2.
//
// Every ResNet forward is its children applied in order, each block's forward
// goes through its named children only (see nn/module.h, "Design for QAT").
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace octet::nn {

// One conv followed by its BN and, if any, the ReLU right after it, by dotted
// module names from the model root. relu is "" when the BN output goes to an
// Add (or to nothing) instead.
struct ConvBnRelu {
  std::string conv, bn, relu;
};

class BasicBlock : public Module {
 public:
  static constexpr int expansion = 1;
  BasicBlock(int in_channels, int channels, int stride, Rng& rng, ConvInit init = ConvInit::torch);
  Tensor forward(const Tensor& x) override;
  // The block's groups with names relative to the block.
  std::vector<ConvBnRelu> groups() const;
};

class Bottleneck : public Module {
 public:
  static constexpr int expansion = 4;
  // stride_on_3x3: false = ResNet v1 (stride on conv1, the first 1x1), true = v1.5.
  Bottleneck(int in_channels, int channels, int stride, bool stride_on_3x3, Rng& rng,
             ConvInit init = ConvInit::torch);
  Tensor forward(const Tensor& x) override;
  std::vector<ConvBnRelu> groups() const;
};

struct ResNetConfig {
  std::string name;                 // recorded in checkpoints
  bool bottleneck = false;          // BasicBlock or Bottleneck
  std::vector<int> blocks;          // blocks per stage
  std::vector<int> widths;          // channels per stage (before expansion)
  int stem_channels = 16;
  bool imagenet_stem = false;       // 7x7/2 conv + 3x3/2 max pool instead of 3x3/1 conv
  bool stride_on_3x3 = false;       // Bottleneck only: v1.5
  int num_classes = 10;
  int in_channels = 3;
  ConvInit conv_init = ConvInit::torch;  // how every Conv2d draws its weight
};

class ResNet : public Module {
 public:
  ResNet(const ResNetConfig& config, Rng& rng);
  Tensor forward(const Tensor& x) override;  // [N, 3, H, W] -> logits [N, classes]
  std::string describe() const override { return "ResNet(" + config_.name + ")"; }

  const ResNetConfig& config() const { return config_; }
  // Every (conv, bn, relu) group in forward order, names from the model root:
  // stem, then per block its groups, the shortcut's (conv, bn, "") included.
  const std::vector<ConvBnRelu>& conv_bn_relu_groups() const { return groups_; }

 private:
  ResNetConfig config_;
  std::vector<ConvBnRelu> groups_;
};

// The configuration for a model name; throws std::invalid_argument listing
// the valid names.
ResNetConfig resnet_config(const std::string& name, int num_classes = 10);
std::vector<std::string> model_names();

// A freshly initialized model from a seeded generator (same seed, same weights).
std::shared_ptr<ResNet> make_model(const std::string& name, int num_classes, uint64_t seed,
                                   ConvInit conv_init = ConvInit::torch);

// Sets the scale (gamma) of the last BN of every residual block to 0, so each
// block starts as its shortcut alone and the network as a shallower one
// (Goyal et al. 2017; torchvision's zero_init_residual=True). Returns the
// number of BNs it zeroed.
int zero_init_residual(Module& model);

}  // namespace octet::nn
