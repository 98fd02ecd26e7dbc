// core/ops.h: differentiable ops. Each computes its forward now and, when
// an input requires grad and grad mode is on, records its backward rule
// (core/tensor.h). Shapes are checked; a mismatch throws std::invalid_argument
// naming the op and both shapes.
//
// Layouts: images NCHW; conv weights [Cout, Cin/groups, KH, KW]; linear
// weights [out, in] (as PyTorch), so y = x W^T + b.
#pragma once

#include <span>

#include "core/tensor.h"

namespace octet {

class Communicator;  // core/distributed.h

struct Conv2dOptions {
  int stride = 1;
  int pad = 0;     // zero padding on each side, both spatial dims
  int groups = 1;  // Cin and Cout must both be divisible by groups
  // Per-axis zero padding (rows, columns): when >= 0 they override `pad` for
  // that axis; -1 means "use pad". E.g. a 1x3 kernel with {.pad_h = 0, .pad_w = 1}.
  int pad_h = -1, pad_w = -1;
};

// x [N, Cin, H, W], w [Cout, Cin/groups, KH, KW], bias [Cout] or undefined
// -> [N, Cout, (H + 2*pad_h - KH)/stride + 1, (W + 2*pad_w - KW)/stride + 1],
// with pad_h, pad_w resolved from the options as above.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, Conv2dOptions opt = {});

// x [N, in], w [out, in], bias [out] or undefined -> [N, out].
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias);

// a [M, K], b [K, N] -> [M, N].
Tensor matmul(const Tensor& a, const Tensor& b);

// Batch normalization over (N, H, W) per channel; x [N, C, H, W] (or [N, C]).
// training: normalizes with the batch statistics (biased variance) and updates
//   running = (1 - momentum) * running + momentum * batch (unbiased variance),
//   as PyTorch does; running_mean/var are updated in place without the tape.
// eval: normalizes with running_mean/var.
// group (synchronized BN, as PyTorch's SyncBatchNorm): in training with a
//   group of more than one rank, the statistics are those of the global batch,
//   every rank's x together: the forward allreduces the per-channel sums and
//   the count (one collective), the backward the per-channel sums of its
//   gradient formula (one more, when x needs a gradient). Every rank must run
//   the same graph, so the collectives line up; the group must outlive the
//   backward. dgamma and dbeta stay this rank's share (the gradient allreduce
//   adds them). Null or a group of one: the statistics of this x alone.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                  Tensor& running_var, bool training, float momentum = 0.1f, float eps = 1e-5f,
                  Communicator* group = nullptr);

Tensor relu(const Tensor& x);

// Elementwise with NumPy broadcasting of b against a (b's shape, right-aligned,
// has 1 or a's size in each dim), e.g. a bias [1, C, 1, 1] onto [N, C, H, W].
// The gradient of b is summed over the broadcast dims.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, float s);

// Pools over NCHW. avg_pool2d divides by the full window (padding counts as 0,
// count_include_pad as PyTorch's default).
Tensor max_pool2d(const Tensor& x, int kernel, int stride, int pad = 0);
Tensor avg_pool2d(const Tensor& x, int kernel, int stride, int pad = 0);
Tensor global_avg_pool(const Tensor& x);  // [N, C, H, W] -> [N, C]

Tensor reshape(const Tensor& x, const Shape& shape);  // shares storage; one dim may be -1
Tensor flatten(const Tensor& x);                      // [N, ...] -> [N, rest]

// Softmax of each row of logits [N, C]: p_nj = exp(z_nj - logsumexp(z_n)).
// Backward: dz_n = p_n * (g_n - sum_j g_nj p_nj).
Tensor softmax(const Tensor& logits);

// The target rows of cross_entropy(logits, labels, eps) as a tensor [N, C]:
// (1 - eps) * onehot(label) + eps / C. A constant (no gradient); labels are
// checked to lie in [0, classes).
Tensor one_hot(std::span<const int> labels, int64_t classes, float label_smoothing = 0.0f);

// Mean over the batch of the softmax cross-entropy of logits [N, C] against
// integer labels in [0, C). With label_smoothing eps the target is
// (1 - eps) * onehot + eps / C.
Tensor cross_entropy(const Tensor& logits, std::span<const int> labels, float label_smoothing = 0.0f);
// ... against given target distributions [N, C] (soft labels, e.g. a
// teacher's softmax): each row in [0, 1] summing to 1 (within 1e-3). The
// targets are constants: no gradient flows into them.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets);

Tensor sum(const Tensor& x);   // -> scalar
Tensor mean(const Tensor& x);  // -> scalar

}  // namespace octet
