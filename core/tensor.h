// core/tensor.h: the float32 tensor and its reverse-mode autograd.
//
// A Tensor is a cheap handle (a shared pointer) to a contiguous float32 buffer
// with a shape. Images are NCHW. Copying a Tensor copies the handle, not the
// data; use clone() for a deep copy.
//
// Autograd is define-by-run: every differentiable op (core/ops.h) that sees an
// input with requires_grad() records a Node holding a backward closure and the
// tensors it saved. loss.backward() walks the recorded graph from the scalar
// loss in reverse topological order and accumulates dL/dx into x.grad() of
// every leaf that requires grad. Gradients accumulate across backward calls
// until zero_grad(). A graph is single-use: backward frees each node's saved
// tensors, and a second backward through the same graph throws.
//
//     Tensor w = Tensor::randn({16, 3, 3, 3}, rng).requires_grad_(true);
//     Tensor y = relu(conv2d(x, w, {}, {.stride = 1, .pad = 1}));
//     Tensor loss = mean(y);
//     loss.backward();          // w.grad() now holds dloss/dw
//
// New differentiable ops (fake-quant, for example) are built with record():
// compute the output without the tape, then attach the backward rule.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace octet {

using Shape = std::vector<int64_t>;

int64_t numel_of(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[128, 16, 32, 32]"

struct Node;
class Rng;

// The storage and autograd state behind a Tensor handle.
struct TensorImpl {
  Shape shape;
  std::shared_ptr<float[]> storage;  // 64-byte aligned, numel floats
  int64_t numel = 0;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // accumulated dL/dthis (leaves only)
  std::shared_ptr<Node> grad_fn;     // the op that produced this (non-leaves)
};

class Tensor {
 public:
  Tensor() = default;  // undefined: no storage; used for "no bias", "no grad"
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Factories. Buffers are 64-byte aligned; empty() leaves them uninitialized.
  static Tensor empty(const Shape& shape);
  static Tensor zeros(const Shape& shape);
  static Tensor full(const Shape& shape, float value);
  static Tensor from(const Shape& shape, std::span<const float> values);  // copies
  static Tensor scalar(float value);
  // Random factories (added by core): N(0, std^2) and U[lo, hi), drawn in
  // index order from rng, so a seed gives the same tensor on every machine.
  static Tensor randn(const Shape& shape, Rng& rng, float std = 1.0f);
  static Tensor uniform(const Shape& shape, Rng& rng, float lo, float hi);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim(int i) const;  // negative i counts from the back
  int ndim() const;
  int64_t numel() const;
  float* data();
  const float* data() const;
  float item() const;  // the single value of a one-element tensor

  // Autograd.
  bool requires_grad() const;
  Tensor& requires_grad_(bool on = true);  // leaves only
  bool is_leaf() const;
  Tensor grad() const;  // undefined until a backward reaches this leaf
  void zero_grad();     // drops the accumulated gradient
  void backward();      // this must be a one-element tensor
  void backward(const Tensor& grad_output);  // seed with an explicit dL/dthis
  // backward() that calls on_leaf_ready(leaf) as soon as a leaf's gradient
  // is complete (every recorded op that uses the leaf has run its backward),
  // while the rest of the graph is still being walked: data-parallel training
  // starts reducing those gradients then (nn/data_parallel.h). The callback
  // runs on this thread, once per leaf of the graph that requires grad, also
  // for a leaf no gradient reached (its grad() is then as before).
  void backward(const std::function<void(const Tensor& leaf)>& on_leaf_ready);

  Tensor detach() const;  // same storage, cut from the graph
  Tensor clone() const;   // deep copy of the data, cut from the graph
  void fill_(float value);
  void copy_from(const Tensor& other);  // same numel; data only

  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Backward rule of one recorded op: given dL/d(output), return dL/d(input_i)
// for each input in the order given to record(); an undefined Tensor means
// "no gradient for this input".
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  std::string name;                  // op name, for error messages
  std::vector<Tensor> inputs;        // edges to the tensors the op read: the leaf
                                     // itself, a storage-less handle to a non-leaf's
                                     // grad_fn, or undefined where no grad flows
  BackwardFn backward;               // emptied after it has run once
  bool consumed = false;             // set when backward has run
};

// Attach `out` to the graph as the result of op `name` applied to `inputs`.
// If grad mode is off or no input requires grad, `out` is returned as is.
// `out` must be a fresh tensor (not a leaf someone else holds).
Tensor record(const char* name, Tensor out, std::vector<Tensor> inputs, BackwardFn backward);

// Grad mode: on by default, per thread. NoGradGuard turns it off in a scope
// (evaluation, optimizer steps, BN running-stat updates).
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace octet
