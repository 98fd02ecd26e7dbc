// core/tensor.cpp: Tensor handles, factories and the reverse-mode autograd
// engine (record(), backward(), grad mode).
#include "core/tensor.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "core/alloc.h"
#include "core/ops_internal.h"
#include "core/profile.h"
#include "core/rng.h"

namespace octet {

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(shape));
    if (d != 0 && n > INT64_MAX / d) throw std::invalid_argument("shape " + shape_str(shape) + " has too many elements");
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// ---------------------------------------------------------------- factories

Tensor Tensor::empty(const Shape& shape) {
  auto impl = std::make_shared<TensorImpl>();
  impl->numel = numel_of(shape);
  impl->shape = shape;
  impl->storage = alloc_floats(impl->numel);
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape) { return full(shape, 0.0f); }

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  t.fill_(value);
  return t;
}

Tensor Tensor::from(const Shape& shape, std::span<const float> values) {
  Tensor t = empty(shape);
  if (static_cast<int64_t>(values.size()) != t.numel())
    throw std::invalid_argument("Tensor::from: shape " + shape_str(shape) + " holds " + std::to_string(t.numel()) +
                                " values, got " + std::to_string(values.size()));
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::scalar(float value) { return full({}, value); }

Tensor Tensor::randn(const Shape& shape, Rng& rng, float std) {
  Tensor t = empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = std * rng.normal();
  return t;
}

Tensor Tensor::uniform(const Shape& shape, Rng& rng, float lo, float hi) {
  Tensor t = empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(lo, hi);
  return t;
}

// ---------------------------------------------------------------- accessors

namespace {
const TensorImpl& checked(const std::shared_ptr<TensorImpl>& impl, const char* what) {
  if (!impl) throw std::logic_error(std::string("Tensor::") + what + " on an undefined tensor");
  return *impl;
}
}  // namespace

const Shape& Tensor::shape() const { return checked(impl_, "shape()").shape; }

int Tensor::ndim() const { return static_cast<int>(checked(impl_, "ndim()").shape.size()); }

int64_t Tensor::dim(int i) const {
  const Shape& s = shape();
  int n = static_cast<int>(s.size());
  int j = i < 0 ? i + n : i;
  if (j < 0 || j >= n)
    throw std::out_of_range("Tensor::dim(" + std::to_string(i) + ") on a tensor of shape " + shape_str(s));
  return s[j];
}

int64_t Tensor::numel() const { return checked(impl_, "numel()").numel; }

float* Tensor::data() {
  const TensorImpl& t = checked(impl_, "data()");
  if (!t.storage) throw std::logic_error("Tensor::data(): this handle is a graph edge without storage");
  return t.storage.get();
}

const float* Tensor::data() const { return const_cast<Tensor*>(this)->data(); }

float Tensor::item() const {
  if (numel() != 1) throw std::invalid_argument("Tensor::item(): tensor of shape " + shape_str(shape()) + " is not one element");
  return data()[0];
}

// ---------------------------------------------------------------- autograd state

bool Tensor::requires_grad() const { return checked(impl_, "requires_grad()").requires_grad; }

Tensor& Tensor::requires_grad_(bool on) {
  checked(impl_, "requires_grad_()");
  if (impl_->grad_fn)
    throw std::logic_error("requires_grad_: only leaf tensors can change requires_grad; this one is the output of '" +
                           impl_->grad_fn->name + "' (use detach() to get a leaf)");
  impl_->requires_grad = on;
  return *this;
}

bool Tensor::is_leaf() const { return checked(impl_, "is_leaf()").grad_fn == nullptr; }

Tensor Tensor::grad() const { return Tensor(checked(impl_, "grad()").grad); }

void Tensor::zero_grad() {
  checked(impl_, "zero_grad()");
  impl_->grad.reset();
}

Tensor Tensor::detach() const {
  const TensorImpl& src = checked(impl_, "detach()");
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = src.shape;
  impl->numel = src.numel;
  impl->storage = src.storage;
  return Tensor(std::move(impl));
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape());
  if (numel()) std::memcpy(t.data(), data(), static_cast<size_t>(numel()) * sizeof(float));
  return t;
}

