// apps/bench_train.cpp: `octet bench train`, ResNet-20 training and float
// inference throughput with the methodology of the peer script
// ../shared/bench/torch_resnet20.py (same keys, same counts):
//   train_fp32_img_s       random [128, 3, 32, 32] inputs and labels, SGD
//                          momentum 0.9 wd 5e-4 lr 0.1, 2 warm-up steps, 10 timed
//   infer_fp32_b1_img_s    eval mode, no grad, batch 1, 2 warm-up, 300 timed
//   infer_fp32_b100_img_s  eval mode, no grad, batch 100, 2 warm-up, 10 timed
// Octet-only keys:
//   train_fp32_cpu_ms_per_step  process CPU time (all threads) of one training
//                          step: a loaded machine disturbs it much less than
//                          wall time
//   train_fp32_sys_share, train_fp32_minor_faults_per_step   the share of that
//                          CPU time spent in the kernel, and the page faults per
//                          step (memory handed back to the system and faulted in
//                          again; core/alloc.h keeps it): timed steps only
//   peak_rss_mb            the process's peak resident memory at the end
//   train_profile_step_ms, train_profile.<part> MS ms SHARE%   min(3, iters) more float
//                          steps with core/profile.h on: the step's wall time, then
//                          where it went, largest first: each op's forward and
//                          backward (the convolution's input and weight gradients
//                          apart), the autograd's gradient sums, the optimizer,
//                          and "other" (what no scope covers). The input batch is
//                          made once, so data loading is not in it (octet bench data)
//   train_qat_img_s        as train_fp32_img_s, the model prepared for QAT with the
//                          study's default knobs (quant/qat.h), fake quant on (the
//                          phase after the quantize delay: the slower one)
//   train_qat_cpu_ms_per_step, train_qat_over_fp32_cpu   its CPU time per step, and
//                          the ratio to the float step's (the target: <= 1.5)
// Under mpirun -np N (data-parallel, nn/data_parallel.h) only the training
// step runs: each rank takes its share of the 128 images, and rank 0 prints
// train_fp32_img_s (all ranks' images) and, to judge the scaling,
//   ranks, train_comm_wait_ms_per_step  time a step waits in collectives
//                          (gradient buckets not yet summed when the backward
//                          pass ends, the loss, BatchNorm statistics none here)
//   train_compute_ms_per_step           the rest of the step
//   train_reduced_mb_per_step           bytes this rank contributes to reductions
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <vector>

#include <sys/resource.h>

#include "apps/args.h"
#include "apps/commands.h"
#include "core/blas.h"
#include "core/distributed.h"
#include "core/loader.h"
#include "core/parallel.h"
#include "core/profile.h"
#include "core/rng.h"
#include "nn/data_parallel.h"
#include "nn/optim.h"
#include "nn/resnet.h"
#include "quant/qat.h"

