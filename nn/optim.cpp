#include "nn/optim.h"

#include <cmath>
#include <map>
#include <stdexcept>

#include "core/profile.h"

namespace octet::nn {

Optimizer::Optimizer(const OptimizerConfig& config, NamedTensors params)
    : config_(config), lr_(config.lr), momentum_(config.momentum) {
  for (auto& [name, t] : params) {
    if (!t.defined()) throw std::invalid_argument("optimizer: parameter '" + name + "' is undefined");
    const bool decay = !(config.no_decay_1d && t.ndim() <= 1);
    params_.push_back(Param{name, t, decay, {}});
  }
}

void Optimizer::step() {
  const profile::Scope scope("optimizer step");
  const size_t nslots = slot_names().size();
  for (Param& prm : params_) {
    Tensor grad = prm.p.grad();
    if (!grad.defined()) continue;
    if (grad.numel() != prm.p.numel())
      throw std::runtime_error("optimizer: gradient of '" + prm.name + "' has shape " + shape_str(grad.shape()) +
                               ", the parameter " + shape_str(prm.p.shape()));
    if (prm.slots.size() != nslots) prm.slots.resize(nslots);
    const int64_t n = prm.p.numel();
    float* p = prm.p.data();
    const float* g = grad.data();
    const float wd = prm.decay ? config_.weight_decay : 0.0f;
    if (wd != 0.0f) {
      scratch_.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) scratch_[i] = g[i] + wd * p[i];
      g = scratch_.data();
    }
    update(prm, p, g, n);
  }
  ++steps_;
}

NamedTensors Optimizer::state() const {
  NamedTensors out;
  const std::vector<std::string> names = slot_names();
  for (const Param& prm : params_)
    for (size_t s = 0; s < prm.slots.size(); ++s)
      if (prm.slots[s].defined()) out.emplace_back(prm.name + "." + names[s], prm.slots[s]);
  return out;
}

void Optimizer::load_state(const NamedTensors& state, int64_t step_count) {
  std::map<std::string, const Tensor*> given;
  for (auto& [n, t] : state) given[n] = &t;
  const std::vector<std::string> names = slot_names();
  size_t used = 0;
  for (Param& prm : params_) {
    prm.slots.assign(names.size(), Tensor());
    for (size_t s = 0; s < names.size(); ++s) {
      auto it = given.find(prm.name + "." + names[s]);
      if (it == given.end()) continue;
      if (it->second->shape() != prm.p.shape())
        throw std::runtime_error("optimizer state '" + it->first + "' has shape " + shape_str(it->second->shape()) +
                                 ", the parameter " + shape_str(prm.p.shape()));
      prm.slots[s] = it->second->clone();
      ++used;
    }
  }
  if (used != given.size()) {
    for (auto& [n, t] : given) {
      bool known = false;
      for (Param& prm : params_)
        for (auto& s : names) known = known || n == prm.name + "." + s;
      if (!known) throw std::runtime_error("optimizer state has an entry for no parameter: '" + n + "'");
    }
  }
  if (step_count < 0) throw std::runtime_error("optimizer state: negative step count");
  steps_ = step_count;
}

void SGD::update(Param& prm, float* p, const float* g, int64_t n) {
  const float lr = lr_, m = momentum_;
  if (m == 0.0f && !prm.slots[0].defined()) {
    for (int64_t i = 0; i < n; ++i) p[i] -= lr * g[i];
    return;
  }
  if (!prm.slots[0].defined()) {  // PyTorch: the buffer starts as a copy of the first gradient
    prm.slots[0] = Tensor::from(prm.p.shape(), std::span<const float>(g, static_cast<size_t>(n)));
    float* buf = prm.slots[0].data();
    for (int64_t i = 0; i < n; ++i) p[i] -= lr * (config_.nesterov ? g[i] + m * buf[i] : buf[i]);
    return;
  }
  float* buf = prm.slots[0].data();
  for (int64_t i = 0; i < n; ++i) {
    buf[i] = m * buf[i] + g[i];
    p[i] -= lr * (config_.nesterov ? g[i] + m * buf[i] : buf[i]);
  }
}

void RMSProp::update(Param& prm, float* p, const float* g, int64_t n) {
  if (!prm.slots[0].defined()) prm.slots[0] = Tensor::full(prm.p.shape(), 1.0f);  // ms
  if (!prm.slots[1].defined()) prm.slots[1] = Tensor::zeros(prm.p.shape());       // mom
  float* ms = prm.slots[0].data();
  float* mom = prm.slots[1].data();
  const float rho = config_.rms_decay, eps = config_.epsilon, lr = lr_, m = momentum_;
  for (int64_t i = 0; i < n; ++i) {
    ms[i] = rho * ms[i] + (1.0f - rho) * g[i] * g[i];
    mom[i] = m * mom[i] + lr * g[i] / std::sqrt(ms[i] + eps);
    p[i] -= mom[i];
  }
}

void Adam::update(Param& prm, float* p, const float* g, int64_t n) {
  if (!prm.slots[0].defined()) prm.slots[0] = Tensor::zeros(prm.p.shape());
  if (!prm.slots[1].defined()) prm.slots[1] = Tensor::zeros(prm.p.shape());
  float* m = prm.slots[0].data();
  float* v = prm.slots[1].data();
  const float b1 = config_.beta1, b2 = config_.beta2, eps = config_.adam_eps;
  const double t = static_cast<double>(steps_ + 1);
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(b1), t));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(b2), t));
  const float step_size = lr_ / bc1;
  const float bc2_sqrt = std::sqrt(bc2);
  for (int64_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
  }
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, NamedTensors params) {
  if (config.kind == "sgd") return std::make_unique<SGD>(config, std::move(params));
  if (config.kind == "rmsprop") return std::make_unique<RMSProp>(config, std::move(params));
  if (config.kind == "adam") return std::make_unique<Adam>(config, std::move(params));
  throw std::invalid_argument("unknown optimizer '" + config.kind + "'; valid: sgd, rmsprop, adam");
}

}  // namespace octet::nn
