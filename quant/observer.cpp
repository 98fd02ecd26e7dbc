// quant/observer.cpp: range observers (see observer.h).
// Over 600 lines: seven observers (minmax, EMA, percentile, entropy, MSE,
// mean+std, per-channel minmax), each with its save/load state; the
// histogram ones share the threshold search kept here.
#include "quant/observer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

#include "core/distributed.h"
#include "core/parallel.h"
#include "quant/qmath.h"

namespace octet::quant {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string fmt(double v) {
  std::ostringstream os;
  os.precision(9);
  os << v;
  return os.str();
}

std::string who_of(std::string_view kind) { return std::string(kind) + " observer"; }

// Batch min/max and the first non-finite offset (-1 if none) of x[0, n), in
// parallel over fixed chunks combined in order.
struct Scan {
  float min = 0, max = 0;
  int64_t bad = -1;
};

Scan scan(const float* x, int64_t n) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<Scan> part(static_cast<size_t>(chunks));
  parallel_for(0, chunks, 4, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t b = c * kChunk, e = std::min(n, b + kChunk);
      // Two 4-lane vectors each of min and max (one SSE / NEON register, so
      // the compiler keeps them in registers on every target); `bad` sums
      // v - v, which is 0 for finite v and NaN for NaN and +-inf.
      typedef float v4 __attribute__((vector_size(16)));
      const float inf = std::numeric_limits<float>::infinity();
      v4 mn0 = {inf, inf, inf, inf}, mx0 = -mn0, mn1 = mn0, mx1 = mx0, bad = {};
      int64_t i = b;
      for (; i + 8 <= e; i += 8) {
        v4 u, v;
        std::memcpy(&u, x + i, sizeof u);
        std::memcpy(&v, x + i + 4, sizeof v);
        mn0 = u < mn0 ? u : mn0;
        mx0 = u > mx0 ? u : mx0;
        mn1 = v < mn1 ? v : mn1;
        mx1 = v > mx1 ? v : mx1;
        bad += (u - u) + (v - v);
      }
      float mn = inf, mx = -inf, z = 0.0f;
      for (int k = 0; k < 4; ++k) {
        mn = std::min({mn, mn0[k], mn1[k]});
        mx = std::max({mx, mx0[k], mx1[k]});
        z += bad[k];
      }
      for (; i < e; ++i) {
        mn = std::min(mn, x[i]);
        mx = std::max(mx, x[i]);
        z += x[i] - x[i];
      }
      Scan s{mn, mx, -1};
      if (z != 0.0f) {  // not all finite: find the first offending offset
        for (int64_t j = b; j < e; ++j)
          if (!std::isfinite(x[j])) {
            s.bad = j;
            break;
          }
      }
      part[static_cast<size_t>(c)] = s;
    }
  });
  Scan out{std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(), -1};
  for (const Scan& s : part) {
    if (s.bad >= 0 && out.bad < 0) out.bad = s.bad;
    out.min = std::min(out.min, s.min);
    out.max = std::max(out.max, s.max);
  }
  return out;
}

void need(std::span<const double> v, size_t n, std::string_view kind) {
  if (v.size() != n) {
    throw std::invalid_argument(who_of(kind) + " state: expected " + std::to_string(n) + " numbers, got " +
                                std::to_string(v.size()));
  }
}

void check_bins(int bins, const char* who) {
  if (bins < 8 || bins > (1 << 20)) {
    throw std::invalid_argument(std::string(who) + ": bins must be in [8, 2^20], got " + std::to_string(bins));
  }
}

// Chan et al.'s combination of the (count, mean, M2) of two sets of values:
// the first becomes that of their union.
void chan_merge(double& count, double& mean, double& m2, double nb, double mb, double m2b) {
  const double na = count;
  const double total = na + nb;
  const double delta = mb - mean;
  mean = na > 0 ? mean + delta * (nb / total) : mb;
  m2 = na > 0 ? m2 + m2b + delta * delta * (na * nb / total) : m2b;
  count = total;
}

}  // namespace

// ---- ObserverState --------------------------------------------------------------

std::string ObserverState::encode() const {
  std::string out = kind;
  char buf[64];
  for (double v : values) {
    std::snprintf(buf, sizeof buf, " %.17g", v);
    out += buf;
  }
  return out;
}

