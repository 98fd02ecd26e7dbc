// nn/module.h: modules (layers with parameters and state) and the module tree.
//
// A Module owns
//   - parameters: named leaf Tensors with requires_grad (conv weights, BN gamma/beta...),
//   - buffers: named Tensors that are state but not trained (BN running statistics),
//   - children: named sub-modules, in registration order.
// Names nest with dots, as PyTorch's state_dict does: "layer1.0.conv1.weight".
// named_state() (parameters then buffers, in tree order) is exactly what a
// checkpoint stores and loads.
//
//     auto net = std::make_shared<Sequential>();
//     net->append(std::make_shared<Conv2d>(3, 16, 3, 1, 1, /*bias=*/false, rng));
//     net->append(std::make_shared<BatchNorm2d>(16));
//     net->append(std::make_shared<ReLU>());
//     Tensor y = net->forward(x);                 // net->named_parameters():
//                                                 // "0.weight", "1.weight", "1.bias"
//
// Design for quantization-aware training (quant/ builds on these rules):
//   1. A composite module (Sequential, a ResNet block, a model) computes its
//      forward ONLY by calling its named children through child("name"); no
//      hidden functional call applies a layer. So any child can be swapped by
//      dotted name with replace("layer1.0.relu1", new_module), e.g. a ReLU by
//      Sequential{ReLU, FakeQuant}, or a Conv2d by a fused conv-BN module and
//      the following BatchNorm2d by Identity.
//   2. Add has two input slots, the children "input_a" and "input_b"
//      (Identity by default): activation fake-quant on both inputs of a
//      residual add is replace("layer1.0.add.input_a", fq).
//   3. Conv2d and Linear apply an optional weight transform before use:
//      set_weight_transform(m) makes the child "weight_transform" and forward
//      uses m->forward(weight) instead of weight (weight fake-quant with its
//      own buffers, which then appear in named_state and in checkpoints).
//   4. Models list their (conv, bn, relu) groups by dotted names
//      (conv_bn_relu_groups(), see nn/resnet.h), which is what BN folding and
//      activation-quant placement need.
//
// Thread-safety: a module tree is used by one training thread; ops inside
// parallelize by themselves.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace octet::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  explicit Module(std::string type) : type_(std::move(type)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The computation. Single-input modules override forward(x); Add overrides
  // forward(a, b). Calling the wrong arity throws std::logic_error naming the type.
  virtual Tensor forward(const Tensor& x);
  virtual Tensor forward(const Tensor& a, const Tensor& b);

  const std::string& type() const { return type_; }
  // One-line description, e.g. "Conv2d(16, 32, k=3, s=2, p=1, bias=false)".
  virtual std::string describe() const { return type_; }

  // Training mode switches BN between batch and running statistics (and any
  // other mode-dependent child). Recursive.
  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

  // The tree. Names are the full dotted paths from this module.
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  NamedTensors named_state() const;  // parameters, then buffers
  std::vector<std::pair<std::string, Module*>> named_modules();  // "" is this module itself, then depth first
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;  // total numel of all parameters

  // Direct child by its own name (no dots); throws std::out_of_range naming the
  // module type and the missing name.
  Module& child(const std::string& name) const;
  std::shared_ptr<Module> child_ptr(const std::string& name) const;
  // Any descendant by dotted path ("layer1.0.conv1"); throws if missing.
  Module& find(const std::string& dotted) const;
  // Swaps the descendant at `dotted` for `m` (same name, same place in the
  // tree). The replaced module is returned.
  std::shared_ptr<Module> replace(const std::string& dotted, std::shared_ptr<Module> m);

  // Copies values of every named_state() tensor from `state` (by name, shape
  // checked). Missing or unexpected names throw std::runtime_error listing them
  // unless strict is false.
  void load_state(const NamedTensors& state, bool strict = true);

  // Zeroes the gradients of every parameter.
  void zero_grad();

  // Multi-line tree dump with parameter counts.
  std::string summary() const;

 protected:
  // Registration, for constructors. Names must be unique within the module
  // and contain no '.'.
  Tensor& register_parameter(const std::string& name, Tensor t);  // sets requires_grad
  Tensor& register_buffer(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }
  // Parameter/buffer handles by name (for forward implementations).
  Tensor& param(const std::string& name);
  Tensor& buffer(const std::string& name);
  Tensor maybe_param(const std::string& name) const;  // undefined if absent
  bool has_child(const std::string& name) const;
  void remove_child(const std::string& name);

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void collect(const std::string& prefix, bool params, bool buffers, NamedTensors& out) const;
  void summary_into(const std::string& name, int depth, std::string& out) const;

  std::string type_;
  bool training_ = true;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

using ModulePtr = std::shared_ptr<Module>;

// ---------------------------------------------------------------- layers

class Identity : public Module {
 public:
  Identity() : Module("Identity") {}
  Tensor forward(const Tensor& x) override { return x; }
};

