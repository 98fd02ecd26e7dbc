// apps/bench_peak.cpp: `octet bench peak`, what this CPU's cores can do at
// most, measured rather than read off a data sheet: the rate of the one
// instruction sequence each kernel family is built on, in long unrolled
// loops of independent accumulators (no loads, no dependencies but the
// accumulation), on 1 thread and on every thread. The other benchmarks are
// then a share of these figures, in the same run on the same machine.
//
//   peak_int8_pmaddwd_gmacs    vpmaddwd + vpaddd (AVX2, 16 int16 MACs): the
//                              engine's exact AVX2 kernels (int8 widened to
//                              int16, int32 sums; engine/kernels_avx2.cpp)
//   peak_int8_maddubs_gmacs    vpmaddubsw + vpmaddwd(1) + vpaddd (AVX2, 32
//                              u8 x s8 MACs): what oneDNN and ONNX Runtime run
//                              on AVX2; vpmaddubsw saturates pair sums to
//                              int16, so it is not exact for all int8 inputs
//   peak_int8_vnni_gmacs       vpdpbusd (AVX-512 VNNI, 64 MACs): the engine's
//                              VNNI kernels                   (VNNI CPUs only)
//   peak_fp32_fma_gflops       vfmadd231ps, 256-bit and 512-bit where there
//                              is AVX-512F (2 flops per lane): training's sgemm
// each as "_t1" (one thread) and "_tN" (N = --threads, 0: every core). x86-64
// only; other CPUs print "peak unmeasured".
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "apps/args.h"
#include "apps/commands.h"
#include "engine/kernels.h"