namespace octet::app {

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

namespace {

// What the timed calls of rate() cost the process beyond wall time.
struct CallCost {
  double cpu_seconds = 0;  // process CPU time (user + system, all threads) per call
  double sys_share = 0;    // system time / (user + system time)
  double minor_faults = 0;  // per call
};

struct Usage {
  double user = 0, sys = 0, faults = 0;
  static Usage now() {
    rusage r{};
    getrusage(RUSAGE_SELF, &r);
    auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
    return {sec(r.ru_utime), sec(r.ru_stime), static_cast<double>(r.ru_minflt)};
  }
};

// Images per second of fn (wall time) over `iters` calls after `warm`; cost,
// if given, receives what a call costs the process.
double rate(const std::function<void()>& fn, int images, int iters, int warm = 2, CallCost* cost = nullptr) {
  for (int i = 0; i < warm; ++i) fn();
  const double c0 = process_cpu_seconds();
  const Usage u0 = Usage::now();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) fn();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (cost) {
    const Usage u1 = Usage::now();
    cost->cpu_seconds = (process_cpu_seconds() - c0) / iters;
    const double user = u1.user - u0.user, sys = u1.sys - u0.sys;
    cost->sys_share = user + sys > 0 ? sys / (user + sys) : 0;
    cost->minor_faults = (u1.faults - u0.faults) / iters;
  }
  return static_cast<double>(images) * iters / s;
}

// `steps` more calls of step with core/profile.h on: one line per scope,
// "train_profile.<name> <ms per step> ms <share of the step>", largest first,
// then what no scope covered (zero_grad, ops without a scope) as "other".
void print_profile(const std::function<void()>& step, int steps) {
  profile::enable(true);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
  profile::enable(false);
  std::printf("train_profile_step_ms %.1f\n", 1e3 * total);
  double covered = 0;
  auto line = [&](std::string name, double seconds) {
    std::replace(name.begin(), name.end(), ' ', '_');
    std::printf("train_profile.%s %.2f ms %.1f%%\n", name.c_str(), 1e3 * seconds, 100 * seconds / total);
  };
  for (const profile::Row& r : profile::rows()) {
    covered += r.seconds / steps;
    line(r.name, r.seconds / steps);
  }
  line("other", std::max(0.0, total - covered));
}

double peak_rss_mb() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return static_cast<double>(r.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace

int bench_train(int argc, char** argv) {
  Args a(argc, argv, "octet bench train",
         "usage: octet bench train [--threads N] [--model resnet20] [--iters 10]\n"
         "Prints train_fp32_img_s, infer_fp32_b1_img_s, infer_fp32_b100_img_s as the peer script does,\n"
         "and train_qat_img_s (the same training step with QAT, the study's default knobs);\n"
         "train_fp32_sys_share and train_fp32_minor_faults_per_step (the kernel's share of a\n"
         "step's CPU time and its page faults: memory reuse), peak_rss_mb, and where a\n"
         "step's time goes (train_profile.*: each op's forward and backward, the optimizer).\n");
  if (a.help()) {
    std::fputs(a.usage().c_str(), stdout);
    return 0;
  }
  const int threads = a.get_int("--threads", 2);
  const std::string name = a.get("--model", "resnet20");
  const int iters = a.get_int("--iters", 10);
  a.finish();
  if (iters < 1) throw UsageError("octet bench train: --iters must be >= 1");
  set_num_threads(threads);
  const std::shared_ptr<Communicator> world = join_world();
  if (world->size() > 1 && world->rank() != 0 && !std::freopen("/dev/null", "w", stdout))
    throw std::runtime_error("octet bench train: cannot silence rank " + std::to_string(world->rank()));

  auto model = nn::make_model(name, 10, 0);
  std::printf("octet threads %d %s params %lld\n", num_threads(), name.c_str(),
              static_cast<long long>(model->num_parameters()));
  // OPENBLAS_CORETYPE=Haswell (set on some machines) roughly halves sgemm on AVX-512 CPUs: say which core runs.
  std::printf("openblas_core %s\n", openblas_corename().c_str());
  nn::OptimizerConfig oc;
  oc.kind = "sgd";
  oc.lr = 0.1f;
  oc.momentum = 0.9f;
  oc.weight_decay = 5e-4f;
  auto opt = nn::make_optimizer(oc, model->named_parameters());

  Rng rng(0, 7);
  Tensor xb = Tensor::randn({128, 3, 32, 32}, rng);
  std::vector<int> yb(128);
  for (int& y : yb) y = static_cast<int>(rng.below(10));
  if (world->size() > 1) {
    // This rank's rows of the batch, and its weight n_r / 128 on the loss.
    const auto [lo, hi] = Loader::shard_rows(128, world->rank(), world->size());
    const int64_t per = 3 * 32 * 32;
    Tensor part = Tensor::from({hi - lo, 3, 32, 32}, std::span<const float>(xb.data() + lo * per, (hi - lo) * per));
    const std::vector<int> labels(yb.begin() + lo, yb.begin() + hi);
    const float weight = static_cast<float>(hi - lo) / 128.0f;
    nn::GradientReducer reducer(*world, model->named_parameters());
    nn::broadcast_state(*model, *world);
    auto dstep = [&] {
      model->zero_grad();
      reducer.begin();
      mul(cross_entropy(model->forward(part), labels), weight).backward([&](const Tensor& p) { reducer.ready(p); });
      reducer.finish();
      opt->step();
    };
    model->train();
    for (int i = 0; i < 2; ++i) dstep();
    world->barrier();
    world->reset_stats();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) dstep();
    world->barrier();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const CommStats cs = world->stats();
    std::printf("ranks %d\n", world->size());
    std::printf("train_fp32_img_s %.1f\n", 128.0 * iters / s);
    std::printf("train_comm_wait_ms_per_step %.2f\n", 1e3 * cs.wait_seconds / iters);
    std::printf("train_compute_ms_per_step %.1f\n", 1e3 * (s - cs.wait_seconds) / iters);
    std::printf("train_reduced_mb_per_step %.3f\n", static_cast<double>(cs.bytes) / iters / 1e6);
    return 0;
  }
  auto step = [&] {
    model->zero_grad();
    Tensor loss = cross_entropy(model->forward(xb), yb);
    loss.backward();
    opt->step();
  };
  model->train();
  CallCost cost;
  std::printf("train_fp32_img_s %.1f\n", rate(step, 128, iters, 2, &cost));
  const double cpu = cost.cpu_seconds;
  std::printf("train_fp32_cpu_ms_per_step %.1f\n", 1e3 * cpu);
  std::printf("train_fp32_sys_share %.3f\n", cost.sys_share);
  std::printf("train_fp32_minor_faults_per_step %.0f\n", cost.minor_faults);
  print_profile(step, std::min(iters, 3));
  std::fflush(stdout);

  {
    auto qmodel = nn::make_model(name, 10, 0);
    quant::prepare(*qmodel, quant::QatConfig{});
    qmodel->train();
    {
      NoGradGuard ng;
      qmodel->forward(xb);  // observe once, so every range exists
    }
    quant::apply_phase(*qmodel, quant::QatPhase{.fake_quant = true});
    auto qopt = nn::make_optimizer(oc, qmodel->named_parameters());
    auto qstep = [&] {
      qmodel->zero_grad();
      Tensor loss = cross_entropy(qmodel->forward(xb), yb);
      loss.backward();
      qopt->step();
    };
    CallCost qcost;
    std::printf("train_qat_img_s %.1f\n", rate(qstep, 128, iters, 2, &qcost));
    const double qcpu = qcost.cpu_seconds;
    std::printf("train_qat_cpu_ms_per_step %.1f\n", 1e3 * qcpu);
    std::printf("train_qat_over_fp32_cpu %.2f\n", qcpu / cpu);
    std::fflush(stdout);
  }

  model->eval();
  NoGradGuard no_grad;
  Tensor x1 = Tensor::randn({1, 3, 32, 32}, rng);
  Tensor x100 = Tensor::randn({100, 3, 32, 32}, rng);
  std::printf("infer_fp32_b1_img_s %.1f\n", rate([&] { model->forward(x1); }, 1, 30 * iters));
  std::printf("infer_fp32_b100_img_s %.1f\n", rate([&] { model->forward(x100); }, 100, iters));
  std::printf("peak_rss_mb %.0f\n", peak_rss_mb());
  return 0;
}

}  // namespace octet::app
