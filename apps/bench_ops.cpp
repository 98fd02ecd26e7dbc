// apps/bench_ops.cpp: `octet bench ops`, forward and backward time of each
// distinct convolution of ResNet-20 (CIFAR, 1x1 projection shortcuts) at one
// batch size and thread count.
//
// For every shape: x [B, Cin, H, W] and w [Cout, Cin, K, K] require grad
// (except the stem's x, the network input, as in training), no bias (the
// convs feed batchnorm). One iteration = conv2d forward (recording the tape)
// + backward from a random dL/dy. After one warm-up iteration the median of
// --iters timed iterations is printed, forward and backward separately, in
// wall time and in process CPU time (all threads; at --threads 1 it equals
// wall time on an idle machine and is much less disturbed by other load).
// "count" is how many convs of that shape ResNet-20 has; total_resnet20_ms
// weighs each shape by it (the conv share of one training step).
//
// Output is "key value" lines:
//   threads 2
//   openblas_core SkylakeX
//   OPENBLAS_CORETYPE Haswell        (only when the variable is set)
//   conv <name> fwd_ms F bwd_ms B total_ms T cpu_ms U count C
//   total_distinct_ms S
//   total_resnet20_ms R
//   total_resnet20_cpu_ms U
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "apps/args.h"
#include "apps/commands.h"
#include "core/blas.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/rng.h"

namespace octet::app {

namespace {

struct ConvShape {
  const char* name;
  int cin, cout, hw, k, stride, pad, count;  // count: convs of this shape in ResNet-20
  bool input_grad;                           // false for the stem (the network input)
};

// ResNet-20: stem, 3 stages of 3 BasicBlocks (16, 32, 64 channels); the first
// block of stages 2 and 3 downsamples with a stride-2 3x3 conv and a stride-2
// 1x1 projection on the shortcut.
const ConvShape kShapes[] = {
    {"stem_3to16_32x32", 3, 16, 32, 3, 1, 1, 1, false},
    {"3x3_16to16_32x32", 16, 16, 32, 3, 1, 1, 6, true},
    {"3x3_16to32_s2_32x32", 16, 32, 32, 3, 2, 1, 1, true},
    {"3x3_32to32_16x16", 32, 32, 16, 3, 1, 1, 5, true},
    {"3x3_32to64_s2_16x16", 32, 64, 16, 3, 2, 1, 1, true},
    {"3x3_64to64_8x8", 64, 64, 8, 3, 1, 1, 5, true},
    {"1x1_16to32_s2_32x32", 16, 32, 32, 1, 2, 0, 1, true},
    {"1x1_32to64_s2_16x16", 32, 64, 16, 1, 2, 0, 1, true},
};

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return 1e3 * static_cast<double>(ts.tv_sec) + 1e-6 * static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int bench_ops(int argc, char** argv) {
  Args a(argc, argv, "octet bench ops",
         "usage: octet bench ops [--threads N] [--batch 128] [--iters 10]\n"
         "Forward+backward time (median ms) of each distinct ResNet-20 conv shape.\n");
  if (a.help()) {
    std::fputs(a.usage().c_str(), stdout);
    return 0;
  }
  const int threads = a.get_int("--threads", 2);
  const int batch = a.get_int("--batch", 128);
  const int iters = a.get_int("--iters", 10);
  a.finish();
  if (threads < 1) throw UsageError("octet bench ops: --threads must be >= 1");
  if (batch < 1) throw UsageError("octet bench ops: --batch must be >= 1");
  if (iters < 1) throw UsageError("octet bench ops: --iters must be >= 1");
  set_num_threads(threads);
  blas_init();

  std::printf("threads %d\n", num_threads());
  std::printf("batch %d\n", batch);
  std::printf("openblas_core %s\n", openblas_corename().c_str());
  if (const char* env = std::getenv("OPENBLAS_CORETYPE")) std::printf("OPENBLAS_CORETYPE %s\n", env);
  std::fflush(stdout);

  Rng rng(0, 11);
  double total_distinct = 0, total_net = 0, total_cpu = 0;
  for (const ConvShape& s : kShapes) {
    Tensor x = Tensor::randn({batch, s.cin, s.hw, s.hw}, rng);
    Tensor w = Tensor::randn({s.cout, s.cin, s.k, s.k}, rng, 0.1f);
    x.requires_grad_(s.input_grad);
    w.requires_grad_(true);
    const Conv2dOptions opt{.stride = s.stride, .pad = s.pad, .groups = 1};
    const int64_t oh = (s.hw + 2 * s.pad - s.k) / s.stride + 1;
    Tensor gy = Tensor::randn({batch, s.cout, oh, oh}, rng);
    std::vector<double> fwd, bwd, cpu;
    for (int it = 0; it < iters + 1; ++it) {
      x.zero_grad();
      w.zero_grad();
      const double c0 = cpu_ms();
      auto t0 = Clock::now();
      Tensor y = conv2d(x, w, Tensor(), opt);
      const double f = ms_since(t0);
      t0 = Clock::now();
      y.backward(gy);
      const double b = ms_since(t0);
      const double u = cpu_ms() - c0;
      if (it > 0) fwd.push_back(f), bwd.push_back(b), cpu.push_back(u);  // iteration 0 warms up
    }
    const double f = median(fwd), b = median(bwd), u = median(cpu);
    total_distinct += f + b;
    total_net += (f + b) * s.count;
    total_cpu += u * s.count;
    std::printf("conv %s fwd_ms %.3f bwd_ms %.3f total_ms %.3f cpu_ms %.3f count %d\n", s.name, f, b, f + b, u,
                s.count);
    std::fflush(stdout);
  }
  std::printf("total_distinct_ms %.3f\n", total_distinct);
  std::printf("total_resnet20_ms %.3f\n", total_net);
  std::printf("total_resnet20_cpu_ms %.3f\n", total_cpu);
  return 0;
}

}  // namespace octet::app
