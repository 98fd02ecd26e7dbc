#include "nn/metrics.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace octet::nn {

Metrics::Metrics(int num_classes) : classes_(num_classes) {
  if (num_classes < 1) throw std::invalid_argument("Metrics: num_classes must be >= 1");
  confusion_.assign(static_cast<size_t>(num_classes) * num_classes, 0);
}

void Metrics::add(const Tensor& logits, std::span<const int> labels) {
  if (logits.ndim() != 2 || logits.dim(1) != classes_ || logits.dim(0) != static_cast<int64_t>(labels.size()))
    throw std::invalid_argument("Metrics::add: logits " + shape_str(logits.shape()) + " do not match " +
                                std::to_string(labels.size()) + " labels of " + std::to_string(classes_) +
                                " classes");
  const int k = std::min(5, classes_);
  const float* z = logits.data();
  for (size_t i = 0; i < labels.size(); ++i) {
    const int y = labels[i];
    if (y < 0 || y >= classes_)
      throw std::invalid_argument("Metrics::add: label " + std::to_string(y) + " of image " + std::to_string(i) +
                                  " is outside [0, " + std::to_string(classes_) + ")");
    const float* row = z + i * classes_;
    int pred = 0, rank = 0;
    for (int c = 0; c < classes_; ++c) {
      if (row[c] > row[pred]) pred = c;
      if (row[c] > row[y] || (row[c] == row[y] && c < y)) ++rank;
    }
    ++count_;
    hits1_ += pred == y;
    hits5_ += rank < k;
    ++confusion_[static_cast<size_t>(y) * classes_ + pred];
  }
}

void Metrics::add_loss(double loss_sum, int64_t n) {
  loss_sum_ += loss_sum;
  loss_n_ += n;
}

void Metrics::reduce_over(Communicator& group) {
  if (group.size() == 1) return;
  std::vector<double> v = {static_cast<double>(count_), static_cast<double>(hits1_), static_cast<double>(hits5_),
                           static_cast<double>(loss_n_), loss_sum_};
  for (int64_t c : confusion_) v.push_back(static_cast<double>(c));
  group.allreduce(v.data(), v.size(), Reduce::sum);
  count_ = static_cast<int64_t>(v[0]);
  hits1_ = static_cast<int64_t>(v[1]);
  hits5_ = static_cast<int64_t>(v[2]);
  loss_n_ = static_cast<int64_t>(v[3]);
  loss_sum_ = v[4];
  for (size_t i = 0; i < confusion_.size(); ++i) confusion_[i] = static_cast<int64_t>(v[5 + i]);
}

double Metrics::top1() const { return count_ ? double(hits1_) / double(count_) : 0.0; }
double Metrics::top5() const { return count_ ? double(hits5_) / double(count_) : 0.0; }
double Metrics::mean_loss() const { return loss_n_ ? loss_sum_ / double(loss_n_) : 0.0; }

int64_t Metrics::confusion(int t, int p) const {
  if (t < 0 || t >= classes_ || p < 0 || p >= classes_)
    throw std::out_of_range("Metrics::confusion: class index out of range");
  return confusion_[static_cast<size_t>(t) * classes_ + p];
}

double Metrics::precision(int c) const {
  int64_t predicted = 0;
  for (int t = 0; t < classes_; ++t) predicted += confusion(t, c);
  return predicted ? double(confusion(c, c)) / double(predicted) : 0.0;
}

double Metrics::recall(int c) const {
  int64_t actual = 0;
  for (int p = 0; p < classes_; ++p) actual += confusion(c, p);
  return actual ? double(confusion(c, c)) / double(actual) : 0.0;
}

std::string Metrics::report(const std::vector<std::string>& names) const {
  auto name = [&](int c) { return c < static_cast<int>(names.size()) ? names[c] : std::to_string(c); };
  size_t w = 5;
  for (int c = 0; c < classes_; ++c) w = std::max(w, name(c).size());
  char buf[256];
  std::string out;
  std::snprintf(buf, sizeof buf, "images %lld  top1 %.2f%%  top5 %.2f%%\n", static_cast<long long>(count_),
                100.0 * top1(), 100.0 * top5());
  out += buf;
  if (loss_n_) {
    std::snprintf(buf, sizeof buf, "loss %.4f\n", mean_loss());
    out += buf;
  }
  std::snprintf(buf, sizeof buf, "\n%-*s  %9s  %9s  %7s\n", static_cast<int>(w), "class", "precision", "recall",
                "images");
  out += buf;
  for (int c = 0; c < classes_; ++c) {
    int64_t actual = 0;
    for (int p = 0; p < classes_; ++p) actual += confusion(c, p);
    std::snprintf(buf, sizeof buf, "%-*s  %8.2f%%  %8.2f%%  %7lld\n", static_cast<int>(w), name(c).c_str(),
                  100.0 * precision(c), 100.0 * recall(c), static_cast<long long>(actual));
    out += buf;
  }
  out += "\nconfusion matrix (rows: true class, columns: predicted)\n";
  std::snprintf(buf, sizeof buf, "%-*s", static_cast<int>(w), "");
  out += buf;
  for (int p = 0; p < classes_; ++p) {
    std::snprintf(buf, sizeof buf, " %6.6s", name(p).c_str());
    out += buf;
  }
  out += "\n";
  for (int t = 0; t < classes_; ++t) {
    std::snprintf(buf, sizeof buf, "%-*s", static_cast<int>(w), name(t).c_str());
    out += buf;
    for (int p = 0; p < classes_; ++p) {
      std::snprintf(buf, sizeof buf, " %6lld", static_cast<long long>(confusion(t, p)));
      out += buf;
    }
    out += "\n";
  }
  return out;
}

}  // namespace octet::nn