ObserverState ObserverState::decode(std::string_view text) {
  ObserverState s;
  size_t pos = text.find(' ');
  s.kind = std::string(text.substr(0, pos));
  if (s.kind.empty()) throw std::invalid_argument("observer state: empty kind in '" + std::string(text) + "'");
  while (pos != std::string_view::npos && pos < text.size()) {
    const size_t begin = pos + 1;
    pos = text.find(' ', begin);
    const std::string tok(text.substr(begin, pos == std::string_view::npos ? std::string_view::npos : pos - begin));
    if (tok.empty()) throw std::invalid_argument("observer state: empty number at byte " + std::to_string(begin));
    char* end = nullptr;
    const double v = std::strtod(tok.c_str(), &end);
    if (end != tok.c_str() + tok.size()) {
      throw std::invalid_argument("observer state: bad number '" + tok + "' at byte " + std::to_string(begin));
    }
    s.values.push_back(v);
  }
  return s;
}

// ---- Observer -------------------------------------------------------------------

void Observer::observe(const Tensor& x) {
  if (!x.defined()) throw std::invalid_argument(who_of(kind()) + ": observed tensor is undefined");
  observe_impl(x.data(), x.numel(), x.shape());
}

void Observer::observe(std::span<const float> x) {
  const int64_t n = static_cast<int64_t>(x.size());
  observe_impl(x.data(), n, std::span<const int64_t>(&n, 1));
}

void Observer::observe_impl(const float* x, int64_t numel, std::span<const int64_t> shape) {
  if (frozen_) return;
  Communicator* const g = peers();
  if (numel == 0 && !g) return;  // across ranks an empty shard still takes part in the collectives
  const Scan s = scan(x, numel);
  float batch_min = s.min, batch_max = s.max;
  bool bad_elsewhere = false;
  if (g) {
    // One collective for the global batch's min and max and whether any rank
    // saw a non-finite value (the min negated, so that all three reduce by max).
    float v[3] = {s.bad >= 0 ? 1.0f : 0.0f, -s.min, s.max};
    g->allreduce(v, 3, Reduce::max);
    bad_elsewhere = v[0] != 0.0f;
    batch_min = -v[1];
    batch_max = v[2];
  }
  if (s.bad >= 0) {
    throw std::invalid_argument(who_of(kind()) + ": non-finite value " + fmt(x[s.bad]) + " at offset " +
                                std::to_string(s.bad));
  }
  if (bad_elsewhere) {
    throw std::invalid_argument(who_of(kind()) + ": another rank saw a non-finite value (its error names the offset)");
  }
  if (!(batch_min <= batch_max)) return;  // every rank's shard was empty
  accumulate(x, numel, shape, batch_min, batch_max);
  ++observations_;
}

Communicator* Observer::peers() const { return group_ && group_->size() > 1 ? group_ : nullptr; }

void Observer::reset() {
  observations_ = 0;
  clear();
}

void Observer::no_data() const {
  throw std::logic_error(who_of(kind()) + ": range() before any observation");
}

ObserverState Observer::state() const {
  ObserverState s;
  s.kind = std::string(kind());
  s.values = {frozen_ ? 1.0 : 0.0, static_cast<double>(observations_)};
  const std::vector<double> own = save();
  s.values.insert(s.values.end(), own.begin(), own.end());
  return s;
}

void Observer::load(const ObserverState& s) {
  if (s.kind != kind()) {
    throw std::invalid_argument(who_of(kind()) + ": cannot load a state of kind '" + s.kind + "'");
  }
  if (s.values.size() < 2 || !(s.values[1] >= 0) || s.values[1] != std::floor(s.values[1])) {
    throw std::invalid_argument(who_of(kind()) + " state: missing or bad [frozen, observations] header");
  }
  for (size_t i = 0; i < s.values.size(); ++i) {
    if (!std::isfinite(s.values[i])) {
      throw std::invalid_argument(who_of(kind()) + " state: number " + std::to_string(i) + " is " +
                                  fmt(s.values[i]) + " (every number of a state is finite)");
    }
  }
  // restore() may have set some fields before finding the list malformed: put
  // the old numbers back, so a refused load leaves the observer unchanged.
  const std::vector<double> backup = save();
  try {
    restore(std::span<const double>(s.values).subspan(2));
  } catch (...) {
    restore(backup);
    throw;
  }
  frozen_ = s.values[0] != 0.0;
  observations_ = static_cast<int64_t>(s.values[1]);
}

// ---- MinMax ---------------------------------------------------------------------

Range MinMaxObserver::range() const {
  if (!has_data()) no_data();
  return Range{static_cast<float>(min_), static_cast<float>(max_)};
}

