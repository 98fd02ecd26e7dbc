// apps/cmd_study.cpp: `octet study`, a parameter study from a study file
// (apps/study/): plan its jobs, run them (resumable, in parallel, over MPI),
// report the table and figures.
#include <cstdio>
#include <filesystem>
#include <string>

#include "apps/args.h"
#include "apps/commands.h"
#include "apps/study/plan.h"
#include "apps/study/report.h"
#include "apps/study/runner.h"
#include "apps/study/study_file.h"
#include "core/dataset.h"

namespace octet::app {

namespace {

const char* kUsage = R"(usage: octet study FILE --out DIR [--data PATH] [--jobs N] [--threads N]
       mpirun -np N octet study FILE --out DIR [...]
       octet study plan FILE
       octet study report DIR [--out REPORT_DIR]

A parameter study, one factor at a time: FILE (studies/*.study, key = value
lines, '#' comments) gives the base recipe, the baseline's knobs, the seeds
and the rows, each naming only what it changes:

  title = ...                 paper = what the paper column holds
  train = --preset full --epochs 10 --subset 10000    (octet train flags)
  baseline = --qat --preprocess vgg                   (overrides train's)
  seeds = 0, 1, 2
  row.ID = FLAGS              (overrides the baseline's; empty: the baseline)
  row.ID.label = TEXT         row.ID.paper = TOP1 / TOP5 (or -)
  row.ID.command = calibrate  row.ID.from = ROW   (PTQ of ROW's final model)
  figure.ID = ROW, ROW, ...   figure.ID.title = TEXT

Every (row, seed) is a job in DIR/jobs/<id>/, id = row, seed and a hash of
the job's whole recipe.

  octet study FILE --out DIR   runs the jobs that are not finished: rows that
      share a float phase fork one trunk per seed at their quantize delay
      (bit for bit what the row trains alone); each row's final model is
      evaluated in float, fake-quant and (8 bits or fewer) the integer engine
      on the test split. Run it again to resume: finished jobs are skipped,
      unfinished ones resume from their last epoch, failed ones are retried.
      A job that fails is recorded in its result.json, and the rest go on.
      Under mpirun every rank runs jobs from the same folder (a shared file
      system across machines); without it, --jobs N local workers.
  octet study plan FILE        prints the jobs, what each forks and trains
  octet study report DIR       DIR/report.md (the table: mean +- std over seeds,
      change against the baseline, the paper's figure, the engine, model
      sizes), DIR/jobs.csv (every job), DIR/fig_*.png (training loss against
      step per figure of the study file, the mean over seeds with a band).
      With --out elsewhere, the report goes there beside a copy of the
      folder's small files (each finished job's result.json, command.txt,
      log.csv, steps.csv; no checkpoints): a folder to commit, itself a study
      folder (copy it into a run folder, and `octet study` goes on from it)

options:
  --out DIR             the study folder (required to run)
  --data PATH           data set of every job (default: $OCTET_DATA)
  --jobs N              jobs at once in this process (default 1; per rank under MPI)
  --threads N           threads of every job (default 1; a row equals its run alone
                        bit for bit at the same thread count)
  --eval-limit N        evaluate the final models on a class-mixed sample of N test
                        images (default 0: the whole test split)
  --intsim-images N     engine == integer simulation is checked on the first N test
                        images of each model (default 1000; 0: all; the simulation,
                        a slow reference, runs ~40 images/s)
  --no-progress         no start/end lines
)";

int study_plan(const std::string& file) {
  const study::StudyFile s = study::StudyFile::load(file);
  const study::Plan p = study::make_plan(s);
  double cost = 0;
  for (const study::Job& j : p.jobs) {
    std::printf("%-34s %-9s epochs %5.1f", j.id.c_str(), study::job_kind_name(j.kind), j.cost);
    if (!j.fork_job.empty()) std::printf("  fork %s after epoch %d", j.fork_job.c_str(), j.fork_epoch);
    if (j.kind == study::JobKind::trunk)
      std::printf("  to epoch %d, snapshots from %d%s", j.stop_after, j.snapshots_from,
                  j.row.empty() ? "" : (", is row " + j.row).c_str());
    if (j.kind == study::JobKind::calibrate) std::printf("  calibrates %s", j.depends[0].c_str());
    std::printf("%s\n", j.engine ? "  + engine" : "");
    cost += j.cost;
  }
  std::printf("%zu jobs, %.1f epochs of training in all (%zu seeds x %zu rows)\n", p.jobs.size(), cost,
              s.seeds.size(), s.rows.size());
  return 0;
}

}  // namespace

int cmd_study(int argc, char** argv) {
  Args a(argc, argv, "octet study", kUsage);
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::string first = a.positional().empty() ? "" : a.positional()[0];
  if (first == "plan") {
    a.finish();
    return study_plan(a.positional_at(1, "the study file (FILE)"));
  }
  if (first == "report") {
    const std::string dir = a.positional_at(1, "the study folder (DIR)");
    const std::string out = a.get("--out", dir);
    a.finish();
    const int archived = study::archive_results(dir, out);
    study::write_report(out, out);
    std::printf("wrote %s/report.md, %s/jobs.csv and the figures", out.c_str(), out.c_str());
    if (archived > 0) std::printf(", and the results of %d jobs (no checkpoints)", archived);
    std::printf("\n");
    return 0;
  }
  study::RunOptions o;
  o.dir = a.get("--out", "");
  o.data = a.get("--data", "");
  o.jobs = a.get_int("--jobs", 1);
  o.threads = a.get_int("--threads", 1);
  o.progress = !a.flag("--no-progress");
  o.eval_limit = a.get_int64("--eval-limit", 0);
  o.intsim_images = a.get_int64("--intsim-images", o.intsim_images);
  a.finish();
  o.study_file = a.positional_at(0, "the study file (FILE)");
  if (a.positional().size() > 1) throw UsageError("octet study: one study file, got " + a.positional()[1] + " too");
  if (o.dir.empty()) throw UsageError("octet study: --out DIR (the study folder) is required");
  if (o.jobs < 1) throw UsageError("octet study: --jobs must be >= 1");
  if (o.threads < 1) throw UsageError("octet study: --threads must be >= 1");
  if (o.intsim_images < 0) throw UsageError("octet study: --intsim-images must be >= 0");
  if (o.eval_limit < 0) throw UsageError("octet study: --eval-limit must be >= 0");
  o.data = std::filesystem::absolute(resolve_data_path(o.data)).string();
  const study::RunSummary s = study::run_study(o);
  if (s.rank == 0)
    std::printf("study: %d jobs: %d finished now, %d before, %d failed%s\n", s.jobs, s.done, s.skipped, s.failed,
              s.failed ? " (see their result.json; run again to retry)" : "");
  return s.failed ? 1 : 0;
}

}  // namespace octet::app
