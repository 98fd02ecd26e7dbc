// quant/qat_config.cpp: QuantOp / AddInputs names, and QatConfig's key=value
// form (one visit() list of fields for both directions), file reader,
// validation and step resolution.
#include "quant/qat_config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <stdexcept>

#include "quant/qat_internal.h"

namespace octet::quant {

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

using detail::shortest;

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

}  // namespace octet::quant
