// ctest-labels: slow
// tests/apps/test_study.cpp: `octet study` (apps/study/): the study file, the
// plan (which rows share a trunk, where they fork), and a tiny study run by
// the real binary as a user runs it:
//   - the trunk of a seed is trained once, and a row through the study equals
//     the same row trained alone with `octet train`, bit for bit;
//   - a job made to fail is recorded with its error, and the others finish;
//   - a study killed mid-way resumes and ends with the results of an
//     uninterrupted one;
//   - the report has every row; `mpirun -np 2` gives the results of --jobs 2.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <set>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "apps/study/plan.h"
#include "apps/study/study_file.h"
#include "core/checkpoint.h"
#include "tests/apps/cli_util.h"
#include "tests/core/test_data_util.h"

using namespace octet::study;
using octet::testing::contains;
using octet::testing::error_of;
using octet::testing::octet_cli;
using octet::testing::quoted;
using octet::testing::Result;
using octet::testing::TempDir;
using octet::testing::write_text;
using octet::testing::write_tree;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const Job& job_of(const Plan& p, const std::string& row, uint64_t seed) {
  for (const Job& j : p.jobs)
    if (j.row == row && j.seed == seed) return j;
  FAIL("no job for row " << row << " seed " << seed);
  throw std::logic_error("unreachable");
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The figures of every finished job of a study folder: job id -> the numbers
// that must not depend on how the study was run.
std::map<std::string, std::string> figures(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir + "/jobs")) {
    const fs::path r = e.path() / "result.json";
    if (!fs::exists(r)) continue;
    const json j = json::parse(read(r.string()));
    std::string s = j.value("status", "?");
    for (const char* k : {"float", "fakequant", "engine"})
      if (j.contains(k) && !j[k].is_null()) s += std::string(" ") + k + " " + j[k]["top1"].dump() + " " + j[k]["loss"].dump();
    if (j.contains("model_file_bytes")) s += " model " + j["model_file_bytes"].dump();
    out[e.path().filename().string()] = s;
  }
  return out;
}

// Whether two checkpoints hold the same model tensors, bit for bit.
void check_same_model(const std::string& a, const std::string& b) {
  const octet::Checkpoint ca = octet::load_checkpoint(a), cb = octet::load_checkpoint(b);
  int compared = 0;
  for (const auto& [name, t] : ca.tensors) {
    if (name.rfind("model.", 0) != 0) continue;
    CAPTURE(name);
    REQUIRE(cb.has_tensor(name));
    const octet::Tensor& u = cb.tensor(name);
    REQUIRE(u.numel() == t.numel());
    CHECK(std::memcmp(t.data(), u.data(), sizeof(float) * static_cast<size_t>(t.numel())) == 0);
    ++compared;
  }
  CHECK(compared > 20);
}

const char* kStudy = R"(# a tiny study
title = tiny
train = --preset quick --epochs 2 --batch 16 --lr 0.05 --eval-every 2
baseline = --qat --quant-delay 0.5
seeds = 0, 1
row.float = --quant-delay 1
row.baseline =
row.bits4 = --bits 4
row.broken = --weight-init bogus
row.broken.label = a row that cannot run
figure.bits = baseline, bits4
)";

}  // namespace