void MinMaxObserver::accumulate(const float*, int64_t, std::span<const int64_t>, float batch_min, float batch_max) {
  min_ = has_data() ? std::min(min_, static_cast<double>(batch_min)) : batch_min;
  max_ = has_data() ? std::max(max_, static_cast<double>(batch_max)) : batch_max;
}

void MinMaxObserver::clear() { min_ = max_ = 0; }
std::vector<double> MinMaxObserver::save() const { return {min_, max_}; }
void MinMaxObserver::restore(std::span<const double> v) {
  need(v, 2, kind());
  min_ = v[0];
  max_ = v[1];
}

// ---- MovingAverage ----------------------------------------------------------------

MovingAverageObserver::MovingAverageObserver(double decay, bool include_zero, std::optional<Range> initial)
    : decay_(decay), include_zero_(include_zero), initial_(initial) {
  if (!(decay >= 0.0 && decay < 1.0)) {
    throw std::invalid_argument("ema observer: decay must be in [0, 1), got " + fmt(decay));
  }
  if (initial && !(initial->min <= initial->max)) {
    throw std::invalid_argument("ema observer: initial range [" + fmt(initial->min) + ", " + fmt(initial->max) +
                                "] has min > max");
  }
  clear();
}

Range MovingAverageObserver::range() const {
  if (!initialized_) no_data();
  return Range{static_cast<float>(min_), static_cast<float>(max_)};
}

void MovingAverageObserver::accumulate(const float*, int64_t, std::span<const int64_t>, float batch_min,
                                       float batch_max) {
  double bmin = batch_min, bmax = batch_max;
  if (include_zero_) {
    bmin = std::min(bmin, 0.0);
    bmax = std::max(bmax, 0.0);
  }
  if (!initialized_) {
    min_ = bmin;
    max_ = bmax;
    initialized_ = true;
    return;
  }
  // TF's assign_moving_average: variable -= (variable - value) * (1 - decay).
  min_ -= (min_ - bmin) * (1.0 - decay_);
  max_ -= (max_ - bmax) * (1.0 - decay_);
}

void MovingAverageObserver::clear() {
  initialized_ = initial_.has_value();
  min_ = initial_ ? initial_->min : 0.0;
  max_ = initial_ ? initial_->max : 0.0;
}

std::vector<double> MovingAverageObserver::save() const {
  std::vector<double> v{decay_, include_zero_ ? 1.0 : 0.0, initialized_ ? 1.0 : 0.0, min_, max_};
  if (initial_) {  // appended only when set, so states without one keep their 5 numbers
    v.push_back(initial_->min);
    v.push_back(initial_->max);
  }
  return v;
}

void MovingAverageObserver::restore(std::span<const double> v) {
  if (v.size() != 5 && v.size() != 7) {
    throw std::invalid_argument("ema observer state: expected 5 numbers (7 with an initial range), got " +
                                std::to_string(v.size()));
  }
  if (!(v[0] >= 0.0 && v[0] < 1.0)) throw std::invalid_argument("ema observer state: bad decay " + fmt(v[0]));
  if (v.size() == 7 && !(v[5] <= v[6])) {
    throw std::invalid_argument("ema observer state: initial range [" + fmt(v[5]) + ", " + fmt(v[6]) +
                                "] has min > max");
  }
  decay_ = v[0];
  include_zero_ = v[1] != 0.0;
  initialized_ = v[2] != 0.0;
  min_ = v[3];
  max_ = v[4];
  if (v.size() == 7) {
    initial_ = Range{static_cast<float>(v[5]), static_cast<float>(v[6])};
  } else {
    initial_.reset();
  }
}

// ---- Histogram --------------------------------------------------------------------

Histogram::Histogram(int bins, bool anchored_at_zero) : anchored_(anchored_at_zero) {
  check_bins(bins, "histogram");
  counts_.assign(static_cast<size_t>(bins), 0.0);
}

void Histogram::clear() {
  std::fill(counts_.begin(), counts_.end(), 0.0);
  lo_ = width_ = total_ = 0;
}

int64_t Histogram::index_of(double v) const {
  const double t = std::floor((v - lo_) / width_);
  const double last = static_cast<double>(counts_.size() - 1);
  return static_cast<int64_t>(std::min(std::max(t, 0.0), last));
}

