// nn/data_parallel.h: what data-parallel training adds to a training step
// (the Trainer uses it when it is given a group of several ranks; see
// docs/design.md, "Data-parallel training").
//
// Every rank holds the whole model and trains on its shard of every global
// batch (core/loader.h, LoaderOptions::shard). A step on rank r:
//
//     loss_r = (n_r / B) * mean loss over r's n_r images   (the global batch has B)
//     loss_r.backward(hook)                                 -> g_r
//     g = sum over ranks of g_r      == the gradient of the mean loss over B images
//     optimizer step with g          (identical on every rank)
//
// The weight n_r / B goes on the loss, before the backward pass, rather than
// on the gradients after it: synchronized BatchNorm (--sync-bn) sums the
// ranks' output gradients inside the backward pass, and that sum must
// already be the global loss's (it is, whatever the shard sizes).
//
// GradientReducer computes g while the backward pass is still running, as
// PyTorch's DistributedDataParallel does: the parameters are grouped into
// buckets in the reverse of their registration order (the order their
// gradients complete in); when the last gradient of a bucket is ready
// (Tensor::backward's on_leaf_ready) the bucket is scaled, flattened and its
// non-blocking sum started, in bucket order on every rank; finish() waits and
// writes the sums back. With 2 ranks the sum of two floats does not depend on
// the order, so both ranks get the same bits; MPI sums more ranks in an
// order of its own, the same on every rank of one run.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/distributed.h"
#include "nn/module.h"

namespace octet::nn {

class GradientReducer {
 public:
  // params: the model's parameters (named_parameters()); bucket_floats: the
  // size a bucket grows to (the last parameter may take it past).
  GradientReducer(Communicator& group, const NamedTensors& params, size_t bucket_floats = size_t(1) << 18);

  // Before the backward pass.
  void begin();
  // The backward hook: loss.backward([&](const Tensor& p) { reducer.ready(p); }).
  void ready(const Tensor& leaf);
  // After the backward pass: starts what is left, waits, and writes the sums
  // into the gradients (a parameter no gradient reached gets the sum too).
  void finish();
  // begin + every parameter ready + finish: the sum without overlap.
  void reduce_now();

  int buckets() const { return static_cast<int>(buckets_.size()); }
  int64_t floats() const { return floats_; }  // values reduced per step
  double wait_seconds() const { return wait_seconds_; }  // summed over finish() calls

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    std::vector<float> flat;
    int missing = 0;             // parameters not ready yet
    bool started = false;
    Communicator::Request request = 0;
  };
  void start_ready_buckets();  // in order, as long as the next one is complete

  Communicator& group_;
  std::vector<Tensor> params_;
  std::unordered_map<const TensorImpl*, int> bucket_of_;  // each parameter's bucket
  std::vector<Bucket> buckets_;
  size_t next_to_start_ = 0;
  int64_t floats_ = 0;
  double wait_seconds_ = 0;
};

// Rank `root`'s parameters and buffers to every rank (named_state order).
void broadcast_state(Module& model, Communicator& group, int root = 0);

// Makes the BatchNorm running statistics equal on every rank: their mean
// over ranks, computed as rank 0's value plus the mean of the differences
// from it, so statistics that are already equal stay exactly as they are.
// The running update is linear in the batch statistics, so averaging once
// before they are read (evaluation, checkpoint) gives what averaging after
// every step would. Returns the number of BatchNorm layers.
int average_bn_statistics(Module& model, Communicator& group);

// Throws std::runtime_error naming the first tensor whose bits differ
// between rank 0 and this rank (a check for tests and for the start of a run).
void check_same_state(const Module& model, Communicator& group, const std::string& what);

}  // namespace octet::nn
