// apps/bench_engine.cpp: `octet bench engine`, the int8 engine's speed and size:
//   infer_int8_b1_img_s    images/s, one image per Session::run
//   infer_int8_b100_img_s  images/s, batches of 100
//   infer_int8_b100_gmacs  the same as conv + fc multiply-adds per second,
//                          to hold against `octet bench peak`
//   infer_int8_b1_cpu_us_per_img, infer_int8_b100_cpu_us_per_img
//                          process CPU time (all threads) per image over the
//                          same runs: steadier than images/s on a shared VM
//   engine_arena_bytes     the Session's one arena (activations + scratch) at
//                          batch 100 and at batch 1: the engine's peak memory
//                          besides the model's weights
//   runner_bytes           size of the engine-only runner (engine/runner/octet-run
//                          of the same build tree), if found
//   isa, threads           what ran
// With --layers, also a table per batch size: each op's share of the run's
// wall time (the Session's op profiling), its multiply-adds and GMAC/s.
// The model is a ResNet-20-shaped int8 model with random weights
// (engine/samples.h random_resnet) unless --model names a file. The keys are
// spelled as ../shared/bench/torch_resnet20.py prints its own.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "apps/args.h"
#include "apps/commands.h"
#include "engine/builder.h"
#include "engine/engine.h"
#include "engine/samples.h"

namespace octet::app {

namespace {

using Clock = std::chrono::steady_clock;

// Images per second of batches of `batch`: after a warm-up, repeated runs
// until at least `min_seconds` have passed; the best of 3 such rounds
// (the machine is shared, the best round is the least disturbed one).
// *cpu_per_image receives the process CPU seconds per image over all rounds.
double images_per_second(engine::Session& s, const std::vector<uint8_t>& pixels, int batch, double min_seconds,
                         double* cpu_per_image) {
  s.run(pixels.data(), batch);
  double best = 0;
  long long images = 0;
  const double cpu0 = process_cpu_seconds();
  for (int round = 0; round < 3; ++round) {
    int runs = 0;
    const auto t0 = Clock::now();
    double elapsed = 0;
    do {
      s.run(pixels.data(), batch);
      ++runs;
      elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (elapsed < min_seconds);
    best = std::max(best, runs * static_cast<double>(batch) / elapsed);
    images += static_cast<long long>(runs) * batch;
  }
  *cpu_per_image = (process_cpu_seconds() - cpu0) / static_cast<double>(images);
  return best;
}

// engine/runner/octet-run beside this build's apps/octet, or -1.
long long runner_bytes() {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return -1;
  const std::filesystem::path runner = self.parent_path().parent_path() / "engine" / "runner" / "octet-run";
  const auto size = std::filesystem::file_size(runner, ec);
  return ec ? -1 : static_cast<long long>(size);
}

// Runs batches of `batch` with op profiling on for at least `min_seconds`
// (after one warm-up run) and prints the per-op table.
void print_layers(engine::Session& s, const std::vector<uint8_t>& pixels, int batch, double min_seconds) {
  s.run(pixels.data(), batch);
  s.set_profiling(true);
  const auto t0 = Clock::now();
  do s.run(pixels.data(), batch);
  while (std::chrono::duration<double>(Clock::now() - t0).count() < min_seconds);
  std::printf("\nlayers at batch %d: ", batch);
  std::fputs(engine::profile_table(s.model(), s.profile()).c_str(), stdout);
  s.set_profiling(false);
}

}  // namespace

int bench_engine(int argc, char** argv) {
  Args a(argc, argv, "octet bench engine",
         "usage: octet bench engine [--threads N] [--model FILE] [--seconds 1] [--layers] [--save-model FILE]\n"
         "int8 inference throughput of the engine at batch 1 and batch 100, its arena\n"
         "size and the runner's size. The model defaults to a ResNet-20-shaped int8\n"
         "model with random weights. --threads 0: all cores. OCTET_ISA=avx2 (etc.)\n"
         "picks a lower instruction set than the best one. --layers: then a table per\n"
         "batch size of every op's time per image, share, multiply-adds and GMAC/s.\n"
         "--save-model FILE: also write the random model that is timed (.oct), e.g. to\n"
         "time the same network in ONNX Runtime (scripts/bench.sh).\n");
  if (a.help()) {
    std::fputs(a.usage().c_str(), stdout);
    return 0;
  }
  const int threads = a.get_int("--threads", 0);
  const std::string path = a.get("--model", "");
  const double seconds = a.get_double("--seconds", 1.0);
  const bool layers = a.flag("--layers");
  const std::string save = a.get("--save-model", "");
  a.finish();
  if (threads < 0) throw UsageError("octet bench engine: --threads must be >= 0");
  if (!(seconds > 0)) throw UsageError("octet bench engine: --seconds must be > 0");

  if (!save.empty() && !path.empty())
    throw UsageError("octet bench engine: --save-model writes the random model; with --model there is none");
  std::shared_ptr<const engine::Model> model;
  if (path.empty()) {
    const std::vector<uint8_t> bytes = engine::random_resnet({}).serialize();
    if (!save.empty()) engine::write_file_atomic(save, bytes);
    model = engine::Model::from_bytes(bytes, "random_resnet20");
  } else {
    model = engine::Model::load(path);
  }
  engine::set_num_threads(threads);
  std::printf("model %s\nmacs_per_image %llu\n", model->name().c_str(),
              static_cast<unsigned long long>(model->macs_per_image()));
  std::printf("isa %s\nthreads %d\n", engine::isa_name(engine::best_isa()), engine::num_threads());

  std::vector<uint8_t> pixels(model->input_bytes() * 100);
  uint32_t state = 12345;
  for (auto& p : pixels) {
    state = state * 1664525u + 1013904223u;
    p = static_cast<uint8_t>(state >> 24);
  }
  engine::Session s1(model, 1);
  engine::Session s100(model, 100);
  double cpu1 = 0, cpu100 = 0;
  std::printf("infer_int8_b1_img_s %.1f\n", images_per_second(s1, pixels, 1, seconds, &cpu1));
  const double b100 = images_per_second(s100, pixels, 100, seconds, &cpu100);
  std::printf("infer_int8_b100_img_s %.1f\n", b100);
  std::printf("infer_int8_b100_gmacs %.1f\n", b100 * static_cast<double>(model->macs_per_image()) / 1e9);
  std::printf("infer_int8_b1_cpu_us_per_img %.2f\ninfer_int8_b100_cpu_us_per_img %.2f\n", 1e6 * cpu1, 1e6 * cpu100);
  std::printf("engine_arena_bytes_b1 %zu\nengine_arena_bytes %zu\n", s1.arena_bytes(), s100.arena_bytes());
  std::printf("weight_bytes_stored %llu\n", static_cast<unsigned long long>(model->weight_bytes_stored()));
  const long long runner = runner_bytes();
  if (runner >= 0) std::printf("runner_bytes %lld\n", runner);
  if (layers) {
    print_layers(s1, pixels, 1, seconds);
    print_layers(s100, pixels, 100, seconds);
  }
  return 0;
}

}  // namespace octet::app
