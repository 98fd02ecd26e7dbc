#include "nn/resnet.h"

#include <algorithm>
#include <stdexcept>

namespace octet::nn {

namespace {

ModulePtr projection(int in_c, int out_c, int stride, Rng& rng, ConvInit init) {
  if (stride == 1 && in_c == out_c) return std::make_shared<Identity>();
  auto s = std::make_shared<Sequential>();
  s->append(std::make_shared<Conv2d>(in_c, out_c, 1, stride, 0, false, rng, init));
  s->append(std::make_shared<BatchNorm2d>(out_c));
  return s;
}

bool has_projection(const Module& block) { return block.child("shortcut").type() == "Sequential"; }

}  // namespace

// ---------------------------------------------------------------- blocks

BasicBlock::BasicBlock(int in_c, int c, int stride, Rng& rng, ConvInit init) : Module("BasicBlock") {
  register_module("conv1", std::make_shared<Conv2d>(in_c, c, 3, stride, 1, false, rng, init));
  register_module("bn1", std::make_shared<BatchNorm2d>(c));
  register_module("relu1", std::make_shared<ReLU>());
  register_module("conv2", std::make_shared<Conv2d>(c, c, 3, 1, 1, false, rng, init));
  register_module("bn2", std::make_shared<BatchNorm2d>(c));
  register_module("shortcut", projection(in_c, c, stride, rng, init));
  register_module("add", std::make_shared<Add>());
  register_module("relu2", std::make_shared<ReLU>());
}

Tensor BasicBlock::forward(const Tensor& x) {
  Tensor y = child("relu1").forward(child("bn1").forward(child("conv1").forward(x)));
  y = child("bn2").forward(child("conv2").forward(y));
  return child("relu2").forward(child("add").forward(y, child("shortcut").forward(x)));
}

std::vector<ConvBnRelu> BasicBlock::groups() const {
  std::vector<ConvBnRelu> g = {{"conv1", "bn1", "relu1"}, {"conv2", "bn2", ""}};
  if (has_projection(*this)) g.push_back({"shortcut.0", "shortcut.1", ""});
  return g;
}

Bottleneck::Bottleneck(int in_c, int c, int stride, bool stride_on_3x3, Rng& rng, ConvInit init)
    : Module("Bottleneck") {
  const int out_c = c * expansion;
  register_module("conv1", std::make_shared<Conv2d>(in_c, c, 1, stride_on_3x3 ? 1 : stride, 0, false, rng, init));
  register_module("bn1", std::make_shared<BatchNorm2d>(c));
  register_module("relu1", std::make_shared<ReLU>());
  register_module("conv2", std::make_shared<Conv2d>(c, c, 3, stride_on_3x3 ? stride : 1, 1, false, rng, init));
  register_module("bn2", std::make_shared<BatchNorm2d>(c));
  register_module("relu2", std::make_shared<ReLU>());
  register_module("conv3", std::make_shared<Conv2d>(c, out_c, 1, 1, 0, false, rng, init));
  register_module("bn3", std::make_shared<BatchNorm2d>(out_c));
  register_module("shortcut", projection(in_c, out_c, stride, rng, init));
  register_module("add", std::make_shared<Add>());
  register_module("relu3", std::make_shared<ReLU>());
}

Tensor Bottleneck::forward(const Tensor& x) {
  Tensor y = child("relu1").forward(child("bn1").forward(child("conv1").forward(x)));
  y = child("relu2").forward(child("bn2").forward(child("conv2").forward(y)));
  y = child("bn3").forward(child("conv3").forward(y));
  return child("relu3").forward(child("add").forward(y, child("shortcut").forward(x)));
}

std::vector<ConvBnRelu> Bottleneck::groups() const {
  std::vector<ConvBnRelu> g = {{"conv1", "bn1", "relu1"}, {"conv2", "bn2", "relu2"}, {"conv3", "bn3", ""}};
  if (has_projection(*this)) g.push_back({"shortcut.0", "shortcut.1", ""});
  return g;
}

// ---------------------------------------------------------------- ResNet

ResNet::ResNet(const ResNetConfig& cfg, Rng& rng) : Module("ResNet"), config_(cfg) {
  if (cfg.blocks.empty() || cfg.blocks.size() != cfg.widths.size())
    throw std::invalid_argument("ResNet '" + cfg.name + "': blocks and widths must be non-empty and of equal length");
  if (cfg.num_classes < 1) throw std::invalid_argument("ResNet: num_classes must be >= 1");
  if (cfg.imagenet_stem) {
    register_module("conv1", std::make_shared<Conv2d>(cfg.in_channels, cfg.stem_channels, 7, 2, 3, false, rng, cfg.conv_init));
  } else {
    register_module("conv1", std::make_shared<Conv2d>(cfg.in_channels, cfg.stem_channels, 3, 1, 1, false, rng, cfg.conv_init));
  }
  register_module("bn1", std::make_shared<BatchNorm2d>(cfg.stem_channels));
  register_module("relu", std::make_shared<ReLU>());
  groups_.push_back({"conv1", "bn1", "relu"});
  if (cfg.imagenet_stem) register_module("maxpool", std::make_shared<MaxPool2d>(3, 2, 1));

  int in_c = cfg.stem_channels;
  for (size_t s = 0; s < cfg.blocks.size(); ++s) {
    auto stage = std::make_shared<Sequential>();
    const std::string stage_name = "layer" + std::to_string(s + 1);
    for (int b = 0; b < cfg.blocks[s]; ++b) {
      const int stride = (b == 0 && s > 0) ? 2 : 1;
      const std::string prefix = stage_name + "." + std::to_string(b) + ".";
      std::vector<ConvBnRelu> g;
      if (cfg.bottleneck) {
        auto blk = std::make_shared<Bottleneck>(in_c, cfg.widths[s], stride, cfg.stride_on_3x3, rng, cfg.conv_init);
        g = blk->groups();
        stage->append(blk);
        in_c = cfg.widths[s] * Bottleneck::expansion;
      } else {
        auto blk = std::make_shared<BasicBlock>(in_c, cfg.widths[s], stride, rng, cfg.conv_init);
        g = blk->groups();
        stage->append(blk);
        in_c = cfg.widths[s] * BasicBlock::expansion;
      }
      for (auto& x : g) groups_.push_back({prefix + x.conv, prefix + x.bn, x.relu.empty() ? "" : prefix + x.relu});
    }
    register_module(stage_name, stage);
  }
  register_module("avgpool", std::make_shared<GlobalAvgPool>());
  register_module("fc", std::make_shared<Linear>(in_c, cfg.num_classes, true, rng));
}

Tensor ResNet::forward(const Tensor& x) {
  if (x.ndim() != 4 || x.dim(1) != config_.in_channels)
    throw std::invalid_argument("ResNet '" + config_.name + "': expected input [N, " +
                                std::to_string(config_.in_channels) + ", H, W], got " + shape_str(x.shape()));
  Tensor y = x;
  for (auto& [name, c] : children()) y = c->forward(y);
  return y;
}

// ---------------------------------------------------------------- registry

std::vector<std::string> model_names() {
  return {"resnet20",          "resnet32", "resnet44",          "resnet56",          "resnet110", "resnet18",
          "resnet50",          "resnet50_v1.5", "resnet18_imagenet", "resnet50_imagenet", "resnet50_v1.5_imagenet"};
}

ResNetConfig resnet_config(const std::string& name, int num_classes) {
  ResNetConfig c;
  c.name = name;
  c.num_classes = num_classes;
  std::string base = name;
  const std::string suffix = "_imagenet";
  if (base.size() > suffix.size() && base.compare(base.size() - suffix.size(), suffix.size(), suffix) == 0) {
    base = base.substr(0, base.size() - suffix.size());
    c.imagenet_stem = true;
  }
  auto cifar = [&](int depth) {
    const int n = (depth - 2) / 6;
    c.blocks = {n, n, n};
    c.widths = {16, 32, 64};
    c.stem_channels = 16;
  };
  bool ok = true;
  if (c.imagenet_stem && base != "resnet18" && base != "resnet50" && base != "resnet50_v1.5") {
    ok = false;
  } else if (base == "resnet20") {
    cifar(20);
  } else if (base == "resnet32") {
    cifar(32);
  } else if (base == "resnet44") {
    cifar(44);
  } else if (base == "resnet56") {
    cifar(56);
  } else if (base == "resnet110") {
    cifar(110);
  } else if (base == "resnet18") {
    c.blocks = {2, 2, 2, 2};
    c.widths = {64, 128, 256, 512};
    c.stem_channels = 64;
  } else if (base == "resnet50" || base == "resnet50_v1.5") {
    c.bottleneck = true;
    c.blocks = {3, 4, 6, 3};
    c.widths = {64, 128, 256, 512};
    c.stem_channels = 64;
    c.stride_on_3x3 = base == "resnet50_v1.5";
  } else {
    ok = false;
  }
  if (!ok) {
    std::string list;
    for (auto& n : model_names()) list += (list.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown model '" + name + "'; valid names: " + list);
  }
  return c;
}

std::shared_ptr<ResNet> make_model(const std::string& name, int num_classes, uint64_t seed, ConvInit conv_init) {
  ResNetConfig cfg = resnet_config(name, num_classes);
  cfg.conv_init = conv_init;
  Rng rng(seed, /*stream=*/0x1417);
  return std::make_shared<ResNet>(cfg, rng);
}

int zero_init_residual(Module& model) {
  int zeroed = 0;
  for (auto& [name, m] : model.named_modules()) {
    const char* last_bn = m->type() == "BasicBlock" ? "bn2" : m->type() == "Bottleneck" ? "bn3" : nullptr;
    if (!last_bn) continue;
    auto& bn = dynamic_cast<BatchNorm2d&>(m->child(last_bn));
    float* g = bn.weight().data();
    std::fill(g, g + bn.weight().numel(), 0.0f);
    ++zeroed;
  }
  return zeroed;
}

}  // namespace octet::nn
