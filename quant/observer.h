// quant/observer.h: observers, which watch the values flowing through a
// tensor and propose the real range [min, max] to quantize it to.
//
// A quantizer needs a range before it can choose (scale, zero_point)
// (quant/qmath.h). The range can be measured over all data (min/max), tracked
// during training (exponential moving average, TF's default for activations),
// or chosen to clip rare outliers so the common values get finer steps
// (percentile, mean +- k sigma, TensorRT's entropy calibration, MSE-optimal).
//
//     auto obs = make_observer({.kind = "ema", .decay = 0.999});
//     for (batch ...) obs->observe(activation);     // accumulates (no-op when frozen)
//     Range r = obs->range();                       // (min, max)
//     QuantParams p = choose_params(r.min, r.max, spec);
//
// Observers                      state kept
//   minmax                       running min, max
//   ema                          moving averages of the batch min and max: m -= (1 - decay) * (m - batch)
//   percentile                   a growing histogram; the p-th and (100 - p)-th percentiles
//   meanstd                      count, mean, M2 (Chan's parallel update); mean +- k sigma
//   entropy                      a growing |x| histogram; TensorRT's KL-divergence threshold
//   mse                          a growing |x| histogram; the clip minimizing the expected error
//   minmax_per_channel           running min, max per channel along an axis (weights)
//
// The histogram observers keep `bins` equal bins that grow to take in new data
// by merging whole bins (the width is multiplied by an integer and the start
// moved back by whole bins), so growing never re-interpolates counts.
//
// Every observer's state is a list of plain numbers (ObserverState), for
// checkpoints: restore_observer(obs->state()) rebuilds an identical observer.
// observe() throws std::invalid_argument naming the offset of a NaN or an
// infinity: a range cannot be learned from them, and they mean training has
// diverged.
//
// Observing across ranks: in data-parallel training each rank sees only its
// shard of the global batch. After set_group(g), observe() combines the
// shards of every rank of g, so each rank holds the state one observer would
// hold after observing the whole global batch: one allreduce gives the global
// batch min and max (and whether any rank saw a non-finite value: then every
// rank throws, so none is left waiting in a collective), which is all minmax
// and ema need, and which lays out the histograms' bins the same on every
// rank; the histogram observers then add every rank's counts of the batch
// (one more allreduce), minmax_per_channel its channels' min and max (one
// more), meanstd every rank's (count, mean, M2) of the batch by Chan's
// formula (one more). States are then equal on every rank, and to the single
// observer's exactly, except meanstd's mean and M2 (combined in another
// order: equal up to rounding). Every rank of g must call observe() on the
// same observers in the same order, frozen or not alike; a rank whose shard
// is empty still calls it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace octet {
class Communicator;  // core/distributed.h
}

namespace octet::quant {

struct Range {
  float min = 0.0f;
  float max = 0.0f;
};

// Everything an observer knows, as numbers: its configuration first, then its
// data, in a layout each observer documents. encode()/decode() give a one-line
// text form ("ema 0 10 0.5 1 1 -0.5 2.25": not frozen, 10 observations, decay 0.5,
// include_zero, initialized, min, max) that round-trips exactly (%.17g).
struct ObserverState {
  std::string kind;
  std::vector<double> values;

  std::string encode() const;
  static ObserverState decode(std::string_view text);  // throws std::invalid_argument
};

class Observer {
 public:
  virtual ~Observer() = default;
  virtual std::string_view kind() const = 0;

  // Accumulates the values of x (any shape; per-channel observers read the
  // channel axis from it). A no-op while frozen.
  void observe(const Tensor& x);
  // The same for a plain buffer, seen as a 1-D tensor.
  void observe(std::span<const float> x);

  // The proposed range; throws std::logic_error before any observation (or,
  // for ema, an initial range).
  virtual Range range() const = 0;

  bool has_data() const { return observations_ > 0; }
  int64_t observations() const { return observations_; }  // observe() calls that counted
  void reset();                   // forget the data; configuration and frozen flag stay
  void freeze(bool on = true) { frozen_ = on; }
  bool frozen() const { return frozen_; }

  // Observe the global batch of every rank of `group` from now on (see
  // "Observing across ranks" above); nullptr: this rank's values alone. Not
  // owned, not part of the state.
  void set_group(Communicator* group) { group_ = group; }
  Communicator* group() const { return group_; }

  // values = [frozen, observations, <observer's numbers>].
  ObserverState state() const;
  // Loads a state of the same kind; throws std::invalid_argument (naming the
  // kind and what is wrong) for another kind or a malformed list (wrong length,
  // a non-finite number, a histogram whose counts do not add up), and then
  // leaves the observer as it was.
  void load(const ObserverState& s);

