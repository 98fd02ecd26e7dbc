// apps/qat_flags.h: the QAT/PTQ knobs as command-line flags, shared by
// `octet train --qat` and `octet calibrate`. Each flag sets QatConfig keys
// (quant/qat.h); --qat-config FILE is read first, flags override it, and
// --qat-set KEY=VALUE,... reaches every key.
#pragma once

#include <map>
#include <sstream>
#include <string>

#include "apps/args.h"
#include "quant/qat.h"

namespace octet::app {

inline const char* kQatFlagsHelp = R"(  --qat-config FILE     key = value lines (see quant/qat.h QatConfig; flags override it)
  --quant-op qdq_v2|fake_quant|lsq        (default qdq_v2)
  --round half_to_even|half_up|half_away|stochastic   (default half_to_even)
  --bits N              weight and activation bits (2..16, 32); --weight-bits N  --act-bits N
  --unsigned            ReLU outputs on an unsigned grid (default signed)
  --per-tensor          per-tensor weights (default per channel, symmetric)
  --add-inputs off|tied|untied            quantize the inputs of Add too (default off)
  --quantize-input      fake-quantize the preprocessed image (default: kept float)
  --float-output        keep the logits float (default: quantized)
  --weights-only        no activation quantization (ranges still measured)
  --range-given MIN,MAX fixed activation ranges instead of observed ones
  --observer ema|minmax|percentile|entropy|mse|meanstd   activation observer
  --ema-decay D         (default 0.999)   --percentile P (default 99.99)
  --qat-set KEY=VALUE[,KEY=VALUE...]       any other key, e.g. bits.layer1.0.conv1=4
)";

// Reads the knob flags into `c` (starting from --qat-config FILE if given).
// Returns true when any of them was given.
inline bool read_qat_flags(Args& a, quant::QatConfig& c, const std::string& cmd) {
  std::map<std::string, std::string> kv;
  bool any = false;
  const std::string file = a.get("--qat-config", "");
  if (!file.empty()) {
    c = quant::QatConfig::from_file(file);
    any = true;
  }
  kv = c.to_kv();
  auto set = [&](const char* flag, const char* key) {
    if (!a.has(flag)) return;
    kv[key] = a.get(flag, "");
    any = true;
  };
  set("--quant-op", "op");
  set("--weight-bits", "weight_bits");
  set("--act-bits", "act_bits");
  set("--add-inputs", "add_inputs");
  set("--observer", "observer");
  set("--ema-decay", "observer_decay");
  set("--percentile", "observer_percentile");
  if (a.has("--round")) {
    std::string r = a.get("--round", "");
    if (r == "half_away") r = "half_away_from_zero";
    kv["round"] = r;
    any = true;
  }
  if (a.has("--bits")) {
    const std::string b = a.get("--bits", "");
    if (!a.has("--weight-bits")) kv["weight_bits"] = b;
    if (!a.has("--act-bits")) kv["act_bits"] = b;
    any = true;
  }
  auto boolean = [&](const char* flag, const char* key, const char* value) {
    if (a.flag(flag)) {
      kv[key] = value;
      any = true;
    }
  };
  boolean("--unsigned", "signed_activations", "false");
  boolean("--per-tensor", "per_channel_weights", "false");
  boolean("--quantize-input", "quantize_input", "true");
  boolean("--float-output", "quantize_output", "false");
  boolean("--weights-only", "quantize_activations", "false");
  if (a.has("--range-given")) {
    const std::string r = a.get("--range-given", "");
    const auto comma = r.find(',');
    if (comma == std::string::npos) throw UsageError(cmd + ": --range-given expects MIN,MAX, got '" + r + "'");
    kv["range_given"] = "true";
    kv["range_min"] = r.substr(0, comma);
    kv["range_max"] = r.substr(comma + 1);
    any = true;
  }
  if (a.has("--qat-set")) {
    std::stringstream ss(a.get("--qat-set", ""));
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item.empty()) continue;
      const auto eq = item.find('=');
      if (eq == std::string::npos) throw UsageError(cmd + ": --qat-set expects KEY=VALUE, got '" + item + "'");
      kv[item.substr(0, eq)] = item.substr(eq + 1);
    }
    any = true;
  }
  try {
    c = quant::QatConfig::from_kv(kv);
  } catch (const std::invalid_argument& e) {
    throw UsageError(cmd + ": " + e.what());
  }
  return any;
}

// The "when" flags of QAT (octet train only): --quant-delay F | --quant-delay-step N,
// --observer-freeze F, --bn-freeze F. A fraction replaces an absolute step given
// by the config. Returns true when any of them was given.
inline bool read_qat_schedule_flags(Args& a, quant::QatConfig& q) {
  bool any = false;
  auto when = [&](const char* flag, double& fraction, int64_t& step) {
    if (!a.has(flag)) return;
    fraction = a.get_double(flag, fraction);
    step = -1;
    any = true;
  };
  when("--quant-delay", q.quant_delay, q.quant_delay_step);
  if (a.has("--quant-delay-step")) {
    q.quant_delay_step = a.get_int64("--quant-delay-step", -1);
    any = true;
  }
  when("--observer-freeze", q.observer_freeze, q.observer_freeze_step);
  when("--bn-freeze", q.bn_freeze, q.bn_freeze_step);
  return any;
}

// Every flag of `octet train` that belongs to QAT (the knobs above, the
// schedule, --qat itself): what `octet study` separates from the training
// recipe when it groups rows by their float phase.
inline bool is_qat_flag(const std::string& name) {
  static const char* const kNames[] = {
      "--qat",        "--qat-config",    "--quant-op",   "--round",          "--bits",
      "--weight-bits", "--act-bits",     "--unsigned",   "--per-tensor",     "--add-inputs",
      "--quantize-input", "--float-output", "--weights-only", "--range-given", "--observer",
      "--ema-decay",  "--percentile",    "--qat-set",    "--quant-delay",    "--quant-delay-step",
      "--observer-freeze", "--bn-freeze"};
  for (const char* n : kNames)
    if (name == n) return true;
  return false;
}

}  // namespace octet::app
