// octet-run, the engine-only runner binary: raw NHWC records, the CIFAR-10
// binary layout (labels, CHW planes, accuracy), and its errors.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "engine/builder.h"
#include "tests/shell.h"
#include "tests/skip.h"
#include "engine/engine.h"
#include "engine/samples.h"

using namespace octet::engine;
namespace fs = std::filesystem;

namespace {

const std::string kRunnerPath = std::string(OCTET_BINARY_DIR) + "/engine/runner/octet-run";
// How to start it: in a cross build through the emulator (qemu-aarch64), named
// explicitly so the test never depends on the host's binfmt registration.
const std::string kRunner = std::string(OCTET_EMULATOR) + kRunnerPath;

using Result = octet::testing::ShellResult;
// Runs a shell command; its exit code and stdout.
Result sh(const std::string& cmd) { return octet::testing::run_shell(cmd); }

void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("octet_runner_test_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

// Skips the suite when octet-run cannot be executed here (a cross build on a
// host without its emulator): the test then has nothing to check.
bool runner_runs() {
  REQUIRE_MESSAGE(fs::exists(kRunnerPath), "build the octet-run target first: " << kRunnerPath);
  const Result r = sh(kRunner + " --help 2>&1");
  if (r.code == 126 || r.code == 127)
    octet::testing::skip_suite("octet-run (" + kRunner + ") cannot be executed on this host (a cross build without "
                               "the emulator for its CPU)");
  CHECK(r.code == 0);
  CHECK(r.out.find("usage: octet-run MODEL IMAGES") != std::string::npos);
  return true;
}

}  // namespace

TEST_CASE("octet-run: raw NHWC records print the engine's top-1, CIFAR records its accuracy") {
  if (!runner_runs()) return;
  TempDir dir;
  ResNetSpec spec;
  spec.blocks_per_stage = 1;
  spec.width = 8;
  const ModelBuilder b = random_resnet(spec);  // 32x32x3 -> 10 classes
  const fs::path model_path = dir.path / "m.oct";
  b.write(model_path.string());
  const auto model = Model::load(model_path.string());

  const int n = 7;
  std::mt19937 gen(3);
  std::vector<uint8_t> nhwc(model->input_bytes() * n);
  for (auto& p : nhwc) p = static_cast<uint8_t>(gen());
  Session s(model, n);
  const auto logits = s.run(nhwc.data(), n);
  std::vector<int> top1(n);
  for (int i = 0; i < n; ++i) top1[i] = argmax(logits.subspan(i * 10, 10));

  write_bytes(dir.path / "raw.bin", nhwc);
  const Result raw = sh(kRunner + " " + model_path.string() + " " + (dir.path / "raw.bin").string() + " --batch 3 2>/dev/null");
  CHECK(raw.code == 0);
  std::istringstream lines(raw.out);
  for (int i = 0; i < n; ++i) {
    int index = -1, cls = -1;
    std::string name;
    lines >> index >> cls >> name;
    lines.ignore(1 << 20, '\n');
    CHECK(index == i);
    CHECK(cls == top1[i]);
    CHECK(name == "class" + std::to_string(top1[i]));
  }

  // The same images in the CIFAR-10 binary layout; labels right for 4 of 7.
  std::vector<uint8_t> cifar;
  for (int i = 0; i < n; ++i) {
    cifar.push_back(static_cast<uint8_t>(i < 4 ? top1[i] : (top1[i] + 1) % 10));
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 32 * 32; ++p) cifar.push_back(nhwc[i * 3072 + p * 3 + c]);
  }
  write_bytes(dir.path / "test_batch.bin", cifar);
  const Result acc = sh("cat " + (dir.path / "test_batch.bin").string() + " | " + kRunner + " " + model_path.string() +
                        " - --cifar --batch 2 --threads 1 2>/dev/null");
  CHECK(acc.code == 0);
  CHECK(acc.out == "accuracy 0.5714 (4/7)\n");

  // --profile: the same accuracy on stdout, a row per op on stderr.
  const Result prof = sh(kRunner + " " + model_path.string() + " " + (dir.path / "test_batch.bin").string() +
                         " --cifar --batch 2 --threads 1 --profile 2>&1 >/dev/null");
  CHECK(prof.code == 0);
  CHECK(prof.out.find("4 runs, 7 images") != std::string::npos);
  for (const OpDesc& op : model->desc().ops) CHECK(prof.out.find(" " + op.name + " ") != std::string::npos);

  // Errors: a partial record, a corrupted model, a bad flag.
  cifar.pop_back();
  write_bytes(dir.path / "short.bin", cifar);
  const Result partial = sh(kRunner + " " + model_path.string() + " " + (dir.path / "short.bin").string() + " --cifar 2>&1");
  CHECK(partial.code == 1);
  CHECK(partial.out.find("ends with a partial record of 3072 bytes (records are 3073 bytes)") != std::string::npos);
  std::vector<uint8_t> file = b.serialize();
  file[file.size() / 2] ^= 4;
  write_bytes(dir.path / "bad.oct", file);
  const Result bad = sh(kRunner + " " + (dir.path / "bad.oct").string() + " " + (dir.path / "raw.bin").string() + " 2>&1");
  CHECK(bad.code == 1);
  CHECK(bad.out.find("bad.oct: CRC32 mismatch") != std::string::npos);
  const Result usage = sh(kRunner + " " + model_path.string() + " x --batch zero 2>&1");
  CHECK(usage.code == 2);
  CHECK(usage.out.find("--batch: 'zero' is not an integer") != std::string::npos);
}
