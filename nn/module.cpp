#include "nn/module.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <stdexcept>

namespace octet::nn {

// ---------------------------------------------------------------- Module

Tensor Module::forward(const Tensor&) {
  throw std::logic_error(type_ + ": forward(x) is not defined for this module (it takes two inputs?)");
}

Tensor Module::forward(const Tensor&, const Tensor&) {
  throw std::logic_error(type_ + ": forward(a, b) is not defined for this module (it takes one input)");
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, c] : children_) c->train(on);
}

static void check_local_name(const std::string& type, const std::string& name) {
  if (name.empty() || name.find('.') != std::string::npos)
    throw std::invalid_argument(type + ": invalid member name '" + name + "' (must be non-empty, without '.')");
}

Tensor& Module::register_parameter(const std::string& name, Tensor t) {
  check_local_name(type_, name);
  for (auto& p : params_)
    if (p.first == name) throw std::invalid_argument(type_ + ": parameter '" + name + "' registered twice");
  if (!t.defined()) throw std::invalid_argument(type_ + ": parameter '" + name + "' is undefined");
  t.requires_grad_(true);
  params_.emplace_back(name, t);
  return params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  check_local_name(type_, name);
  for (auto& b : buffers_)
    if (b.first == name) throw std::invalid_argument(type_ + ": buffer '" + name + "' registered twice");
  buffers_.emplace_back(name, t);
  return buffers_.back().second;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_local_name(type_, name);
  if (!m) throw std::invalid_argument(type_ + ": child '" + name + "' is null");
  for (auto& c : children_)
    if (c.first == name) throw std::invalid_argument(type_ + ": child '" + name + "' registered twice");
  m->train(training_);
  children_.emplace_back(name, std::move(m));
}

void Module::remove_child(const std::string& name) {
  for (auto it = children_.begin(); it != children_.end(); ++it) {
    if (it->first == name) {
      children_.erase(it);
      return;
    }
  }
  throw std::out_of_range(type_ + ": no child named '" + name + "'");
}

bool Module::has_child(const std::string& name) const {
  for (auto& c : children_)
    if (c.first == name) return true;
  return false;
}

Tensor& Module::param(const std::string& name) {
  for (auto& p : params_)
    if (p.first == name) return p.second;
  throw std::out_of_range(type_ + ": no parameter named '" + name + "'");
}

Tensor Module::maybe_param(const std::string& name) const {
  for (auto& p : params_)
    if (p.first == name) return p.second;
  return Tensor();
}

Tensor& Module::buffer(const std::string& name) {
  for (auto& b : buffers_)
    if (b.first == name) return b.second;
  throw std::out_of_range(type_ + ": no buffer named '" + name + "'");
}

std::shared_ptr<Module> Module::child_ptr(const std::string& name) const {
  for (auto& c : children_)
    if (c.first == name) return c.second;
  throw std::out_of_range(type_ + ": no child named '" + name + "'");
}

Module& Module::child(const std::string& name) const { return *child_ptr(name); }

Module& Module::find(const std::string& dotted) const {
  const Module* m = this;
  size_t start = 0;
  while (true) {
    size_t dot = dotted.find('.', start);
    std::string part = dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    try {
      m = &m->child(part);
    } catch (const std::out_of_range&) {
      throw std::out_of_range("module path '" + dotted + "': " + m->type() + " has no child named '" + part + "'");
    }
    if (dot == std::string::npos) return const_cast<Module&>(*m);
    start = dot + 1;
  }
}

std::shared_ptr<Module> Module::replace(const std::string& dotted, std::shared_ptr<Module> m) {
  if (!m) throw std::invalid_argument("replace('" + dotted + "'): the new module is null");
  size_t dot = dotted.rfind('.');
  Module& parent = dot == std::string::npos ? *this : find(dotted.substr(0, dot));
  std::string leaf = dot == std::string::npos ? dotted : dotted.substr(dot + 1);
  for (auto& c : parent.children_) {
    if (c.first == leaf) {
      m->train(parent.training_);
      std::swap(c.second, m);
      return m;
    }
  }
  throw std::out_of_range("replace('" + dotted + "'): " + parent.type() + " has no child named '" + leaf + "'");
}

void Module::collect(const std::string& prefix, bool params, bool buffers, NamedTensors& out) const {
  if (params)
    for (auto& [n, t] : params_) out.emplace_back(prefix + n, t);
  if (buffers)
    for (auto& [n, t] : buffers_) out.emplace_back(prefix + n, t);
  for (auto& [n, c] : children_) c->collect(prefix + n + ".", params, buffers, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, false, out);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, true, out);
  return out;
}

