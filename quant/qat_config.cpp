// quant/qat_config.cpp: QuantOp / AddInputs names, and QatConfig's key=value
// form (one visit() list of fields for both directions), file reader,
// validation and step resolution.
#include "quant/qat_config.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>
#include <stdexcept>

#include "core/keyvalue.h"
#include "quant/qat_internal.h"

namespace octet::quant {

std::string_view quant_op_name(QuantOp op) {
  switch (op) {
    case QuantOp::qdq_v2: return "qdq_v2";
    case QuantOp::fake_quant: return "fake_quant";
    case QuantOp::lsq: return "lsq";
  }
  return "?";
}

QuantOp parse_quant_op(std::string_view name) {
  if (name == "qdq_v2" || name == "qdqv2") return QuantOp::qdq_v2;
  if (name == "fake_quant" || name == "fakequant") return QuantOp::fake_quant;
  if (name == "lsq") return QuantOp::lsq;
  throw std::invalid_argument("unknown quant op '" + std::string(name) + "'; valid: qdq_v2, fake_quant, lsq");
}

std::string_view add_inputs_name(AddInputs a) {
  switch (a) {
    case AddInputs::off: return "off";
    case AddInputs::tied: return "tied";
    case AddInputs::untied: return "untied";
  }
  return "?";
}

AddInputs parse_add_inputs(std::string_view name) {
  if (name == "off") return AddInputs::off;
  if (name == "tied") return AddInputs::tied;
  if (name == "untied") return AddInputs::untied;
  throw std::invalid_argument("unknown add_inputs '" + std::string(name) + "'; valid: off, tied, untied");
}

namespace {

using detail::shortest;

// One list of fields for both directions.
template <class F>
void visit(QatConfig& c, F&& f) {
  f("op", c.op, quant_op_name, parse_quant_op);
  f("round", c.round, round_mode_name, parse_round_mode);
  f("weight_bits", c.weight_bits);
  f("act_bits", c.act_bits);
  f("signed_activations", c.signed_activations);
  f("per_channel_weights", c.per_channel_weights);
  f("symmetric_weights", c.symmetric_weights);
  f("narrow_weights", c.narrow_weights);
  f("quantize_weights", c.quantize_weights);
  f("quantize_activations", c.quantize_activations);
  f("add_inputs", c.add_inputs, add_inputs_name, parse_add_inputs);
  f("quantize_input", c.quantize_input);
  f("quantize_output", c.quantize_output);
  f("range_given", c.range_given);
  f("range_min", c.range_min);
  f("range_max", c.range_max);
  f("observer", c.act_observer.kind);
  f("observer_decay", c.act_observer.decay);
  f("observer_percentile", c.act_observer.percentile);
  f("observer_k", c.act_observer.k);
  f("observer_bins", c.act_observer.bins);
  f("quant_delay", c.quant_delay);
  f("quant_delay_step", c.quant_delay_step);
  f("observer_freeze", c.observer_freeze);
  f("observer_freeze_step", c.observer_freeze_step);
  f("bn_freeze", c.bn_freeze);
  f("bn_freeze_step", c.bn_freeze_step);
  f("cle", c.cross_layer_equalization);
  f("bias_correction", c.bias_correction);
}


constexpr const char* kBitsPrefix = "bits.";

int64_t resolve_step(double fraction, int64_t step, int64_t total) {
  if (step >= 0) return step;
  if (fraction < 0) return -1;
  return static_cast<int64_t>(std::floor(fraction * static_cast<double>(total)));
}

}  // namespace

std::map<std::string, std::string> QatConfig::to_kv() const {
  std::map<std::string, std::string> m;
  QatConfig copy = *this;
  visit(copy, kv::Writer{m});
  for (auto& [name, bits] : bits_overrides) m[kBitsPrefix + name] = std::to_string(bits);
  return m;
}

QatConfig QatConfig::from_kv(const std::map<std::string, std::string>& m) {
  QatConfig c;
  std::set<std::string> used;
  kv::Reader read{m, used, "qat config", true};
  visit(c, read);
  for (auto& [k, v] : m) {
    if (used.count(k)) continue;
    if (k.rfind(kBitsPrefix, 0) == 0 && k.size() > 5) {
      c.bits_overrides[k.substr(5)] = read.integer<int>(k, v);
      continue;
    }
    throw std::invalid_argument("qat config: unknown key '" + k + "'");
  }
  c.validate();
  return c;
}

QatConfig QatConfig::from_file(const std::string& path) {
  const std::string what = "qat config file";
  const std::map<std::string, std::string> m = kv::parse_map(kv::read_file(path, what), what + " " + path);
  try {
    return from_kv(m);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(what + " " + path + ": " + e.what());
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
  if (op != QuantOp::fake_quant && !symmetric_weights)
    fail("symmetric_weights = false needs op fake_quant (" + std::string(quant_op_name(op)) + " is symmetric)");
  if (op == QuantOp::fake_quant && symmetric_weights && !narrow_weights)
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
