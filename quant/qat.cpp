// quant/qat.cpp: the QAT configuration, the QAT modules (ActQuant,
// WeightQuant, ConvBn), prepare(), the exporter's edge list, PTQ calibration
// and QAT checkpoints. See quant/qat.h for the contracts.
#include "quant/qat.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

#include "core/loader.h"
#include "nn/trainer.h"

namespace octet::quant {

// =====================================================================================
// configuration
// =====================================================================================

std::string_view quant_op_name(QuantOp op) {
  switch (op) {
    case QuantOp::kQdqV2: return "qdq_v2";
    case QuantOp::kFakeQuant: return "fake_quant";
    case QuantOp::kLsq: return "lsq";
  }
  return "?";
}

QuantOp parse_quant_op(std::string_view name) {
  if (name == "qdq_v2" || name == "qdqv2") return QuantOp::kQdqV2;
  if (name == "fake_quant" || name == "fakequant") return QuantOp::kFakeQuant;
  if (name == "lsq") return QuantOp::kLsq;
  throw std::invalid_argument("unknown quant op '" + std::string(name) + "'; valid: qdq_v2, fake_quant, lsq");
}

std::string_view add_inputs_name(AddInputs a) {
  switch (a) {
    case AddInputs::kOff: return "off";
    case AddInputs::kTied: return "tied";
    case AddInputs::kUntied: return "untied";
  }
  return "?";
}

AddInputs parse_add_inputs(std::string_view name) {
  if (name == "off") return AddInputs::kOff;
  if (name == "tied") return AddInputs::kTied;
  if (name == "untied") return AddInputs::kUntied;
  throw std::invalid_argument("unknown add_inputs '" + std::string(name) + "'; valid: off, tied, untied");
}

namespace {

template <class T>
std::string shortest(T v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

[[noreturn]] void bad_value(const std::string& key, const std::string& value, const std::string& what) {
  throw std::invalid_argument("qat config '" + key + "': expected " + what + ", got '" + value + "'");
}

int64_t parse_i64(const std::string& k, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno) bad_value(k, v, "an integer");
  return x;
}

int parse_int(const std::string& k, const std::string& v) {
  const int64_t x = parse_i64(k, v);
  if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max()) bad_value(k, v, "an int");
  return static_cast<int>(x);
}

double parse_num(const std::string& k, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !std::isfinite(x)) bad_value(k, v, "a finite number");
  return x;
}

bool parse_bool(const std::string& k, const std::string& v) {
  if (v == "true" || v == "1") return true;
  if (v == "false" || v == "0") return false;
  bad_value(k, v, "true or false");
}

// One list of fields for both directions.
template <class F>
void visit(QatConfig& c, F&& f) {
  f.en("op", c.op);
  f.en("round", c.round);
  f.i("weight_bits", c.weight_bits);
  f.i("act_bits", c.act_bits);
  f.b("signed_activations", c.signed_activations);
  f.b("per_channel_weights", c.per_channel_weights);
  f.b("symmetric_weights", c.symmetric_weights);
  f.b("narrow_weights", c.narrow_weights);
  f.b("quantize_weights", c.quantize_weights);
  f.b("quantize_activations", c.quantize_activations);
  f.en("add_inputs", c.add_inputs);
  f.b("quantize_input", c.quantize_input);
  f.b("quantize_output", c.quantize_output);
  f.b("range_given", c.range_given);
  f.fl("range_min", c.range_min);
  f.fl("range_max", c.range_max);
  f.s("observer", c.act_observer.kind);
  f.d("observer_decay", c.act_observer.decay);
  f.d("observer_percentile", c.act_observer.percentile);
  f.d("observer_k", c.act_observer.k);
  f.i("observer_bins", c.act_observer.bins);
  f.d("quant_delay", c.quant_delay);
  f.l("quant_delay_step", c.quant_delay_step);
  f.d("observer_freeze", c.observer_freeze);
  f.l("observer_freeze_step", c.observer_freeze_step);
  f.d("bn_freeze", c.bn_freeze);
  f.l("bn_freeze_step", c.bn_freeze_step);
  f.b("cle", c.cross_layer_equalization);
  f.b("bias_correction", c.bias_correction);
}

struct Writer {
  std::map<std::string, std::string>& m;
  void en(const char* k, QuantOp v) { m[k] = std::string(quant_op_name(v)); }
  void en(const char* k, RoundMode v) { m[k] = std::string(round_mode_name(v)); }
  void en(const char* k, AddInputs v) { m[k] = std::string(add_inputs_name(v)); }
  void i(const char* k, int v) { m[k] = std::to_string(v); }
  void l(const char* k, int64_t v) { m[k] = std::to_string(v); }
  void b(const char* k, bool v) { m[k] = v ? "true" : "false"; }
  void fl(const char* k, float v) { m[k] = shortest(v); }
  void d(const char* k, double v) { m[k] = shortest(v); }
  void s(const char* k, const std::string& v) { m[k] = v; }
};

