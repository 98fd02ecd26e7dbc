// quant/fake_quant.cpp: FakeQuant (TF), QDQv2 (TF) and LSQ, forward and
// backward, per tensor and per channel (see fake_quant.h).
// Over 600 lines: three ops x (forward, backward) x (per tensor, per channel),
// each written out next to its one-element reference so the two can be read
// together.
//
// Structure: every op turns its range arguments into one small struct per
// channel (all float math that TF does once per call happens here), then
// walks x as [outer, C, inner] in fixed blocks of at most kBlock elements that
// never straddle a channel. A block is the unit of parallel work, of partial
// sums (combined in block order, so results do not depend on the thread
// count) and of random streams for stochastic rounding.
#include "quant/fake_quant.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

#include "core/parallel.h"

namespace octet::quant {

namespace {

// ---- blocks -----------------------------------------------------------------

constexpr int64_t kBlock = 4096;            // elements per block
constexpr int64_t kTaskElements = 1 << 15;  // elements per parallel task, roughly

struct Block {
  int64_t begin = 0, end = 0;  // flat offsets into x
  int64_t channel = 0;
};

class BlockGrid {
 public:
  explicit BlockGrid(const ChannelLayout& l) : l_(l) {
    per_row_ = l.inner > 0 ? (l.inner + kBlock - 1) / kBlock : 0;
    count_ = l.outer * l.channels * per_row_;
  }
  int64_t count() const { return count_; }
  Block at(int64_t b) const {
    const int64_t row = b / per_row_;
    const int64_t j = b % per_row_;
    Block blk;
    blk.begin = row * l_.inner + j * kBlock;
    blk.end = std::min(blk.begin + kBlock, (row + 1) * l_.inner);
    blk.channel = row % l_.channels;
    return blk;
  }
  // Calls fn(block_index, block) for every block, in parallel.
  template <class F>
  void run(F&& fn) const {
    const int64_t typical = std::max<int64_t>(1, std::min(l_.inner, kBlock));
    const int64_t grain = std::max<int64_t>(1, kTaskElements / typical);
    parallel_for(0, count_, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) fn(b, at(b));
    });
  }

 private:
  ChannelLayout l_;
  int64_t per_row_ = 0;
  int64_t count_ = 0;
};

// ---- rounding dispatch ------------------------------------------------------------

// Calls body(round) with round a callable float(float) for `mode`; the
// deterministic modes are stateless lambdas the compiler inlines and
// vectorizes, the stochastic one draws from stream `block` of `seed`.
template <class Body>
void with_rounder(RoundMode mode, uint64_t seed, int64_t block, Body&& body) {
  switch (mode) {
    case RoundMode::half_to_even: body([](float v) { return round_half_to_even(v); }); return;
    case RoundMode::half_up: body([](float v) { return round_half_up(v); }); return;
    case RoundMode::half_away_from_zero: body([](float v) { return round_half_away_from_zero(v); }); return;
    case RoundMode::stochastic: {
      Rng rng(seed, static_cast<uint64_t>(block));
      body([&rng](float v) { return round_stochastic(v, rng.uniform()); });
      return;
    }
  }
}

uint64_t draw_seed(RoundMode mode, Rng* rng, const char* who) {
  if (mode != RoundMode::stochastic) return 0;
  if (rng == nullptr) throw std::invalid_argument(std::string(who) + ": stochastic rounding needs an Rng");
  const uint64_t hi = rng->next_u32();
  return (hi << 32) | rng->next_u32();
}

// ---- small helpers ------------------------------------------------------------------

std::string fmt(double v) {
  std::ostringstream os;
  os.precision(9);
  os << v;
  return os.str();
}

std::string channel_suffix(int64_t c, int64_t channels) {
  return channels > 1 ? " (channel " + std::to_string(c) + ")" : "";
}

void check_defined(const Tensor& t, const char* who, const char* what) {
  if (!t.defined()) throw std::invalid_argument(std::string(who) + ": " + what + " is undefined");
}

