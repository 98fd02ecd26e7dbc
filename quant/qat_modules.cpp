// quant/qat_modules.cpp: ActQuant, WeightQuant, ConvBn and
// linear_weight_params, with the helpers that build their fake-quant options.
#include "quant/qat_modules.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>

#include "quant/fake_quant.h"
#include "quant/qat_internal.h"

namespace octet::quant {

// =====================================================================================
// helpers
// =====================================================================================

namespace {

using detail::shortest;

// The range a grid is built from: extended to contain 0 (zero must be
// representable); an all-zero tensor gets [0, 1] (any step represents it).
Range usable(Range r) {
  r.min = std::min(r.min, 0.0f);
  r.max = std::max(r.max, 0.0f);
  if (r.min == r.max) r.max = 1.0f;
  return r;
}

// FakeQuant's grid is [0, 2^b - 1] (narrow: [1, 2^b - 1]); signed views shift
// it by 2^(b-1): the same real values, codes the int8 engine can hold.
QuantParams signed_view(QuantParams p, int bits) {
  const int64_t shift = int64_t{1} << (bits - 1);
  p.qmin -= shift;
  p.qmax -= shift;
  p.zero_point -= shift;
  return p;
}

QdqOptions qdq_options(const QuantizerSpec& s, Rng* rng) {
  QdqOptions o;
  o.bits = s.bits;
  o.signed_output = s.is_signed;
  o.range_given = true;
  o.narrow_range = s.narrow && s.is_signed;
  o.round = s.round;
  o.rng = rng;
  return o;
}

FakeQuantOptions fq_options(const QuantizerSpec& s, Rng* rng) {
  FakeQuantOptions o;
  o.bits = s.bits;
  o.narrow_range = s.narrow;
  o.round = s.round;
  o.rng = rng;
  return o;
}

LsqOptions lsq_options(const QuantizerSpec& s, Rng* rng) {
  LsqOptions o;
  o.bits = s.bits;
  o.is_signed = s.is_signed;
  o.round = s.round;
  o.rng = rng;
  return o;
}

// 1 / a elementwise, differentiable: d(1/a) = -da / a^2.
Tensor reciprocal(const Tensor& a) {
  Tensor y = Tensor::empty(a.shape());
  const float* ap = a.data();
  float* yp = y.data();
  for (int64_t i = 0; i < a.numel(); ++i) yp[i] = 1.0f / ap[i];
  return record("reciprocal", y, {a}, [a](const Tensor& dy) {
    Tensor dx = Tensor::empty(a.shape());
    const float* ap2 = a.data();
    const float* d = dy.data();
    float* o = dx.data();
    for (int64_t i = 0; i < a.numel(); ++i) o[i] = -d[i] / (ap2[i] * ap2[i]);
    return std::vector<Tensor>{dx};
  });
}

// The per-channel (axis 0) min and max of w, or the tensor's as one channel.
void weight_ranges(const Tensor& w, bool per_channel, std::vector<float>& lo, std::vector<float>& hi) {
  const int64_t c = per_channel ? w.dim(0) : 1;
  const int64_t inner = w.numel() / c;
  lo.assign(static_cast<size_t>(c), 0.0f);
  hi.assign(static_cast<size_t>(c), 0.0f);
  const float* p = w.data();
  for (int64_t k = 0; k < c; ++k) {
    float mn = std::numeric_limits<float>::infinity(), mx = -mn;
    for (int64_t i = 0; i < inner; ++i) {
      const float v = p[k * inner + i];
      if (std::isnan(v)) throw std::invalid_argument("WeightQuant: NaN in the weight, channel " + std::to_string(k));
      mn = std::min(mn, v);
      mx = std::max(mx, v);
    }
    lo[static_cast<size_t>(k)] = mn;
    hi[static_cast<size_t>(k)] = mx;
  }
}

}  // namespace

// =====================================================================================
// ActQuant
// =====================================================================================

// flags: [0] fake quant on, [1] observer frozen, [2] range valid, [3] LSQ step initialized
ActQuant::ActQuant(const QuantizerSpec& spec, const QatConfig& config) : nn::Module("ActQuant"), spec_(spec) {
  check_bits(spec.bits, "ActQuant");
  min_max_ = register_buffer("min_max", Tensor::zeros({2}));
  flags_ = register_buffer("flags", Tensor::zeros({4}));
  if (spec.op == QuantOp::lsq) step_ = register_parameter("step", Tensor::full({1}, 1.0f));
  if (config.range_given) {
    set_range({config.range_min, config.range_max});
    flags_.data()[1] = 1.0f;
  } else {
    ObserverConfig oc = config.act_observer;
    oc.bits = std::min(spec.bits, 16);
    observer_ = make_observer(oc);
  }
}

ActQuant::ActQuant(std::shared_ptr<ActQuant> leader, bool observes, bool in_location)
    : nn::Module("ActQuant"), leader_(std::move(leader)), observes_(observes) {
  if (!leader_) throw std::invalid_argument("ActQuant: follower without a leader");
  while (leader_->leader_) leader_ = leader_->leader_;
  spec_ = leader_->spec_;
  spec_.in_location = in_location;
  flags_ = register_buffer("flags", Tensor::zeros({4}));
}

ActQuant& ActQuant::root() { return leader_ ? *leader_ : *this; }
const ActQuant& ActQuant::root() const { return leader_ ? *leader_ : *this; }
const QuantizerSpec& ActQuant::spec() const { return spec_; }
Observer* ActQuant::observer() const { return root().observer_.get(); }

std::string ActQuant::describe() const {
  std::string s = "ActQuant(" + std::string(quant_op_name(spec_.op)) + ", " + std::to_string(spec_.bits) + " bit " +
                  (spec_.is_signed ? "signed" : "unsigned");
  if (leader_) s += observes_ ? ", tied" : ", follows";
  if (!spec_.in_location) s += ", observe only";
  return s + ")";
}

bool ActQuant::has_range() const { return root().flags_.data()[2] != 0.0f; }

Range ActQuant::range() const {
  const float* mm = root().min_max_.data();
  return {mm[0], mm[1]};
}

bool ActQuant::fake_quant_enabled() const {
  return spec_.in_location && flags_.data()[0] != 0.0f;
}

void ActQuant::set_fake_quant(bool on) { flags_.data()[0] = on ? 1.0f : 0.0f; }

bool ActQuant::observer_frozen() const {
  return root().flags_.data()[1] != 0.0f;
}

void ActQuant::freeze_observer(bool on) {
  if (leader_) return;
  if (!observer_) return;  // range given: always frozen
  flags_.data()[1] = on ? 1.0f : 0.0f;
  observer_->freeze(on);
}

void ActQuant::set_range(Range r) {
  if (leader_) throw std::logic_error("ActQuant::set_range on a follower");
  if (!std::isfinite(r.min) || !std::isfinite(r.max) || r.min > r.max)
    throw std::invalid_argument("ActQuant::set_range: bad range [" + shortest(r.min) + ", " + shortest(r.max) + "]");
  min_max_.data()[0] = r.min;
  min_max_.data()[1] = r.max;
  flags_.data()[2] = 1.0f;
}

void ActQuant::sync_from_observer() {
  if (leader_ || !observer_ || !observer_->has_data()) return;
  set_range(observer_->range());
}

QuantParams ActQuant::params() const {
  const ActQuant& r = root();
  if (!r.has_range()) throw std::logic_error("ActQuant::params: no range observed yet");
  const Range u = usable(r.range());
  switch (spec_.op) {
    case QuantOp::qdq_v2: return qdq_v2_params(u.min, u.max, qdq_options(spec_, nullptr));
    case QuantOp::fake_quant: {
      const QuantParams p = fake_quant_params(u.min, u.max, fq_options(spec_, nullptr));
      return spec_.is_signed ? signed_view(p, spec_.bits) : p;
    }
    case QuantOp::lsq: {
      return lsq_params(r.step_.data()[0], lsq_options(spec_, nullptr));
    }
  }
  throw std::logic_error("ActQuant: bad op");
}

Tensor ActQuant::forward(const Tensor& x) {
  ActQuant& r = root();
  float* rflags = r.flags_.data();
  if (observes_ && (training() || calibrating_) && r.observer_ && rflags[1] == 0.0f) {
    r.observer_->observe(x);
    r.sync_from_observer();
  }
  if (!fake_quant_enabled() || rflags[2] == 0.0f) return x;
  const Range u = usable(r.range());
  Rng* rp = spec_.round == RoundMode::stochastic ? &rounding_rng_ : nullptr;
  switch (spec_.op) {
    case QuantOp::qdq_v2: return quantize_dequantize_v2(x, u.min, u.max, qdq_options(spec_, rp));
    case QuantOp::fake_quant:
      return fake_quant(x, Tensor::full({1}, u.min), Tensor::full({1}, u.max), fq_options(spec_, rp));
    case QuantOp::lsq: {
      Tensor& step = r.step_;
      if (rflags[3] == 0.0f) {  // first use: the step that covers the observed range
        const IntRange q = int_range(spec_.bits, spec_.is_signed, false);
        float s = u.max / static_cast<float>(q.qmax);
        if (q.qmin < 0) s = std::max(s, -u.min / static_cast<float>(-q.qmin));
        step.data()[0] = s;
        rflags[3] = 1.0f;
      }
      return lsq(x, step, lsq_options(spec_, rp));
    }
  }
  return x;
}

// =====================================================================================
// WeightQuant
// =====================================================================================

// flags: [0] fake quant on, [1] LSQ steps initialized
WeightQuant::WeightQuant(const QuantizerSpec& spec, bool per_channel, int64_t channels)
    : nn::Module("WeightQuant"), spec_(spec), per_channel_(per_channel) {
  check_bits(spec.bits, "WeightQuant");
  if (spec.op == QuantOp::qdq_v2 && !spec.symmetric)
    throw std::invalid_argument("WeightQuant: qdq_v2 is symmetric by definition (symmetric_weights = false needs fake_quant)");
  flags_ = register_buffer("flags", Tensor::zeros({2}));
  if (spec.op == QuantOp::lsq) step_ = register_parameter("step", Tensor::full({per_channel ? channels : 1}, 1.0f));
}

std::string WeightQuant::describe() const {
  return "WeightQuant(" + std::string(quant_op_name(spec_.op)) + ", " + std::to_string(spec_.bits) + " bit, " +
         (per_channel_ ? "per channel" : "per tensor") + (spec_.in_location ? "" : ", off") + ")";
}

bool WeightQuant::fake_quant_enabled() const {
  return spec_.in_location && flags_.data()[0] != 0.0f;
}

void WeightQuant::set_fake_quant(bool on) { flags_.data()[0] = on ? 1.0f : 0.0f; }

namespace {

// The (lo, hi) each channel's op uses for weight w.
void weight_op_ranges(const Tensor& w, const QuantizerSpec& s, bool per_channel, std::vector<float>& lo,
                      std::vector<float>& hi) {
  weight_ranges(w, per_channel, lo, hi);
  for (size_t c = 0; c < lo.size(); ++c) {
    Range r = usable({lo[c], hi[c]});
    if (s.op == QuantOp::fake_quant && s.symmetric) {
      const float m = std::max(-r.min, r.max);
      r = {-m, m};
    }
    lo[c] = r.min;
    hi[c] = r.max;
  }
}

}  // namespace

std::vector<QuantParams> WeightQuant::params(const Tensor& w) const {
  const int64_t channels = w.dim(0);
  std::vector<QuantParams> out;
  if (spec_.op == QuantOp::lsq) {
    for (int64_t c = 0; c < channels; ++c)
      out.push_back(lsq_params(step_.data()[per_channel_ ? c : 0], lsq_options(spec_, nullptr)));
    return out;
  }
  std::vector<float> lo, hi;
  weight_op_ranges(w, spec_, per_channel_, lo, hi);
  for (int64_t c = 0; c < channels; ++c) {
    const size_t k = per_channel_ ? static_cast<size_t>(c) : 0;
    if (spec_.op == QuantOp::qdq_v2) {
      out.push_back(qdq_v2_params(lo[k], hi[k], qdq_options(spec_, nullptr)));
    } else {
      out.push_back(signed_view(fake_quant_params(lo[k], hi[k], fq_options(spec_, nullptr)), spec_.bits));
    }
  }
  return out;
}

Tensor WeightQuant::forward(const Tensor& w) {
  if (!fake_quant_enabled()) return w;
  Rng* rp = spec_.round == RoundMode::stochastic ? &rounding_rng_ : nullptr;
  if (spec_.op == QuantOp::lsq) {
    Tensor& st = step_;
    float* flags = flags_.data();
    if (flags[1] == 0.0f) {  // the paper's init 2 mean|w| / sqrt(Qp), per channel
      const int64_t c = per_channel_ ? w.dim(0) : 1, inner = w.numel() / c;
      const IntRange q = int_range(spec_.bits, spec_.is_signed, false);
      for (int64_t k = 0; k < c; ++k) {
        double s = 0;
        for (int64_t i = 0; i < inner; ++i) s += std::fabs(w.data()[k * inner + i]);
        float v = static_cast<float>(2.0 * s / static_cast<double>(inner) / std::sqrt(static_cast<double>(q.qmax)));
        st.data()[k] = v > 0 ? v : 1e-8f;
      }
      flags[1] = 1.0f;
    }
    return per_channel_ ? lsq_per_channel(w, st, 0, lsq_options(spec_, rp)) : lsq(w, st, lsq_options(spec_, rp));
  }
  std::vector<float> lo, hi;
  weight_op_ranges(w, spec_, per_channel_, lo, hi);
  if (spec_.op == QuantOp::qdq_v2) {
    const QdqOptions o = qdq_options(spec_, rp);
    return per_channel_ ? quantize_dequantize_v2_per_channel(w, lo, hi, 0, o)
                        : quantize_dequantize_v2(w, lo[0], hi[0], o);
  }
  const FakeQuantOptions o = fq_options(spec_, rp);
  if (!per_channel_) return fake_quant(w, Tensor::full({1}, lo[0]), Tensor::full({1}, hi[0]), o);
  const int64_t c = static_cast<int64_t>(lo.size());
  return fake_quant_per_channel(w, Tensor::from({c}, lo), Tensor::from({c}, hi), 0, o);
}

std::vector<QuantParams> linear_weight_params(nn::Linear& fc) {
  auto* wq = dynamic_cast<WeightQuant*>(fc.weight_transform());
  if (!wq) throw std::logic_error("linear_weight_params: the Linear has no WeightQuant (not prepared)");
  return wq->params(fc.weight());
}

// =====================================================================================
// ConvBn
// =====================================================================================

ConvBn::ConvBn(std::shared_ptr<nn::Conv2d> conv, std::shared_ptr<nn::BatchNorm2d> bn, const QuantizerSpec& ws,
               bool per_channel)
    : nn::Module("ConvBn") {
  if (!conv || !bn) throw std::invalid_argument("ConvBn: null conv or BN");
  if (bn->channels != conv->out_channels)
    throw std::invalid_argument("ConvBn: BN of " + std::to_string(bn->channels) + " channels after a conv of " +
                                std::to_string(conv->out_channels));
  if (conv->weight_transform()) throw std::logic_error("ConvBn: the conv already has a weight transform");
  if (!conv->square()) throw std::invalid_argument("ConvBn: the conv is not square: " + conv->describe());
  in_channels = conv->in_channels;
  out_channels = conv->out_channels;
  kernel = conv->kernel;
  stride = conv->stride;
  pad = conv->pad;
  weight_ = register_parameter("weight", conv->weight());
  if (conv->bias().defined()) register_parameter("bias", conv->bias());
  register_module("bn", bn);
  register_module("weight_quant", std::make_shared<WeightQuant>(ws, per_channel, out_channels));
  bn_frozen_ = register_buffer("bn_frozen", Tensor::zeros({1}));
}

std::string ConvBn::describe() const {
  char buf[160];
  std::snprintf(buf, sizeof buf, "ConvBn(%d, %d, k=%d, s=%d, p=%d)", in_channels, out_channels, kernel, stride, pad);
  return buf;
}

nn::BatchNorm2d& ConvBn::bn() const { return static_cast<nn::BatchNorm2d&>(child("bn")); }
WeightQuant& ConvBn::weight_quant() const { return static_cast<WeightQuant&>(child("weight_quant")); }
ActQuant* ConvBn::input_quant() const {
  return has_child("input_quant") ? static_cast<ActQuant*>(&child("input_quant")) : nullptr;
}
void ConvBn::set_input_quant(std::shared_ptr<ActQuant> aq) {
  if (has_child("input_quant")) remove_child("input_quant");
  if (aq) register_module("input_quant", std::move(aq));
}
int ConvBn::weight_bits() const { return weight_quant().spec().bits; }
bool ConvBn::bn_frozen() const { return bn_frozen_.data()[0] != 0.0f; }
void ConvBn::freeze_bn(bool on) { bn_frozen_.data()[0] = on ? 1.0f : 0.0f; }

namespace {
// 1 / sqrt(running_var + eps) per channel, in float exactly as forward and folded_* compute it.
Tensor inv_running_std(nn::BatchNorm2d& bn) {
  const int64_t c = bn.channels;
  Tensor t = Tensor::empty({c});
  const float* rv = bn.running_var().data();
  for (int64_t i = 0; i < c; ++i) t.data()[i] = 1.0f / std::sqrt(rv[i] + bn.eps);
  return t;
}
}  // namespace

void ConvBn::collect_input_mean(bool on) {
  collecting_ = on;
  if (on) {
    input_sum_.assign(static_cast<size_t>(in_channels), 0.0);
    input_count_ = 0;
  }
}

std::vector<double> ConvBn::input_mean() const {
  std::vector<double> m(static_cast<size_t>(in_channels), 0.0);
  if (input_count_ > 0 && input_sum_.size() == m.size())
    for (size_t c = 0; c < m.size(); ++c) m[c] = input_sum_[c] / static_cast<double>(input_count_);
  return m;
}

Tensor ConvBn::forward(const Tensor& x_in) {
  Tensor x = input_quant() ? input_quant()->forward(x_in) : x_in;
  if (collecting_ && x.ndim() == 4 && x.dim(1) == in_channels) {
    const int64_t n = x.dim(0), hw = x.dim(2) * x.dim(3);
    const float* p = x.data();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < in_channels; ++c) {
        double s = 0;
        const float* q = p + (i * in_channels + c) * hw;
        for (int64_t k = 0; k < hw; ++k) s += q[k];
        input_sum_[static_cast<size_t>(c)] += s;
      }
    input_count_ += n * hw;
  }
  nn::BatchNorm2d& b = bn();
  const int64_t c = out_channels;
  Tensor& w = weight_;
  Tensor bias = maybe_param("bias");
  Tensor sf = mul(b.weight(), inv_running_std(b));  // gamma / sigma_r, [C]
  Tensor w_q = weight_quant().forward(mul(w, reshape(sf, {c, 1, 1, 1})));
  Conv2dOptions o;
  o.stride = stride;
  o.pad = pad;
  if (training() && !bn_frozen()) {
    // conv(x, w_q) / sf is conv(x, w) up to the weight's rounding; BN then
    // normalizes with the batch statistics and updates the running ones.
    // The division is linear in the weight, so it is applied to w_q (C values
    // per channel) rather than to the conv output (N*H*W per channel).
    Tensor y = conv2d(x, mul(w_q, reshape(reciprocal(sf), {c, 1, 1, 1})), Tensor(), o);
    if (bias.defined()) y = add(y, reshape(bias, {1, c, 1, 1}));
    return batch_norm(y, b.weight(), b.bias(), b.running_mean(), b.running_var(), true, b.momentum, b.eps,
                      b.sync_group);
  }
  Tensor shift = bias.defined() ? sub(bias, b.running_mean()) : mul(b.running_mean(), -1.0f);
  return conv2d(x, w_q, add(b.bias(), mul(sf, shift)), o);
}

Tensor ConvBn::folded_weight() const {
  NoGradGuard ng;
  nn::BatchNorm2d& b = bn();
  Tensor sf = mul(b.weight(), inv_running_std(b));
  return mul(weight_, reshape(sf, {out_channels, 1, 1, 1})).detach();
}

Tensor ConvBn::folded_bias() const {
  NoGradGuard ng;
  nn::BatchNorm2d& b = bn();
  Tensor sf = mul(b.weight(), inv_running_std(b));
  Tensor bias = maybe_param("bias");
  Tensor shift = bias.defined() ? sub(bias, b.running_mean()) : mul(b.running_mean(), -1.0f);
  return add(b.bias(), mul(sf, shift)).detach();
}

std::vector<QuantParams> ConvBn::weight_params() const { return weight_quant().params(folded_weight()); }

}  // namespace octet::quant
