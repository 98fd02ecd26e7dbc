// nn/resnet.h: the ResNet family (He et al. 2016), built from nn/module.h layers.
//
// Names follow torchvision, so a state dump reads like PyTorch's:
//   conv1, bn1, relu, [maxpool], layer1 .. layerK (Sequential of blocks "0".."n-1"),
//   avgpool (GlobalAvgPool -> [N, C]), fc.
// BasicBlock children: conv1 bn1 relu1 conv2 bn2 shortcut add relu2.
// Bottleneck children: conv1 bn1 relu1 conv2 bn2 relu2 conv3 bn3 shortcut add relu3.
// With train-time branches (add_branches, below) a block also has
// conv<i>_<kind> and bn<i>_<kind> beside each 3x3 conv<i> (kind 1x1, 1x3, 3x1).
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

// The kernel shape of a train-time branch (below); its name suffix is "_<h>x<w>".
struct BranchKind {
  int kernel_h, kernel_w;
  std::string suffix() const {
    std::string s = "_";
    s += std::to_string(kernel_h);
    s += 'x';
    s += std::to_string(kernel_w);
    return s;
  }
};

// What BasicBlock and Bottleneck share: the "conv_i then bn_i" step, with the
// train-time branches beside it when add_branches() gave it some.
class ResidualBlock : public Module {
 public:
  // Adds conv<i>_<kind> (the kind's kernel, centred: padding kernel/2 on each
  // axis; the 3x3 conv's stride and channels) and bn<i>_<kind> beside every
  // 3x3 conv<i> of the block, for each kind it does not have yet; returns how many.
  int add_branches(const std::vector<BranchKind>& kinds, Rng& rng, ConvInit init);

 protected:
  using Module::Module;
  // bn<i>(conv<i>(x)), plus bn<i>_<kind>(conv<i>_<kind>(x)) for each branch it has.
  Tensor conv_bn(const Tensor& x, int i);
};

class BasicBlock : public ResidualBlock {
 public:
  static constexpr int expansion = 1;
  BasicBlock(int in_channels, int channels, int stride, Rng& rng, ConvInit init = ConvInit::torch);
  Tensor forward(const Tensor& x) override;
  // The block's groups with names relative to the block.
  std::vector<ConvBnRelu> groups() const;
};

class Bottleneck : public ResidualBlock {
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
  int in_channels = 3;              // the images' channels, which the stem takes: 3 (RGB), 1 (gray), ...
  ConvInit conv_init = ConvInit::torch;  // how every Conv2d draws its weight
};

class ResNet : public Module {
 public:
  ResNet(const ResNetConfig& config, Rng& rng);
  Tensor forward(const Tensor& x) override;  // [N, in_channels, H, W] -> logits [N, classes]
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

// A freshly initialized model from a seeded generator (same seed, same
// weights), for images of `in_channels` channels (the data's; 1 for gray).
std::shared_ptr<ResNet> make_model(const std::string& name, int num_classes, uint64_t seed,
                                   ConvInit conv_init = ConvInit::torch, int in_channels = 3);

// ---------------------------------------------------------------- train-time branches
//
// Structural re-parameterization (Ding et al.: ACNet 2019, RepVGG 2021).
// While training, every 3x3 conv of a residual block gets parallel convs of
// smaller kernels (1x1; the 1x3 and 3x1 pair of ACNet's asymmetric convolution
// block), each with its own BN, and the block adds the BN outputs:
//
//     y = bn_i(conv_i(x)) + sum over kinds k of bn_i_k(conv_i_k(x))
//
// A branch's kernel is centred on the 3x3 one (a 1x3 is padded (0, 1), so it
// sees the 3x3 kernel's middle row), so each branch is a 3x3 conv that is zero
// outside its taps. In eval mode each BN is an affine map per channel,
// y = s*z + t with s = gamma / sqrt(running_var + eps) and
// t = beta - s*running_mean, so the sum is one 3x3 conv with a bias:
//
//     W = s_3x3 * W_3x3 + sum_k s_k * W_k (added onto the taps it covers)
//     b = t_3x3 + sum_k t_k
//
// fold_branches() writes that back as conv_i (weight W) and bn_i with
// running_mean 0, running_var 1, gamma sqrt(1 + eps) (so its scale is 1) and
// beta b: the plain ResNet, same names, shapes and parameter count. What is
// evaluated, quantized and exported is that model; the branches only change
// how the 3x3 weights train (each branch is normalized on its own, which the
// folded conv is not). The stem and the shortcuts keep no branch.

// The kinds in a comma list such as "1x1" or "1x3,3x1" (each of 1x1, 1x3, 3x1
// at most once), in the canonical order 1x1, 1x3, 3x1 whatever the list's;
// throws std::invalid_argument naming a bad entry.
std::vector<BranchKind> parse_branch_kinds(const std::string& list);
// The canonical comma list of `kinds` ("1x1,1x3,3x1").
std::string branch_kinds_str(const std::vector<BranchKind>& kinds);

// Adds the branches to every residual block of `model`, conv by conv and kind
// by kind in canonical order; their weights draw from their own stream of
// `seed`, so the 3x3 weights stay those of the plain model with the same seed
// (and "1x1" alone draws what it always did). Returns the number of branches added.
int add_branches(Module& model, const std::vector<BranchKind>& kinds, uint64_t seed, ConvInit init = ConvInit::torch);
inline int add_1x1_branches(Module& model, uint64_t seed, ConvInit init = ConvInit::torch) {
  return add_branches(model, {{1, 1}}, seed, init);
}

// How many parameters the train-time branches of `model` hold (0 without).
int64_t branch_parameters(const Module& model);

// The state of the same model with every branch folded into its 3x3 conv, as
// above: the names of the plain model, ready for its load_state(). Entries
// without a branch are shared with `state`, folded ones are new tensors.
// Throws std::invalid_argument naming a branch whose conv or BN is missing or
// has another shape.
NamedTensors fold_branches(const NamedTensors& state, float eps = 1e-5f);

// Sets the scale (gamma) of the last BN of every residual block to 0, so each
// block starts as its shortcut alone and the network as a shallower one
// (Goyal et al. 2017; torchvision's zero_init_residual=True). A block with
// train-time branches on that conv has their BNs zeroed too. Returns the
// number of blocks.
int zero_init_residual(Module& model);

}  // namespace octet::nn