// Widens [lo, lo + bins * width) to cover [new_min, new_max]: the new width is
// k old widths and the new start m old widths lower, so old bin i falls whole
// into new bin (i + m) / k.
void Histogram::grow_to(double new_min, double new_max) {
  const double bins = static_cast<double>(counts_.size());
  const double hi = lo_ + bins * width_;
  if (new_min >= lo_ && new_max <= hi) return;
  const double m = (anchored_ || new_min >= lo_) ? 0.0 : std::ceil((lo_ - new_min) / width_);
  const double top = std::max(new_max, hi);
  const double n_old = m + std::ceil((top - lo_) / width_);
  double k = std::max(1.0, std::ceil(n_old / bins));
  while (lo_ - m * width_ + bins * k * width_ < top) k += 1.0;  // float slack
  std::vector<double> merged(counts_.size(), 0.0);
  const int64_t mi = static_cast<int64_t>(m), ki = static_cast<int64_t>(k);
  for (size_t i = 0; i < counts_.size(); ++i) {
    if (counts_[i] != 0.0) merged[static_cast<size_t>((static_cast<int64_t>(i) + mi) / ki)] += counts_[i];
  }
  counts_.swap(merged);
  lo_ -= m * width_;
  width_ *= k;
}

void Histogram::add(const float* x, int64_t n, float batch_min, float batch_max, Communicator* group) {
  if (n <= 0 && !group) return;
  if (width_ == 0.0) {  // the first data sets the grid
    lo_ = anchored_ ? 0.0 : static_cast<double>(batch_min);
    double span = static_cast<double>(batch_max) - lo_;
    if (!(span > 0.0)) span = std::max(std::fabs(static_cast<double>(batch_max)), 1.0) * 1e-6;
    width_ = span / static_cast<double>(counts_.size());
  } else {
    grow_to(batch_min, batch_max);
  }
  count(x, n, /*absolute=*/false, group);
}

void Histogram::add_abs(const float* x, int64_t n, float batch_abs_max, Communicator* group) {
  if (!anchored_) throw std::logic_error("histogram: add_abs needs a histogram anchored at zero");
  if (n <= 0 && !group) return;
  if (width_ == 0.0) {
    lo_ = 0.0;
    double span = batch_abs_max;
    if (!(span > 0.0)) span = 1e-6;
    width_ = span / static_cast<double>(counts_.size());
  } else {
    grow_to(0.0, batch_abs_max);
  }
  count(x, n, /*absolute=*/true, group);
}

// Counts x (or |x|) on the grid, which already covers them. With a group, the
// batch's own counts (this step's change of the histogram) are summed over
// the ranks and then added: integers in doubles, so the sums are exact and
// the counts equal those of one histogram that saw every shard.
void Histogram::count(const float* x, int64_t n, bool absolute, Communicator* group) {
  if (!group) {
    for (int64_t i = 0; i < n; ++i) counts_[static_cast<size_t>(index_of(absolute ? std::fabs(x[i]) : x[i]))] += 1.0;
    total_ += static_cast<double>(n);
    return;
  }
  std::vector<double> delta(counts_.size() + 1, 0.0);  // the counts, then the number of values
  for (int64_t i = 0; i < n; ++i) delta[static_cast<size_t>(index_of(absolute ? std::fabs(x[i]) : x[i]))] += 1.0;
  delta.back() = static_cast<double>(n);
  group->allreduce(delta.data(), delta.size(), Reduce::sum);
  for (size_t j = 0; j < counts_.size(); ++j) counts_[j] += delta[j];
  total_ += delta.back();
}

double Histogram::quantile(double q) const {
  q = std::min(std::max(q, 0.0), 1.0);
  const double target = q * total_;
  double cum = 0;
  for (size_t j = 0; j < counts_.size(); ++j) {
    const double c = counts_[j];
    if (c > 0 && cum + c >= target) {
      return lo_ + (static_cast<double>(j) + (target - cum) / c) * width_;
    }
    cum += c;
  }
  return lo_ + static_cast<double>(counts_.size()) * width_;
}

void Histogram::save(std::vector<double>& out) const {
  out.push_back(static_cast<double>(counts_.size()));
  out.push_back(anchored_ ? 1.0 : 0.0);
  out.push_back(lo_);
  out.push_back(width_);
  out.push_back(total_);
  out.insert(out.end(), counts_.begin(), counts_.end());
}

