// quant/qmath.cpp: parameter choice and quantize/dequantize (see qmath.h).
#include "quant/qmath.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace octet::quant {

namespace {

std::string fmt(double v) {
  std::ostringstream os;
  os.precision(9);
  os << v;
  return os.str();
}

template <class Int>
const char* int_name() {
  if constexpr (std::is_same_v<Int, int8_t>) return "int8";
  if constexpr (std::is_same_v<Int, uint8_t>) return "uint8";
  if constexpr (std::is_same_v<Int, int16_t>) return "int16";
  if constexpr (std::is_same_v<Int, uint16_t>) return "uint16";
  return "int32";
}

template <class Int>
void check_fits(int64_t qmin, int64_t qmax, const char* who) {
  if (qmin < std::numeric_limits<Int>::min() || qmax > std::numeric_limits<Int>::max()) {
    throw std::invalid_argument(std::string(who) + ": codes [" + std::to_string(qmin) + ", " +
                                std::to_string(qmax) + "] do not fit " + int_name<Int>());
  }
}

void check_params(const QuantParams& p, const char* who) {
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale)) {
    throw std::invalid_argument(std::string(who) + ": scale must be finite and > 0, got " + fmt(p.scale));
  }
  if (p.qmin > p.qmax || p.zero_point < p.qmin || p.zero_point > p.qmax) {
    throw std::invalid_argument(std::string(who) + ": zero point " + std::to_string(p.zero_point) +
                                " outside codes [" + std::to_string(p.qmin) + ", " + std::to_string(p.qmax) + "]");
  }
}

// The one quantize rule; `u` feeds stochastic.
inline int64_t quantize_one(float x, double scale, int64_t zero_point, int64_t qmin, int64_t qmax, RoundMode mode,
                            float u) {
  double v = static_cast<double>(x) / scale;
  // Clamp before the conversion to int64 (huge or infinite x); the bounds are
  // outside [qmin, qmax] - zp, so the final clamp still decides.
  const double lo = static_cast<double>(qmin - zero_point) - 1.0;
  const double hi = static_cast<double>(qmax - zero_point) + 1.0;
  v = std::min(std::max(v, lo), hi);
  const int64_t q = static_cast<int64_t>(round_with(mode, v, u)) + zero_point;
  return std::min(std::max(q, qmin), qmax);
}

float draw(RoundMode mode, Rng* rng) { return mode == RoundMode::stochastic ? rng->uniform() : 0.0f; }

void check_rng(RoundMode mode, const Rng* rng, const char* who) {
  if (mode == RoundMode::stochastic && rng == nullptr) {
    throw std::invalid_argument(std::string(who) + ": stochastic rounding needs an Rng");
  }
}

[[noreturn]] void throw_nan(const char* who, size_t offset) {
  throw std::invalid_argument(std::string(who) + ": NaN input at offset " + std::to_string(offset));
}

}  // namespace

// ---- rounding -----------------------------------------------------------------

std::string_view round_mode_name(RoundMode mode) {
  switch (mode) {
    case RoundMode::half_to_even: return "half_to_even";
    case RoundMode::half_up: return "half_up";
    case RoundMode::half_away_from_zero: return "half_away_from_zero";
    case RoundMode::stochastic: return "stochastic";
  }
  return "?";
}

RoundMode parse_round_mode(std::string_view name) {
  for (RoundMode m : {RoundMode::half_to_even, RoundMode::half_up, RoundMode::half_away_from_zero,
                      RoundMode::stochastic}) {
    if (name == round_mode_name(m)) return m;
  }
  throw std::invalid_argument("unknown rounding mode '" + std::string(name) +
                              "' (expected half_to_even, half_up, half_away_from_zero or stochastic)");
}

// ---- ranges ---------------------------------------------------------------------

void check_bits(int bits, const char* who) {
  if (!((bits >= 2 && bits <= 16) || bits == 32)) {
    throw std::invalid_argument(std::string(who) + ": bit width must be 2..16 or 32, got " + std::to_string(bits));
  }
}

IntRange int_range(int bits, bool is_signed, bool narrow) {
  check_bits(bits, "int_range");
  IntRange r;
  if (is_signed) {
    r.qmin = -(int64_t{1} << (bits - 1));
    r.qmax = (int64_t{1} << (bits - 1)) - 1;
  } else {
    r.qmin = 0;
    r.qmax = (int64_t{1} << bits) - 1;
  }
  if (narrow) r.qmin += 1;
  return r;
}

float QuantParams::real_min() const {
  return static_cast<float>(static_cast<double>(scale) * static_cast<double>(qmin - zero_point));
}
float QuantParams::real_max() const {
  return static_cast<float>(static_cast<double>(scale) * static_cast<double>(qmax - zero_point));
}

