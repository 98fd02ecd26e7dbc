#include "nn/sam.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace octet::nn {

SharpnessAwareMinimization::SharpnessAwareMinimization(float rho) : rho_(rho) {
  if (!(rho > 0.0f && std::isfinite(rho)))
    throw std::invalid_argument("SharpnessAwareMinimization: rho must be > 0, got " + std::to_string(rho));
}

double SharpnessAwareMinimization::ascend(const NamedTensors& params) {
  if (!saved_.empty()) throw std::logic_error("SharpnessAwareMinimization::ascend: called twice without descend");
  double sq = 0.0;
  for (auto& [name, w] : params) {
    const Tensor g = w.grad();
    if (!g.defined()) continue;
    const float* pg = g.data();
    for (int64_t i = 0; i < g.numel(); ++i) sq += static_cast<double>(pg[i]) * pg[i];
  }
  const double norm = std::sqrt(sq);
  saved_.reserve(params.size());
  for (auto& [name, w] : params) {
    const Tensor g = w.grad();
    saved_.push_back(g.defined() ? w.clone() : Tensor());
    if (!g.defined() || norm == 0.0) continue;
    const float scale = static_cast<float>(rho_ / norm);
    Tensor handle = w;  // shares w's storage
    float* pw = handle.data();
    const float* pg = g.data();
    for (int64_t i = 0; i < w.numel(); ++i) pw[i] += scale * pg[i];
  }
  return norm;
}

void SharpnessAwareMinimization::descend(const NamedTensors& params) {
  if (saved_.size() != params.size())
    throw std::logic_error("SharpnessAwareMinimization::descend: not the parameters ascend() moved");
  for (size_t i = 0; i < params.size(); ++i)
    if (saved_[i].defined()) {
      Tensor handle = params[i].second;
      handle.copy_from(saved_[i]);
    }
  saved_.clear();
}

FrozenBatchNormStatistics::FrozenBatchNormStatistics(Module& model) {
  for (auto& [name, m] : model.named_modules())
    if (auto* bn = dynamic_cast<BatchNorm2d*>(m)) {
      saved_.emplace_back(bn, bn->momentum);
      bn->momentum = 0.0f;
    }
}

FrozenBatchNormStatistics::~FrozenBatchNormStatistics() {
  for (auto& [bn, momentum] : saved_) bn->momentum = momentum;
}

}  // namespace octet::nn