 protected:
  // x: numel values of a tensor of `shape`, all finite, with min/max given.
  // Across ranks (peers() not null): x is this rank's shard, maybe empty,
  // batch_min/max are the global batch's, and accumulate must combine the
  // rest of what it learns from x over peers().
  virtual void accumulate(const float* x, int64_t numel, std::span<const int64_t> shape, float batch_min,
                          float batch_max) = 0;
  virtual void clear() = 0;
  virtual std::vector<double> save() const = 0;
  virtual void restore(std::span<const double> v) = 0;  // throws std::invalid_argument
  [[noreturn]] void no_data() const;
  // The group when it has other ranks, else nullptr.
  Communicator* peers() const;

 private:
  void observe_impl(const float* x, int64_t numel, std::span<const int64_t> shape);
  bool frozen_ = false;
  int64_t observations_ = 0;
  Communicator* group_ = nullptr;
};

// ---- the observers ----------------------------------------------------------

// Running min and max.                                   numbers: [min, max]
class MinMaxObserver final : public Observer {
 public:
  std::string_view kind() const override { return "minmax"; }
  Range range() const override;

 protected:
  void accumulate(const float*, int64_t, std::span<const int64_t>, float batch_min, float batch_max) override;
  void clear() override;
  std::vector<double> save() const override;
  void restore(std::span<const double> v) override;

 private:
  double min_ = 0, max_ = 0;
};

// TF's moving-average min/max (MovingAvgQuantize, contrib/quantize quant_ops.py):
// per batch, b_min = min(min(x), 0) and b_max = max(max(x), 0) (include_zero),
// then m -= (1 - decay) * (m - b) (assign_moving_average, no zero debiasing).
// The first batch initializes m, unless an initial range is given (TF starts
// from [-6, 6]).                    numbers: [decay, include_zero, initialized, min, max]
//                                   (+ [initial_min, initial_max] when an initial range is set)
class MovingAverageObserver final : public Observer {
 public:
  explicit MovingAverageObserver(double decay = 0.999, bool include_zero = true,
                                 std::optional<Range> initial = std::nullopt);
  std::string_view kind() const override { return "ema"; }
  Range range() const override;
  double decay() const { return decay_; }

 protected:
  void accumulate(const float*, int64_t, std::span<const int64_t>, float batch_min, float batch_max) override;
  void clear() override;
  std::vector<double> save() const override;
  void restore(std::span<const double> v) override;

 private:
  double decay_;
  bool include_zero_;
  std::optional<Range> initial_;
  bool initialized_ = false;
  double min_ = 0, max_ = 0;
};

// A histogram of `bins` equal bins over [lo, lo + bins * width) that grows to
// cover new data by merging whole bins. anchored_at_zero keeps lo = 0 (for
// |x|). Counts are doubles (exact up to 2^53 values).
class Histogram {
 public:
  explicit Histogram(int bins = 2048, bool anchored_at_zero = false);
  // Adds n values known to lie in [batch_min, batch_max]. With a group, every
  // rank adds its shard of one batch (n may be 0) and passes the same range,
  // the whole batch's: the grid then grows alike everywhere, and the counts of
  // every shard are added on every rank (one allreduce).
  void add(const float* x, int64_t n, float batch_min, float batch_max, Communicator* group = nullptr);
  // Adds |x|; needs anchored_at_zero.
  void add_abs(const float* x, int64_t n, float batch_abs_max, Communicator* group = nullptr);
  bool empty() const { return total_ == 0; }
  int bins() const { return static_cast<int>(counts_.size()); }
  double lo() const { return lo_; }
  double width() const { return width_; }
  double total() const { return total_; }
  const std::vector<double>& counts() const { return counts_; }
  // The value below which a fraction q in [0, 1] of the mass lies, assuming
  // values spread uniformly inside each bin.
  double quantile(double q) const;
  void clear();

  // [bins, anchored, lo, width, total, counts...]
  void save(std::vector<double>& out) const;
  // Reads what save wrote starting at v[pos]; advances pos.
  void restore(std::span<const double> v, size_t& pos, const char* who);

 private:
  void grow_to(double new_min, double new_max);
  int64_t index_of(double v) const;
  void count(const float* x, int64_t n, bool absolute, Communicator* group);
  bool anchored_;
  double lo_ = 0, width_ = 0, total_ = 0;
  std::vector<double> counts_;
};

// The p-th percentile of the values as max and the (100 - p)-th as min,
// clipped to the observed [min, max] (p = 100 gives exactly min/max).
//                        numbers: [percentile, min, max, <histogram>]
class PercentileObserver final : public Observer {
 public:
  explicit PercentileObserver(double percentile = 99.99, int bins = 2048);
  std::string_view kind() const override { return "percentile"; }
  Range range() const override;
  const Histogram& histogram() const { return hist_; }

 protected:
  void accumulate(const float* x, int64_t n, std::span<const int64_t>, float batch_min, float batch_max) override;
  void clear() override;
  std::vector<double> save() const override;
  void restore(std::span<const double> v) override;

 private:
  double percentile_;
  Histogram hist_;
  double min_ = 0, max_ = 0;
};

// mean +- k * sigma (population sigma over every value seen), clipped to the
// observed [min, max].        numbers: [k, count, mean, m2, min, max]
class MeanStdObserver final : public Observer {
 public:
  explicit MeanStdObserver(double k = 3.0);
  std::string_view kind() const override { return "meanstd"; }
  Range range() const override;
  double mean() const { return mean_; }
  double stddev() const;