void Histogram::restore(std::span<const double> v, size_t& pos, const char* who) {
  if (v.size() < pos + 5) throw std::invalid_argument(std::string(who) + " state: truncated histogram header");
  const double bins = v[pos];
  if (!(bins >= 8 && bins <= (1 << 20)) || bins != std::floor(bins) || v.size() != pos + 5 + static_cast<size_t>(bins)) {
    throw std::invalid_argument(std::string(who) + " state: histogram of " + fmt(bins) + " bins does not match the " +
                                std::to_string(v.size() - pos) + " numbers left");
  }
  if (!(v[pos + 3] >= 0) || !std::isfinite(v[pos + 2])) {
    throw std::invalid_argument(std::string(who) + " state: bad histogram grid");
  }
  // Anchoring is a property of the observer kind (|x| histograms start at 0), not of the data.
  if ((v[pos + 1] != 0.0) != anchored_) {
    throw std::invalid_argument(std::string(who) + " state: histogram " +
                                (anchored_ ? "must be anchored at 0" : "must not be anchored at 0"));
  }
  double sum = 0;
  for (size_t i = pos + 5; i < v.size(); ++i) {
    if (!(v[i] >= 0)) throw std::invalid_argument(std::string(who) + " state: negative histogram count");
    sum += v[i];
  }
  if (sum != v[pos + 4] || (sum > 0 && !(v[pos + 3] > 0))) {
    throw std::invalid_argument(std::string(who) + " state: histogram counts sum to " + fmt(sum) + ", total says " +
                                fmt(v[pos + 4]) + ", width " + fmt(v[pos + 3]));
  }
  lo_ = v[pos + 2];
  width_ = v[pos + 3];
  total_ = v[pos + 4];
  counts_.assign(v.begin() + static_cast<std::ptrdiff_t>(pos + 5), v.end());
  pos = v.size();
}

// ---- Percentile ---------------------------------------------------------------------

PercentileObserver::PercentileObserver(double percentile, int bins) : percentile_(percentile), hist_(bins) {
  if (!(percentile > 50.0 && percentile <= 100.0)) {
    throw std::invalid_argument("percentile observer: percentile must be in (50, 100], got " + fmt(percentile));
  }
}

Range PercentileObserver::range() const {
  if (!has_data()) no_data();
  const double p = percentile_ / 100.0;
  const double hi = std::min(hist_.quantile(p), max_);
  const double lo = std::max(hist_.quantile(1.0 - p), min_);
  return Range{static_cast<float>(std::min(lo, hi)), static_cast<float>(hi)};
}

void PercentileObserver::accumulate(const float* x, int64_t n, std::span<const int64_t>, float batch_min,
                                    float batch_max) {
  min_ = has_data() ? std::min(min_, static_cast<double>(batch_min)) : batch_min;
  max_ = has_data() ? std::max(max_, static_cast<double>(batch_max)) : batch_max;
  hist_.add(x, n, batch_min, batch_max, peers());
}

void PercentileObserver::clear() {
  hist_.clear();
  min_ = max_ = 0;
}

std::vector<double> PercentileObserver::save() const {
  std::vector<double> v{percentile_, min_, max_};
  hist_.save(v);
  return v;
}

void PercentileObserver::restore(std::span<const double> v) {
  if (v.size() < 3 || !(v[0] > 50.0 && v[0] <= 100.0)) {
    throw std::invalid_argument("percentile observer state: bad header");
  }
  percentile_ = v[0];
  min_ = v[1];
  max_ = v[2];
  size_t pos = 3;
  hist_.restore(v, pos, "percentile observer");
}

// ---- MeanStd ----------------------------------------------------------------------------

MeanStdObserver::MeanStdObserver(double k) : k_(k) {
  if (!(k > 0.0) || !std::isfinite(k)) throw std::invalid_argument("meanstd observer: k must be > 0, got " + fmt(k));
}

double MeanStdObserver::stddev() const { return count_ > 0 ? std::sqrt(m2_ / count_) : 0.0; }

Range MeanStdObserver::range() const {
  if (!has_data()) no_data();
  const double s = stddev();
  const double lo = std::max(mean_ - k_ * s, min_);
  const double hi = std::min(mean_ + k_ * s, max_);
  return Range{static_cast<float>(lo), static_cast<float>(hi)};
}