NamedTensors Module::named_state() const {
  NamedTensors out = named_parameters();
  NamedTensors b = named_buffers();
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  std::function<void(const std::string&, Module*)> walk = [&](const std::string& name, Module* m) {
    out.emplace_back(name, m);
    for (auto& [n, c] : m->children_) walk(name.empty() ? n : name + "." + n, c.get());
  };
  walk("", this);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::load_state(const NamedTensors& state, bool strict) {
  std::map<std::string, const Tensor*> given;
  for (auto& [n, t] : state) given[n] = &t;
  std::vector<std::string> missing;
  std::set<std::string> used;
  for (auto& [name, t] : named_state()) {
    auto it = given.find(name);
    if (it == given.end()) {
      missing.push_back(name);
      continue;
    }
    const Tensor& src = *it->second;
    if (src.shape() != t.shape())
      throw std::runtime_error("load_state: '" + name + "' has shape " + shape_str(src.shape()) + ", the model expects " +
                               shape_str(t.shape()));
    Tensor dst = t;
    dst.copy_from(src);
    used.insert(name);
  }
  if (!strict) return;
  std::vector<std::string> unexpected;
  for (auto& [n, t] : given)
    if (!used.count(n)) unexpected.push_back(n);
  if (missing.empty() && unexpected.empty()) return;
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + v[i];
    if (v.size() > 8) s += ", ... (" + std::to_string(v.size()) + " in all)";
    return s;
  };
  std::string msg = "load_state: state does not match the model (" + type_ + ")";
  if (!missing.empty()) msg += "; missing: " + join(missing);
  if (!unexpected.empty()) msg += "; unexpected: " + join(unexpected);
  throw std::runtime_error(msg);
}

void Module::zero_grad() {
  for (auto& [n, t] : named_parameters()) {
    Tensor p = t;
    p.zero_grad();
  }
}

void Module::summary_into(const std::string& name, int depth, std::string& out) const {
  int64_t total = num_parameters();
  out += std::string(2 * depth, ' ') + (name.empty() ? "" : name + ": ") + describe();
  if (total) out += "  [" + std::to_string(total) + " params]";
  out += "\n";
  for (auto& [n, c] : children_) c->summary_into(n, depth + 1, out);
}

std::string Module::summary() const {
  std::string out;
  summary_into("", 0, out);
  return out;
}

// ---------------------------------------------------------------- layers

ConvInit parse_conv_init(const std::string& name) {
  if (name == "he") return ConvInit::he;
  if (name == "torch") return ConvInit::torch;
  throw std::invalid_argument("unknown weight init '" + name + "'; valid: torch, he");
}

const char* conv_init_name(ConvInit init) { return init == ConvInit::he ? "he" : "torch"; }

Conv2d::Conv2d(int in_c, int out_c, int k, int s, int p, bool bias, Rng& rng, ConvInit init)
    : Conv2d(in_c, out_c, k, k, s, p, p, bias, rng, init) {}

Conv2d::Conv2d(int in_c, int out_c, int kh, int kw, int s, int ph, int pw, bool bias, Rng& rng, ConvInit init)
    : Module("Conv2d"),
      in_channels(in_c),
      out_channels(out_c),
      kernel(kh),
      stride(s),
      pad(ph),
      kernel_w(kw),
      pad_w(pw) {
  if (in_c <= 0 || out_c <= 0 || kh <= 0 || kw <= 0 || s <= 0 || ph < 0 || pw < 0)
    throw std::invalid_argument("Conv2d: bad configuration in=" + std::to_string(in_c) + " out=" +
                                std::to_string(out_c) + " k=" + std::to_string(kh) + "x" + std::to_string(kw) +
                                " stride=" + std::to_string(s) + " pad=" + std::to_string(ph) + "x" +
                                std::to_string(pw));
  Tensor w = Tensor::empty({out_c, in_c, kh, kw});
  float* d = w.data();
  const int taps = kh * kw;
  if (init == ConvInit::he) {
    const float std_dev = std::sqrt(2.0f / static_cast<float>(out_c * taps));
    for (int64_t i = 0; i < w.numel(); ++i) d[i] = std_dev * rng.normal();
  } else {
    const float bound = 1.0f / std::sqrt(static_cast<float>(in_c * taps));
    for (int64_t i = 0; i < w.numel(); ++i) d[i] = rng.uniform(-bound, bound);
  }
  register_parameter("weight", w);
  if (bias) register_parameter("bias", Tensor::zeros({out_c}));
}

Tensor Conv2d::bias() { return maybe_param("bias"); }

Module* Conv2d::weight_transform() const {
  return has_child("weight_transform") ? &child("weight_transform") : nullptr;
}

void Conv2d::set_weight_transform(ModulePtr transform) {
  if (has_child("weight_transform")) remove_child("weight_transform");
  if (transform) register_module("weight_transform", std::move(transform));
}