 protected:
  void accumulate(const float* x, int64_t n, std::span<const int64_t>, float batch_min, float batch_max) override;
  void clear() override;
  std::vector<double> save() const override;
  void restore(std::span<const double> v) override;

 private:
  double k_;
  double count_ = 0, mean_ = 0, m2_ = 0;
  double min_ = 0, max_ = 0;
};

// Shared by the two threshold searches below: a histogram of |x| over
// [0, max|x|], the observed min/max, and the symmetric range a threshold T
// gives: [max(min, -T), min(max, T)] (min = 0 for nonnegative data).
// levels(): the codes the magnitude gets: 2^(bits-1) for signed data, 2^bits
// for nonnegative data.
class ThresholdObserver : public Observer {
 public:
  Range range() const override;
  // The chosen threshold T (computed from the histogram on each call).
  virtual double threshold() const = 0;
  const Histogram& histogram() const { return hist_; }
  int bits() const { return bits_; }

 protected:
  ThresholdObserver(int bits, int bins);
  int64_t levels() const;
  void accumulate(const float* x, int64_t n, std::span<const int64_t>, float batch_min, float batch_max) override;
  void clear() override;
  std::vector<double> save() const override;  // [bits, min, max, <histogram>]
  void restore(std::span<const double> v) override;

  int bits_;
  Histogram hist_;
  double min_ = 0, max_ = 0;
};

// TensorRT's entropy calibration (Migacz, "8-bit Inference with TensorRT",
// GTC 2017): for each candidate i = levels .. bins, the reference P is the
// first i bins with the outliers (bins >= i) folded into bin i-1; the
// candidate Q quantizes bins [0, i) into `levels` groups, spreading each
// group's count evenly over its nonempty bins; T = i * width for the i with
// the smallest KL(P || Q) (the first, on ties). Bin 0 counts as bin 1 (the
// zeros of a ReLU must not decide the clip; see observer.cpp). With levels >=
// bins there is nothing to quantize and T = max|x|.
//                                       numbers: [bits, min, max, <histogram>]
class EntropyObserver final : public ThresholdObserver {
 public:
  explicit EntropyObserver(int bits = 8, int bins = 2048) : ThresholdObserver(bits, bins) {}
  std::string_view kind() const override { return "entropy"; }
  double threshold() const override;
  // KL(P || Q) of candidate i (bins kept), +inf when Q misses mass P has.
  double divergence(int i) const;
};

// The clip T on a bin edge minimizing the expected squared error of
// quantizing |x| to `bits` (step T / (levels - 1)): values inside [0, T]
// contribute their exact rounding error, values above T their clipping error
// (x - T)^2, each bin's values taken as uniform inside the bin.
//                                       numbers: [bits, min, max, <histogram>]
class MseObserver final : public ThresholdObserver {
 public:
  explicit MseObserver(int bits = 8, int bins = 2048) : ThresholdObserver(bits, bins) {}
  std::string_view kind() const override { return "mse"; }
  double threshold() const override;
  // The expected squared error per value for threshold t (> 0).
  double expected_error(double t) const;
};

// Running min and max per channel along `axis` (weights: axis 0).
// range() is the min/max over all channels.
//                                   numbers: [axis, C, min_0..min_C-1, max_0..max_C-1]
class PerChannelMinMaxObserver final : public Observer {
 public:
  explicit PerChannelMinMaxObserver(int axis = 0);
  std::string_view kind() const override { return "minmax_per_channel"; }
  Range range() const override;
  std::vector<Range> channel_ranges() const;
  int axis() const { return axis_; }

 protected:
  void accumulate(const float* x, int64_t n, std::span<const int64_t> shape, float, float) override;
  void clear() override;
  std::vector<double> save() const override;
  void restore(std::span<const double> v) override;

 private:
  int axis_;
  std::vector<double> min_, max_;
};

// ---- construction -------------------------------------------------------------

struct ObserverConfig {
  std::string kind = "ema";   // minmax, ema, percentile, meanstd, entropy, mse, minmax_per_channel
  double decay = 0.999;       // ema
  bool include_zero = true;   // ema
  std::optional<Range> initial = std::nullopt;  // ema (a default, so designated initializers may skip it)
  double percentile = 99.99;  // percentile
  double k = 3.0;             // meanstd
  int bits = 8;               // entropy, mse
  int bins = 2048;            // percentile, entropy, mse
  int axis = 0;               // minmax_per_channel
};

// Throws std::invalid_argument naming the bad field (unknown kind, decay
// outside [0, 1), percentile outside (50, 100], k <= 0, bits, bins < 8).
std::unique_ptr<Observer> make_observer(const ObserverConfig& config);
// A new observer of s.kind with s loaded.
std::unique_ptr<Observer> restore_observer(const ObserverState& s);

}  // namespace octet::quant