void MeanStdObserver::accumulate(const float* x, int64_t n, std::span<const int64_t>, float batch_min,
                                 float batch_max) {
  // The batch's own mean and M2 (two passes, in double), then Chan et al.'s
  // combination with the running ones.
  double nb = static_cast<double>(n), mb = 0, m2b = 0;
  if (n > 0) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += x[i];
    mb = sum / nb;
    for (int64_t i = 0; i < n; ++i) {
      const double d = x[i] - mb;
      m2b += d * d;
    }
  }
  if (Communicator* g = peers()) {
    // Every rank's (count, mean, M2) in its own slot (the sum adds zeros
    // elsewhere, exactly), combined in rank order: the same bits everywhere.
    const size_t size = static_cast<size_t>(g->size()), me = static_cast<size_t>(g->rank());
    std::vector<double> parts(3 * size, 0.0);
    parts[3 * me] = nb;
    parts[3 * me + 1] = mb;
    parts[3 * me + 2] = m2b;
    g->allreduce(parts.data(), parts.size(), Reduce::sum);
    nb = mb = m2b = 0;
    for (size_t r = 0; r < size; ++r)
      if (parts[3 * r] > 0) chan_merge(nb, mb, m2b, parts[3 * r], parts[3 * r + 1], parts[3 * r + 2]);
  }
  chan_merge(count_, mean_, m2_, nb, mb, m2b);
  min_ = has_data() ? std::min(min_, static_cast<double>(batch_min)) : batch_min;
  max_ = has_data() ? std::max(max_, static_cast<double>(batch_max)) : batch_max;
}

void MeanStdObserver::clear() { count_ = mean_ = m2_ = min_ = max_ = 0; }

std::vector<double> MeanStdObserver::save() const { return {k_, count_, mean_, m2_, min_, max_}; }

void MeanStdObserver::restore(std::span<const double> v) {
  need(v, 6, kind());
  if (!(v[0] > 0) || !(v[1] >= 0) || !(v[3] >= 0)) throw std::invalid_argument("meanstd observer state: bad numbers");
  k_ = v[0];
  count_ = v[1];
  mean_ = v[2];
  m2_ = v[3];
  min_ = v[4];
  max_ = v[5];
}

// ---- threshold observers ------------------------------------------------------------------

ThresholdObserver::ThresholdObserver(int bits, int bins) : bits_(bits), hist_(bins, /*anchored_at_zero=*/true) {
  check_bits(bits, "threshold observer");
}

int64_t ThresholdObserver::levels() const {
  const int b = min_ < 0 ? bits_ - 1 : bits_;
  return b >= 62 ? (int64_t{1} << 62) : (int64_t{1} << b);
}

Range ThresholdObserver::range() const {
  if (!has_data()) no_data();
  const double t = threshold();
  return Range{static_cast<float>(std::max(min_, -t)), static_cast<float>(std::min(max_, t))};
}

void ThresholdObserver::accumulate(const float* x, int64_t n, std::span<const int64_t>, float batch_min,
                                   float batch_max) {
  min_ = has_data() ? std::min(min_, static_cast<double>(batch_min)) : batch_min;
  max_ = has_data() ? std::max(max_, static_cast<double>(batch_max)) : batch_max;
  hist_.add_abs(x, n, std::max(std::fabs(batch_min), std::fabs(batch_max)), peers());
}

void ThresholdObserver::clear() {
  hist_.clear();
  min_ = max_ = 0;
}

std::vector<double> ThresholdObserver::save() const {
  std::vector<double> v{static_cast<double>(bits_), min_, max_};
  hist_.save(v);
  return v;
}

void ThresholdObserver::restore(std::span<const double> v) {
  if (v.size() < 3) throw std::invalid_argument(who_of(kind()) + " state: bad header");
  const int bits = static_cast<int>(v[0]);
  if (static_cast<double>(bits) != v[0]) throw std::invalid_argument(who_of(kind()) + " state: bad bits");
  check_bits(bits, "threshold observer state");
  bits_ = bits;
  min_ = v[1];
  max_ = v[2];
  size_t pos = 3;
  const std::string who = who_of(kind());
  hist_.restore(v, pos, who.c_str());
}

// ---- Entropy (TensorRT) -------------------------------------------------------------------