ChannelLayout channel_layout(std::span<const int64_t> shape, int axis, const char* who) {
  const int ndim = static_cast<int>(shape.size());
  const int a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim) {
    std::string s = "[";
    for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    throw std::invalid_argument(std::string(who) + ": channel axis " + std::to_string(axis) +
                                " out of range for shape " + s + "]");
  }
  ChannelLayout l;
  for (int i = 0; i < a; ++i) l.outer *= shape[i];
  l.channels = shape[a];
  for (int i = a + 1; i < ndim; ++i) l.inner *= shape[i];
  return l;
}

QuantParams PerChannelParams::channel(int64_t c) const {
  if (c < 0 || c >= channels() || zero_point.size() != scale.size()) {
    throw std::out_of_range("PerChannelParams: channel " + std::to_string(c) + " of " +
                            std::to_string(channels()));
  }
  return QuantParams{scale[c], zero_point[c], qmin, qmax};
}

// ---- choosing parameters ---------------------------------------------------------

namespace {

template <class T>
QuantParams choose_in(T lo, T hi, const IntRange& r, bool symmetric) {
  QuantParams p;
  p.qmin = r.qmin;
  p.qmax = r.qmax;
  if (symmetric) {
    const SymmetricRange<T> s = symmetric_range(lo, hi, r.qmin, r.qmax);
    p.scale = static_cast<float>(s.inverse_scale);
    p.zero_point = 0;
  } else {
    const Nudged<T> n = nudge(lo, hi, r.qmin, r.qmax);
    p.scale = static_cast<float>(n.scale);
    p.zero_point = n.zero_point;
  }
  return p;
}

}  // namespace

QuantParams choose_params(float min, float max, const QuantSpec& spec) {
  check_bits(spec.bits, "choose_params");
  if (!std::isfinite(min) || !std::isfinite(max)) {
    throw std::invalid_argument("choose_params: range must be finite, got [" + fmt(min) + ", " + fmt(max) + "]");
  }
  if (min > max) {
    throw std::invalid_argument("choose_params: min " + fmt(min) + " > max " + fmt(max));
  }
  const IntRange r = int_range(spec.bits, spec.is_signed, spec.narrow);
  if (spec.symmetric && r.qmin > 0) {
    throw std::invalid_argument(
        "choose_params: symmetric unsigned narrow range has zero point 0 below qmin 1; "
        "use narrow = false (TF's QuantizeAndDequantizeV2 ignores narrow_range for unsigned)");
  }
  // Extend to contain 0 (TF's moving-average quantizer and PyTorch's observers do the same).
  const float lo = std::min(min, 0.0f);
  const float hi = std::max(max, 0.0f);
  if (lo == hi) {  // both 0: any scale represents the only value exactly
    return QuantParams{1.0f, std::clamp<int64_t>(0, r.qmin, r.qmax), r.qmin, r.qmax};
  }
  QuantParams p = spec.bits <= 16 ? choose_in<float>(lo, hi, r, spec.symmetric)
                                  : choose_in<double>(lo, hi, r, spec.symmetric);
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale)) {
    throw std::invalid_argument("choose_params: range [" + fmt(min) + ", " + fmt(max) +
                                "] gives an unusable scale " + fmt(p.scale));
  }
  return p;
}

PerChannelParams choose_params_per_channel(std::span<const float> mins, std::span<const float> maxs,
                                           const QuantSpec& spec, int axis) {
  if (mins.size() != maxs.size() || mins.empty()) {
    throw std::invalid_argument("choose_params_per_channel: need as many mins as maxs (got " +
                                std::to_string(mins.size()) + " and " + std::to_string(maxs.size()) +
                                "), at least one");
  }
  PerChannelParams out;
  out.axis = axis;
  out.scale.resize(mins.size());
  out.zero_point.resize(mins.size());
  for (size_t c = 0; c < mins.size(); ++c) {
    QuantParams p;
    try {
      p = choose_params(mins[c], maxs[c], spec);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string(e.what()) + " (channel " + std::to_string(c) + ")");
    }
    out.scale[c] = p.scale;
    out.zero_point[c] = p.zero_point;
    out.qmin = p.qmin;
    out.qmax = p.qmax;
  }
  return out;
}

// ---- quantize / dequantize --------------------------------------------------------

int64_t quantize(float x, const QuantParams& p, RoundMode mode, Rng* rng) {
  check_params(p, "quantize");
  check_rng(mode, rng, "quantize");
  if (std::isnan(x)) throw std::invalid_argument("quantize: NaN input");
  return quantize_one(x, p.scale, p.zero_point, p.qmin, p.qmax, mode, draw(mode, rng));
}

