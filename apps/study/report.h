// apps/study/report.h: `octet study report`: the report of a study folder
// (apps/study/runner.h), finished or not. It reads DIR/study.study,
// DIR/plan.json and each job's result.json (a job without one is unfinished)
// and writes into OUT (default DIR):
//
//   report.md      the study's title; the seeds and how many jobs are done,
//                  failed and unfinished; ONE table in the paper's layout, a
//                  line per row in study order: top-1 and top-5 as mean ± sample
//                  std over seeds (the fake-quant figures, or the float ones
//                  for float rows), Δ top-1 against the row "baseline", the
//                  engine's top-1 and its "== simulation" count, the paper's
//                  figures, the theoretical and actual model sizes, the seeds
//                  done; the study's paper caption and footnotes (why a row has
//                  no engine figure); a per-seed top-1 table; the failed jobs
//                  with their errors; the unfinished ones; links to the figures.
//   jobs.csv       one line per job of plan.json (RFC 4180).
//   fig_<id>.png   per figure.<id> of the study: training loss against step,
//                  per row the mean over seeds with a min..max band.
//   fig_top1.png   top-1 mean per row (x = the row's position in the table).
//
// Accuracies in result.json are fractions; the report prints percent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace octet::study {

// One entry of plan.json.
struct PlanJob {
  std::string id;
  std::string row;  // "" for a job that is only a trunk
  uint64_t seed = 0;
  std::string kind;  // "train", "trunk" or "calibrate"
  std::string dir;   // relative to the study folder
  std::vector<std::string> depends;
  int fork_epoch = 0;
};

// Throws std::runtime_error naming the file when it is missing or malformed.
std::vector<PlanJob> load_plan(const std::string& plan_json);

// (step, train_loss) of each row of a steps csv (columns step,steps,lr,
// train_loss, found by the header's names). Throws std::runtime_error naming
// the file (and the line) when it is missing or malformed.
std::vector<std::pair<double, double>> load_steps_csv(const std::string& path);

// One evaluation of a job's final model (fractions in [0, 1]).
struct Scores {
  double top1 = 0, top5 = 0, loss = 0;
  std::vector<double> recall;  // per class
  int64_t images = 0, equal_intsim = 0;  // engine only: images whose logits equal the simulation's ...
  int64_t intsim_images = 0;             // ... of the images simulated (the first ones)
};

// A job's result.json.
struct JobResult {
  std::string job, row, kind;
  uint64_t seed = 0;
  std::string status;  // "done" or "failed"
  std::string error;   // failed only
  std::vector<std::string> command;
  int epochs = 0, epochs_trained = 0, threads = 0;
  double seconds = 0;
  std::string machine;
  std::optional<Scores> float_scores, fakequant, engine;
  std::string engine_note;  // why engine is absent
  int weight_bits = 0;
  std::optional<int64_t> theoretical_bytes, model_file_bytes;
  std::vector<std::string> class_names;
  std::string steps_csv;  // relative to the job's folder; "" when absent

  bool done() const { return status == "done"; }
  // The figures the table reports: fake-quant for quantized rows, else float.
  const Scores* main_scores() const;
};

// Throws std::runtime_error naming the file when it is missing or malformed
// (status neither "done" nor "failed" included).
JobResult load_result(const std::string& result_json);

// "71.00 ± 0.50" for percent values (sample std, n-1), "71.00 (1 seed)" for
// one value, "-" for none.
std::string mean_std_text(const std::vector<double>& percent);

// Bytes in human units, base 1000: "812 B", "271.0 kB", "25.53 MB".
std::string human_bytes(int64_t bytes);

// Writes report.md, jobs.csv and the figures of study folder `dir` into
// out_dir ("" = dir; created if needed). Throws std::runtime_error naming the
// file for a missing or malformed study.study, plan.json, result.json or
// steps csv (a done job whose steps csv is absent only gets a note).
void write_report(const std::string& dir, const std::string& out_dir = "");

}  // namespace octet::study

namespace octet::study {

// Copies what a study folder knows, without its checkpoints and models, into
// out_dir: study.study, plan.json and, per job that has a result, result.json,
// command.txt, run/log.csv and run/steps.csv. out_dir is then a study folder
// of its own: write_report reads it, and copied into a run folder it lets
// `octet study` resume (finished jobs are skipped; a trunk whose forks still
// have to run is trained again, deterministically). Returns the jobs copied.
int archive_results(const std::string& dir, const std::string& out_dir);

}  // namespace octet::study