TEST_CASE("study file: flags merge by name, errors name the file, the line and the key") {
  const auto merged = merge_flags({parse_flags("--preset full --epochs 10 --qat"), parse_flags("--epochs 4 --bits=4")});
  REQUIRE(merged.size() == 4);
  CHECK(flags_text(merged) == "--preset full --epochs 4 --qat --bits 4");
  CHECK(contains(error_of([] { parse_flags("--epochs 4 5"); }), "'5' is neither a flag"));

  const StudyFile s = StudyFile::parse(kStudy, "t.study");
  CHECK(s.seeds == std::vector<uint64_t>{0, 1});
  REQUIRE(s.rows.size() == 4);
  CHECK(s.rows[0].id == "float");
  CHECK(s.rows[3].label == "a row that cannot run");
  CHECK(s.rows[2].label == "bits4");
  REQUIRE(s.figures.size() == 1);
  CHECK(s.figures[0].rows == std::vector<std::string>{"baseline", "bits4"});
  CHECK(s.reference == "baseline");  // the default
  CHECK(StudyFile::parse("seeds = 0\nrow.a =\nrow.b =\nreference = b\n", "t.study").reference == "b");

  const std::pair<std::string, std::string> bad[] = {
      {"seeds = 0\nrow.a =\nfrobnicate = 1\n", "t.study:3: unknown key 'frobnicate'"},
      {"seeds = 0\nrow.a =\nrow.a = --bits 4\n", "t.study:3: key 'row.a' given twice (first on line 2)"},
      {"seeds = 0, x\nrow.a =\n", "t.study:1: seeds: 'x' is not a seed"},
      {"seeds = 0\nrow.a =\nfigure.f = a, b\n", "figure 'f' names row 'b', not a row"},
      {"seeds = 0\nrow.a =\nrow.p = --observer mse\nrow.p.command = calibrate\n", "row 'p' calibrates row ''"},
      {"seeds = 0\nrow.a =\nrow.a.paper = 91 / 120\n", "t.study:3: row.a.paper: '120' is not a percentage"},
      {"row.a =\n", "no seeds"},
      {"seeds = 1\n", "no rows"},
      {"seeds = 0\nrow.a.label = x\n", "row 'a' has keys but no 'row.a = FLAGS' line"},
      {"seeds = 0\nrow.a =\nreference = b\n", "reference 'b' is not a row of the study"},
  };
  for (const auto& [text, message] : bad) {
    CAPTURE(text);
    CHECK(contains(error_of([&] { StudyFile::parse(text, "t.study"); }), message));
  }
}

TEST_CASE("study plan: rows share their seed's trunk up to their delay; what changes the float phase does not") {
  const StudyFile s = StudyFile::parse(R"(
train = --preset full --epochs 10
baseline = --qat --preprocess vgg
seeds = 3
row.float = --quant-delay 1
row.baseline =
row.bits4 = --bits 4
row.half_up = --round half_up
row.delay40 = --quant-delay 0.4
row.delay_step = --quant-delay-step 100
row.inception = --preprocess inception
row.add = --add-inputs untied
row.entropy4 = --observer entropy --act-bits 4
row.ptq = --observer mse --images 100
row.ptq.command = calibrate
row.ptq.from = baseline
)");
  const Plan p = make_plan(s);
  const Job& fl = job_of(p, "float", 3);
  CHECK(fl.kind == JobKind::trunk);  // the float row is its trunk, trained to the end
  CHECK(fl.stop_after == 10);
  CHECK(fl.snapshots_from == 4);  // delay40 forks after epoch 4
  CHECK(!fl.quantized);
  CHECK(fl.weight_bits == 32);
  for (const char* row : {"baseline", "bits4", "half_up"}) {
    CAPTURE(row);
    const Job& j = job_of(p, row, 3);
    CHECK(j.fork_job == fl.id);
    CHECK(j.fork_epoch == 8);  // the default delay, 80% of 10 epochs
    CHECK(j.cost == 2);
    CHECK(j.engine);
  }
  CHECK(job_of(p, "bits4", 3).weight_bits == 4);
  CHECK(job_of(p, "delay40", 3).fork_job == fl.id);
  CHECK(job_of(p, "delay40", 3).fork_epoch == 4);
  // An absolute delay trains from scratch.
  CHECK(job_of(p, "delay_step", 3).fork_job.empty());
  CHECK(job_of(p, "delay_step", 3).cost == 10);
  // Other data, more observers, an observer that keeps the bits: trunks of their own.
  std::set<std::string> trunks;
  for (const char* row : {"inception", "add", "entropy4"}) {
    CAPTURE(row);
    const Job& j = job_of(p, row, 3);
    REQUIRE(!j.fork_job.empty());
    CHECK(j.fork_job != fl.id);
    const Job* t = p.job(j.fork_job);
    REQUIRE(t);
    CHECK(t->stop_after == 8);  // trained only as far as its fork needs
    CHECK(t->row.empty());
    trunks.insert(j.fork_job);
  }
  CHECK(trunks.size() == 3);
  const Job& ptq = job_of(p, "ptq", 3);
  CHECK(ptq.kind == JobKind::calibrate);
  CHECK(ptq.depends == std::vector<std::string>{job_of(p, "baseline", 3).id});
  CHECK(ptq.args[1] == "../" + job_of(p, "baseline", 3).id + "/run/last.ckpt");

  // Ids are a hash of the recipe: a change to the base recipe changes every id,
  // a new row changes none of the others.
  StudyFile more = s;
  Row bits6;
  bits6.id = bits6.label = "bits6";
  bits6.flags = parse_flags("--bits 6");
  more.rows.push_back(bits6);
  const Plan p2 = make_plan(more);
  for (const Job& j : p.jobs) CHECK(p2.job(j.id) != nullptr);
  StudyFile other = s;
  other.train = parse_flags("--preset full --epochs 12");
  const Plan p3 = make_plan(other);
  for (const Job& j : p.jobs) CHECK(p3.job(j.id) == nullptr);
  CHECK(contains(error_of([&] {
                   StudyFile bad = s;
                   bad.rows[1].flags = parse_flags("--bits 99");
                   make_plan(bad);
                 }),
                 "row 'baseline'"));
}