float dequantize(int64_t q, const QuantParams& p) {
  return static_cast<float>(static_cast<double>(p.scale) * static_cast<double>(q - p.zero_point));
}

template <class Int>
void quantize(std::span<const float> x, const QuantParams& p, std::span<Int> q, RoundMode mode, Rng* rng) {
  check_params(p, "quantize");
  check_rng(mode, rng, "quantize");
  check_fits<Int>(p.qmin, p.qmax, "quantize");
  if (x.size() != q.size()) {
    throw std::invalid_argument("quantize: " + std::to_string(x.size()) + " inputs but " +
                                std::to_string(q.size()) + " outputs");
  }
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) throw_nan("quantize", i);
    q[i] = static_cast<Int>(quantize_one(x[i], p.scale, p.zero_point, p.qmin, p.qmax, mode, draw(mode, rng)));
  }
}

template <class Int>
void dequantize(std::span<const Int> q, const QuantParams& p, std::span<float> x) {
  if (x.size() != q.size()) {
    throw std::invalid_argument("dequantize: " + std::to_string(q.size()) + " codes but " +
                                std::to_string(x.size()) + " outputs");
  }
  for (size_t i = 0; i < q.size(); ++i) x[i] = dequantize(static_cast<int64_t>(q[i]), p);
}

namespace {
void check_per_channel(size_t n, size_t m, const ChannelLayout& l, const PerChannelParams& p, const char* who) {
  if (static_cast<int64_t>(n) != l.numel() || n != m) {
    throw std::invalid_argument(std::string(who) + ": buffers of " + std::to_string(n) + " and " +
                                std::to_string(m) + " values for a layout of " + std::to_string(l.numel()));
  }
  if (p.channels() != l.channels || p.zero_point.size() != p.scale.size()) {
    throw std::invalid_argument(std::string(who) + ": " + std::to_string(p.channels()) +
                                " channel parameters for " + std::to_string(l.channels) + " channels");
  }
}
}  // namespace

// x, q: [outer, C, inner] (ChannelLayout), parameters per C.
template <class Int>
void quantize_per_channel(std::span<const float> x, const ChannelLayout& l, const PerChannelParams& p,
                          std::span<Int> q, RoundMode mode, Rng* rng) {
  check_per_channel(x.size(), q.size(), l, p, "quantize_per_channel");
  check_rng(mode, rng, "quantize_per_channel");
  check_fits<Int>(p.qmin, p.qmax, "quantize_per_channel");
  for (int64_t c = 0; c < l.channels; ++c) check_params(p.channel(c), "quantize_per_channel");
  size_t i = 0;
  for (int64_t o = 0; o < l.outer; ++o) {
    for (int64_t c = 0; c < l.channels; ++c) {
      for (int64_t k = 0; k < l.inner; ++k, ++i) {
        if (std::isnan(x[i])) throw_nan("quantize_per_channel", i);
        q[i] = static_cast<Int>(
            quantize_one(x[i], p.scale[c], p.zero_point[c], p.qmin, p.qmax, mode, draw(mode, rng)));
      }
    }
  }
}

template <class Int>
void dequantize_per_channel(std::span<const Int> q, const ChannelLayout& l, const PerChannelParams& p,
                            std::span<float> x) {
  check_per_channel(q.size(), x.size(), l, p, "dequantize_per_channel");
  size_t i = 0;
  for (int64_t o = 0; o < l.outer; ++o) {
    for (int64_t c = 0; c < l.channels; ++c) {
      const QuantParams pc = p.channel(c);
      for (int64_t k = 0; k < l.inner; ++k, ++i) x[i] = dequantize(static_cast<int64_t>(q[i]), pc);
    }
  }
}

#define OCTET_QMATH_INSTANTIATE(Int)                                                                         \
  template void quantize<Int>(std::span<const float>, const QuantParams&, std::span<Int>, RoundMode, Rng*);  \
  template void dequantize<Int>(std::span<const Int>, const QuantParams&, std::span<float>);                 \
  template void quantize_per_channel<Int>(std::span<const float>, const ChannelLayout&,                      \
                                          const PerChannelParams&, std::span<Int>, RoundMode, Rng*);         \
  template void dequantize_per_channel<Int>(std::span<const Int>, const ChannelLayout&,                      \
                                            const PerChannelParams&, std::span<float>);
OCTET_QMATH_INSTANTIATE(int8_t)
OCTET_QMATH_INSTANTIATE(uint8_t)
OCTET_QMATH_INSTANTIATE(int16_t)
OCTET_QMATH_INSTANTIATE(uint16_t)
OCTET_QMATH_INSTANTIATE(int32_t)
#undef OCTET_QMATH_INSTANTIATE

}  // namespace octet::quant
