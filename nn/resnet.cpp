#include "nn/resnet.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
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

namespace {
std::string conv_name(int i) { return "conv" + std::to_string(i); }
std::string bn_name(int i) { return "bn" + std::to_string(i); }
// Every branch kind there is, in canonical order.
const std::vector<BranchKind> kBranchKinds = {{1, 1}, {1, 3}, {3, 1}};

// The branch kind whose suffix `name` ends with, or nullptr.
const BranchKind* branch_suffix_of(const std::string& name) {
  for (const BranchKind& k : kBranchKinds) {
    const std::string suf = k.suffix();
    if (name.size() > suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0) return &k;
  }
  return nullptr;
}
}  // namespace

Tensor ResidualBlock::conv_bn(const Tensor& x, int i) {
  Tensor y = child(bn_name(i)).forward(child(conv_name(i)).forward(x));
  for (const BranchKind& k : kBranchKinds)
    if (has_child(conv_name(i) + k.suffix()))
      y = add(y, child(bn_name(i) + k.suffix()).forward(child(conv_name(i) + k.suffix()).forward(x)));
  return y;
}

int ResidualBlock::add_branches(const std::vector<BranchKind>& kinds, Rng& rng, ConvInit init) {
  int added = 0;
  for (int i = 1; has_child(conv_name(i)); ++i) {
    const auto& conv = dynamic_cast<const Conv2d&>(child(conv_name(i)));
    if (conv.kernel != 3 || !conv.square() || conv.pad != 1) continue;
    for (const BranchKind& k : kinds) {
      if (has_child(conv_name(i) + k.suffix())) continue;
      register_module(conv_name(i) + k.suffix(),
                      std::make_shared<Conv2d>(conv.in_channels, conv.out_channels, k.kernel_h, k.kernel_w, conv.stride,
                                               k.kernel_h / 2, k.kernel_w / 2, false, rng, init));
      register_module(bn_name(i) + k.suffix(), std::make_shared<BatchNorm2d>(conv.out_channels));
      ++added;
    }
  }
  return added;
}

BasicBlock::BasicBlock(int in_c, int c, int stride, Rng& rng, ConvInit init) : ResidualBlock("BasicBlock") {
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
  Tensor y = child("relu1").forward(conv_bn(x, 1));
  y = conv_bn(y, 2);
  return child("relu2").forward(child("add").forward(y, child("shortcut").forward(x)));
}

std::vector<ConvBnRelu> BasicBlock::groups() const {
  std::vector<ConvBnRelu> g = {{"conv1", "bn1", "relu1"}, {"conv2", "bn2", ""}};
  if (has_projection(*this)) g.push_back({"shortcut.0", "shortcut.1", ""});
  return g;
}

