// nn/data_parallel.cpp: the gradient reducer and the state checks of
// data-parallel training (see data_parallel.h).
#include "nn/data_parallel.h"

#include <chrono>
#include <cstring>
#include <stdexcept>

namespace octet::nn {

GradientReducer::GradientReducer(Communicator& group, const NamedTensors& params, size_t bucket_floats)
    : group_(group) {
  for (auto& [name, p] : params) params_.push_back(p);
  // Reverse registration order: the last layers' gradients complete first.
  for (size_t k = params_.size(); k-- > 0;) {
    const size_t n = static_cast<size_t>(params_[k].numel());
    if (buckets_.empty() || buckets_.back().flat.size() >= bucket_floats) buckets_.emplace_back();
    Bucket& b = buckets_.back();
    b.params.push_back(k);
    b.flat.resize(b.flat.size() + n);
    bucket_of_[params_[k].impl().get()] = static_cast<int>(buckets_.size() - 1);
    floats_ += static_cast<int64_t>(n);
  }
}

void GradientReducer::begin() {
  next_to_start_ = 0;
  for (Bucket& b : buckets_) {
    b.missing = static_cast<int>(b.params.size());
    b.started = false;
  }
}

void GradientReducer::ready(const Tensor& leaf) {
  // Leaves that are not parameters (an input that requires grad) are not ours.
  auto it = bucket_of_.find(leaf.impl().get());
  if (it == bucket_of_.end()) return;
  --buckets_[static_cast<size_t>(it->second)].missing;
  start_ready_buckets();
  group_.poll();
}

void GradientReducer::start_ready_buckets() {
  while (next_to_start_ < buckets_.size() && buckets_[next_to_start_].missing <= 0) {
    Bucket& b = buckets_[next_to_start_++];
    float* dst = b.flat.data();
    for (size_t k : b.params) {
      const Tensor g = params_[k].grad();
      const int64_t n = params_[k].numel();
      if (g.defined()) {
        const float* src = g.data();
        std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      } else {
        std::memset(dst, 0, static_cast<size_t>(n) * sizeof(float));
      }
      dst += n;
    }
    b.request = group_.start_allreduce_sum(b.flat.data(), b.flat.size());
    b.started = true;
  }
}

void GradientReducer::finish() {
  for (Bucket& b : buckets_) b.missing = 0;  // a parameter no gradient reached counts as zero
  start_ready_buckets();
  const auto t0 = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_) {
    group_.wait(b.request);
    const float* src = b.flat.data();
    for (size_t k : b.params) {
      Tensor& p = params_[k];
      if (!p.grad().defined()) p.impl()->grad = Tensor::zeros(p.shape()).impl();
      std::memcpy(p.grad().data(), src, static_cast<size_t>(p.numel()) * sizeof(float));
      src += p.numel();
    }
  }
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void GradientReducer::reduce_now() {
  begin();
  finish();
}

void broadcast_state(Module& model, Communicator& group, int root) {
  if (group.size() == 1) return;
  for (auto& [name, t] : model.named_state()) {
    Tensor x = t;
    group.broadcast(x.data(), static_cast<size_t>(x.numel()) * sizeof(float), root);
  }
}

int average_bn_statistics(Module& model, Communicator& group) {
  int layers = 0;
  std::vector<float> values;
  for (auto& [name, m] : model.named_modules()) {
    auto* bn = dynamic_cast<BatchNorm2d*>(m);
    if (!bn) continue;
    ++layers;
    for (Tensor* t : {&bn->running_mean(), &bn->running_var()})
      values.insert(values.end(), t->data(), t->data() + t->numel());
  }
  if (group.size() == 1 || values.empty()) return layers;
  std::vector<float> base = values;
  group.broadcast(base.data(), base.size() * sizeof(float), 0);
  for (size_t i = 0; i < values.size(); ++i) values[i] -= base[i];
  group.allreduce(values.data(), values.size(), Reduce::sum);
  const float n = static_cast<float>(group.size());
  size_t at = 0;
  for (auto& [name, m] : model.named_modules()) {
    auto* bn = dynamic_cast<BatchNorm2d*>(m);
    if (!bn) continue;
    for (Tensor* t : {&bn->running_mean(), &bn->running_var()}) {
      float* d = t->data();
      for (int64_t i = 0; i < t->numel(); ++i, ++at) d[i] = base[at] + values[at] / n;
    }
  }
  return layers;
}

void check_same_state(const Module& model, Communicator& group, const std::string& what) {
  if (group.size() == 1) return;
  for (auto& [name, t] : model.named_state()) {
    std::vector<float> mine(t.data(), t.data() + t.numel());
    std::vector<float> root = mine;
    group.broadcast(root.data(), root.size() * sizeof(float), 0);
    float differs = std::memcmp(mine.data(), root.data(), mine.size() * sizeof(float)) != 0 ? 1.0f : 0.0f;
    group.allreduce(&differs, 1, Reduce::max);
    if (differs != 0.0f)
      throw std::runtime_error(what + ": tensor '" + name + "' differs between the ranks (rank " +
                               std::to_string(group.rank()) + " of " + std::to_string(group.size()) + ")");
  }
}

}  // namespace octet::nn
