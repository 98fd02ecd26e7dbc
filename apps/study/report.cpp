// apps/study/report.cpp: see apps/study/report.h. The study folder linked
// up (Folder: jobs with their results, rows with their jobs per seed), then
// the writers: report.md, jobs.csv and the figures. The readers are in
// apps/study/report_load.cpp.
#include "apps/study/report.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <map>
#include <span>
#include <stdexcept>

#include "apps/study/study_file.h"
#include "core/image.h"
#include "core/plot.h"

namespace octet::study {

namespace fs = std::filesystem;

namespace {
std::string fmt(const char* f, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}
}  // namespace

std::string mean_std_text(const std::vector<double>& v) {
  if (v.empty()) return "-";
  double mean = 0;
  for (double x : v) mean += x;
  mean /= double(v.size());
  if (v.size() == 1) return fmt("%.2f (1 seed)", mean);
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return fmt("%.2f ± %.2f", mean, std::sqrt(ss / double(v.size() - 1)));
}

std::string human_bytes(int64_t b) {
  if (b < 1000) return fmt("%lld B", (long long)b);
  if (b < 1000000) return fmt("%.1f kB", double(b) / 1e3);
  return fmt("%.2f MB", double(b) / 1e6);
}

// ---- the summary ----

namespace {
struct Job {
  const PlanJob* plan;
  std::optional<JobResult> result;  // nullopt: unfinished
  std::string status() const { return result ? result->status : "unfinished"; }
};

// A row of the study and the jobs standing for it, one per seed.
struct RowSummary {
  const Row* row;
  std::map<uint64_t, const Job*> by_seed;  // the first job per seed in plan order
  std::vector<const Job*> done;            // those with status done, in seed order
};

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? NAN : s / double(v.size());
}

// One figure (top-1 or top-5) of each done job, in percent: of its main scores,
// or with `engine` of its engine scores (jobs without them are skipped).
std::vector<double> percent_of(const std::vector<const Job*>& done, double Scores::*field, bool engine) {
  std::vector<double> v;
  for (const Job* j : done) {
    const JobResult& r = *j->result;
    const Scores* s = engine ? (r.engine ? &*r.engine : nullptr) : r.main_scores();
    if (s) v.push_back(100.0 * (s->*field));
  }
  return v;
}

// Markdown: a multi-line text as an indented code block inside a list item.
std::string code_block(const std::string& text) {
  std::string out = "\n  ```\n  ";
  for (char c : text) out += c == '\n' ? std::string("\n  ") : std::string(1, c);
  return out + "\n  ```\n";
}

// Markdown table cells may not hold '|' or line breaks.
std::string cell(std::string s) {
  std::string out;
  for (char c : s) out += c == '|' ? std::string("\\|") : c == '\n' ? std::string(" ") : std::string(1, c);
  return out;
}

// RFC 4180: quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string num(std::optional<double> v) { return v ? fmt("%.10g", *v) : ""; }

void write_text(const std::string& path, const std::string& text) {
  write_file_atomic(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

// Fractions as in result.json; empty fields for what a job does not have.
std::string jobs_csv(const std::vector<Job>& jobs) {
  std::string out = "id,row,seed,kind,status,epochs_trained,seconds,float_top1,float_top5,fq_top1,fq_top5,"
                    "engine_top1,engine_top5,equal_intsim,intsim_images,images,model_file_bytes,theoretical_bytes,error\n";
  for (const Job& j : jobs) {
    const JobResult* r = j.result ? &*j.result : nullptr;
    auto score = [&](const std::optional<Scores> JobResult::*which, double Scores::*field) {
      return r && (r->*which) ? num((*(r->*which)).*field) : std::string();
    };
    auto integer = [](std::optional<int64_t> v) { return v ? std::to_string(*v) : std::string(); };
    std::vector<std::string> f = {
        j.plan->id, j.plan->row, std::to_string(j.plan->seed), j.plan->kind, j.status(),
        r ? std::to_string(r->epochs_trained) : "", r ? num(r->seconds) : "",
        score(&JobResult::float_scores, &Scores::top1), score(&JobResult::float_scores, &Scores::top5),
        score(&JobResult::fakequant, &Scores::top1), score(&JobResult::fakequant, &Scores::top5),
        score(&JobResult::engine, &Scores::top1), score(&JobResult::engine, &Scores::top5),
        r && r->engine ? std::to_string(r->engine->equal_intsim) : "",
        r && r->engine ? std::to_string(r->engine->intsim_images) : "",
        r && r->engine ? std::to_string(r->engine->images) : "",
        r ? integer(r->model_file_bytes) : "", r ? integer(r->theoretical_bytes) : "", r ? r->error : ""};
    for (size_t i = 0; i < f.size(); ++i) {
      if (i) out += ',';
      out += csv_field(f[i]);
    }
    out += '\n';
  }
  return out;
}

// The loss-against-step chart of one figure; names the rows left out in `notes`.
LineChart loss_figure(const Figure& fig, const std::vector<RowSummary>& rows, const std::string& dir,
                      std::vector<std::string>& notes) {
  LineChart c{.title = fig.title, .xlabel = "step", .ylabel = "training loss", .series = {}};
  for (const std::string& id : fig.rows) {
    auto it = std::find_if(rows.begin(), rows.end(), [&](const RowSummary& r) { return r.row->id == id; });
    if (it == rows.end() || it->done.empty()) {
      notes.push_back("row `" + id + "` has no finished job");
      continue;
    }
    std::map<double, std::vector<double>> at_step;  // loss of each seed at each step
    for (const Job* job : it->done) {
      const JobResult& r = *job->result;
      const std::string csv = (fs::path(dir) / job->plan->dir / r.steps_csv).string();
      if (r.steps_csv.empty() || !fs::exists(csv)) {
        notes.push_back("`" + job->plan->id + "` has no steps csv" + (r.steps_csv.empty() ? "" : " (" + csv + ")"));
        continue;
      }
      for (auto [step, loss] : load_steps_csv(csv)) at_step[step].push_back(loss);
    }
    if (at_step.empty()) continue;
    Series s{.name = it->row->label, .x = {}, .y = {}, .color = {}};
    for (const auto& [step, losses] : at_step) {
      s.x.push_back(step);
      s.y.push_back(mean(losses));
      s.lo.push_back(*std::min_element(losses.begin(), losses.end()));
      s.hi.push_back(*std::max_element(losses.begin(), losses.end()));
    }
    c.series.push_back(std::move(s));
  }
  return c;
}

// StudyFile::load, its errors (they name the file) as std::runtime_error.
StudyFile load_study(const std::string& path) {
  try {
    return StudyFile::load(path);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(e.what());
  }
}

// Everything the report reads, linked up. Not copyable: the rows point into jobs.
struct Folder {
  StudyFile study;
  std::vector<PlanJob> plan;
  std::vector<Job> jobs;         // plan order
  std::vector<uint64_t> seeds;   // the study's, then any other seed of the plan
  std::vector<RowSummary> rows;  // study order
  const RowSummary* baseline = nullptr;  // the reference row of the Δ column (study.reference)
  int done = 0, failed = 0, unfinished = 0;

  explicit Folder(const std::string& dir)
      : study(load_study((fs::path(dir) / "study.study").string())),
        plan(load_plan((fs::path(dir) / "plan.json").string())) {
    jobs.reserve(plan.size());
    for (const PlanJob& p : plan) {
      const std::string path = (fs::path(dir) / p.dir / "result.json").string();
      jobs.push_back({&p, fs::exists(path) ? std::optional(load_result(path)) : std::nullopt});
      const Job& j = jobs.back();
      if (!j.result)
        ++unfinished;
      else if (j.result->done())
        ++done;
      else
        ++failed;
    }
    seeds = study.seeds;
    for (const PlanJob& p : plan)
      if (std::find(seeds.begin(), seeds.end(), p.seed) == seeds.end()) seeds.push_back(p.seed);
    for (const Row& row : study.rows) {
      RowSummary r{&row, {}, {}};
      for (const Job& j : jobs)
        if (j.plan->row == row.id) r.by_seed.emplace(j.plan->seed, &j);
      for (uint64_t seed : seeds)
        if (auto it = r.by_seed.find(seed); it != r.by_seed.end() && it->second->result && it->second->result->done())
          r.done.push_back(it->second);
      rows.push_back(std::move(r));
    }
    for (const RowSummary& r : rows)
      if (r.row->id == study.reference) baseline = &r;
  }
  Folder(const Folder&) = delete;
  Folder& operator=(const Folder&) = delete;
};

// The paper's table: a line per row, then the caption and the footnotes.
std::string main_table(const Folder& f) {
  std::string md =
      "| Row | Top-1 % | Top-5 % | Δ top-1 vs " + (f.baseline ? f.baseline->row->id : std::string("baseline")) +
      " | Engine top-1 % | Engine == simulation | "
      "Paper top-1 / top-5 | Theoretical size | Model file | Seeds done |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  std::vector<std::string> footnotes;  // engine notes, numbered in order of appearance
  for (const RowSummary& r : f.rows) {
    const std::vector<double> top1 = percent_of(r.done, &Scores::top1, false);
    std::string delta = "-";
    if (f.baseline == &r && !top1.empty()) {
      delta = "(reference)";
    } else if (f.baseline) {
      // Paired by seed: the mean of (row - baseline) over the seeds both have,
      // so a row with fewer seeds done is not compared with other seeds'
      // baselines (and the seeds' common part cancels).
      std::vector<double> diffs;
      for (const auto& [seed, job] : r.by_seed) {
        const auto b = f.baseline->by_seed.find(seed);
        if (!job->result || !job->result->done() || b == f.baseline->by_seed.end() || !b->second->result ||
            !b->second->result->done())
          continue;
        diffs.push_back(100.0 * (job->result->main_scores()->top1 - b->second->result->main_scores()->top1));
      }
      if (!diffs.empty()) {
        const double d = mean(diffs);
        delta = std::abs(d) < 0.005 ? "+0.00" : fmt("%+.2f", d);  // no "-0.00"
        if (diffs.size() < f.baseline->done.size()) delta += " (" + std::to_string(diffs.size()) + " seed" + (diffs.size() == 1 ? "" : "s") + ")";
      }
    }
    std::string engine = mean_std_text(percent_of(r.done, &Scores::top1, true)), equal = "-", note;
    std::string theory = "-", file = "-";  // the same for every seed: the first seed's that has it
    int64_t images = 0, equal_n = 0;
    for (const Job* j : r.done) {
      const JobResult& res = *j->result;
      if (res.engine) images += res.engine->intsim_images, equal_n += res.engine->equal_intsim;
      if (note.empty()) note = res.engine_note;
      if (theory == "-" && res.theoretical_bytes) theory = human_bytes(*res.theoretical_bytes);
      if (file == "-" && res.model_file_bytes) file = human_bytes(*res.model_file_bytes);
    }
    if (images > 0) equal = std::to_string(equal_n) + "/" + std::to_string(images);
    if (engine == "-" && !note.empty()) {
      auto it = std::find(footnotes.begin(), footnotes.end(), note);
      if (it == footnotes.end()) it = footnotes.insert(it, note);
      engine += " [" + std::to_string(it - footnotes.begin() + 1) + "]";
    }
    std::string paper = "-";
    if (r.row->paper_top1 || r.row->paper_top5)
      paper = (r.row->paper_top1 ? fmt("%.2f", *r.row->paper_top1) : "-") + " / " +
              (r.row->paper_top5 ? fmt("%.2f", *r.row->paper_top5) : "-");
    md += "| " + cell(r.row->label) + " | " + mean_std_text(top1) + " | " +
          mean_std_text(percent_of(r.done, &Scores::top5, false)) + " | " + delta + " | " + engine + " | " + equal +
          " | " + paper + " | " + theory + " | " + file + " | " + std::to_string(r.done.size()) + "/" +
          std::to_string(r.by_seed.size()) + " |\n";
  }
  const std::string ref = f.baseline ? "the row '" + f.baseline->row->id + "'" : std::string("the baseline");
  md += "\nTop-1 and top-5: the fake-quant model's accuracy for quantized rows, the float model's for float "
        "rows; mean ± sample standard deviation over the seeds done. Δ: points of top-1 against " + ref + ", "
        "the mean of the differences seed by seed over the seeds both have (a count says when that is fewer than "
        "the reference's). Engine == simulation: images whose integer-engine logits equal the integer simulation's, summed "
        "over seeds.";
  if (!f.study.paper.empty()) md += " Paper: " + f.study.paper + ".";
  md += "\n";
  for (size_t i = 0; i < footnotes.size(); ++i) md += "\n[" + std::to_string(i + 1) + "] " + footnotes[i] + "\n";
  return md;
}

std::string per_seed_table(const Folder& f) {
  std::string md = "\n## Top-1 % per seed\n\n| Row |";
  for (uint64_t s : f.seeds) md += " seed " + std::to_string(s) + " |";
  md += "\n|---|";
  for (size_t i = 0; i < f.seeds.size(); ++i) md += "---:|";
  md += "\n";
  for (const RowSummary& r : f.rows) {
    md += "| " + cell(r.row->label) + " |";
    for (uint64_t s : f.seeds) {
      auto it = r.by_seed.find(s);
      const JobResult* res = it == r.by_seed.end() || !it->second->result ? nullptr : &*it->second->result;
      md += ' ';
      md += it == r.by_seed.end() ? std::string("-")
            : !res                ? std::string("unfinished")
            : !res->done()        ? std::string("failed")
                                  : fmt("%.2f", 100.0 * res->main_scores()->top1);
      md += " |";
    }
    md += "\n";
  }
  return md;
}

std::string job_lists(const Folder& f) {
  std::string md;
  if (f.failed) md += "\n## Failed jobs\n\n";
  for (const Job& j : f.jobs)
    if (j.result && !j.result->done()) {
      const std::string e = j.result->error.empty() ? "(no error text)" : j.result->error;
      md += "- `" + j.plan->id + "` (row " + (j.plan->row.empty() ? "-" : j.plan->row) + ", seed " +
            std::to_string(j.plan->seed) + "):" + (e.find('\n') == std::string::npos ? " " + e + "\n" : code_block(e));
    }
  if (f.unfinished) md += "\n## Unfinished jobs\n\n";
  for (const Job& j : f.jobs)
    if (!j.result) md += "- `" + j.plan->id + "` (" + j.plan->kind + ", seed " + std::to_string(j.plan->seed) + ")\n";
  return md;
}

// Writes fig_<id>.png per figure and fig_top1.png; returns their Markdown.
std::string figures(const Folder& f, const std::string& dir, const std::string& out_dir) {
  std::string md = "\n## Figures\n";
  for (const Figure& fig : f.study.figures) {
    std::vector<std::string> notes;
    const std::string name = "fig_" + fig.id + ".png";
    write_line_chart((fs::path(out_dir) / name).string(), loss_figure(fig, f.rows, dir, notes));
    md += "\n![" + fig.title + "](" + name + ")\n\nTraining loss against step: per row the mean over seeds, "
          "shaded from the lowest to the highest seed.\n";
    for (const std::string& n : notes) md += "- Left out: " + n + ".\n";
  }
  LineChart top{.title = "top-1 per row", .xlabel = "row", .ylabel = "top-1 %", .series = {}};
  Series s{.name = "", .x = {}, .y = {}, .color = {}};
  std::string order;
  for (size_t i = 0; i < f.rows.size(); ++i) {
    const std::vector<double> v = percent_of(f.rows[i].done, &Scores::top1, false);
    s.x.push_back(double(i + 1));
    s.y.push_back(mean(v));
    s.lo.push_back(v.empty() ? NAN : *std::min_element(v.begin(), v.end()));
    s.hi.push_back(v.empty() ? NAN : *std::max_element(v.begin(), v.end()));
    order += (i ? ", " : "") + std::to_string(i + 1) + " = " + f.rows[i].row->label;
  }
  top.series.push_back(std::move(s));
  write_line_chart((fs::path(out_dir) / "fig_top1.png").string(), top);
  return md + "\n![top-1 per row](fig_top1.png)\n\nTop-1 mean per row (shaded: lowest to highest seed); x is the "
              "row's place in the table: " + order + ".\n";
}
}  // namespace

// ---- the report ----

void write_report(const std::string& dir, const std::string& out_dir_arg) {
  const std::string out_dir = out_dir_arg.empty() ? dir : out_dir_arg;
  const Folder f(dir);
  fs::create_directories(out_dir);
  std::string seeds;
  for (uint64_t s : f.seeds) seeds += (seeds.empty() ? "" : ", ") + std::to_string(s);
  std::string md = "# " + f.study.title + "\n\nSeeds " + seeds + ". Jobs: " + std::to_string(f.plan.size()) +
                   " planned, " + std::to_string(f.done) + " done, " + std::to_string(f.failed) + " failed, " +
                   std::to_string(f.unfinished) + " unfinished" +
                   (f.unfinished ? " (no result.json yet: the tables show what is there)" : "") + ".\n\n";
  md += main_table(f) + per_seed_table(f) + job_lists(f) + figures(f, dir, out_dir);
  write_text((fs::path(out_dir) / "report.md").string(), md);
  write_text((fs::path(out_dir) / "jobs.csv").string(), jobs_csv(f.jobs));
}

}  // namespace octet::study