Tensor Conv2d::effective_weight() {
  Module* t = weight_transform();
  return t ? t->forward(weight()) : weight();
}

Tensor Conv2d::forward(const Tensor& x) {
  return conv2d(x, effective_weight(), bias(),
                {.stride = stride, .pad = pad, .groups = 1, .pad_h = pad, .pad_w = pad_w});
}

std::string Conv2d::describe() const {
  const char* b = maybe_param("bias").defined() ? "true" : "false";
  char buf[128];
  if (square())
    std::snprintf(buf, sizeof buf, "Conv2d(%d, %d, k=%d, s=%d, p=%d, bias=%s)", in_channels, out_channels, kernel,
                  stride, pad, b);
  else
    std::snprintf(buf, sizeof buf, "Conv2d(%d, %d, k=%dx%d, s=%d, p=%dx%d, bias=%s)", in_channels, out_channels, kernel,
                  kernel_w, stride, pad, pad_w, b);
  return buf;
}

Linear::Linear(int in_f, int out_f, bool bias, Rng& rng) : Module("Linear"), in_features(in_f), out_features(out_f) {
  if (in_f <= 0 || out_f <= 0)
    throw std::invalid_argument("Linear: bad configuration in=" + std::to_string(in_f) +
                                " out=" + std::to_string(out_f));
  const float bound = 1.0f / std::sqrt(static_cast<float>(in_f));
  Tensor w = Tensor::empty({out_f, in_f});
  for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] = rng.uniform(-bound, bound);
  register_parameter("weight", w);
  if (bias) {
    Tensor b = Tensor::empty({out_f});
    for (int64_t i = 0; i < b.numel(); ++i) b.data()[i] = rng.uniform(-bound, bound);
    register_parameter("bias", b);
  }
}

Tensor Linear::bias() { return maybe_param("bias"); }

Module* Linear::weight_transform() const {
  return has_child("weight_transform") ? &child("weight_transform") : nullptr;
}

void Linear::set_weight_transform(ModulePtr transform) {
  if (has_child("weight_transform")) remove_child("weight_transform");
  if (transform) register_module("weight_transform", std::move(transform));
}

Tensor Linear::effective_weight() {
  Module* t = weight_transform();
  return t ? t->forward(weight()) : weight();
}

Tensor Linear::forward(const Tensor& x) { return linear(x, effective_weight(), bias()); }

std::string Linear::describe() const {
  return "Linear(" + std::to_string(in_features) + ", " + std::to_string(out_features) + ")";
}

BatchNorm2d::BatchNorm2d(int c, float m, float e) : Module("BatchNorm2d"), channels(c), momentum(m), eps(e) {
  if (c <= 0) throw std::invalid_argument("BatchNorm2d: channels must be > 0, got " + std::to_string(c));
  register_parameter("weight", Tensor::full({c}, 1.0f));
  register_parameter("bias", Tensor::zeros({c}));
  register_buffer("running_mean", Tensor::zeros({c}));
  register_buffer("running_var", Tensor::full({c}, 1.0f));
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  return batch_norm(x, weight(), bias(), running_mean(), running_var(), training(), momentum, eps, sync_group);
}

std::string BatchNorm2d::describe() const { return "BatchNorm2d(" + std::to_string(channels) + ")"; }

int set_sync_batchnorm(Module& model, Communicator* group) {
  int set = 0;
  for (auto& [name, m] : model.named_modules())
    if (auto* bn = dynamic_cast<BatchNorm2d*>(m)) {
      bn->sync_group = group;
      ++set;
    }
  return set;
}

std::string MaxPool2d::describe() const {
  return "MaxPool2d(k=" + std::to_string(kernel) + ", s=" + std::to_string(stride) + ", p=" + std::to_string(pad) + ")";
}

std::string AvgPool2d::describe() const {
  return "AvgPool2d(k=" + std::to_string(kernel) + ", s=" + std::to_string(stride) + ", p=" + std::to_string(pad) + ")";
}

Add::Add() : Module("Add") {
  register_module("input_a", std::make_shared<Identity>());
  register_module("input_b", std::make_shared<Identity>());
}

Tensor Add::forward(const Tensor& a, const Tensor& b) {
  return add(child("input_a").forward(a), child("input_b").forward(b));
}

Sequential::Sequential(std::vector<ModulePtr> layers) : Module("Sequential") {
  for (auto& m : layers) append(std::move(m));
}

Sequential& Sequential::append(ModulePtr m) {
  register_module(std::to_string(children().size()), std::move(m));
  return *this;
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (auto& [n, c] : children()) y = c->forward(y);
  return y;
}

}  // namespace octet::nn
