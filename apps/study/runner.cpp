#include "apps/study/runner.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "apps/study/plan.h"
#include "core/distributed.h"
#include "apps/study/study_file.h"

extern char** environ;

namespace octet::study {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes through a temporary file and a rename: readers see the old file or the new one.
void write_text_atomic(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, p);
}

std::string shell_quote(const std::string& w) {
  if (!w.empty() && w.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=,:") ==
                        std::string::npos)
    return w;
  std::string q = "'";
  for (char c : w) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string duration_text(double seconds) {
  const long s = std::lround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", s);
  return buf;
}

// The machine, for the result files: the CPU model and its vector extensions.
std::string machine_text() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model, flags;
  while (std::getline(in, line)) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = line.substr(line.find(':') + 2);
    if (flags.empty() && line.rfind("flags", 0) == 0) {
      flags = line.substr(line.find(':') + 1);  // " fpu vme ... avx2 ..." (a word is " word ")
      flags.push_back(' ');
    }
  }
  const char* isa = flags.find(" avx512_vnni ") != std::string::npos ? "avx512_vnni"
                    : flags.find(" avx512f ") != std::string::npos   ? "avx512"
                    : flags.find(" avx2 ") != std::string::npos      ? "avx2"
                                                                     : "baseline";
  std::string text = model.empty() ? std::string("unknown CPU") : model;
  text += " (";
  text += isa;
  text += ")";
  return text;
}

// The child's environment: this one without MPI's variables (a job is a
// plain process; an MPI launcher's variables would make it think otherwise).
std::vector<std::string> child_environment() {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string v = *e;
    if (v.rfind("OMPI_", 0) == 0 || v.rfind("PMIX_", 0) == 0 || v.rfind("PMI_", 0) == 0) continue;
    env.push_back(v);
  }
  return env;
}

// Runs exe with args in folder `cwd`, stdout and stderr appended to `log`.
// The child dies with its parent (PR_SET_PDEATHSIG), so killing a study
// stops its jobs too. Returns a description of the failure, or "" on exit 0.
std::string run_child(const std::string& exe, const std::vector<std::string>& args, const fs::path& cwd,
                      const fs::path& log) {
  {
    std::ofstream out(log, std::ios::app);
    out << "$ octet";
    for (auto& a : args) out << ' ' << shell_quote(a);
    out << "\n";
  }
  std::vector<std::string> words = {exe};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = child_environment();
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string cwd_s = cwd.string(), log_s = log.string();
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return std::string("fork failed: ") + std::strerror(errno);
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(125);
    const int fd = open(log_s.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0 || chdir(cwd_s.c_str()) != 0) _exit(126);
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return std::string("waitpid failed: ") + std::strerror(errno);
  if (WIFEXITED(status)) {
    const int code = WEXITSTATUS(status);
    if (code == 0) return "";
    if (code == 127) return "could not start " + exe;
    return "exit code " + std::to_string(code);
  }
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "ended abnormally";
}

// The last `lines` lines of a file (the error of a failed command is there).
std::string tail_lines(const fs::path& p, int lines) {
  const std::string text = read_text(p);
  size_t pos = text.size();
  for (int n = 0; n <= lines && pos > 0; ++n) {
    const size_t nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return text;
    pos = nl;
    if (n == lines) return text.substr(pos + 1);
  }
  return text.substr(pos);
}

// A job's state as the folder tells it.
enum class State { kPending, kDone, kFailed };

struct Outcome {
  State state = State::kPending;
  std::string token;   // the invocation that wrote a failure
  int stop_after = 0;  // a trunk: the epoch it was trained to
};

Outcome read_outcome(const fs::path& dir) {
  Outcome o;
  const fs::path p = dir / "result.json";
  if (!fs::exists(p)) return o;
  try {
    const json r = json::parse(read_text(p));
    const std::string status = r.value("status", "");
    o.state = status == "done" ? State::kDone : status == "failed" ? State::kFailed : State::kPending;
    o.token = r.value("invocation", "");
    o.stop_after = r.value("stop_after", 0);
  } catch (const json::exception&) {
    // A result file is written atomically; an unreadable one is redone.
  }
  return o;
}

json read_json_file(const fs::path& p) {
  try {
    return json::parse(read_text(p));
  } catch (const json::exception& e) {
    throw std::runtime_error(p.string() + ": " + e.what());
  }
}

// What the workers of one process share: the counts, the cost left (epochs
// of training) for the ETA, and the console.
struct Tally {
  std::mutex mutex;
  int done = 0, failed = 0;
  double pending_cost = 0, finished_cost = 0;
  Clock::time_point t0 = Clock::now();