// A gradient tensor of `like`'s shape from per-channel double sums.
Tensor from_sums(const Tensor& like, const std::vector<double>& sums) {
  Tensor t = Tensor::empty(like.shape());
  for (size_t c = 0; c < sums.size(); ++c) t.data()[c] = static_cast<float>(sums[c]);
  return t;
}

// Per-block partial sums -> per-channel sums, in block order (deterministic).
void reduce_partials(const BlockGrid& grid, const std::vector<double>& partial, std::vector<double>& out) {
  std::fill(out.begin(), out.end(), 0.0);
  for (int64_t b = 0; b < grid.count(); ++b) out[grid.at(b).channel] += partial[b];
}

// =====================================================================================
// FakeQuant
// =====================================================================================

// Everything TF's FakeQuant kernel derives from (min, max) once per channel.
struct FqChannel {
  float nudged_min = 0, nudged_max = 0;
  float scale = 1, inv_scale = 1;
  float quant_zero = 0;    // floor(-nudged_min * inv_scale + 0.5) = zero_point - quant_min
  bool zero_range = false; // min == max == 0: TF outputs 0 and passes every gradient to x
  int64_t zero_point = 0;
};

IntRange fq_range(const FakeQuantOptions& opt) { return int_range(opt.bits, /*is_signed=*/false, opt.narrow_range); }

FqChannel fq_channel(float min, float max, const IntRange& r, const char* who, int64_t c, int64_t channels) {
  if (!std::isfinite(min) || !std::isfinite(max)) {
    throw std::invalid_argument(std::string(who) + ": min and max must be finite, got [" + fmt(min) + ", " +
                                fmt(max) + "]" + channel_suffix(c, channels));
  }
  if (min > max) {
    throw std::invalid_argument(std::string(who) + ": min " + fmt(min) + " > max " + fmt(max) +
                                channel_suffix(c, channels));
  }
  FqChannel p;
  if (min == max) {
    if (min != 0.0f) {
      throw std::invalid_argument(std::string(who) + ": empty range min == max == " + fmt(min) +
                                  " (only [0, 0] is allowed: it outputs zeros, as TF does)" +
                                  channel_suffix(c, channels));
    }
    p.zero_range = true;
    return p;
  }
  const Nudged<float> n = nudge(min, max, r.qmin, r.qmax);
  p.nudged_min = n.nudged_min;
  p.nudged_max = n.nudged_max;
  p.scale = n.scale;
  p.inv_scale = n.inv_scale;
  p.quant_zero = floor_exact(-n.nudged_min * n.inv_scale + 0.5f);
  p.zero_point = n.zero_point;
  return p;
}

// x, y: n contiguous values of one channel. TF's per-tensor kernel divides by
// scale (kDivide), its per-channel kernel multiplies by inv_scale.
template <bool kDivide, class Round>
inline void fq_forward(const float* x, float* y, int64_t n, const FqChannel& p, Round round) {
  const float lo = p.nudged_min, hi = p.nudged_max, s = p.scale, inv = p.inv_scale, qz = p.quant_zero;
  for (int64_t i = 0; i < n; ++i) {
    const float clamped = std::max(std::min(x[i], hi), lo);
    const float shifted = clamped - lo;
    const float steps = kDivide ? shifted / s : shifted * inv;
    y[i] = round(steps - qz) * s;
  }
}

// x, dy, dx: n values of one channel; dx may be null (x needs no gradient).
// Returns the sums of dy below / above the nudged range.
inline void fq_backward(const float* x, const float* dy, float* dx, int64_t n, const FqChannel& p, double& below,
                        double& above) {
  const float lo = p.nudged_min, hi = p.nudged_max;
  double sb = 0, sa = 0;
  if (p.zero_range) {
    if (dx) std::copy(dy, dy + n, dx);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float xi = x[i], g = dy[i];
      if (dx) dx[i] = (xi >= lo && xi <= hi) ? g : 0.0f;
      sb += xi < lo ? g : 0.0f;
      sa += xi > hi ? g : 0.0f;
    }
  }
  below = sb;
  above = sa;
}