void Tensor::fill_(float value) {
  float* p = data();
  detail::parallel_elementwise(numel(), [&](int64_t b, int64_t e) { std::fill(p + b, p + e, value); });
}

void Tensor::copy_from(const Tensor& other) {
  if (other.numel() != numel())
    throw std::invalid_argument("copy_from: source " + shape_str(other.shape()) + " and destination " +
                                shape_str(shape()) + " differ in element count");
  if (numel() && data() != other.data())
    std::memcpy(data(), other.data(), static_cast<size_t>(numel()) * sizeof(float));
}

// ---------------------------------------------------------------- grad mode

namespace {
thread_local bool t_grad_enabled = true;
}

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = previous_; }

// ---------------------------------------------------------------- recording

namespace {
// What a node keeps of one input: the leaf itself (its grad lands there), a
// storage-less handle carrying a non-leaf's grad_fn (so the graph does not pin
// activations the backward rule did not save), or nothing if no grad flows.
Tensor edge_of(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return Tensor();
  if (t.is_leaf()) return t;
  auto e = std::make_shared<TensorImpl>();
  e->shape = t.shape();
  e->numel = t.numel();
  e->requires_grad = true;
  e->grad_fn = t.impl()->grad_fn;
  return Tensor(std::move(e));
}
}  // namespace

Tensor record(const char* name, Tensor out, std::vector<Tensor> inputs, BackwardFn backward) {
  if (!out.defined()) throw std::invalid_argument(std::string("record('") + name + "'): output is undefined");
  if (!grad_enabled()) return out;
  bool any = false;
  for (const Tensor& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any) return out;
  if (out.impl()->grad_fn || out.requires_grad())
    throw std::invalid_argument(std::string("record('") + name +
                                "'): the output must be a fresh tensor, not one that already requires grad");
  if (!backward) throw std::invalid_argument(std::string("record('") + name + "'): empty backward rule");
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs.reserve(inputs.size());
  for (const Tensor& t : inputs) node->inputs.push_back(edge_of(t));
  node->backward = std::move(backward);
  out.impl()->requires_grad = true;
  out.impl()->grad_fn = std::move(node);
  return out;
}

// ---------------------------------------------------------------- backward