namespace {

// The counts the KL search uses: the histogram with bin 0 counted as bin 1
// (NVIDIA's pytorch-quantization does the same). The exact zeros of a ReLU
// output, often half its values, pile up in bin 0, and every wide candidate's
// Q spreads that spike over its first group, a KL penalty so large that the
// narrowest candidate would always win. Zeros are exact on every grid, so
// they say nothing about where to clip.
std::vector<double> counts_for_kl(const Histogram& hist) {
  std::vector<double> h = hist.counts();
  if (h.size() > 1) h[0] = h[1];
  return h;
}

// KL(P || Q) of candidate i (1 <= i <= h.size()) over the counts h.
double candidate_kl(const std::vector<double>& h, int i, int64_t levels) {
  const int bins = static_cast<int>(h.size());
  double outliers = 0;
  for (int j = i; j < bins; ++j) outliers += h[static_cast<size_t>(j)];
  double kept = 0;  // Q's total: the first i bins, unfolded
  for (int j = 0; j < i; ++j) kept += h[static_cast<size_t>(j)];
  const double p_total = kept + outliers;
  if (kept == 0 || p_total == 0) return kInf;
  double kl = 0;
  const int64_t groups = std::min<int64_t>(levels, i);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t begin = g * i / groups, end = (g + 1) * i / groups;
    double sum = 0, nonzero = 0;
    for (int64_t j = begin; j < end; ++j) {
      sum += h[static_cast<size_t>(j)];
      nonzero += h[static_cast<size_t>(j)] != 0 ? 1 : 0;
    }
    for (int64_t j = begin; j < end; ++j) {
      const double pj = h[static_cast<size_t>(j)] + (j == i - 1 ? outliers : 0.0);
      if (pj == 0) continue;
      const double qj = h[static_cast<size_t>(j)] != 0 ? sum / nonzero : 0.0;
      if (qj == 0) return kInf;
      const double p = pj / p_total, q = qj / kept;
      kl += p * std::log(p / q);
    }
  }
  return kl;
}

}  // namespace

double EntropyObserver::divergence(int i) const {
  if (i < 1 || i > hist_.bins())
    throw std::invalid_argument("entropy observer: candidate " + std::to_string(i) + " out of range");
  return candidate_kl(counts_for_kl(hist_), i, levels());
}

double EntropyObserver::threshold() const {
  if (!has_data()) no_data();
  const double amax = std::max(std::fabs(min_), std::fabs(max_));
  const int bins = hist_.bins();
  if (levels() >= bins) return amax;
  const std::vector<double> h = counts_for_kl(hist_);
  double best = kInf;
  int best_i = bins;
  for (int i = static_cast<int>(levels()); i <= bins; ++i) {
    const double d = candidate_kl(h, i, levels());
    if (d < best) {
      best = d;
      best_i = i;
    }
  }
  return std::min(static_cast<double>(best_i) * hist_.width(), amax);
}

// ---- MSE -------------------------------------------------------------------------------

namespace {
// An antiderivative of e(x)^2, e(x) = x - step * round(x / step) the rounding
// error: e is periodic, each period [n*step - step/2, n*step + step/2)
// contributing step^3 / 12.
double rounding_error_integral(double x, double step) {
  const double y = x + 0.5 * step;
  const double n = std::floor(y / step);
  const double r = y - n * step - 0.5 * step;  // e(x), in [-step/2, step/2)
  return n * step * step * step / 12.0 + (r * r * r + step * step * step / 8.0) / 3.0;
}
}  // namespace

double MseObserver::expected_error(double t) const {
  if (!(t > 0)) throw std::invalid_argument("mse observer: threshold must be > 0, got " + fmt(t));
  const std::vector<double>& h = hist_.counts();
  const double w = hist_.width();
  const double step = t / static_cast<double>(levels() - 1);
  double err = 0;
  for (size_t j = 0; j < h.size(); ++j) {
    if (h[j] == 0) continue;
    const double a = static_cast<double>(j) * w, b = a + w;
    double e = 0;
    // [a, min(b, t)]: rounding error; [max(a, t), b]: clipping error (x - t)^2.
    const double in_end = std::min(b, t);
    if (in_end > a) e += rounding_error_integral(in_end, step) - rounding_error_integral(a, step);
    const double out_begin = std::max(a, t);
    if (b > out_begin) e += (std::pow(b - t, 3) - std::pow(out_begin - t, 3)) / 3.0;
    err += h[j] * e / w;
  }
  return err / hist_.total();
}

double MseObserver::threshold() const {
  if (!has_data()) no_data();
  const double amax = std::max(std::fabs(min_), std::fabs(max_));
  if (!(amax > 0)) return 0.0;
  double best = kInf, best_t = amax;
  for (int i = 1; i <= hist_.bins(); ++i) {
    const double t = static_cast<double>(i) * hist_.width();
    const double e = expected_error(t);
    if (e < best) {
      best = e;
      best_t = t;
    }
  }
  return std::min(best_t, amax);
}

// ---- per-channel MinMax -------------------------------------------------------------------

PerChannelMinMaxObserver::PerChannelMinMaxObserver(int axis) : axis_(axis) {}

Range PerChannelMinMaxObserver::range() const {
  if (!has_data() || min_.empty()) no_data();
  return Range{static_cast<float>(*std::min_element(min_.begin(), min_.end())),
               static_cast<float>(*std::max_element(max_.begin(), max_.end()))};
}