Tensor fake_quant_impl(const char* who, const Tensor& x, const Tensor& min, const Tensor& max, int axis,
                       bool per_channel, const FakeQuantOptions& opt) {
  check_defined(x, who, "x");
  check_defined(min, who, "min");
  check_defined(max, who, "max");
  check_bits(opt.bits, who);
  const ChannelLayout layout = per_channel ? channel_layout(x.shape(), axis, who) : ChannelLayout{1, 1, x.numel()};
  const int64_t channels = layout.channels;
  if (min.numel() != channels || max.numel() != channels) {
    throw std::invalid_argument(std::string(who) + ": min and max need " + std::to_string(channels) +
                                " values, got shapes " + shape_str(min.shape()) + " and " + shape_str(max.shape()) +
                                " for x " + shape_str(x.shape()));
  }
  const IntRange r = fq_range(opt);
  auto params = std::make_shared<std::vector<FqChannel>>(channels);
  for (int64_t c = 0; c < channels; ++c) (*params)[c] = fq_channel(min.data()[c], max.data()[c], r, who, c, channels);
  const uint64_t seed = draw_seed(opt.round, opt.rng, who);

  Tensor y = Tensor::empty(x.shape());
  const BlockGrid grid(layout);
  const float* xp = x.data();
  float* yp = y.data();
  grid.run([&](int64_t b, const Block& blk) {
    const FqChannel& p = (*params)[blk.channel];
    const int64_t n = blk.end - blk.begin;
    if (p.zero_range) {
      std::fill(yp + blk.begin, yp + blk.end, 0.0f);
      return;
    }
    with_rounder(opt.round, seed, b, [&](auto round) {
      if (per_channel) {
        fq_forward<false>(xp + blk.begin, yp + blk.begin, n, p, round);
      } else {
        fq_forward<true>(xp + blk.begin, yp + blk.begin, n, p, round);
      }
    });
  });

  const bool need_dx = x.requires_grad();
  const bool need_range = min.requires_grad() || max.requires_grad();
  return record(who, y, {x, min, max}, [x, min, max, params, layout, need_dx, need_range](const Tensor& dy) {
    const BlockGrid g(layout);
    Tensor dx = need_dx ? Tensor::empty(x.shape()) : Tensor();
    std::vector<double> below(g.count()), above(g.count());
    const float* xp2 = x.data();
    const float* dyp = dy.data();
    float* dxp = need_dx ? dx.data() : nullptr;
    g.run([&](int64_t b, const Block& blk) {
      fq_backward(xp2 + blk.begin, dyp + blk.begin, dxp ? dxp + blk.begin : nullptr, blk.end - blk.begin,
                  (*params)[blk.channel], below[b], above[b]);
    });
    Tensor dmin, dmax;
    if (need_range) {
      std::vector<double> sums(layout.channels);
      reduce_partials(g, below, sums);
      dmin = from_sums(min, sums);
      reduce_partials(g, above, sums);
      dmax = from_sums(max, sums);
    }
    return std::vector<Tensor>{dx, dmin, dmax};
  });
}

// =====================================================================================
// QDQv2
// =====================================================================================

struct QdqChannel {
  float scale = 1;          // codes per real unit (TF's scale)
  float inverse_scale = 1;  // real units per code
  float min_range = 0, max_range = 0;  // the clamp, used when range_given
  float grad_min = 0, grad_max = 0;    // clipped's mask: the op's range inputs
};

IntRange qdq_range(const QdqOptions& opt) {
  // TF's narrow_range only moves the signed minimum (-2^(b-1) + 1).
  return int_range(opt.bits, opt.signed_output, opt.signed_output && opt.narrow_range);
}