// How a Conv2d draws its initial weight (the bias, if any, starts at zero):
//   torch  (default) PyTorch's default for a bare nn.Conv2d,
//          kaiming_uniform(a=sqrt(5)): U(-b, b) with b = 1 / sqrt(fan_in),
//          fan_in = Cin*K*K. The peer script (../shared/bench/torch_resnet20.py)
//          keeps this one.
//   he     Kaiming normal with fan_out = Cout*K*K and gain sqrt(2), i.e.
//          N(0, 2 / fan_out): torchvision's ResNets. About 2.4x larger for a
//          3x3 conv of equal widths.
// With BN after every conv the scale does not change the function, but with
// weight decay it sets the effective learning rate (lr / |w|^2) for the first
// ~1 / (2 lr wd) steps. On the full preset, torch ends 0.7 points higher
// (docs/results.md), so it is the default.
enum class ConvInit { he, torch };
ConvInit parse_conv_init(const std::string& name);  // "torch" | "he"; throws listing both
const char* conv_init_name(ConvInit init);          // "torch", "he"

// Conv2d: x [N, Cin, H, W] -> [N, Cout, H', W']; weight [Cout, Cin, K, K],
// bias [Cout] when bias is on (off by default, as ResNets use BN after convs).
class Conv2d : public Module {
 public:
  Conv2d(int in_channels, int out_channels, int kernel, int stride, int pad, bool bias, Rng& rng,
         ConvInit init = ConvInit::torch);
  // A kernel_h x kernel_w kernel with padding pad_h (rows) and pad_w (columns),
  // e.g. the 1x3 and 3x1 train-time branches of nn/resnet.h.
  Conv2d(int in_channels, int out_channels, int kernel_h, int kernel_w, int stride, int pad_h, int pad_w, bool bias,
         Rng& rng, ConvInit init = ConvInit::torch);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;

  Tensor& weight() { return param("weight"); }
  Tensor bias();  // undefined without bias
  // The weight the forward pass uses: weight_transform(weight) if set.
  Tensor effective_weight();
  void set_weight_transform(ModulePtr transform);  // nullptr removes it
  Module* weight_transform() const;

  int in_channels, out_channels, kernel, stride, pad;  // kernel and pad: the rows' (h) values
  int kernel_w, pad_w;                                 // the columns'; equal to kernel, pad for a square conv
  bool square() const { return kernel == kernel_w && pad == pad_w; }
};

// Linear: x [N, in] -> [N, out]; weight [out, in], bias [out].
// Init as PyTorch's default: weight and bias uniform in +-1/sqrt(in).
class Linear : public Module {
 public:
  Linear(int in_features, int out_features, bool bias, Rng& rng);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;

  Tensor& weight() { return param("weight"); }
  Tensor bias();
  Tensor effective_weight();
  void set_weight_transform(ModulePtr transform);
  Module* weight_transform() const;

  int in_features, out_features;
};

// BatchNorm2d over [N, C, H, W] (or [N, C]). gamma ("weight") = 1, beta
// ("bias") = 0; buffers running_mean = 0, running_var = 1. PyTorch's momentum
// convention: running = (1 - momentum) * running + momentum * batch.
// With sync_group set (set_sync_batchnorm below), training normalizes with
// the statistics of every rank's batch together (batch_norm's group).
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int channels, float momentum = 0.1f, float eps = 1e-5f);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;

  Tensor& weight() { return param("weight"); }
  Tensor& bias() { return param("bias"); }
  Tensor& running_mean() { return buffer("running_mean"); }
  Tensor& running_var() { return buffer("running_var"); }

  int channels;
  float momentum, eps;
  Communicator* sync_group = nullptr;  // not owned; null: this rank's batch alone
};

// Synchronized BatchNorm (`--sync-bn`): sets sync_group = group on every
// BatchNorm2d of the model (nullptr turns it off) and returns how many it set.
// Every rank must then run the same forward and backward, in step.
int set_sync_batchnorm(Module& model, Communicator* group);

class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Tensor forward(const Tensor& x) override { return relu(x); }
};

class MaxPool2d : public Module {
 public:
  MaxPool2d(int kernel, int stride, int pad = 0) : Module("MaxPool2d"), kernel(kernel), stride(stride), pad(pad) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, kernel, stride, pad); }
  std::string describe() const override;
  int kernel, stride, pad;
};

class AvgPool2d : public Module {
 public:
  AvgPool2d(int kernel, int stride, int pad = 0) : Module("AvgPool2d"), kernel(kernel), stride(stride), pad(pad) {}
  Tensor forward(const Tensor& x) override { return avg_pool2d(x, kernel, stride, pad); }
  std::string describe() const override;
  int kernel, stride, pad;
};

// [N, C, H, W] -> [N, C]
class GlobalAvgPool : public Module {
 public:
  GlobalAvgPool() : Module("GlobalAvgPool") {}
  Tensor forward(const Tensor& x) override { return global_avg_pool(x); }
};

// [N, ...] -> [N, rest]
class Flatten : public Module {
 public:
  Flatten() : Module("Flatten") {}
  Tensor forward(const Tensor& x) override { return flatten(x); }
};

// a + b (same shapes), through the input slots "input_a" and "input_b"
// (Identity until quant/ replaces them).
class Add : public Module {
 public:
  Add();
  using Module::forward;
  Tensor forward(const Tensor& a, const Tensor& b) override;
};

// Children "0", "1", ... applied in order.
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  explicit Sequential(std::vector<ModulePtr> layers);
  Sequential& append(ModulePtr m);
  size_t size() const { return children().size(); }
  Tensor forward(const Tensor& x) override;
};

}  // namespace octet::nn
