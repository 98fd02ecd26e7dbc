// apps/study/plan.h: a study file turned into jobs with dependencies.
//
// One factor at a time means most rows share their first 80% (or 40..90%)
// of training: before the quantize delay a QAT run only observes ranges, its
// forward is the float network's, so the weights it reaches do not depend on
// the knobs that act only once fake quant is on (the op, the rounding, the
// bit widths, signed or unsigned, per-channel, which tensors are quantized).
// The plan trains that float phase once per (seed, everything else) as a
// TRUNK job, keeping a checkpoint at every epoch a row forks from, and each
// row is a job that forks the trunk at the last epoch boundary before its
// delay (`octet train --fork`), so it computes exactly what the row run alone
// computes, bit for bit (the trunk's state at that epoch is the row's own).
//
// What the trunk key holds (float_phase_config): the row's QAT configuration
// with the knobs that only act after the delay copied from the baseline, and
// the delay itself set to 1 (never). Knobs that change the state a run
// carries through its float phase keep rows apart: the preprocessing and
// every other training flag, quantizing the add inputs or the input (more
// observers), given ranges (no observers), the observer and its settings,
// freezing. The LSQ op trains step sizes from the start, so an LSQ row
// shares a trunk only with rows of its own configuration. The histogram
// observers (entropy, mse) record the bit width in their state, so with them
// the activation bits stay in the key.
//
// A row whose whole configuration is its trunk's (the float row: the
// baseline with --quant-delay 1) is served by the trunk job itself. A row
// with an absolute delay (--quant-delay-step) or a delay before the first
// epoch ends trains from scratch. A calibrate row depends on the job of the
// row it calibrates, for the same seed.
//
// Job ids are "<row or trunk>.s<seed>.<hash>", the hash (FNV-1a, 64 bits, 8 hex
// digits shown) taken over the job's whole command and its fork source, so a
// change anywhere in a job's recipe gives it a new folder, and an unchanged
// job keeps its finished result.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "apps/study/study_file.h"

namespace octet::study {

enum class JobKind { train, trunk, calibrate };
const char* job_kind_name(JobKind k);  // "train", "trunk", "calibrate"

struct Job {
  std::string id;
  std::string row;   // the row this job's result stands for ("" for a trunk that is only a trunk)
  uint64_t seed = 0;
  JobKind kind = JobKind::train;
  // The octet command, run in the job's folder: {"train", flags...} or
  // {"calibrate", CKPT, flags...}. The runner adds --data, --threads, --out
  // (and --no-progress); paths in it are relative to the job's folder.
  std::vector<std::string> args;
  std::string qat_conf;             // a trunk's qat.conf (written next to the run; its args name it)
  std::vector<std::string> depends;  // job ids
  std::string fork_job;             // the trunk this job forks ("" if none) ...
  int fork_epoch = 0;               // ... after this epoch
  int epochs = 0;                   // the run's --epochs
  int stop_after = 0;               // trunks: the last epoch any job needs (0: all)
  int snapshots_from = 0;           // trunks: the first epoch a fork starts from
  bool quantized = false;           // the final model is fake-quantized (fake quant on at the end)
  int weight_bits = 32;             // the weights' bits in the final model (32: float)
  bool engine = false;              // exported and run in the integer engine (quantized, <= 8 bits)
  double cost = 0;                  // epochs of training this job does (for the ETA)
  std::string dir() const { return "jobs/" + id; }
};

struct Plan {
  std::vector<Job> jobs;  // seed-major, rows in study order, each trunk before its forks
  const Job* job(const std::string& id) const;
  std::string to_json() const;  // plan.json: what the report reads
};

// Throws std::invalid_argument when a row's flags are not valid `octet train`
// (or calibrate) flags, naming the row.
Plan make_plan(const StudyFile& study);

// 64-bit FNV-1a, as 16 hex digits.
std::string fnv1a_hex(const std::string& text);

}  // namespace octet::study
