#include "apps/study/plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "apps/args.h"
#include "apps/qat_flags.h"
#include "nn/trainer.h"
#include "quant/qat.h"

namespace octet::study {

namespace {

// What a row's flags say about its training: the QAT configuration (nullopt
// without --qat) and the run's epochs.
struct RowRecipe {
  std::vector<Flag> flags;        // train + baseline + row, merged
  std::vector<Flag> train_part;   // the flags that are not QAT knobs
  std::optional<quant::QatConfig> qat;
  int epochs = 0;
};

RowRecipe read_recipe(const std::vector<Flag>& flags, const std::string& row) {
  RowRecipe r;
  r.flags = flags;
  std::vector<std::string> words = flag_words(flags);
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  app::Args a(static_cast<int>(argv.size()), argv.data(), "octet study: row " + row, "");
  try {
    const std::string preset = a.get("--preset", "quick");
    r.epochs = a.get_int("--epochs", nn::TrainConfig::preset_config(preset).epochs);
    if (a.flag("--qat")) {
      quant::QatConfig q;
      app::read_qat_flags(a, q, "octet study: row " + row);
      app::read_qat_schedule_flags(a, q);
      q.validate();
      r.qat = q;
    }
  } catch (const std::exception& e) {
    throw std::invalid_argument("row '" + row + "': " + e.what());
  }
  if (r.epochs < 1) throw std::invalid_argument("row '" + row + "': --epochs must be >= 1");
  for (const Flag& f : flags)
    if (!app::is_qat_flag(f.name)) r.train_part.push_back(f);
  return r;
}

// The configuration of a row's float phase (see the header): the knobs that
// act only once fake quant is on come from the baseline, and the delay is never.
quant::QatConfig float_phase_config(const quant::QatConfig& row, const quant::QatConfig& base) {
  quant::QatConfig t = row;
  if (row.op != quant::QuantOp::lsq && base.op != quant::QuantOp::lsq) {
    t.op = base.op;
    t.round = base.round;
    t.weight_bits = base.weight_bits;
    const bool bits_in_state = row.act_observer.kind == "entropy" || row.act_observer.kind == "mse";
    if (!bits_in_state) t.act_bits = base.act_bits;
    t.signed_activations = base.signed_activations;
    t.per_channel_weights = base.per_channel_weights;
    t.symmetric_weights = base.symmetric_weights;
    t.narrow_weights = base.narrow_weights;
    t.quantize_weights = base.quantize_weights;
    t.quantize_activations = base.quantize_activations;
    t.quantize_output = base.quantize_output;
    t.bits_overrides = base.bits_overrides;
    t.cross_layer_equalization = base.cross_layer_equalization;
    t.bias_correction = base.bias_correction;
  }
  t.quant_delay = 1;
  t.quant_delay_step = -1;
  return t;
}

std::string canonical(const std::vector<Flag>& flags) {
  std::vector<std::string> items;
  for (const Flag& f : flags) items.push_back(f.name + (f.value ? "=" + *f.value : ""));
  std::sort(items.begin(), items.end());
  std::string s;
  for (auto& i : items) s += i + "\n";
  return s;
}

std::string kv_text(const quant::QatConfig& q) { return q.to_string(); }

bool quantizes(const quant::QatConfig& q, int epochs) {
  if (q.quant_delay_step >= 0) return true;
  return q.quant_delay < 1 && epochs > 0;
}

int max_bits(const quant::QatConfig& q) {
  int b = std::max(q.weight_bits, q.act_bits);
  for (auto& [name, bits] : q.bits_overrides) b = std::max(b, bits);
  return b;
}

std::string short_hash(const std::string& text) { return fnv1a_hex(text).substr(0, 8); }

}  // namespace

const char* job_kind_name(JobKind k) {
  switch (k) {
    case JobKind::train: return "train";
    case JobKind::trunk: return "trunk";
    case JobKind::calibrate: return "calibrate";
  }
  return "?";
}

std::string fnv1a_hex(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

const Job* Plan::job(const std::string& id) const {
  for (const Job& j : jobs)
    if (j.id == id) return &j;
  return nullptr;
}

std::string Plan::to_json() const {
  nlohmann::ordered_json out;
  out["jobs"] = nlohmann::json::array();
  for (const Job& j : jobs) {
    nlohmann::ordered_json o;
    o["id"] = j.id;
    o["row"] = j.row;
    o["seed"] = j.seed;
    o["kind"] = job_kind_name(j.kind);
    o["dir"] = j.dir();
    o["depends"] = j.depends;
    o["fork_epoch"] = j.fork_epoch;
    o["args"] = j.args;
    o["epochs"] = j.epochs;
    o["cost"] = j.cost;
    out["jobs"].push_back(o);
  }
  return out.dump(1) + "\n";
}

Plan make_plan(const StudyFile& study) {
  Plan plan;
  const RowRecipe base = read_recipe(merge_flags({study.train, study.baseline}), "baseline");
  for (const uint64_t seed : study.seeds) {
    const Flag seed_flag{"--seed", std::to_string(seed)};
    const std::string s = ".s" + std::to_string(seed) + ".";
    std::map<std::string, size_t> trunks;     // trunk key -> index in plan.jobs
    std::map<std::string, std::string> row_job;  // row id -> job id (this seed)
    for (const Row& row : study.rows) {
      if (row.command == "calibrate") {
        Job j;
        j.kind = JobKind::calibrate;
        j.row = row.id;
        j.seed = seed;
        const std::string src = row_job.count(row.from) ? row_job[row.from] : "";
        if (src.empty())
          throw std::invalid_argument("row '" + row.id + "' calibrates row '" + row.from +
                                      "', which must come before it in the study");
        j.depends = {src};
        j.args = {"calibrate", "../" + src + "/run/last.ckpt"};
        for (auto& w : flag_words(merge_flags({row.flags, {seed_flag}}))) j.args.push_back(w);
        // What the calibration quantizes: read the flags as octet calibrate does.
        std::vector<Flag> qat_flags = {{"--qat", std::nullopt}};
        for (const Flag& f : row.flags)
          if (app::is_qat_flag(f.name)) qat_flags.push_back(f);
        const RowRecipe r = read_recipe(qat_flags, row.id);
        j.quantized = true;
        j.weight_bits = r.qat->weight_bits;
        j.engine = max_bits(*r.qat) <= 8;
        j.cost = 0.05;
        std::string text;
        for (auto& w : j.args) text += w + "\n";
        j.id = row.id + s + short_hash(text);
        row_job[row.id] = j.id;
        plan.jobs.push_back(j);
        continue;
      }
      const RowRecipe r = read_recipe(merge_flags({study.train, study.baseline, row.flags, {seed_flag}}), row.id);
      Job j;
      j.row = row.id;
      j.seed = seed;
      j.epochs = r.epochs;
      j.cost = r.epochs;
      for (auto& w : flag_words(r.flags)) j.args.push_back(w);
      j.args.insert(j.args.begin(), "train");
      if (r.qat) {
        j.quantized = quantizes(*r.qat, r.epochs);
        j.weight_bits = j.quantized ? r.qat->weight_bits : 32;
        j.engine = j.quantized && max_bits(*r.qat) <= 8;
        const quant::QatConfig phase = float_phase_config(*r.qat, base.qat ? *base.qat : quant::QatConfig{});
        const bool is_trunk = phase.to_kv() == r.qat->to_kv();
        int fork = 0;
        if (!is_trunk && r.qat->quant_delay_step < 0)
          fork = std::min(static_cast<int>(std::floor(r.qat->quant_delay * r.epochs + 1e-9)), r.epochs - 1);
        if (is_trunk || fork > 0) {
          const std::string key = canonical(r.train_part) + kv_text(phase);
          auto it = trunks.find(key);
          if (it == trunks.end()) {
            Job t;
            t.kind = JobKind::trunk;
            t.seed = seed;
            t.epochs = r.epochs;
            t.qat_conf = kv_text(phase);
            t.args = {"train"};
            for (auto& w : flag_words(r.train_part)) t.args.push_back(w);
            for (const char* w : {"--qat", "--qat-config", "qat.conf"}) t.args.push_back(w);
            std::string text = t.qat_conf;
            for (auto& w : t.args) text += w + "\n";
            t.id = "trunk" + s + short_hash(text);
            it = trunks.emplace(key, plan.jobs.size()).first;
            plan.jobs.push_back(t);
          }
          Job& t = plan.jobs[it->second];
          if (is_trunk) {
            if (!t.row.empty())
              throw std::invalid_argument("rows '" + t.row + "' and '" + row.id + "' are the same run");
            t.row = row.id;
            t.stop_after = r.epochs;
            row_job[row.id] = t.id;
            continue;
          }
          t.stop_after = std::max(t.stop_after, fork);
          t.snapshots_from = t.snapshots_from == 0 ? fork : std::min(t.snapshots_from, fork);
          j.fork_job = t.id;
          j.fork_epoch = fork;
          j.depends = {t.id};
          j.cost = r.epochs - fork;
          j.args.push_back("--fork");
          j.args.push_back("../" + t.id + "/run/epoch_" + std::to_string(fork) + ".ckpt");
        }
      }
      std::string text;
      for (auto& w : j.args) text += w + "\n";
      j.id = row.id + s + short_hash(text);
      row_job[row.id] = j.id;
      plan.jobs.push_back(j);
    }
    // A trunk only trains as far as its forks need; its cost is that.
    for (auto& [key, index] : trunks) {
      Job& t = plan.jobs[index];
      if (t.stop_after == 0) t.stop_after = t.epochs;
      t.cost = t.stop_after;
    }
  }
  // Ids must be unique (two rows with the same recipe and seed would share a folder).
  std::set<std::string> ids;
  for (const Job& j : plan.jobs)
    if (!ids.insert(j.id).second)
      throw std::invalid_argument("two rows make the same job " + j.id + " (give one of them another flag)");
  return plan;
}

}  // namespace octet::study