QdqChannel qdq_channel(float lo, float hi, float in_min, float in_max, const IntRange& r) {
  const SymmetricRange<float> s = symmetric_range(lo, hi, r.qmin, r.qmax);
  QdqChannel p;
  p.scale = s.scale;
  p.inverse_scale = s.inverse_scale;
  p.min_range = s.min_range;
  p.max_range = s.max_range;
  p.grad_min = in_min;
  p.grad_max = in_max;
  return p;
}

// x, y: n contiguous values of one channel.
template <bool kClamp, class Round>
inline void qdq_forward(const float* x, float* y, int64_t n, const QdqChannel& p, Round round) {
  const float lo = p.min_range, hi = p.max_range, s = p.scale, inv = p.inverse_scale;
  for (int64_t i = 0; i < n; ++i) {
    const float v = kClamp ? std::max(std::min(x[i], hi), lo) : x[i];
    y[i] = round(v * s) * inv;
  }
}

Tensor qdq_impl(const char* who, const Tensor& x, std::span<const float> min, std::span<const float> max, int axis,
                bool per_channel, const QdqOptions& opt) {
  check_defined(x, who, "x");
  check_bits(opt.bits, who);
  const ChannelLayout layout = per_channel ? channel_layout(x.shape(), axis, who) : ChannelLayout{1, 1, x.numel()};
  const int64_t channels = layout.channels;
  if (static_cast<int64_t>(min.size()) != channels || static_cast<int64_t>(max.size()) != channels) {
    throw std::invalid_argument(std::string(who) + ": min and max need " + std::to_string(channels) +
                                " values, got " + std::to_string(min.size()) + " and " + std::to_string(max.size()) +
                                " for x " + shape_str(x.shape()));
  }
  for (int64_t c = 0; c < channels; ++c) {
    if (std::isnan(min[c]) || std::isnan(max[c])) {
      throw std::invalid_argument(std::string(who) + ": NaN range input" + channel_suffix(c, channels));
    }
    if (opt.range_given && (!std::isfinite(min[c]) || !std::isfinite(max[c]) || min[c] > max[c])) {
      throw std::invalid_argument(std::string(who) + ": invalid given range [" + fmt(min[c]) + ", " + fmt(max[c]) +
                                  "]" + channel_suffix(c, channels));
    }
  }
  const IntRange r = qdq_range(opt);
  const BlockGrid grid(layout);
  const float* xp = x.data();

  // The range each channel uses: given, or measured (one extra pass over x).
  std::vector<float> lo(min.begin(), min.end()), hi(max.begin(), max.end());
  if (!opt.range_given) {
    std::vector<float> bmin(grid.count()), bmax(grid.count());
    std::vector<int64_t> nan_at(grid.count(), -1);
    grid.run([&](int64_t b, const Block& blk) {
      float mn = std::numeric_limits<float>::infinity(), mx = -mn;
      bool finite = true;
      for (int64_t i = blk.begin; i < blk.end; ++i) {
        const float v = xp[i];
        mn = std::min(mn, v);  // std::min/max skip a NaN in v, hence the
        mx = std::max(mx, v);  // separate check (v - v is NaN for NaN and +-inf)
        finite = finite && (v - v == 0.0f);
      }
      bmin[b] = mn;
      bmax[b] = mx;
      if (!finite) {
        for (int64_t i = blk.begin; i < blk.end; ++i)
          if (!std::isfinite(xp[i])) {
            nan_at[b] = i;
            break;
          }
      }
    });
    std::fill(lo.begin(), lo.end(), std::numeric_limits<float>::infinity());
    std::fill(hi.begin(), hi.end(), -std::numeric_limits<float>::infinity());
    for (int64_t b = 0; b < grid.count(); ++b) {
      if (nan_at[b] >= 0) {
        throw std::invalid_argument(std::string(who) + ": cannot measure the range: x has " +
                                    fmt(xp[nan_at[b]]) + " at offset " + std::to_string(nan_at[b]));
      }
      const int64_t c = grid.at(b).channel;
      lo[c] = std::min(lo[c], bmin[b]);
      hi[c] = std::max(hi[c], bmax[b]);
    }
    for (int64_t c = 0; c < channels; ++c) {
      if (lo[c] > hi[c]) lo[c] = hi[c] = 0.0f;  // an empty channel
    }
  }
  auto params = std::make_shared<std::vector<QdqChannel>>(channels);
  for (int64_t c = 0; c < channels; ++c) (*params)[c] = qdq_channel(lo[c], hi[c], min[c], max[c], r);
  const uint64_t seed = draw_seed(opt.round, opt.rng, who);

  Tensor y = Tensor::empty(x.shape());
  float* yp = y.data();
  grid.run([&](int64_t b, const Block& blk) {
    const QdqChannel& p = (*params)[blk.channel];
    const int64_t n = blk.end - blk.begin;
    with_rounder(opt.round, seed, b, [&](auto round) {
      if (opt.range_given) {
        qdq_forward<true>(xp + blk.begin, yp + blk.begin, n, p, round);
      } else {
        qdq_forward<false>(xp + blk.begin, yp + blk.begin, n, p, round);
      }
    });
  });

  if (opt.gradient == QdqGradient::straight_through) {
    return record(who, y, {x}, [](const Tensor& dy) { return std::vector<Tensor>{dy}; });
  }
  return record(who, y, {x}, [x, params, layout](const Tensor& dy) {
    const BlockGrid g(layout);
    Tensor dx = Tensor::empty(x.shape());
    const float* xp2 = x.data();
    const float* dyp = dy.data();
    float* dxp = dx.data();
    g.run([&](int64_t, const Block& blk) {
      const float lo2 = (*params)[blk.channel].grad_min, hi2 = (*params)[blk.channel].grad_max;
      for (int64_t i = blk.begin; i < blk.end; ++i) dxp[i] = (xp2[i] >= lo2 && xp2[i] <= hi2) ? dyp[i] : 0.0f;
    });
    return std::vector<Tensor>{dx};
  });
}

