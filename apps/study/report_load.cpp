// apps/study/report_load.cpp: the readers of apps/study/report.h: plan.json,
// result.json and a job's steps csv. Every error names the file.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "apps/study/report.h"

namespace octet::study {

using nlohmann::json;

namespace {
json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": malformed JSON: " + e.what());
  }
}

// Optional members: absent and null read as "not given"; a wrong type throws
// (json::type_error, turned into a message naming the file by the caller).
template <class T>
std::optional<T> member(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return it->get<T>();
}
template <class T>
T member_or(const json& j, const char* key, T fallback) {
  return member<T>(j, key).value_or(std::move(fallback));
}

std::optional<Scores> scores(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  Scores s;
  s.top1 = it->at("top1").get<double>();
  s.top5 = it->at("top5").get<double>();
  s.loss = member_or<double>(*it, "loss", NAN);
  s.recall = member_or<std::vector<double>>(*it, "recall", {});
  s.images = member_or<int64_t>(*it, "images", 0);
  s.equal_intsim = member_or<int64_t>(*it, "equal_intsim", 0);
  // The simulation may check only the first images (octet eval --intsim-images).
  s.intsim_images = member_or<int64_t>(*it, "intsim_images", s.images);
  return s;
}

}  // namespace

std::vector<std::pair<double, double>> load_steps_csv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::vector<std::pair<double, double>> out;
  size_t step_col = 0, loss_col = 0, line_no = 0;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::vector<std::string> cells;
    std::istringstream ls(line);
    for (std::string c; std::getline(ls, c, ',');) cells.push_back(c);
    if (++line_no == 1) {  // the header
      auto col = [&](const char* name) { return size_t(std::find(cells.begin(), cells.end(), name) - cells.begin()); };
      step_col = col("step");
      loss_col = col("train_loss");
      if (step_col == cells.size() || loss_col == cells.size())
        throw std::runtime_error(path + ": the header has no 'step' and 'train_loss' columns");
      continue;
    }
    if (line.empty()) continue;
    char *end1 = nullptr, *end2 = nullptr;
    const bool ok = std::max(step_col, loss_col) < cells.size();
    const double step = ok ? std::strtod(cells[step_col].c_str(), &end1) : 0;
    const double loss = ok ? std::strtod(cells[loss_col].c_str(), &end2) : 0;
    if (!ok || *end1 || *end2 || end1 == cells[step_col].c_str())
      throw std::runtime_error(path + ":" + std::to_string(line_no) + ": malformed row '" + line + "'");
    out.emplace_back(step, loss);
  }
  return out;
}

std::vector<PlanJob> load_plan(const std::string& plan_json) {
  const json j = read_json(plan_json);
  try {
    std::vector<PlanJob> jobs;
    for (const json& e : j.at("jobs")) {
      PlanJob p;
      p.id = e.at("id").get<std::string>();
      p.row = member_or<std::string>(e, "row", "");
      p.seed = member_or<uint64_t>(e, "seed", 0);
      p.kind = member_or<std::string>(e, "kind", "train");
      p.dir = member_or<std::string>(e, "dir", "jobs/" + p.id);
      p.depends = member_or<std::vector<std::string>>(e, "depends", {});
      p.fork_epoch = member_or<int>(e, "fork_epoch", 0);
      jobs.push_back(std::move(p));
    }
    return jobs;
  } catch (const json::exception& e) {
    throw std::runtime_error(plan_json + ": " + e.what());
  }
}

const Scores* JobResult::main_scores() const {
  return fakequant ? &*fakequant : float_scores ? &*float_scores : nullptr;
}

JobResult load_result(const std::string& result_json) {
  const json j = read_json(result_json);
  JobResult r;
  try {
    r.job = member_or<std::string>(j, "job", "");
    r.row = member_or<std::string>(j, "row", "");
    r.seed = member_or<uint64_t>(j, "seed", 0);
    r.kind = member_or<std::string>(j, "kind", "");
    r.status = j.at("status").get<std::string>();
    r.error = member_or<std::string>(j, "error", "");
    r.command = member_or<std::vector<std::string>>(j, "command", {});
    r.epochs = member_or<int>(j, "epochs", 0);
    r.epochs_trained = member_or<int>(j, "epochs_trained", 0);
    r.seconds = member_or<double>(j, "seconds", 0);
    r.threads = member_or<int>(j, "threads", 0);
    r.machine = member_or<std::string>(j, "machine", "");
    r.float_scores = scores(j, "float");
    r.fakequant = scores(j, "fakequant");
    r.engine = scores(j, "engine");
    r.engine_note = member_or<std::string>(j, "engine_note", "");
    r.weight_bits = member_or<int>(j, "weight_bits", 0);
    r.theoretical_bytes = member<int64_t>(j, "theoretical_bytes");
    r.model_file_bytes = member<int64_t>(j, "model_file_bytes");
    r.class_names = member_or<std::vector<std::string>>(j, "class_names", {});
    r.steps_csv = member_or<std::string>(j, "steps_csv", "");
  } catch (const json::exception& e) {
    throw std::runtime_error(result_json + ": " + e.what());
  }
  if (r.status != "done" && r.status != "failed")
    throw std::runtime_error(result_json + ": status '" + r.status + "' is neither done nor failed");
  // A job that stands for a row has the figures of its final model; a trunk
  // that is only a trunk has none.
  if (r.done() && !r.row.empty() && !r.main_scores())
    throw std::runtime_error(result_json + ": status done but no float or fakequant scores");
  return r;
}

}  // namespace octet::study