struct Reader {
  const std::map<std::string, std::string>& m;
  std::set<std::string>& used;
  const std::string* get(const char* k) {
    auto it = m.find(k);
    if (it == m.end()) return nullptr;
    used.insert(k);
    return &it->second;
  }
  template <class E, class P>
  void parse_enum(const char* k, E& f, P parse) {
    if (auto* v = get(k)) {
      try {
        f = parse(*v);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string("qat config '") + k + "': " + e.what());
      }
    }
  }
  void en(const char* k, QuantOp& f) { parse_enum(k, f, parse_quant_op); }
  void en(const char* k, RoundMode& f) { parse_enum(k, f, parse_round_mode); }
  void en(const char* k, AddInputs& f) { parse_enum(k, f, parse_add_inputs); }
  void i(const char* k, int& f) {
    if (auto* v = get(k)) f = parse_int(k, *v);
  }
  void l(const char* k, int64_t& f) {
    if (auto* v = get(k)) f = parse_i64(k, *v);
  }
  void b(const char* k, bool& f) {
    if (auto* v = get(k)) f = parse_bool(k, *v);
  }
  void fl(const char* k, float& f) {
    if (auto* v = get(k)) f = static_cast<float>(parse_num(k, *v));
  }
  void d(const char* k, double& f) {
    if (auto* v = get(k)) f = parse_num(k, *v);
  }
  void s(const char* k, std::string& f) {
    if (auto* v = get(k)) f = *v;
  }
};

constexpr const char* kBitsPrefix = "bits.";

int64_t resolve_step(double fraction, int64_t step, int64_t total) {
  if (step >= 0) return step;
  if (fraction < 0) return -1;
  return static_cast<int64_t>(std::floor(fraction * static_cast<double>(total)));
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

}  // namespace

std::map<std::string, std::string> QatConfig::to_kv() const {
  std::map<std::string, std::string> m;
  QatConfig copy = *this;
  visit(copy, Writer{m});
  for (auto& [name, bits] : bits_overrides) m[kBitsPrefix + name] = std::to_string(bits);
  return m;
}

QatConfig QatConfig::from_kv(const std::map<std::string, std::string>& kv) {
  QatConfig c;
  std::set<std::string> used;
  visit(c, Reader{kv, used});
  for (auto& [k, v] : kv) {
    if (used.count(k)) continue;
    if (k.rfind(kBitsPrefix, 0) == 0 && k.size() > 5) {
      c.bits_overrides[k.substr(5)] = parse_int(k, v);
      continue;
    }
    throw std::invalid_argument("qat config: unknown key '" + k + "'");
  }
  c.validate();
  return c;
}

QatConfig QatConfig::from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("qat config file " + path + ": cannot open");
  std::map<std::string, std::string> kv;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    line = trim(line);
    if (line.empty()) continue;
    const auto eq = line.find('=');
    const std::string where = path + ":" + std::to_string(n);
    if (eq == std::string::npos) throw std::invalid_argument("qat config file " + where + ": expected key = value");
    const std::string k = trim(line.substr(0, eq)), v = trim(line.substr(eq + 1));
    if (k.empty()) throw std::invalid_argument("qat config file " + where + ": empty key");
    if (kv.count(k)) throw std::invalid_argument("qat config file " + where + ": key '" + k + "' given twice");
    kv[k] = v;
  }
  try {
    return from_kv(kv);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("qat config file " + path + ": " + e.what());
  }
}

std::string QatConfig::to_string() const {
  std::string s;
  for (auto& [k, v] : to_kv()) s += k + " = " + v + "\n";
  return s;
}