TEST_CASE("octet study: a tiny study run, killed and resumed, reported, forked rows equal to their runs alone") {
  TempDir tmp;
  const std::string data = tmp / "tree", study = tmp / "tiny.study";
  write_tree(data, 32);
  write_text(study, kStudy);
  const std::string common = " --data " + quoted(data) + " --jobs 2 --threads 1";

  // An uninterrupted run. The broken row fails (its trunk cannot start); the rest finish.
  const Result a = octet_cli("study " + quoted(study) + " --out " + quoted(tmp / "a") + common);
  INFO(a.output);
  CHECK(a.code == 1);
  CHECK(contains(a.output, "6 finished now, 0 before, 4 failed"));
  const Plan plan = make_plan(StudyFile::load(study));
  for (uint64_t seed : {0, 1}) {
    CAPTURE(seed);
    const Job& trunk = job_of(plan, "float", seed);
    const Job& broken = job_of(plan, "broken", seed);
    const json failed = json::parse(read(tmp / ("a/" + broken.dir() + "/result.json")));
    CHECK(failed["status"] == "failed");
    CHECK(contains(failed["error"].get<std::string>(), "dependency trunk.s" + std::to_string(seed)));
    const json trunk_failed = json::parse(read(tmp / ("a/" + plan.job(broken.depends[0])->dir() + "/result.json")));
    CHECK(contains(trunk_failed["error"].get<std::string>(), "--weight-init"));
    // The trunk was trained once: the forks trained only their own epoch, and
    // their first epoch is the trunk's.
    for (const char* row : {"baseline", "bits4"}) {
      CAPTURE(row);
      const Job& j = job_of(plan, row, seed);
      CHECK(j.fork_job == trunk.id);
      const std::string log = read(tmp / ("a/" + j.dir() + "/log.txt"));
      CHECK(contains(log, "forked from ../" + trunk.id + "/run/epoch_1.ckpt after epoch 1"));
      CHECK(!contains(log, "epoch 1/2"));
      CHECK(contains(log, "epoch 2/2"));
      CHECK(contains(log, "qat.quant_delay 1 -> 0.5"));  // the trunk never quantizes
      if (std::string(row) == "bits4") CHECK(contains(log, "qat.weight_bits 8 -> 4"));
      const json r = json::parse(read(tmp / ("a/" + j.dir() + "/result.json")));
      CHECK(r["status"] == "done");
      CHECK(r["engine"]["equal_intsim"] == r["engine"]["intsim_images"]);
      CHECK(r["engine"]["images"] == 16);
    }
  }

  // A row through the study is the row trained alone, bit for bit.
  const Job& base0 = job_of(plan, "baseline", 0);
  const Result alone = octet_cli("train --preset quick --epochs 2 --batch 16 --lr 0.05 --eval-every 2 --qat --quant-delay 0.5 "
                                 "--seed 0 --threads 1 --no-progress --data " + quoted(data) + " --out " + quoted(tmp / "alone"));
  INFO(alone.output);
  REQUIRE(alone.code == 0);
  check_same_model(tmp / "alone/last.ckpt", tmp / ("a/" + base0.dir() + "/run/last.ckpt"));

  // Killed after its first finished job, then run again: the same figures.
  const std::string b = tmp / "b";
  const std::string cmd = std::string("exec '") + OCTET_EXE + "' study " + quoted(study) + " --out " + quoted(b) + common +
                          " > " + quoted(tmp / "b.log") + " 2>&1";
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  bool some_done = false;
  for (int i = 0; i < 600 && !some_done; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (fs::exists(b + "/jobs"))
      for (const auto& e : fs::directory_iterator(b + "/jobs"))
        if (fs::exists(e.path() / "result.json")) some_done = true;
  }
  CHECK(some_done);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  size_t done_before = 0;
  for (const auto& [id, f] : figures(b)) done_before += f.rfind("done", 0) == 0;
  CHECK(done_before < plan.jobs.size());
  const Result resumed = octet_cli("study " + quoted(study) + " --out " + quoted(b) + common);
  INFO(resumed.output);
  CHECK(contains(resumed.output, std::to_string(done_before) + " finished before"));
  CHECK(figures(b) == figures(tmp / "a"));

  // The report: every row, the figure.
  const Result report = octet_cli("study report " + quoted(tmp / "a"));
  INFO(report.output);
  CHECK(report.code == 0);
  const std::string md = read(tmp / "a/report.md");
  for (const Row& r : StudyFile::load(study).rows) CHECK(contains(md, r.label));
  CHECK(fs::exists(tmp / "a/fig_bits.png"));
  CHECK(fs::exists(tmp / "a/jobs.csv"));

  // The archive (report --out elsewhere): the small files, no checkpoint; a
  // run folder made from it goes on: a fork whose result is gone runs again,
  // and its trunk, whose snapshot is gone too, is trained again first.
  const Result archive = octet_cli("study report " + quoted(tmp / "a") + " --out " + quoted(tmp / "d"));
  INFO(archive.output);
  CHECK(archive.code == 0);
  CHECK(contains(archive.output, "the results of 10 jobs"));
  for (const auto& e : fs::recursive_directory_iterator(tmp / "d")) {
    CAPTURE(e.path());
    CHECK(e.path().extension() != ".ckpt");
    CHECK(e.path().extension() != ".oct");
  }
  CHECK(fs::exists(tmp / "d/report.md"));
  fs::copy(tmp / "d", tmp / "e", fs::copy_options::recursive);
  fs::remove(tmp / ("e/" + base0.dir() + "/result.json"));
  const Result from_archive = octet_cli("study " + quoted(study) + " --out " + quoted(tmp / "e") + common);
  INFO(from_archive.output);
  CHECK(contains(from_archive.output, "start " + job_of(plan, "float", 0).id));
  CHECK(contains(from_archive.output, "done " + base0.id));
  CHECK(!contains(from_archive.output, "start " + job_of(plan, "bits4", 0).id));
  CHECK(figures(tmp / "e") == figures(tmp / "a"));

#ifdef OCTET_HAVE_MPI
  // Two MPI ranks, one worker each, on one folder: the figures of --jobs 2.
  const std::string mpirun = std::string("mpirun --allow-run-as-root --oversubscribe -np 2 '") + OCTET_EXE + "' study " +
                             quoted(study) + " --out " + quoted(tmp / "c") + " --data " + quoted(data) +
                             " --threads 1 2>&1";
  FILE* p = popen(mpirun.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  INFO(out);
  CHECK(contains(out, "1 worker x 2 ranks"));
  CHECK(figures(tmp / "c") == figures(tmp / "a"));
#endif
}
