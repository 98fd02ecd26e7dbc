// apps/study/runner.h: runs a study's jobs (apps/study/plan.h) in a study
// folder, in parallel, resumably, on one machine or across MPI ranks.
//
// The folder:
//   DIR/study.study       the study file as given (the report reads it)
//   DIR/plan.json         the jobs, their dependencies and commands
//   DIR/jobs/ID/          one folder per job, ID = "<row>.s<seed>.<hash of the recipe>":
//       command.txt       every command the job ran, as shell lines (run them in this folder)
//       log.txt           their output
//       run/              the run folder of `octet train` (log.csv, steps.csv, checkpoints)
//       float.json, fakequant.json, engine.json   `octet eval --json` of the final model
//       model.oct         the exported model (rows of 8 bits or fewer)
//       result.json       written last, atomically: status done (the figures) or failed (the error)
//       lock              held (flock) by the worker running the job
//
// Workers: each takes the first job in plan order that is not finished, whose
// dependencies are finished, and whose lock it gets (flock, so a killed
// worker's claim goes with it), and runs its commands as child processes of
// the same `octet` binary (a crash or an exit code fails that job alone).
// `--jobs N` runs N workers in one process; under `mpirun -np N` every rank
// runs its workers on the shared folder, and MPI only starts them together
// (rank 0 writes the plan first) and waits for all at the end: the folder is
// the only channel, so a rank that dies leaves its job's lock free for the
// next run.
//
// Resuming: a job with result.json status done is skipped; a job with a run
// folder resumes from its last checkpoint (`octet train --resume`), bit for bit.
// A failed job is retried by the next invocation of the study; within one
// invocation it is recorded (result.json status failed, with the error and the
// end of its log) and the jobs that depend on it fail with "dependency failed";
// the others go on.
#pragma once

#include <cstdint>
#include <string>

namespace octet::study {

struct RunOptions {
  std::string study_file;
  std::string dir;        // the study folder
  std::string data;       // --data of every job (absolute after resolve)
  std::string exe;        // the octet binary the jobs run (default: this one, /proc/self/exe)
  int jobs = 1;           // workers in this process (per rank under MPI)
  int threads = 1;        // --threads of every job (bit-for-bit needs the same count)
  int64_t eval_limit = 0; // > 0: evaluate the final models on this many test images (octet eval --limit)
  int64_t intsim_images = 1000;  // engine == integer simulation checked on the first N (0: all; the
                                 // simulation is a slow reference, ~40 img/s)
  bool progress = true;   // a line per job start and end
};

struct RunSummary {
  int jobs = 0, done = 0, failed = 0, skipped = 0;  // skipped: finished before this run
  int rank = 0;                                     // this process's MPI rank (0 without MPI)
};

// Runs the study; throws std::runtime_error for a study that cannot start
// (bad file, unwritable folder). Under mpirun (detected from the environment)
// every rank must call it with the same options; the summary is rank 0's view
// of the whole folder after all ranks finished.
RunSummary run_study(const RunOptions& options);

}  // namespace octet::study
