// nn/metrics.h: classification metrics accumulated over batches.
//
//   Metrics m(10);
//   for (...) m.add(logits, labels);        // logits [N, C]
//   m.top1(); m.top5(); m.precision(c); m.recall(c);
//   std::puts(m.report(class_names).c_str());
//
// Definitions (fractions in [0, 1]):
//   prediction   argmax of the logits (the lowest class index among ties)
//   top-k        the label is among the k highest logits; rank of the label =
//                #classes with a higher logit + #classes with an equal logit
//                and a lower index (the argmax rule), hit when rank < k
//   confusion    counts[true][predicted]
//   precision_c  TP_c / (images predicted c), 0 when nothing was predicted c
//   recall_c     TP_c / (images of class c),  0 when the class has no image
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/distributed.h"
#include "core/tensor.h"

namespace octet::nn {

class Metrics {
 public:
  explicit Metrics(int num_classes);

  // logits [N, C] (C = num_classes), labels N values in [0, C); throws
  // std::invalid_argument on a shape mismatch or a label out of range.
  void add(const Tensor& logits, std::span<const int> labels);
  // Optional: the summed loss of `n` images, for mean_loss().
  void add_loss(double loss_sum, int64_t n);
  // Every rank's counts summed into every rank's Metrics (top-1/5, the
  // confusion matrix, the loss): the metrics of all the ranks' images
  // together (data-parallel evaluation; counts stay exact below 2^53).
  void reduce_over(Communicator& group);

  int num_classes() const { return classes_; }
  int64_t count() const { return count_; }
  double top1() const;
  double top5() const;  // top-min(5, C)
  double mean_loss() const;
  double precision(int c) const;
  double recall(int c) const;
  int64_t confusion(int true_class, int predicted) const;

  // Top-1, top-5, the per-class table and the confusion matrix, with class
  // names (or "0", "1", ... when names is empty).
  std::string report(const std::vector<std::string>& names) const;

 private:
  int classes_;
  int64_t count_ = 0, hits1_ = 0, hits5_ = 0;
  int64_t loss_n_ = 0;
  double loss_sum_ = 0.0;
  std::vector<int64_t> confusion_;  // [true * C + predicted]
};

}  // namespace octet::nn