Bottleneck::Bottleneck(int in_c, int c, int stride, bool stride_on_3x3, Rng& rng, ConvInit init)
    : ResidualBlock("Bottleneck") {
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
  Tensor y = child("relu1").forward(conv_bn(x, 1));
  y = child("relu2").forward(conv_bn(y, 2));
  y = conv_bn(y, 3);
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
  if (cfg.in_channels < 1) throw std::invalid_argument("ResNet: in_channels must be >= 1");
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

std::shared_ptr<ResNet> make_model(const std::string& name, int num_classes, uint64_t seed, ConvInit conv_init,
                                   int in_channels) {
  ResNetConfig cfg = resnet_config(name, num_classes);
  cfg.conv_init = conv_init;
  cfg.in_channels = in_channels;
  Rng rng(seed, /*stream=*/0x1417);
  return std::make_shared<ResNet>(cfg, rng);
}

std::vector<BranchKind> parse_branch_kinds(const std::string& list) {
  std::set<std::string> asked;
  size_t at = 0;
  while (true) {
    const size_t comma = list.find(',', at);
    const std::string item = list.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    const bool known = std::any_of(kBranchKinds.begin(), kBranchKinds.end(),
                                   [&](const BranchKind& k) { return k.suffix() == "_" + item; });
    if (!known)
      throw std::invalid_argument("branch kinds '" + list + "': '" + item + "' is not one of 1x1, 1x3, 3x1");
    if (!asked.insert(item).second) throw std::invalid_argument("branch kinds '" + list + "': '" + item + "' twice");
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  std::vector<BranchKind> kinds;
  for (const BranchKind& k : kBranchKinds)
    if (asked.count(k.suffix().substr(1))) kinds.push_back(k);
  return kinds;
}

std::string branch_kinds_str(const std::vector<BranchKind>& kinds) {
  std::string s;
  for (const BranchKind& k : kinds) {
    if (!s.empty()) s += ',';
    s += k.suffix().substr(1);
  }
  return s;
}

int add_branches(Module& model, const std::vector<BranchKind>& kinds, uint64_t seed, ConvInit init) {
  Rng rng(seed, /*stream=*/0x1418);  // make_model draws the other weights from stream 0x1417
  int added = 0;
  for (auto& [name, m] : model.named_modules())
    if (auto* block = dynamic_cast<ResidualBlock*>(m)) added += block->add_branches(kinds, rng, init);
  return added;
}

int64_t branch_parameters(const Module& model) {
  int64_t n = 0;
  for (auto& [name, p] : model.named_parameters())
    if (branch_suffix_of(name.substr(0, name.rfind('.')))) n += p.numel();
  return n;
}

NamedTensors fold_branches(const NamedTensors& state, float eps) {
  std::map<std::string, Tensor> by_name(state.begin(), state.end());
  auto find = [&](const std::string& name, const std::string& branch) -> const Tensor& {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw std::invalid_argument("fold_branches: branch " + branch + " has no '" + name + "'");
    return it->second;
  };
  auto get = [&](const std::string& name, const Shape& shape, const std::string& branch) -> const Tensor& {
    const Tensor& t = find(name, branch);
    if (t.shape() != shape)
      throw std::invalid_argument("fold_branches: '" + name + "' has shape " + shape_str(t.shape()) + ", branch " +
                                  branch + " needs " + shape_str(shape));
    return t;
  };
  // The affine map of a BN in eval mode, y = s*z + t, per channel.
  auto affine = [&](const std::string& bn, const std::string& branch, int64_t cout, std::vector<double>& s,
                    std::vector<double>& t) {
    const Shape ch = {cout};
    const float* g = get(bn + ".weight", ch, branch).data();
    const float* beta = get(bn + ".bias", ch, branch).data();
    const float* mean = get(bn + ".running_mean", ch, branch).data();
    const float* var = get(bn + ".running_var", ch, branch).data();
    s.resize(cout);
    t.resize(cout);
    for (int64_t o = 0; o < cout; ++o) {
      s[o] = double(g[o]) / std::sqrt(double(var[o]) + double(eps));
      t[o] = double(beta[o]) - s[o] * double(mean[o]);
    }
  };
  // The convs that have branches: <block>.conv<i> -> the branch kinds found.
  std::map<std::string, std::vector<const BranchKind*>> with_branches;
  for (auto& [name, t] : state) {
    const std::string module = name.substr(0, name.rfind('.'));
    const BranchKind* k = branch_suffix_of(module);
    if (!k) continue;
    const std::string base = module.substr(0, module.size() - k->suffix().size());  // <block>.conv<i> or .bn<i>
    const size_t dot = base.rfind('.') + 1;                                         // 0 for a top-level name
    if (base.compare(dot, 4, "conv") == 0 && name == module + ".weight") with_branches[base].push_back(k);
  }
  for (auto& [conv, kinds] : with_branches)  // canonical order: the sums do not depend on the state's
    std::sort(kinds.begin(), kinds.end(), [](const BranchKind* a, const BranchKind* b) { return a < b; });
  // Folded values by name; every other entry passes through.
  std::map<std::string, Tensor> folded;
  std::set<std::string> branches;  // the modules folded away
  for (auto& [conv, kinds] : with_branches) {
    const size_t dot = conv.rfind('.') + 1;
    const std::string bn = conv.substr(0, dot) + "bn" + conv.substr(dot + 4);  // <block>.bn<i>
    // The channels come from the first branch; the 3x3 conv must match them.
    const std::string first = conv + kinds.front()->suffix();
    const Tensor& wb0 = find(first + ".weight", first);
    if (wb0.ndim() != 4)
      throw std::invalid_argument("fold_branches: '" + first + ".weight' is not a conv weight: " +
                                  shape_str(wb0.shape()));
    const int64_t cout = wb0.dim(0), cin = wb0.dim(1), taps = 9;
    const Tensor& w3 = find(conv + ".weight", first);
    if (w3.shape() != Shape{cout, cin, 3, 3})
      throw std::invalid_argument("fold_branches: '" + conv + ".weight' has shape " + shape_str(w3.shape()) +
                                  ", branch " + first + " needs [" + std::to_string(cout) + ", " +
                                  std::to_string(cin) + ", 3, 3]");
    std::vector<double> s3, t3;
    affine(bn, first, cout, s3, t3);
    // The 3x3 part, scaled by its BN (summed in double, rounded to float once).
    std::vector<double> w(static_cast<size_t>(w3.numel()));
    std::vector<double> bias = t3;
    for (int64_t o = 0; o < cout; ++o)
      for (int64_t j = 0; j < cin * taps; ++j) w[o * cin * taps + j] = s3[o] * w3.data()[o * cin * taps + j];
    // Each branch, scaled by its BN, added onto the taps it covers (centred).
    for (const BranchKind* k : kinds) {
      const std::string branch = conv + k->suffix();
      const Tensor& wb = get(branch + ".weight", {cout, cin, k->kernel_h, k->kernel_w}, branch);
      std::vector<double> sb, tb;
      affine(bn + k->suffix(), branch, cout, sb, tb);
      const int64_t row0 = 1 - k->kernel_h / 2, col0 = 1 - k->kernel_w / 2;
      for (int64_t o = 0; o < cout; ++o) {
        for (int64_t c = 0; c < cin; ++c)
          for (int64_t a = 0; a < k->kernel_h; ++a)
            for (int64_t b = 0; b < k->kernel_w; ++b) {
              const float v = wb.data()[((o * cin + c) * k->kernel_h + a) * k->kernel_w + b];
              w[(o * cin + c) * taps + (row0 + a) * 3 + (col0 + b)] += sb[o] * v;
            }
        bias[o] += tb[o];
      }
      branches.insert(branch);
      branches.insert(bn + k->suffix());
    }
    const Shape ch = {cout};
    Tensor wf = Tensor::empty(w3.shape()), beta = Tensor::empty(ch);
    for (size_t j = 0; j < w.size(); ++j) wf.data()[j] = static_cast<float>(w[j]);
    for (int64_t o = 0; o < cout; ++o) beta.data()[o] = static_cast<float>(bias[o]);
    folded[conv + ".weight"] = wf;
    folded[bn + ".weight"] = Tensor::full(ch, static_cast<float>(std::sqrt(1.0 + double(eps))));
    folded[bn + ".bias"] = beta;
    folded[bn + ".running_mean"] = Tensor::zeros(ch);
    folded[bn + ".running_var"] = Tensor::full(ch, 1.0f);
  }
  NamedTensors out;
  for (auto& [name, t] : state) {
    const std::string module = name.substr(0, name.rfind('.'));
    if (branch_suffix_of(module)) {  // a branch's own entries
      if (!branches.count(module))
        throw std::invalid_argument("fold_branches: '" + name + "' belongs to no branch of a 3x3 conv<i>");
      continue;
    }
    auto it = folded.find(name);
    out.emplace_back(name, it == folded.end() ? t : it->second);
  }
  return out;
}

int zero_init_residual(Module& model) {
  int zeroed = 0;
  for (auto& [name, m] : model.named_modules()) {
    const char* last_bn = m->type() == "BasicBlock" ? "bn2" : m->type() == "Bottleneck" ? "bn3" : nullptr;
    if (!last_bn) continue;
    // The last BN, and the BNs of its train-time branches.
    for (auto& [child_name, c] : m->children()) {
      const BranchKind* k = branch_suffix_of(child_name);
      if (child_name != last_bn && !(k && child_name == last_bn + k->suffix())) continue;
      Tensor& g = dynamic_cast<BatchNorm2d&>(*c).weight();
      std::fill(g.data(), g.data() + g.numel(), 0.0f);
    }
    ++zeroed;
  }
  return zeroed;
}

}  // namespace octet::nn