void QatConfig::validate() const {
  auto fail = [](const std::string& what) { throw std::invalid_argument("qat config: " + what); };
  auto bits_ok = [&](const std::string& key, int b) {
    try {
      check_bits(b, "qat config");
    } catch (const std::invalid_argument&) {
      fail("'" + key + "' = " + std::to_string(b) + ": bits must be 2..16 or 32");
    }
  };
  bits_ok("weight_bits", weight_bits);
  bits_ok("act_bits", act_bits);
  for (auto& [name, b] : bits_overrides) {
    if (name.empty()) fail("'bits.' needs a layer name");
    bits_ok(kBitsPrefix + name, b);
  }
  if (range_given && !(range_min < range_max))
    fail("range_min must be < range_max, got [" + shortest(range_min) + ", " + shortest(range_max) + "]");
  if (range_given && (range_min > 0 || range_max < 0))
    fail("the given range [" + shortest(range_min) + ", " + shortest(range_max) + "] must contain 0");
  auto frac_ok = [&](const char* key, double f, bool never_ok) {
    if (never_ok && f == -1) return;
    if (!(f >= 0 && f <= 1)) fail(std::string("'") + key + "' = " + shortest(f) + ": expected a fraction in [0, 1]" +
                                  (never_ok ? " or -1 (never)" : ""));
  };
  frac_ok("quant_delay", quant_delay, false);
  frac_ok("observer_freeze", observer_freeze, true);
  frac_ok("bn_freeze", bn_freeze, true);
  auto step_ok = [&](const char* key, int64_t s) {
    if (s < -1) fail(std::string("'") + key + "' = " + std::to_string(s) + ": expected a step >= 0 or -1");
  };
  step_ok("quant_delay_step", quant_delay_step);
  step_ok("observer_freeze_step", observer_freeze_step);
  step_ok("bn_freeze_step", bn_freeze_step);
  if (op != QuantOp::kFakeQuant && !symmetric_weights)
    fail("symmetric_weights = false needs op fake_quant (" + std::string(quant_op_name(op)) + " is symmetric)");
  if (op == QuantOp::kFakeQuant && symmetric_weights && !narrow_weights)
    fail("fake_quant with symmetric weights needs narrow_weights = true (codes [1, 2^b - 1], zero point in the middle)");
  if (!range_given) {
    ObserverConfig oc = act_observer;
    oc.bits = std::min(act_bits, 16);
    try {
      (void)make_observer(oc);
    } catch (const std::invalid_argument& e) {
      fail(std::string("observer: ") + e.what());
    }
    if (oc.kind == "minmax_per_channel") fail("observer: minmax_per_channel is for weights, not activations");
  }
}

int64_t QatConfig::quant_delay_at(int64_t total) const { return resolve_step(quant_delay, quant_delay_step, total); }
int64_t QatConfig::observer_freeze_at(int64_t total) const {
  return resolve_step(observer_freeze, observer_freeze_step, total);
}
int64_t QatConfig::bn_freeze_at(int64_t total) const { return resolve_step(bn_freeze, bn_freeze_step, total); }

QatPhase phase_at(const QatConfig& c, int64_t step, int64_t total) {
  QatPhase p;
  const int64_t d = c.quant_delay_at(total), o = c.observer_freeze_at(total), b = c.bn_freeze_at(total);
  p.fake_quant = d >= 0 && step >= d;
  p.observers_frozen = o >= 0 && step >= o;
  p.bn_frozen = b >= 0 && step >= b;
  p.step = step;
  return p;
}

// =====================================================================================
// helpers
// =====================================================================================