// =====================================================================================
// LSQ
// =====================================================================================

struct LsqRange {
  float lo = 0, hi = 0;  // -Qn, Qp as floats
  int64_t qn = 0, qp = 0;
};

LsqRange lsq_range(const LsqOptions& opt) {
  const IntRange r = int_range(opt.bits, opt.is_signed, /*narrow=*/false);
  return LsqRange{static_cast<float>(r.qmin), static_cast<float>(r.qmax), -r.qmin, r.qmax};
}

void check_step(float s, const char* who, int64_t c, int64_t channels) {
  if (!(s > 0.0f) || !std::isfinite(s)) {
    throw std::invalid_argument(std::string(who) + ": step must be finite and > 0, got " + fmt(s) +
                                channel_suffix(c, channels));
  }
}

template <class Round>
inline void lsq_forward(const float* x, float* y, int64_t n, float s, const LsqRange& q, Round round) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] / s;
    y[i] = round(std::min(std::max(v, q.lo), q.hi)) * s;
  }
}

// dx may be null. Returns sum(dy * d) (before the gradient scale).
template <class Round>
inline double lsq_backward(const float* x, const float* dy, float* dx, int64_t n, float s, const LsqRange& q,
                           Round round) {
  double ds = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] / s;
    const float r = round(std::min(std::max(v, q.lo), q.hi));  // the forward's code, same draws
    const bool inside = q.lo < v && v < q.hi;
    if (dx) dx[i] = inside ? dy[i] : 0.0f;
    const float d = inside ? r - v : (v <= q.lo ? q.lo : q.hi);
    ds += static_cast<double>(dy[i]) * d;
  }
  return ds;
}

