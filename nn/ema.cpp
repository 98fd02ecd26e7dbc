#include "nn/ema.h"

#include <algorithm>
#include <map>
#include <stdexcept>
#include <string>

namespace octet::nn {

namespace {

// The model's state must line up with the shadow name by name.
void check_matches(const NamedTensors& shadow, const NamedTensors& state, const char* what) {
  if (state.size() != shadow.size())
    throw std::logic_error(std::string("ExponentialMovingAverage::") + what + ": the model has " +
                           std::to_string(state.size()) + " state tensors, the average " +
                           std::to_string(shadow.size()));
  for (size_t i = 0; i < state.size(); ++i)
    if (state[i].first != shadow[i].first || state[i].second.numel() != shadow[i].second.numel())
      throw std::logic_error(std::string("ExponentialMovingAverage::") + what + ": model tensor '" + state[i].first +
                             "' does not match the average's '" + shadow[i].first + "'");
}

}  // namespace

ExponentialMovingAverage::ExponentialMovingAverage(const Module& model, double decay) : decay_(decay) {
  if (!(decay >= 0.0 && decay < 1.0))
    throw std::invalid_argument("ExponentialMovingAverage: decay must be in [0, 1), got " + std::to_string(decay));
  for (auto& [name, t] : model.named_state()) shadow_.emplace_back(name, t.clone());
}

double ExponentialMovingAverage::decay_at(int64_t num_updates) const {
  const double n = static_cast<double>(std::max<int64_t>(num_updates, 0));
  return std::min(decay_, (1.0 + n) / (10.0 + n));
}

void ExponentialMovingAverage::update(const Module& model, int64_t num_updates) {
  const NamedTensors state = model.named_state();
  check_matches(shadow_, state, "update");
  const float keep = static_cast<float>(1.0 - decay_at(num_updates));
  for (size_t i = 0; i < state.size(); ++i) {
    float* s = shadow_[i].second.data();
    const float* v = state[i].second.data();
    const int64_t n = state[i].second.numel();
    for (int64_t j = 0; j < n; ++j) s[j] -= keep * (s[j] - v[j]);
  }
}

void ExponentialMovingAverage::load(const NamedTensors& state) {
  std::map<std::string, const Tensor*> given;
  for (auto& [n, t] : state) given[n] = &t;
  for (auto& [name, t] : shadow_) {
    auto it = given.find(name);
    if (it == given.end()) throw std::runtime_error("weight average: missing '" + name + "'");
    if (it->second->shape() != t.shape())
      throw std::runtime_error("weight average: '" + name + "' has the wrong shape");
    t.copy_from(*it->second);
    given.erase(it);
  }
  if (!given.empty()) throw std::runtime_error("weight average: unexpected '" + given.begin()->first + "'");
}

void ExponentialMovingAverage::swap_with(Module& model) {
  NamedTensors state = model.named_state();
  check_matches(shadow_, state, "swap_with");
  for (size_t i = 0; i < state.size(); ++i) {
    float* a = state[i].second.data();
    std::swap_ranges(a, a + state[i].second.numel(), shadow_[i].second.data());
  }
}

}  // namespace octet::nn