namespace {

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
  if (spec.op == QuantOp::kLsq) step_ = register_parameter("step", Tensor::full({1}, 1.0f));
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
    case QuantOp::kQdqV2: return qdq_v2_params(u.min, u.max, qdq_options(spec_, nullptr));
    case QuantOp::kFakeQuant: {
      const QuantParams p = fake_quant_params(u.min, u.max, fq_options(spec_, nullptr));
      return spec_.is_signed ? signed_view(p, spec_.bits) : p;
    }
    case QuantOp::kLsq: {
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
  Rng* rp = spec_.round == RoundMode::kStochastic ? &rounding_rng_ : nullptr;
  switch (spec_.op) {
    case QuantOp::kQdqV2: return quantize_dequantize_v2(x, u.min, u.max, qdq_options(spec_, rp));
    case QuantOp::kFakeQuant:
      return fake_quant(x, Tensor::full({1}, u.min), Tensor::full({1}, u.max), fq_options(spec_, rp));
    case QuantOp::kLsq: {
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
  if (spec.op == QuantOp::kQdqV2 && !spec.symmetric)
    throw std::invalid_argument("WeightQuant: qdq_v2 is symmetric by definition (symmetric_weights = false needs fake_quant)");
  flags_ = register_buffer("flags", Tensor::zeros({2}));
  if (spec.op == QuantOp::kLsq) step_ = register_parameter("step", Tensor::full({per_channel ? channels : 1}, 1.0f));
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
    if (s.op == QuantOp::kFakeQuant && s.symmetric) {
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
  if (spec_.op == QuantOp::kLsq) {
    for (int64_t c = 0; c < channels; ++c)
      out.push_back(lsq_params(step_.data()[per_channel_ ? c : 0], lsq_options(spec_, nullptr)));
    return out;
  }
  std::vector<float> lo, hi;
  weight_op_ranges(w, spec_, per_channel_, lo, hi);
  for (int64_t c = 0; c < channels; ++c) {
    const size_t k = per_channel_ ? static_cast<size_t>(c) : 0;
    if (spec_.op == QuantOp::kQdqV2) {
      out.push_back(qdq_v2_params(lo[k], hi[k], qdq_options(spec_, nullptr)));
    } else {
      out.push_back(signed_view(fake_quant_params(lo[k], hi[k], fq_options(spec_, nullptr)), spec_.bits));
    }
  }
  return out;
}

Tensor WeightQuant::forward(const Tensor& w) {
  if (!fake_quant_enabled()) return w;
  Rng* rp = spec_.round == RoundMode::kStochastic ? &rounding_rng_ : nullptr;
  if (spec_.op == QuantOp::kLsq) {
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
  if (spec_.op == QuantOp::kQdqV2) {
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
    return batch_norm(y, b.weight(), b.bias(), b.running_mean(), b.running_var(), true, b.momentum, b.eps);
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

// =====================================================================================
// prepare
// =====================================================================================

namespace {

std::shared_ptr<nn::Module> find_ptr(nn::Module& root, const std::string& dotted) {
  const size_t dot = dotted.rfind('.');
  nn::Module& parent = dot == std::string::npos ? root : root.find(dotted.substr(0, dot));
  return parent.child_ptr(dot == std::string::npos ? dotted : dotted.substr(dot + 1));
}

// M at `name` -> Sequential{"0": M, "1": aq}; returns aq.
std::shared_ptr<ActQuant> wrap(nn::Module& root, const std::string& name, std::shared_ptr<ActQuant> aq) {
  auto m = find_ptr(root, name);
  auto seq = std::make_shared<nn::Sequential>();
  seq->append(m);
  seq->append(aq);
  root.replace(name, seq);
  return aq;
}

ActQuant* aq_at(nn::Module& root, const std::string& name) {
  auto* a = dynamic_cast<ActQuant*>(&root.find(name));
  if (!a) throw std::logic_error("quant: expected an ActQuant at '" + name + "' (is the model prepared?)");
  return a;
}

}  // namespace

bool is_prepared(const nn::Module& model) {
  for (auto& [n, m] : const_cast<nn::Module&>(model).named_modules())
    if (dynamic_cast<ConvBn*>(m)) return true;
  return false;
}

void prepare(nn::ResNet& model, const QatConfig& cfg) {
  cfg.validate();
  if (is_prepared(model)) throw std::logic_error("prepare: the model is already prepared");
  std::set<std::string> used_overrides;
  auto bits_for = [&](const std::string& name, int fallback) {
    auto it = cfg.bits_overrides.find(name);
    if (it == cfg.bits_overrides.end()) return fallback;
    used_overrides.insert(name);
    return it->second;
  };
  auto wspec = [&](const std::string& name) {
    QuantizerSpec s;
    s.op = cfg.op;
    s.round = cfg.round;
    s.bits = bits_for(name, cfg.weight_bits);
    s.is_signed = true;
    s.narrow = cfg.narrow_weights;
    s.symmetric = cfg.symmetric_weights;
    s.in_location = cfg.quantize_weights;
    return s;
  };
  auto act = [&](const std::string& name, bool is_signed, bool in_location) {
    QuantizerSpec s;
    s.op = cfg.op;
    s.round = cfg.round;
    s.bits = bits_for(name, cfg.act_bits);
    s.is_signed = is_signed;
    s.narrow = false;
    s.symmetric = cfg.op != QuantOp::kFakeQuant;
    s.in_location = in_location;
    return std::make_shared<ActQuant>(s, cfg);
  };
  const bool relu_signed = cfg.signed_activations;
  const bool acts = cfg.quantize_activations;

  // 1. conv + BN -> ConvBn; the ActQuant of each group's output.
  const std::vector<nn::ConvBnRelu> groups = model.conv_bn_relu_groups();
  for (const auto& g : groups) {
    auto conv = std::dynamic_pointer_cast<nn::Conv2d>(find_ptr(model, g.conv));
    auto bn = std::dynamic_pointer_cast<nn::BatchNorm2d>(find_ptr(model, g.bn));
    if (!conv || !bn) throw std::logic_error("prepare: '" + g.conv + "' / '" + g.bn + "' is not a Conv2d / BatchNorm2d");
    auto cb = std::make_shared<ConvBn>(conv, bn, wspec(g.conv), cfg.per_channel_weights);
    model.replace(g.conv, cb);
    model.replace(g.bn, std::make_shared<nn::Identity>());
    if (!g.relu.empty()) {
      wrap(model, g.relu, act(g.relu + ".1", relu_signed, acts));
    } else {
      wrap(model, g.bn, act(g.bn + ".1", true, acts));
    }
  }
  // 2. block outputs (Add + ReLU) and the add-input slots.
  const auto& rc = model.config();
  std::shared_ptr<ActQuant> last;
  for (size_t s = 0; s < rc.blocks.size(); ++s) {
    for (int b = 0; b < rc.blocks[s]; ++b) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      const std::string out = p + (rc.bottleneck ? "relu3" : "relu2");
      last = wrap(model, out, act(out + ".1", relu_signed, acts));
      if (cfg.add_inputs != AddInputs::kOff) {
        auto a = act(p + "add.input_a", true, true);
        model.replace(p + "add.input_a", a);
        std::shared_ptr<ActQuant> bq = cfg.add_inputs == AddInputs::kTied
                                           ? std::make_shared<ActQuant>(a, /*observes=*/true, true)
                                           : act(p + "add.input_b", true, true);
        model.replace(p + "add.input_b", bq);
      }
    }
  }
  if (!last) throw std::logic_error("prepare: the model has no blocks");
  // 3. average pool (follows the last block's grid), fc weight and logits.
  wrap(model, "avgpool", std::make_shared<ActQuant>(last, /*observes=*/false, last->in_location()));
  auto fc = std::dynamic_pointer_cast<nn::Linear>(find_ptr(model, "fc"));
  if (!fc) throw std::logic_error("prepare: 'fc' is not a Linear");
  fc->set_weight_transform(std::make_shared<WeightQuant>(wspec("fc.0"), cfg.per_channel_weights, fc->out_features));
  wrap(model, "fc", act("fc.1", true, cfg.quantize_output));
  // 4. the model input (optional; the engine's input is the exact pixels).
  if (cfg.quantize_input) {
    auto& stem = static_cast<ConvBn&>(model.find(groups.front().conv));
    stem.set_input_quant(act(groups.front().conv + ".input_quant", true, true));
  }
  for (auto& [name, bits] : cfg.bits_overrides)
    if (!used_overrides.count(name))
      throw std::invalid_argument("qat config 'bits." + name + "': no ConvBn, Linear or ActQuant of that name");
  model.train(model.training());
  apply_phase(model, QatPhase{});
}

}  // namespace octet::quant

namespace octet::quant {

// =====================================================================================
// schedule, listings, edges
// =====================================================================================

void apply_phase(nn::Module& model, const QatPhase& phase) {
  constexpr uint64_t kRoundingTag = 0x5704c0ull << 40;  // keeps these streams apart from other users of a step seed
  const uint64_t seed = kRoundingTag ^ static_cast<uint64_t>(phase.step);
  uint64_t stream = 0;  // one per quantizer, in named_modules order
  for (auto& [name, m] : model.named_modules()) {
    if (auto* a = dynamic_cast<ActQuant*>(m)) {
      a->set_fake_quant(phase.fake_quant);
      a->freeze_observer(phase.observers_frozen);
      a->rounding_rng().reseed(seed, stream++);
    } else if (auto* w = dynamic_cast<WeightQuant*>(m)) {
      w->set_fake_quant(phase.fake_quant);
      w->rounding_rng().reseed(seed, stream++);
    } else if (auto* c = dynamic_cast<ConvBn*>(m)) {
      c->freeze_bn(phase.bn_frozen);
    }
  }
}

std::vector<std::pair<std::string, ActQuant*>> act_quants(nn::Module& model) {
  std::vector<std::pair<std::string, ActQuant*>> out;
  for (auto& [name, m] : model.named_modules())
    if (auto* a = dynamic_cast<ActQuant*>(m)) out.emplace_back(name, a);
  return out;
}

std::vector<std::pair<std::string, ConvBn*>> conv_bns(nn::Module& model) {
  std::vector<std::pair<std::string, ConvBn*>> out;
  for (auto& [name, m] : model.named_modules())
    if (auto* c = dynamic_cast<ConvBn*>(m)) out.emplace_back(name, c);
  return out;
}

std::vector<QuantEdge> quant_edges(nn::ResNet& model) {
  if (!is_prepared(model)) throw std::logic_error("quant_edges: the model is not prepared (call prepare first)");
  std::vector<QuantEdge> edges;
  auto conv_edge = [&](const std::string& name, const ActQuant* in, const std::string& out, bool relu) {
    QuantEdge e;
    e.kind = QuantEdge::Kind::kConv;
    e.name = name;
    e.conv = dynamic_cast<ConvBn*>(&model.find(name));
    if (!e.conv) throw std::logic_error("quant_edges: '" + name + "' is not a ConvBn");
    e.input = in;
    e.output = aq_at(model, out);
    e.relu = relu;
    edges.push_back(e);
    return e.output;
  };
  const ActQuant* cur = conv_edge("conv1", nullptr, "relu.1", true);
  const auto& rc = model.config();
  if (rc.imagenet_stem) {
    QuantEdge e;
    e.kind = QuantEdge::Kind::kMaxPool;
    e.name = "maxpool";
    e.input = e.output = cur;
    edges.push_back(e);
  }
  for (size_t s = 0; s < rc.blocks.size(); ++s) {
    for (int b = 0; b < rc.blocks[s]; ++b) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      const ActQuant* x = cur;
      const ActQuant* y = conv_edge(p + "conv1", x, p + "relu1.1", true);
      std::string out;
      if (rc.bottleneck) {
        y = conv_edge(p + "conv2", y, p + "relu2.1", true);
        y = conv_edge(p + "conv3", y, p + "bn3.1", false);
        out = p + "relu3.1";
      } else {
        y = conv_edge(p + "conv2", y, p + "bn2.1", false);
        out = p + "relu2.1";
      }
      const ActQuant* sc = x;
      nn::Module& shortcut = model.find(p + "shortcut");
      if (shortcut.type() == "Sequential")
        sc = conv_edge(p + "shortcut.0", x, p + "shortcut.1.1", false);
      QuantEdge e;
      e.kind = QuantEdge::Kind::kAdd;
      e.name = p + "add";
      e.input = y;
      e.input_b = sc;
      e.output = aq_at(model, out);
      e.relu = true;
      e.add_slot_a = dynamic_cast<const ActQuant*>(&model.find(p + "add.input_a"));
      e.add_slot_b = dynamic_cast<const ActQuant*>(&model.find(p + "add.input_b"));
      edges.push_back(e);
      cur = e.output;
    }
  }
  QuantEdge pool;
  pool.kind = QuantEdge::Kind::kAvgPool;
  pool.name = "avgpool.0";
  pool.input = cur;
  pool.output = aq_at(model, "avgpool.1");
  edges.push_back(pool);
  QuantEdge fc;
  fc.kind = QuantEdge::Kind::kLinear;
  fc.name = "fc.0";
  fc.linear = dynamic_cast<nn::Linear*>(&model.find("fc.0"));
  if (!fc.linear) throw std::logic_error("quant_edges: 'fc.0' is not a Linear");
  fc.input = pool.output;
  fc.output = aq_at(model, "fc.1");
  edges.push_back(fc);
  return edges;
}

// =====================================================================================
// PTQ
// =====================================================================================

int equalize_cross_layer(nn::ResNet& model, int iterations) {
  if (!is_prepared(model)) throw std::logic_error("equalize_cross_layer: the model is not prepared");
  const auto& rc = model.config();
  std::vector<std::pair<ConvBn*, ConvBn*>> pairs;
  for (size_t s = 0; s < rc.blocks.size(); ++s)
    for (int b = 0; b < rc.blocks[s]; ++b) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      auto cb = [&](const char* n) { return &dynamic_cast<ConvBn&>(model.find(p + n)); };
      pairs.emplace_back(cb("conv1"), cb("conv2"));
      if (rc.bottleneck) pairs.emplace_back(cb("conv2"), cb("conv3"));
    }
  NoGradGuard ng;
  for (int it = 0; it < iterations; ++it) {
    for (auto [a, b] : pairs) {
      const Tensor wa = a->folded_weight(), wb = b->folded_weight();
      const int64_t c = a->out_channels, ia = wa.numel() / c;
      const int64_t ob = b->out_channels, kb = static_cast<int64_t>(b->kernel) * b->kernel;
      Tensor& w2 = b->weight();
      nn::BatchNorm2d& bn = a->bn();
      Tensor bias = a->bias();
      for (int64_t i = 0; i < c; ++i) {
        float r1 = 0, r2 = 0;
        for (int64_t k = 0; k < ia; ++k) r1 = std::max(r1, std::fabs(wa.data()[i * ia + k]));
        for (int64_t o = 0; o < ob; ++o)
          for (int64_t k = 0; k < kb; ++k) r2 = std::max(r2, std::fabs(wb.data()[(o * c + i) * kb + k]));
        if (!(r1 > 0) || !(r2 > 0)) continue;
        const float s = std::sqrt(r1 / r2);
        bn.weight().data()[i] /= s;
        bn.bias().data()[i] /= s;
        if (bias.defined()) bias.data()[i] /= s;
        for (int64_t o = 0; o < ob; ++o)
          for (int64_t k = 0; k < kb; ++k) w2.data()[(o * c + i) * kb + k] *= s;
      }
    }
  }
  return static_cast<int>(pairs.size());
}

namespace {
// w fake-quantized by wq, whether or not wq's fake quant is on at the moment.
Tensor quantized_weight(WeightQuant& wq, const Tensor& w) {
  const bool was = wq.fake_quant_enabled();
  wq.set_fake_quant(true);
  Tensor q = wq.forward(w);
  wq.set_fake_quant(was);
  return q;
}

// The mean output shift of quantizing w to q, for a weight [co, ci, kk] (kk = 1 for a
// Linear) and inputs of per-channel mean `mean`: sum_{c,k} (q - w)[o, c, k] * mean[c].
std::vector<double> mean_output_shift(const Tensor& w, const Tensor& q, const std::vector<double>& mean, int64_t co,
                                      int64_t ci, int64_t kk) {
  std::vector<double> shift(static_cast<size_t>(co), 0.0);
  for (int64_t o = 0; o < co; ++o) {
    double d = 0;
    for (int64_t c = 0; c < ci; ++c) {
      double e = 0;
      for (int64_t k = 0; k < kk; ++k) {
        const int64_t at = (o * ci + c) * kk + k;
        e += static_cast<double>(q.data()[at]) - static_cast<double>(w.data()[at]);
      }
      d += e * mean[static_cast<size_t>(c)];
    }
    shift[static_cast<size_t>(o)] = d;
  }
  return shift;
}
}  // namespace

void correct_bias(nn::Module& model) {
  NoGradGuard ng;
  for (auto& [name, cb] : conv_bns(model)) {
    const Tensor w = cb->folded_weight();
    const int64_t kk = static_cast<int64_t>(cb->kernel) * cb->kernel;
    const std::vector<double> shift = mean_output_shift(w, quantized_weight(cb->weight_quant(), w), cb->input_mean(),
                                                        cb->out_channels, cb->in_channels, kk);
    for (int64_t o = 0; o < cb->out_channels; ++o) cb->bn().bias().data()[o] -= static_cast<float>(shift[o]);
  }
}

void correct_bias(nn::Linear& fc, const std::vector<double>& input_mean) {
  auto* wq = dynamic_cast<WeightQuant*>(fc.weight_transform());
  if (!wq) throw std::logic_error("correct_bias: the Linear has no WeightQuant (not prepared)");
  Tensor b = fc.bias();
  if (!b.defined()) throw std::invalid_argument("correct_bias: the Linear has no bias to correct");
  if (input_mean.size() != static_cast<size_t>(fc.in_features))
    throw std::invalid_argument("correct_bias: " + std::to_string(input_mean.size()) + " input means for a Linear of " +
                                std::to_string(fc.in_features) + " inputs");
  NoGradGuard ng;
  const Tensor w = fc.weight();
  const std::vector<double> shift =
      mean_output_shift(w, quantized_weight(*wq, w), input_mean, fc.out_features, fc.in_features, 1);
  for (int64_t o = 0; o < fc.out_features; ++o) b.data()[o] -= static_cast<float>(shift[o]);
}

void calibrate(nn::ResNet& model, const QatConfig& config, const std::vector<Tensor>& batches) {
  if (batches.empty()) throw std::invalid_argument("calibrate: no calibration batches");
  if (!is_prepared(model)) prepare(model, config);
  const bool was_training = model.training();
  model.eval();
  auto aqs = act_quants(model);
  apply_phase(model, QatPhase{.fake_quant = false, .observers_frozen = false, .bn_frozen = true});
  if (config.cross_layer_equalization) equalize_cross_layer(model);
  auto cbs = conv_bns(model);
  if (config.bias_correction)
    for (auto& [n, c] : cbs) c->collect_input_mean(true);
  for (auto& [n, a] : aqs) a->set_calibrating(true);
  // The fc's input mean (bias correction) is summed on the way: a ResNet's forward is
  // its children in order, so the input of the child "fc" is the pooled features.
  auto& fc = dynamic_cast<nn::Linear&>(model.find("fc.0"));
  std::vector<double> fc_sum(static_cast<size_t>(fc.in_features), 0.0);
  int64_t fc_rows = 0;
  {
    NoGradGuard ng;
    for (const Tensor& x : batches) {
      Tensor y = x;
      for (auto& [name, child] : model.children()) {
        if (name == "fc" && config.bias_correction) {
          const int64_t rows = y.numel() / fc.in_features;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < fc.in_features; ++i)
              fc_sum[static_cast<size_t>(i)] += y.data()[r * fc.in_features + i];
          fc_rows += rows;
        }
        y = child->forward(y);
      }
    }
  }
  if (config.bias_correction) {
    for (auto& [n, c] : cbs) c->collect_input_mean(false);
    correct_bias(model);
    for (double& m : fc_sum) m /= static_cast<double>(std::max<int64_t>(fc_rows, 1));
    correct_bias(fc, fc_sum);
  }
  for (auto& [n, a] : aqs) {
    a->set_calibrating(false);
    if (!a->leader() && !a->has_range())
      throw std::runtime_error("calibrate: ActQuant '" + n + "' saw no data (is it on the forward path?)");
  }
  apply_phase(model, QatPhase{.fake_quant = true, .observers_frozen = true, .bn_frozen = true});
  model.train(was_training);
}

void calibrate(nn::ResNet& model, const QatConfig& config, const Dataset& data, const Preprocess& pre, int64_t images,
               int batch, uint64_t seed) {
  if (images < 1) throw std::invalid_argument("calibrate: images must be >= 1");
  if (batch < 1) throw std::invalid_argument("calibrate: batch must be >= 1");
  const Dataset sample = nn::take_subset(data, images, seed);
  LoaderOptions lo;
  lo.batch_size = batch;
  lo.shuffle = false;
  lo.drop_last = false;
  lo.augment = false;
  lo.preprocess = pre;
  Loader loader(sample, lo);
  loader.start_epoch(0);
  std::vector<Tensor> batches;
  Batch b;
  while (loader.next(b)) batches.push_back(Tensor::from({b.n, b.c, b.h, b.w}, b.images));
  calibrate(model, config, batches);
}

// =====================================================================================
// checkpoints
// =====================================================================================

namespace {
constexpr const char* kQatPrefix = "qat.";
constexpr const char* kObserverPrefix = "qat.observer.";
}  // namespace

void write_qat_meta(nn::Module& model, const QatConfig& config, Checkpoint& ck) {
  for (auto& [k, v] : config.to_kv()) ck.meta[kQatPrefix + k] = v;
  for (auto& [name, a] : act_quants(model)) {
    Observer* o = a->leader() ? nullptr : a->observer();
    if (o && !o->frozen() && o->has_data()) ck.meta[kObserverPrefix + name] = o->state().encode();
  }
}

void read_qat_meta(nn::Module& model, const Checkpoint& ck) {
  for (auto& [name, a] : act_quants(model)) {
    if (a->leader() || !a->observer()) continue;
    auto it = ck.meta.find(kObserverPrefix + name);
    const bool frozen = a->observer_frozen();
    if (it != ck.meta.end()) {
      try {
        a->observer()->load(ObserverState::decode(it->second));
      } catch (const std::invalid_argument& e) {
        throw std::runtime_error("checkpoint " + ck.source + ": observer state of '" + name + "': " + e.what());
      }
    }
    a->freeze_observer(frozen);
  }
}

std::optional<QatConfig> qat_config_from_checkpoint(const Checkpoint& ck) {
  std::map<std::string, std::string> kv;
  const std::string obs = kObserverPrefix;
  for (auto& [k, v] : ck.meta)
    if (k.rfind(kQatPrefix, 0) == 0 && k.rfind(obs, 0) != 0) kv[k.substr(4)] = v;
  if (kv.empty()) return std::nullopt;
  try {
    return QatConfig::from_kv(kv);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("checkpoint " + ck.source + ": " + e.what());
  }
}

LoadedModel load_model(const Checkpoint& ck) {
  LoadedModel out;
  out.checkpoint = ck;
  const std::string where = "checkpoint " + ck.source;
  int classes = 0;
  try {
    classes = std::stoi(ck.get("classes"));
  } catch (const std::logic_error&) {
    throw std::runtime_error(where + ": metadata 'classes' is not a number");
  }
  out.model = nn::make_model(ck.get("model"), classes, 0);
  out.qat = qat_config_from_checkpoint(ck);
  if (out.qat) prepare(*out.model, *out.qat);
  try {
    out.model->load_state(ck.with_prefix("model."));
  } catch (const std::exception& e) {
    throw std::runtime_error(where + ": " + e.what());
  }
  if (out.qat) read_qat_meta(*out.model, ck);
  out.preprocess = nn::preprocess_from_checkpoint(ck);
  return out;
}

LoadedModel load_model(const std::string& path) { return load_model(load_checkpoint(path)); }

}  // namespace octet::quant