Tensor lsq_impl(const char* who, const Tensor& x, const Tensor& step, int axis, bool per_channel,
                const LsqOptions& opt) {
  check_defined(x, who, "x");
  check_defined(step, who, "step");
  check_bits(opt.bits, who);
  const ChannelLayout layout = per_channel ? channel_layout(x.shape(), axis, who) : ChannelLayout{1, 1, x.numel()};
  const int64_t channels = layout.channels;
  if (step.numel() != channels) {
    throw std::invalid_argument(std::string(who) + ": step needs " + std::to_string(channels) + " values, got shape " +
                                shape_str(step.shape()) + " for x " + shape_str(x.shape()));
  }
  if (!(opt.grad_scale >= 0.0f) || !std::isfinite(opt.grad_scale)) {
    throw std::invalid_argument(std::string(who) + ": grad_scale must be >= 0 (0 = automatic), got " +
                                fmt(opt.grad_scale));
  }
  auto steps = std::make_shared<std::vector<float>>(step.data(), step.data() + channels);
  for (int64_t c = 0; c < channels; ++c) check_step((*steps)[c], who, c, channels);
  const LsqRange q = lsq_range(opt);
  const uint64_t seed = draw_seed(opt.round, opt.rng, who);
  const RoundMode mode = opt.round;

  Tensor y = Tensor::empty(x.shape());
  const BlockGrid grid(layout);
  const float* xp = x.data();
  float* yp = y.data();
  grid.run([&](int64_t b, const Block& blk) {
    with_rounder(mode, seed, b, [&](auto round) {
      lsq_forward(xp + blk.begin, yp + blk.begin, blk.end - blk.begin, (*steps)[blk.channel], q, round);
    });
  });

  const int64_t per_step = channels > 0 ? layout.numel() / channels : 0;
  const double g_scale = opt.grad_scale > 0.0f
                             ? static_cast<double>(opt.grad_scale)
                             : 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(per_step, 1)) *
                                               static_cast<double>(q.qp));
  const bool need_dx = x.requires_grad();
  const bool need_ds = step.requires_grad();
  return record(who, y, {x, step}, [x, step, steps, layout, q, seed, mode, g_scale, need_dx, need_ds](const Tensor& dy) {
    const BlockGrid g(layout);
    Tensor dx = need_dx ? Tensor::empty(x.shape()) : Tensor();
    std::vector<double> partial(g.count());
    const float* xp2 = x.data();
    const float* dyp = dy.data();
    float* dxp = need_dx ? dx.data() : nullptr;
    g.run([&](int64_t b, const Block& blk) {
      with_rounder(mode, seed, b, [&](auto round) {
        partial[b] = lsq_backward(xp2 + blk.begin, dyp + blk.begin, dxp ? dxp + blk.begin : nullptr,
                                  blk.end - blk.begin, (*steps)[blk.channel], q, round);
      });
    });
    Tensor ds;
    if (need_ds) {
      std::vector<double> sums(layout.channels);
      reduce_partials(g, partial, sums);
      for (double& s : sums) s *= g_scale;
      ds = from_sums(step, sums);
    }
    return std::vector<Tensor>{dx, ds};
  });
}

}  // namespace

// ---- FakeQuant ------------------------------------------------------------------------

Tensor fake_quant(const Tensor& x, const Tensor& min, const Tensor& max, const FakeQuantOptions& opt) {
  return fake_quant_impl("fake_quant", x, min, max, 0, false, opt);
}

Tensor fake_quant_per_channel(const Tensor& x, const Tensor& min, const Tensor& max, int axis,
                              const FakeQuantOptions& opt) {
  return fake_quant_impl("fake_quant_per_channel", x, min, max, axis, true, opt);
}

QuantParams fake_quant_params(float min, float max, const FakeQuantOptions& opt) {
  check_bits(opt.bits, "fake_quant_params");
  const IntRange r = fq_range(opt);
  const FqChannel p = fq_channel(min, max, r, "fake_quant_params", 0, 1);
  if (p.zero_range) return QuantParams{1.0f, r.qmin, r.qmin, r.qmax};
  return QuantParams{p.scale, p.zero_point, r.qmin, r.qmax};
}