std::vector<Range> PerChannelMinMaxObserver::channel_ranges() const {
  if (!has_data() || min_.empty()) no_data();
  std::vector<Range> out(min_.size());
  for (size_t c = 0; c < min_.size(); ++c) out[c] = Range{static_cast<float>(min_[c]), static_cast<float>(max_[c])};
  return out;
}

// x: [outer, C, inner] around axis.
void PerChannelMinMaxObserver::accumulate(const float* x, int64_t, std::span<const int64_t> shape, float, float) {
  const ChannelLayout l = channel_layout(shape, axis_, "minmax_per_channel observer");
  if (has_data() && static_cast<int64_t>(min_.size()) != l.channels) {
    throw std::invalid_argument("minmax_per_channel observer: saw " + std::to_string(min_.size()) +
                                " channels before, now " + std::to_string(l.channels));
  }
  if (!has_data()) {
    min_.assign(static_cast<size_t>(l.channels), kInf);
    max_.assign(static_cast<size_t>(l.channels), -kInf);
  }
  const float* p = x;
  for (int64_t o = 0; o < l.outer; ++o) {
    for (int64_t c = 0; c < l.channels; ++c) {
      float mn = std::numeric_limits<float>::infinity(), mx = -mn;
      for (int64_t k = 0; k < l.inner; ++k, ++p) {
        mn = std::min(mn, *p);
        mx = std::max(mx, *p);
      }
      min_[c] = std::min(min_[c], static_cast<double>(mn));
      max_[c] = std::max(max_[c], static_cast<double>(mx));
    }
  }
  if (Communicator* g = peers()) {
    // Every rank's running extremes, in one max-reduction: [-min..., max...]
    // (negation is exact).
    const size_t c = min_.size();
    std::vector<double> v(2 * c);
    for (size_t k = 0; k < c; ++k) {
      v[k] = -min_[k];
      v[c + k] = max_[k];
    }
    g->allreduce(v.data(), v.size(), Reduce::max);
    for (size_t k = 0; k < c; ++k) {
      min_[k] = -v[k];
      max_[k] = v[c + k];
    }
  }
}

void PerChannelMinMaxObserver::clear() {
  min_.clear();
  max_.clear();
}

std::vector<double> PerChannelMinMaxObserver::save() const {
  std::vector<double> v{static_cast<double>(axis_), static_cast<double>(min_.size())};
  v.insert(v.end(), min_.begin(), min_.end());
  v.insert(v.end(), max_.begin(), max_.end());
  return v;
}

void PerChannelMinMaxObserver::restore(std::span<const double> v) {
  if (v.size() < 2 || v[1] < 0 || v[1] != std::floor(v[1]) || v.size() != 2 + 2 * static_cast<size_t>(v[1])) {
    throw std::invalid_argument("minmax_per_channel observer state: expected [axis, C, C mins, C maxs]");
  }
  axis_ = static_cast<int>(v[0]);
  const size_t c = static_cast<size_t>(v[1]);
  min_.assign(v.begin() + 2, v.begin() + 2 + static_cast<std::ptrdiff_t>(c));
  max_.assign(v.begin() + 2 + static_cast<std::ptrdiff_t>(c), v.end());
}

// ---- construction ----------------------------------------------------------------------------

std::unique_ptr<Observer> make_observer(const ObserverConfig& c) {
  if (c.kind == "minmax") return std::make_unique<MinMaxObserver>();
  if (c.kind == "ema") return std::make_unique<MovingAverageObserver>(c.decay, c.include_zero, c.initial);
  if (c.kind == "percentile") return std::make_unique<PercentileObserver>(c.percentile, c.bins);
  if (c.kind == "meanstd") return std::make_unique<MeanStdObserver>(c.k);
  if (c.kind == "entropy") {
    check_bins(c.bins, "entropy observer");
    return std::make_unique<EntropyObserver>(c.bits, c.bins);
  }
  if (c.kind == "mse") {
    check_bins(c.bins, "mse observer");
    return std::make_unique<MseObserver>(c.bits, c.bins);
  }
  if (c.kind == "minmax_per_channel") return std::make_unique<PerChannelMinMaxObserver>(c.axis);
  throw std::invalid_argument("unknown observer kind '" + c.kind +
                              "' (expected minmax, ema, percentile, meanstd, entropy, mse or minmax_per_channel)");
}

std::unique_ptr<Observer> restore_observer(const ObserverState& s) {
  ObserverConfig c;
  c.kind = s.kind;
  std::unique_ptr<Observer> obs = make_observer(c);
  obs->load(s);
  return obs;
}

}  // namespace octet::quant