  void finished(const Job& j, bool ok) {
    std::lock_guard<std::mutex> g(mutex);
    ++(ok ? done : failed);
    finished_cost += j.cost;
  }
  // "3 done, 0 failed this run; 120 epochs of training left, ETA 1h10m"
  std::string left() {
    std::lock_guard<std::mutex> g(mutex);
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    const double rest = std::max(0.0, pending_cost - finished_cost);
    std::string s = std::to_string(done) + " done, " + std::to_string(failed) + " failed this run; " +
                    std::to_string(static_cast<int>(std::lround(rest))) + " epochs of training left";
    if (finished_cost > 0) s += ", ETA " + duration_text(elapsed / finished_cost * rest);
    return s;
  }
};

class Runner {
 public:
  Runner(const RunOptions& o, const Plan& plan, std::string token, Tally& tally)
      : o_(o), plan_(plan), token_(std::move(token)), machine_(machine_text()), tally_(tally) {}

  void work() {
    while (true) {
      bool waiting = false;
      const Job* job = claim(waiting);
      if (job) {
        run(*job);
        release();
        continue;
      }
      if (!waiting) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }

 private:
  // A job's state for this run: done, failed in this run (an older failure is
  // tried again), or pending (which includes a finished trunk that is needed again).
  State state_of(const Job& j) const {
    const Outcome out = read_outcome(fs::path(o_.dir) / j.dir());
    if (out.state == State::kDone && j.kind == JobKind::trunk && trunk_needed_again(j, out)) return State::kPending;
    if (out.state == State::kFailed && out.token != token_) return State::kPending;
    return out.state;
  }

  // The first runnable job in plan order, locked for this worker; `waiting`:
  // some job may become runnable later (it waits for a dependency, or another
  // worker holds it). A job whose dependency failed in this run is recorded
  // as failed here.
  const Job* claim(bool& waiting) {
    for (const Job& j : plan_.jobs) {
      if (state_of(j) != State::kPending) continue;
      bool deps_done = true;
      std::string failed_dep;
      for (const std::string& d : j.depends) {
        const State dep = state_of(*plan_.job(d));
        if (dep == State::kDone) continue;
        deps_done = false;
        if (dep == State::kFailed) failed_dep = d;
      }
      if (!deps_done && failed_dep.empty()) {
        waiting = true;
        continue;
      }
      const fs::path dir = fs::path(o_.dir) / j.dir();
      fs::create_directories(dir);
      const int fd = open((dir / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) throw std::runtime_error("cannot open " + (dir / "lock").string() + ": " + std::strerror(errno));
      if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        waiting = true;  // another worker runs it
        continue;
      }
      if (state_of(j) != State::kPending) {  // another worker finished it before we took the lock
        close(fd);
        continue;
      }
      lock_fd_ = fd;
      if (!failed_dep.empty()) {
        fail(j, "dependency " + failed_dep + " failed", 0);
        release();
        continue;
      }
      return &j;
    }
    return nullptr;
  }

  // A finished trunk is trained again when a fork that still has to run
  // needs more of it (a row added to the study), or needs a snapshot that is
  // gone (the study folder was rebuilt from archived results, which keep no
  // checkpoints). Training is deterministic, so the snapshot comes back the
  // same (on the same kind of CPU, at the same thread count).
  bool trunk_needed_again(const Job& trunk, const Outcome& out) const {
    if (out.stop_after < trunk.stop_after) return true;
    for (const Job& j : plan_.jobs) {
      if (j.fork_job != trunk.id) continue;
      if (read_outcome(fs::path(o_.dir) / j.dir()).state == State::kDone) continue;
      const fs::path snapshot =
          fs::path(o_.dir) / trunk.dir() / "run" / ("epoch_" + std::to_string(j.fork_epoch) + ".ckpt");
      if (!fs::exists(snapshot)) return true;
    }
    return false;
  }

  void release() {
    if (lock_fd_ >= 0) close(lock_fd_);  // closing drops the flock
    lock_fd_ = -1;
  }

  void say(const std::string& line) {
    if (!o_.progress) return;
    std::lock_guard<std::mutex> g(tally_.mutex);
    std::printf("study: %s\n", line.c_str());
    std::fflush(stdout);
  }

  // The fields every result.json starts with.
  json result_head(const Job& j, const char* status) const {
    json r;
    r["job"] = j.id;
    r["row"] = j.row;
    r["seed"] = j.seed;
    r["kind"] = job_kind_name(j.kind);
    r["status"] = status;
    r["machine"] = machine_;
    r["invocation"] = token_;
    return r;
  }

  void fail(const Job& j, const std::string& error, double seconds) {
    const fs::path dir = fs::path(o_.dir) / j.dir();
    json r = result_head(j, "failed");
    r["error"] = error;
    r["log_tail"] = fs::exists(dir / "log.txt") ? tail_lines(dir / "log.txt", 12) : "";
    r["seconds"] = seconds;
    write_text_atomic(dir / "result.json", r.dump(1) + "\n");
    tally_.finished(j, false);
    say("FAILED " + j.id + ": " + error + " (" + (dir / "log.txt").string() + "); " + tally_.left());
  }

  // One octet command in the job folder; throws the failure as a string.
  void octet(const Job& j, const std::vector<std::string>& args) {
    const fs::path dir = fs::path(o_.dir) / j.dir();
    {
      std::ofstream cmd(dir / "command.txt", std::ios::app);
      cmd << "octet";
      for (auto& a : args) cmd << ' ' << shell_quote(a);
      cmd << "\n";
    }
    const std::string err = run_child(o_.exe, args, dir, dir / "log.txt");
    if (!err.empty()) {
      std::string what = "octet " + args[0] + (args.size() > 1 && args[0] == "eval" ? " " + args[1] : "") + ": " + err;
      // The command's own message ("octet train: ..."), else its last line.
      std::istringstream tail(tail_lines(dir / "log.txt", 8));
      std::string line, last, error;
      while (std::getline(tail, line)) {
        if (line.empty()) continue;
        last = line;
        if (line.rfind("octet ", 0) == 0) error = line;
      }
      if (!error.empty() || !last.empty()) what += ": " + (error.empty() ? last : error);
      throw std::runtime_error(what);
    }
  }

  void run(const Job& j) {
    const fs::path dir = fs::path(o_.dir) / j.dir();
    const auto t0 = Clock::now();
    std::string from;
    if (!j.fork_job.empty()) from = " (fork of " + j.fork_job + " after epoch " + std::to_string(j.fork_epoch) + ")";
    say("start " + j.id + from + "; " + tally_.left());
    try {
      fs::remove(dir / "command.txt");
      const std::vector<std::string> common = {"--data", o_.data, "--threads", std::to_string(o_.threads)};
      std::vector<std::string> args = j.args;
      if (j.kind == JobKind::calibrate) {
        fs::create_directories(dir / "run");
        args.insert(args.end(), common.begin(), common.end());
        for (const char* w : {"--no-eval", "-o", "run/last.ckpt"}) args.push_back(w);
      } else {
        if (!j.qat_conf.empty()) write_text_atomic(dir / "qat.conf", j.qat_conf);
        args.insert(args.end(), common.begin(), common.end());
        for (const char* w : {"--out", "run", "--no-progress"}) args.push_back(w);
        if (j.kind == JobKind::trunk) {
          args.insert(args.end(), {"--snapshots-from", std::to_string(std::max(j.snapshots_from, 1)), "--stop-after",
                                   std::to_string(j.stop_after)});
        }
        if (fs::exists(dir / "run" / "last.ckpt")) args.push_back("--resume");
      }
      octet(j, args);
      json r = result_head(j, "done");
      r["command"] = j.args;
      r["epochs"] = j.epochs;
      r["epochs_trained"] = j.cost;
      if (j.kind == JobKind::trunk) r["stop_after"] = j.stop_after;
      r["threads"] = o_.threads;
      if (!j.fork_job.empty()) r["fork"] = {{"from", j.fork_job}, {"epoch", j.fork_epoch}};
      if (!j.row.empty()) evaluate(j, r);
      r["seconds"] = std::chrono::duration<double>(Clock::now() - t0).count();
      write_text_atomic(dir / "result.json", r.dump(1) + "\n");
      tally_.finished(j, true);
      std::string figures;
      auto pct = [](const json& m) {
        char b[32];
        std::snprintf(b, sizeof b, "%.2f%%", 100.0 * m.value("top1", 0.0));
        return std::string(b);
      };
      if (r.contains("fakequant") && !r["fakequant"].is_null()) figures += ", fake-quant top-1 " + pct(r["fakequant"]);
      else if (r.contains("float")) figures += ", float top-1 " + pct(r["float"]);
      if (r.contains("engine") && !r["engine"].is_null())
        figures += ", engine " + pct(r["engine"]) + " (" + std::to_string(r["engine"].value("equal_intsim", 0)) + "/" +
                   std::to_string(r["engine"].value("intsim_images", 0)) + " == simulation)";
      say("done " + j.id + " in " + duration_text(r["seconds"].get<double>()) + figures + "; " + tally_.left());
    } catch (const std::exception& e) {
      fail(j, e.what(), std::chrono::duration<double>(Clock::now() - t0).count());
    }
  }

  // The final model's figures: float, fake-quant and (<= 8 bits) the engine,
  // each from `octet eval --json`; the model sizes.
  void evaluate(const Job& j, json& r) {
    const fs::path dir = fs::path(o_.dir) / j.dir();
    const std::vector<std::string> common = {"--data", o_.data, "--threads", std::to_string(o_.threads)};
    auto eval = [&](std::vector<std::string> args, const char* out) {
      args.insert(args.begin(), "eval");
      args.insert(args.end(), common.begin(), common.end());
      if (o_.eval_limit > 0) args.insert(args.end(), {"--limit", std::to_string(o_.eval_limit)});
      args.push_back("--json");
      args.push_back(out);
      octet(j, args);
      return read_json_file(dir / out);
    };
    const json fl = eval({"run/last.ckpt", "--mode", "float"}, "float.json");
    r["float"] = fl;
    r["class_names"] = fl.value("class_names", json::array());
    r["weight_bits"] = j.weight_bits;
    const json params = fl.value("parameters", json::object());
    const double weights = params.value("weights", 0.0), biases = params.value("biases", 0.0);
    r["theoretical_bytes"] = std::llround(weights * j.weight_bits / 8.0 + biases * 4.0);
    r["fakequant"] = nullptr;
    r["engine"] = nullptr;
    r["model_file_bytes"] = nullptr;
    if (j.quantized) r["fakequant"] = eval({"run/last.ckpt", "--mode", "fakequant"}, "fakequant.json");
    if (j.engine) {
      octet(j, {"export", "run/last.ckpt", "-o", "model.oct"});
      r["engine"] = eval({"model.oct", "--intsim", "--intsim-images", std::to_string(o_.intsim_images)}, "engine.json");
      r["model_file_bytes"] = fs::file_size(dir / "model.oct");
    } else {
      r["engine_note"] = j.quantized ? "wider than 8 bits: the engine runs int8, so this row is fake-quant only"
                                     : "not quantized";
    }
    if (j.kind != JobKind::calibrate && fs::exists(dir / "run" / "steps.csv")) r["steps_csv"] = "run/steps.csv";
  }

  const RunOptions& o_;
  const Plan& plan_;
  std::string token_, machine_;
  int lock_fd_ = -1;
  Tally& tally_;
};

std::string new_token() {
  std::random_device rd;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

}  // namespace

RunSummary run_study(const RunOptions& options) {
  RunOptions o = options;
  if (o.jobs < 1) throw std::invalid_argument("octet study: --jobs must be >= 1");
  if (o.threads < 1) throw std::invalid_argument("octet study: --threads must be >= 1");
  if (o.exe.empty()) o.exe = fs::read_symlink("/proc/self/exe").string();
  const StudyFile study = StudyFile::load(o.study_file);
  const Plan plan = make_plan(study);
  // No deadline: the last barrier waits for the other ranks' jobs (hours);
  // mpirun itself notices a rank that dies.
  std::shared_ptr<Communicator> group = join_world(std::numeric_limits<double>::infinity());
  fs::create_directories(o.dir);
  o.dir = fs::absolute(o.dir).string();
  if (group->rank() == 0) {
    write_text_atomic(fs::path(o.dir) / "study.study", read_text(o.study_file));
    write_text_atomic(fs::path(o.dir) / "plan.json", plan.to_json());
  }
  // Rank 0 draws the invocation's token (failures of this run are not retried
  // within it) and every rank starts after the plan is on disk.
  const std::string token = group->broadcast(group->rank() == 0 ? new_token() : std::string());
  group->barrier();

  RunSummary sum;
  double pending_cost = 0;
  for (const Job& j : plan.jobs) {
    ++sum.jobs;
    if (read_outcome(fs::path(o.dir) / j.dir()).state == State::kDone)
      ++sum.skipped;
    else
      pending_cost += j.cost;
  }
  if (group->rank() == 0 && o.progress)
    std::printf("study: %s: %d jobs (%d finished before), %d worker%s x %d rank%s, %d thread%s per job, folder %s\n",
                study.title.empty() ? o.study_file.c_str() : study.title.c_str(), sum.jobs, sum.skipped,
                o.jobs, o.jobs == 1 ? "" : "s", group->size(), group->size() == 1 ? "" : "s", o.threads,
                o.threads == 1 ? "" : "s", o.dir.c_str());
  std::fflush(stdout);
  Tally tally;
  tally.pending_cost = pending_cost;
  std::vector<std::unique_ptr<Runner>> runners;
  for (int i = 0; i < o.jobs; ++i) runners.push_back(std::make_unique<Runner>(o, plan, token, tally));
  std::vector<std::thread> threads;
  for (auto& r : runners) threads.emplace_back([&r] { r->work(); });
  for (auto& t : threads) t.join();
  group->barrier();
  // The whole folder's view, whichever rank ran what.
  sum.done = sum.failed = 0;
  for (const Job& j : plan.jobs) {
    const Outcome out = read_outcome(fs::path(o.dir) / j.dir());
    if (out.state == State::kDone) ++sum.done;
    if (out.state == State::kFailed) ++sum.failed;
  }
  sum.done -= sum.skipped;
  sum.rank = group->rank();
  return sum;
}

}  // namespace octet::study