namespace {

void accumulate_leaf(TensorImpl& leaf, const Tensor& g) {
  if (!leaf.grad) {
    leaf.grad = Tensor(g).clone().impl();  // never alias a tensor the graph may still hold
    return;
  }
  detail::add_into(leaf.grad->storage.get(), g.data(), g.numel());
}

void check_grad_shape(const Node& node, size_t i, const Tensor& input, const Tensor& g) {
  if (g.shape() != input.shape())
    throw std::runtime_error("backward of '" + node.name + "' returned a gradient of shape " + shape_str(g.shape()) +
                             " for input " + std::to_string(i) + " of shape " + shape_str(input.shape()));
}

// Nodes reachable from root, each after every node that consumes its output
// (reverse topological order), by an iterative post-order DFS.
std::vector<Node*> topo_order(Node* root) {
  std::vector<Node*> post;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, size_t>> stack;
  auto visit = [&](Node* n) {
    if (n->consumed)
      throw std::runtime_error("backward through '" + n->name +
                               "' twice: its saved tensors were freed by the first backward; run the forward pass "
                               "again to get a new graph");
    if (seen.insert(n).second) stack.emplace_back(n, 0);
  };
  visit(root);
  while (!stack.empty()) {
    auto& [n, next] = stack.back();
    if (next < n->inputs.size()) {
      const Tensor& in = n->inputs[next++];
      if (in.defined() && in.impl()->grad_fn) visit(in.impl()->grad_fn.get());
    } else {
      post.push_back(n);
      stack.pop_back();
    }
  }
  std::reverse(post.begin(), post.end());  // root first
  return post;
}

using LeafReady = std::function<void(const Tensor& leaf)>;

void run_backward(const std::shared_ptr<TensorImpl>& root, const Tensor& seed, const LeafReady& on_leaf_ready = {}) {
  if (!root->requires_grad)
    throw std::runtime_error(
        "backward: this tensor does not require grad (no input of the ops that made it requires grad, or they ran "
        "under NoGradGuard)");
  NoGradGuard no_grad;  // backward rules are not themselves recorded
  if (!root->grad_fn) {
    accumulate_leaf(*root, seed);
    if (on_leaf_ready) on_leaf_ready(Tensor(root));
    return;
  }
  std::vector<Node*> order = topo_order(root->grad_fn.get());
  // With on_leaf_ready: how many uses of each leaf are still to run.
  std::unordered_map<TensorImpl*, int> uses_left;
  if (on_leaf_ready)
    for (Node* node : order)
      for (const Tensor& in : node->inputs)
        if (in.defined() && !in.impl()->grad_fn && in.impl()->requires_grad) ++uses_left[in.impl().get()];
  std::unordered_map<Node*, Tensor> pending;  // dL/d(output of node), summed over consumers
  pending[order.front()] = seed;
  for (Node* node : order) {
    auto it = pending.find(node);
    Tensor g;
    if (it != pending.end()) {
      g = std::move(it->second);
      pending.erase(it);
    }
    if (g.defined()) {
      std::vector<Tensor> grads;
      {
        const profile::Scope scope(profile::enabled() ? node->name + " backward" : std::string());
        grads = node->backward(g);
      }
      const profile::Scope sums("autograd gradient sums");
      if (grads.size() != node->inputs.size())
        throw std::runtime_error("backward of '" + node->name + "' returned " + std::to_string(grads.size()) +
                                 " gradients for " + std::to_string(node->inputs.size()) + " inputs");
      for (size_t i = 0; i < grads.size(); ++i) {
        const Tensor& in = node->inputs[i];
        const Tensor& gi = grads[i];
        if (!in.defined() || !gi.defined()) continue;
        check_grad_shape(*node, i, in, gi);
        if (Node* producer = in.impl()->grad_fn.get()) {
          Tensor& slot = pending[producer];
          // Out of place: the first gradient may alias one still used elsewhere.
          slot = slot.defined() ? detail::add_raw(slot, gi) : gi;
        } else {
          accumulate_leaf(*in.impl(), gi);
        }
      }
    }
    node->backward = nullptr;  // frees the saved tensors
    node->consumed = true;
    if (on_leaf_ready)
      for (const Tensor& in : node->inputs) {
        if (!in.defined() || in.impl()->grad_fn || !in.impl()->requires_grad) continue;
        if (--uses_left[in.impl().get()] == 0) on_leaf_ready(in);
      }
  }
}

}  // namespace

void Tensor::backward() {
  if (numel() != 1)
    throw std::runtime_error("backward() needs a one-element tensor (a loss), got shape " + shape_str(shape()) +
                             "; pass the output gradient with backward(grad_output)");
  run_backward(impl_, Tensor::full(shape(), 1.0f));
}

void Tensor::backward(const Tensor& grad_output) {
  checked(impl_, "backward()");
  if (!grad_output.defined()) throw std::invalid_argument("backward(grad_output): grad_output is undefined");
  if (grad_output.shape() != shape())
    throw std::invalid_argument("backward(grad_output): grad_output has shape " + shape_str(grad_output.shape()) +
                                " but the tensor has shape " + shape_str(shape()));
  run_backward(impl_, grad_output.detach());
}

void Tensor::backward(const std::function<void(const Tensor& leaf)>& on_leaf_ready) {
  if (numel() != 1)
    throw std::runtime_error("backward() needs a one-element tensor (a loss), got shape " + shape_str(shape()));
  run_backward(impl_, Tensor::full(shape(), 1.0f), on_leaf_ready);
}

}  // namespace octet