float fake_quant_ref(float x, float min, float max, const FakeQuantOptions& opt, bool per_channel, float u) {
  check_bits(opt.bits, "fake_quant_ref");
  // TF: both zero -> zeros.
  if (min == 0.0f && max == 0.0f) return 0.0f;
  const IntRange r = fq_range(opt);
  // Nudge, spelled out.
  const float quant_min_float = static_cast<float>(r.qmin);
  const float quant_max_float = static_cast<float>(r.qmax);
  const float scale = (max - min) / (quant_max_float - quant_min_float);
  const float inv_scale = (quant_max_float - quant_min_float) / (max - min);
  const float zero_point_from_min = quant_min_float - min / scale;
  int64_t nudged_zero_point;
  if (zero_point_from_min < quant_min_float) {
    nudged_zero_point = r.qmin;
  } else if (zero_point_from_min > quant_max_float) {
    nudged_zero_point = r.qmax;
  } else {
    nudged_zero_point = static_cast<int64_t>(std::round(zero_point_from_min));
  }
  const float nudged_min = (quant_min_float - static_cast<float>(nudged_zero_point)) * scale;
  const float nudged_max = (quant_max_float - static_cast<float>(nudged_zero_point)) * scale;
  // The kernel.
  const float quant_zero = std::floor(-nudged_min * inv_scale + 0.5f);
  const float clamped = std::max(std::min(x, nudged_max), nudged_min);
  const float clamped_shifted = clamped - nudged_min;
  const float steps = per_channel ? clamped_shifted * inv_scale : clamped_shifted / scale;
  return round_with(opt.round, steps - quant_zero, u) * scale;
}

FakeQuantGrad fake_quant_grad_ref(float x, float dy, float min, float max, const FakeQuantOptions& opt) {
  if (min == 0.0f && max == 0.0f) return FakeQuantGrad{dy, 0.0f, 0.0f};
  const IntRange r = fq_range(opt);
  const Nudged<float> n = nudge(min, max, r.qmin, r.qmax);
  FakeQuantGrad g;
  g.dx = (x >= n.nudged_min && x <= n.nudged_max) ? dy : 0.0f;
  g.dmin = x < n.nudged_min ? dy : 0.0f;
  g.dmax = x > n.nudged_max ? dy : 0.0f;
  return g;
}

// ---- QDQv2 ------------------------------------------------------------------------------

Tensor quantize_dequantize_v2(const Tensor& x, float min, float max, const QdqOptions& opt) {
  return qdq_impl("quantize_dequantize_v2", x, std::span<const float>(&min, 1), std::span<const float>(&max, 1), 0,
                  false, opt);
}

Tensor quantize_dequantize_v2_per_channel(const Tensor& x, std::span<const float> min, std::span<const float> max,
                                          int axis, const QdqOptions& opt) {
  return qdq_impl("quantize_dequantize_v2_per_channel", x, min, max, axis, true, opt);
}

QuantParams qdq_v2_params(float lo, float hi, const QdqOptions& opt) {
  check_bits(opt.bits, "qdq_v2_params");
  const IntRange r = qdq_range(opt);
  const SymmetricRange<float> s = symmetric_range(lo, hi, r.qmin, r.qmax);
  const float scale = s.inverse_scale > 0.0f && std::isfinite(s.inverse_scale) ? s.inverse_scale : 1.0f;
  return QuantParams{scale, 0, r.qmin, r.qmax};
}