namespace octet::app {

namespace {

#if defined(__x86_64__)

// Each loop runs `iters` (>= 1) times a block of independent instruction
// chains on registers only, inside one asm statement (the inputs are 1.0f
// bit patterns: no denormals for the FMAs), so the compiler can neither
// hoist nor drop it. Returns the multiply-adds (or flops) it did.

// 6 chains of vpmaddwd (into a temporary) + vpaddd (into an accumulator).
__attribute__((target("avx2"))) double loop_pmaddwd(long iters) {
  const float one = 1.0f;
  long n = iters;
  asm volatile(
      "vbroadcastss %[one], %%ymm12\n\t"
      "vbroadcastss %[one], %%ymm13\n\t"
      "1:\n\t"
      "vpmaddwd %%ymm12, %%ymm13, %%ymm6\n\t"
      "vpmaddwd %%ymm12, %%ymm13, %%ymm7\n\t"
      "vpmaddwd %%ymm12, %%ymm13, %%ymm8\n\t"
      "vpmaddwd %%ymm12, %%ymm13, %%ymm9\n\t"
      "vpmaddwd %%ymm12, %%ymm13, %%ymm10\n\t"
      "vpmaddwd %%ymm12, %%ymm13, %%ymm11\n\t"
      "vpaddd %%ymm6, %%ymm0, %%ymm0\n\t"
      "vpaddd %%ymm7, %%ymm1, %%ymm1\n\t"
      "vpaddd %%ymm8, %%ymm2, %%ymm2\n\t"
      "vpaddd %%ymm9, %%ymm3, %%ymm3\n\t"
      "vpaddd %%ymm10, %%ymm4, %%ymm4\n\t"
      "vpaddd %%ymm11, %%ymm5, %%ymm5\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(n)
      : [one] "m"(one)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
        "xmm13", "cc");
  return 6.0 * 16 * static_cast<double>(iters);
}

// 4 chains of vpmaddubsw -> vpmaddwd by ones -> vpaddd.
__attribute__((target("avx2"))) double loop_maddubs(long iters) {
  const float one = 1.0f;
  long n = iters;
  asm volatile(
      "vbroadcastss %[one], %%ymm12\n\t"
      "vbroadcastss %[one], %%ymm13\n\t"
      "vpcmpeqw %%ymm14, %%ymm14, %%ymm14\n\t"
      "vpsrlw $15, %%ymm14, %%ymm14\n\t"
      "1:\n\t"
      "vpmaddubsw %%ymm12, %%ymm13, %%ymm4\n\t"
      "vpmaddubsw %%ymm12, %%ymm13, %%ymm5\n\t"
      "vpmaddubsw %%ymm12, %%ymm13, %%ymm6\n\t"
      "vpmaddubsw %%ymm12, %%ymm13, %%ymm7\n\t"
      "vpmaddwd %%ymm14, %%ymm4, %%ymm8\n\t"
      "vpmaddwd %%ymm14, %%ymm5, %%ymm9\n\t"
      "vpmaddwd %%ymm14, %%ymm6, %%ymm10\n\t"
      "vpmaddwd %%ymm14, %%ymm7, %%ymm11\n\t"
      "vpaddd %%ymm8, %%ymm0, %%ymm0\n\t"
      "vpaddd %%ymm9, %%ymm1, %%ymm1\n\t"
      "vpaddd %%ymm10, %%ymm2, %%ymm2\n\t"
      "vpaddd %%ymm11, %%ymm3, %%ymm3\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(n)
      : [one] "m"(one)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
        "xmm13", "xmm14", "cc");
  return 4.0 * 32 * static_cast<double>(iters);
}

// 10 chains of vpdpbusd (latency 5, up to 2 per cycle).
__attribute__((target("avx512f,avx512vnni"))) double loop_vnni(long iters) {
  const float one = 1.0f;
  long n = iters;
  asm volatile(
      "vbroadcastss %[one], %%zmm30\n\t"
      "vbroadcastss %[one], %%zmm31\n\t"
      "1:\n\t"
      "vpdpbusd %%zmm30, %%zmm31, %%zmm0\n\t"
      "vpdpbusd %%zmm30, %%zmm31, %%zmm1\n\t"
      "vpdpbusd %%zmm30, %%zmm31, %%zmm2\n\t"
      "vpdpbusd %%zmm30, %%zmm31, %%zmm3\n\t"
      "vpdpbusd %%zmm30, %%zmm31, %%zmm4\n\t"
      "vpdpbusd %%zmm30, %%zmm31, %%zmm5\n\t"
      "vpdpbusd %%zmm30, %%zmm31, %%zmm6\n\t"
      "vpdpbusd %%zmm30, %%zmm31, %%zmm7\n\t"
      "vpdpbusd %%zmm30, %%zmm31, %%zmm8\n\t"
      "vpdpbusd %%zmm30, %%zmm31, %%zmm9\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(n)
      : [one] "m"(one)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm30", "xmm31", "cc");
  return 10.0 * 64 * static_cast<double>(iters);
}

// 10 chains of 256-bit FMA (latency 4-5, 2 per cycle): 16 flops each.
__attribute__((target("avx2,fma"))) double loop_fma256(long iters) {
  const float one = 1.0f;
  long n = iters;
  asm volatile(
      "vbroadcastss %[one], %%ymm12\n\t"
      "vbroadcastss %[one], %%ymm13\n\t"
      "1:\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm0\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm1\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm2\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm3\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm4\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm5\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm6\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm7\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm8\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm9\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(n)
      : [one] "m"(one)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm12", "xmm13", "cc");
  return 10.0 * 16 * static_cast<double>(iters);
}

// The same with 512-bit registers: 32 flops each.
__attribute__((target("avx512f"))) double loop_fma512(long iters) {
  const float one = 1.0f;
  long n = iters;
  asm volatile(
      "vbroadcastss %[one], %%zmm30\n\t"
      "vbroadcastss %[one], %%zmm31\n\t"
      "1:\n\t"
      "vfmadd231ps %%zmm30, %%zmm31, %%zmm0\n\t"
      "vfmadd231ps %%zmm30, %%zmm31, %%zmm1\n\t"
      "vfmadd231ps %%zmm30, %%zmm31, %%zmm2\n\t"
      "vfmadd231ps %%zmm30, %%zmm31, %%zmm3\n\t"
      "vfmadd231ps %%zmm30, %%zmm31, %%zmm4\n\t"
      "vfmadd231ps %%zmm30, %%zmm31, %%zmm5\n\t"
      "vfmadd231ps %%zmm30, %%zmm31, %%zmm6\n\t"
      "vfmadd231ps %%zmm30, %%zmm31, %%zmm7\n\t"
      "vfmadd231ps %%zmm30, %%zmm31, %%zmm8\n\t"
      "vfmadd231ps %%zmm30, %%zmm31, %%zmm9\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(n)
      : [one] "m"(one)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm30", "xmm31", "cc");
  return 10.0 * 32 * static_cast<double>(iters);
}

struct Kernel {
  const char* key;  // without the _t1 / _tN suffix
  double (*loop)(long);
  bool supported;
};

std::vector<Kernel> kernels() {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = __builtin_cpu_supports("avx512f");
  return {{"peak_int8_pmaddwd_gmacs", loop_pmaddwd, avx2},
          {"peak_int8_maddubs_gmacs", loop_maddubs, avx2},
          {"peak_int8_vnni_gmacs", loop_vnni, engine::isa_supported(engine::Isa::avx512_vnni)},
          {"peak_fp32_fma_gflops", avx512 ? loop_fma512 : loop_fma256, avx2}};
}

#endif

// Operations per second of `loop` on `threads` threads at once: each thread
// runs blocks of iterations until `seconds` have passed; the best of 3
// rounds (the least disturbed one on a shared machine).
double rate(double (*loop)(long), int threads, double seconds) {
  using Clock = std::chrono::steady_clock;
  constexpr long kBlock = 1 << 16;
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    std::vector<double> ops(static_cast<size_t>(threads), 0.0);
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    Clock::time_point start;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        ++ready;
        while (!go.load()) std::this_thread::yield();
        double done = 0;
        do done += loop(kBlock);
        while (std::chrono::duration<double>(Clock::now() - start).count() < seconds);
        ops[static_cast<size_t>(t)] = done;
      });
    while (ready.load() < threads) std::this_thread::yield();
    start = Clock::now();
    go = true;
    for (std::thread& th : pool) th.join();
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    double total = 0;
    for (double o : ops) total += o;
    best = std::max(best, total / elapsed);
  }
  return best;
}

}  // namespace

int bench_peak(int argc, char** argv) {
  Args a(argc, argv, "octet bench peak",
         "usage: octet bench peak [--threads N] [--seconds 0.3]\n"
         "The cores' peak rates, measured: int8 multiply-adds per second of the\n"
         "instruction sequences the int8 kernels are built on (vpmaddwd: the\n"
         "engine's exact AVX2 path; vpmaddubsw: oneDNN's and ONNX Runtime's AVX2\n"
         "path, which saturates; vpdpbusd: AVX-512 VNNI) and fp32 FMA flops, on 1\n"
         "thread (_t1) and on N threads (_tN; --threads 0: every core). Long loops of\n"
         "independent register-only chains; the best of 3 rounds of --seconds each.\n");
  if (a.help()) {
    std::fputs(a.usage().c_str(), stdout);
    return 0;
  }
  const int threads_arg = a.get_int("--threads", 0);
  const double seconds = a.get_double("--seconds", 0.3);
  a.finish();
  if (threads_arg < 0) throw UsageError("octet bench peak: --threads must be >= 0");
  if (!(seconds > 0)) throw UsageError("octet bench peak: --seconds must be > 0");
  const int threads =
      threads_arg > 0 ? threads_arg : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::printf("threads %d\n", threads);
#if defined(__x86_64__)
  for (const Kernel& k : kernels()) {
    if (!k.supported) {
      std::printf("%s unsupported\n", k.key);
      continue;
    }
    std::printf("%s_t1 %.1f\n", k.key, rate(k.loop, 1, seconds) / 1e9);
    if (threads > 1) std::printf("%s_tN %.1f\n", k.key, rate(k.loop, threads, seconds) / 1e9);
  }
#else
  std::printf("peak unmeasured (x86-64 only)\n");
#endif
  return 0;
}

}  // namespace octet::app