float qdq_v2_ref(float x, float lo, float hi, const QdqOptions& opt, float u) {
  check_bits(opt.bits, "qdq_v2_ref");
  // ComputeQuantizationRange, spelled out.
  const int64_t min_quantized = opt.signed_output ? (opt.narrow_range ? -(int64_t{1} << (opt.bits - 1)) + 1
                                                                      : -(int64_t{1} << (opt.bits - 1)))
                                                  : 0;
  const int64_t max_quantized =
      opt.signed_output ? (int64_t{1} << (opt.bits - 1)) - 1 : (int64_t{1} << opt.bits) - 1;
  float min_range = lo, max_range = hi;
  const float scale_from_min_side = (static_cast<float>(min_quantized) * min_range > 0)
                                        ? static_cast<float>(min_quantized) / min_range
                                        : std::numeric_limits<float>::max();
  const float scale_from_max_side = (static_cast<float>(max_quantized) * max_range > 0)
                                        ? static_cast<float>(max_quantized) / max_range
                                        : std::numeric_limits<float>::max();
  float scale, inverse_scale;
  if (scale_from_min_side < scale_from_max_side) {
    scale = scale_from_min_side;
    inverse_scale = min_range / static_cast<float>(min_quantized);
    max_range = static_cast<float>(max_quantized) * inverse_scale;
  } else {
    scale = scale_from_max_side;
    inverse_scale = max_range / static_cast<float>(max_quantized);
    min_range = static_cast<float>(min_quantized) * inverse_scale;
  }
  const float v = opt.range_given ? std::max(std::min(x, max_range), min_range) : x;
  return round_with(opt.round, v * scale, u) * inverse_scale;
}

float qdq_v2_grad_ref(float x, float dy, float min, float max, const QdqOptions& opt) {
  if (opt.gradient == QdqGradient::straight_through) return dy;
  return (x >= min && x <= max) ? dy : 0.0f;
}

// ---- LSQ -------------------------------------------------------------------------------------

Tensor lsq(const Tensor& x, const Tensor& step, const LsqOptions& opt) {
  return lsq_impl("lsq", x, step, 0, false, opt);
}

Tensor lsq_per_channel(const Tensor& x, const Tensor& step, int axis, const LsqOptions& opt) {
  return lsq_impl("lsq_per_channel", x, step, axis, true, opt);
}

float lsq_init_step(const Tensor& x, const LsqOptions& opt) {
  check_defined(x, "lsq_init_step", "x");
  check_bits(opt.bits, "lsq_init_step");
  if (x.numel() == 0) throw std::invalid_argument("lsq_init_step: x is empty");
  double sum = 0;
  for (int64_t i = 0; i < x.numel(); ++i) sum += std::fabs(static_cast<double>(x.data()[i]));
  const LsqRange q = lsq_range(opt);
  const double s = 2.0 * (sum / static_cast<double>(x.numel())) / std::sqrt(static_cast<double>(q.qp));
  if (!(s > 0.0) || !std::isfinite(s)) {
    throw std::invalid_argument("lsq_init_step: mean |x| is " + fmt(sum / static_cast<double>(x.numel())) +
                                "; the step would be " + fmt(s));
  }
  return static_cast<float>(s);
}

QuantParams lsq_params(float step, const LsqOptions& opt) {
  check_bits(opt.bits, "lsq_params");
  check_step(step, "lsq_params", 0, 1);
  const IntRange r = int_range(opt.bits, opt.is_signed, false);
  return QuantParams{step, 0, r.qmin, r.qmax};
}

float lsq_ref(float x, float step, const LsqOptions& opt, float u) {
  const IntRange r = int_range(opt.bits, opt.is_signed, false);
  const float qn = static_cast<float>(-r.qmin), qp = static_cast<float>(r.qmax);
  const float v = x / step;
  const float clipped = std::min(std::max(v, -qn), qp);  // hardtanh(v, -Qn, Qp)
  return round_with(opt.round, clipped, u) * step;
}

LsqGrad lsq_grad_ref(float x, float dy, float step, const LsqOptions& opt) {
  const IntRange r = int_range(opt.bits, opt.is_signed, false);
  const float qn = static_cast<float>(-r.qmin), qp = static_cast<float>(r.qmax);
  const float v = x / step;
  LsqGrad g;
  if (-qn < v && v < qp) {
    g.dx = dy;
    g.dstep = dy * (round_with(opt.round, v, 0.0f) - v);
  } else {
    g.dx = 0.0f;
    g.dstep = dy * (v <= -qn ? -qn : qp);
  }
  return g;
}

}  // namespace octet::quant
