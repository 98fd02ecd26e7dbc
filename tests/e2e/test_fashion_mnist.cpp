// ctest-labels: slow
// End to end on real Fashion-MNIST (28x28 gray images, read from the IDX
// files as they are distributed, .gz or not): train a QAT ResNet-20 on a few
// hundred images, write its checkpoint, load it back and export it, and check
//   - the shape travels: the checkpoint records 28x28, 1 channel; the stem
//     takes 1 channel; the model file's input is 28x28x1, never 32x32x3;
//   - the engine's int8 logits equal the integer simulation's on EVERY test
//     image used, and its accuracy is above chance;
//   - octet-run (the engine-only runner, when built) reads the IDX test
//     images at that shape and counts the same hits as the engine here.
// Data: $OCTET_FASHION_MNIST, else /usr/share/datasets/fashion-mnist (Debian's
// dataset-fashion-mnist); the suite is reported as skipped without them
// (tests/skip.h).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/dataset.h"
#include "engine/engine.h"
#include "nn/metrics.h"
#include "nn/resnet.h"
#include "nn/trainer.h"
#include "quant/analysis.h"
#include "quant/export.h"
#include "quant/intsim.h"
#include "quant/qat.h"
#include "quant/qat_checkpoint.h"
#include "quant/qat_training.h"
#include "tests/e2e/engine_check.h"
#include "tests/shell.h"
#include "tests/skip.h"

using namespace octet;
namespace fs = std::filesystem;

namespace {

// The Fashion-MNIST IDX folder, or the suite is skipped.
std::string fashion_mnist_root_or_skip() {
  const char* env = std::getenv("OCTET_FASHION_MNIST");
  const std::string root = env && *env ? std::string(env) : "/usr/share/datasets/fashion-mnist";
  const std::string why = "no Fashion-MNIST IDX files at " + root +
                          " (apt-get install dataset-fashion-mnist, or point OCTET_FASHION_MNIST at a folder with "
                          "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
                          "t10k-labels-idx1-ubyte.gz)";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) octet::testing::skip_suite(why);
  try {
    if (detect_format(root) != DataFormat::idx) octet::testing::skip_suite(why);
  } catch (const std::exception&) {
    octet::testing::skip_suite(why);
  }
  return root;
}

// A fresh folder under the system temp dir, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "octet-fashion-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()));
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void put_be32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

// The images and labels of `ds` as plain IDX files (what octet-run reads).
void write_idx(const Dataset& ds, const std::string& images, const std::string& labels) {
  std::vector<uint8_t> b;
  put_be32(b, 0x00000803);
  put_be32(b, static_cast<uint32_t>(ds.size()));
  put_be32(b, static_cast<uint32_t>(ds.height));
  put_be32(b, static_cast<uint32_t>(ds.width));
  b.insert(b.end(), ds.images.begin(), ds.images.end());  // 1 x H x W per image: already row-major
  std::ofstream(images, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  b.clear();
  put_be32(b, 0x00000801);
  put_be32(b, static_cast<uint32_t>(ds.size()));
  for (int l : ds.labels) b.push_back(static_cast<uint8_t>(l));
  std::ofstream(labels, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("e2e: QAT ResNet-20 on Fashion-MNIST (IDX, 28x28 gray) -> checkpoint -> export -> engine at 28x28x1") {
  const std::string root = fashion_mnist_root_or_skip();
  const auto t0 = std::chrono::steady_clock::now();
  const Dataset train_all = load_dataset(root, Split::train);
  const Dataset test_all = load_dataset(root, Split::test);
  REQUIRE(train_all.shape() == ImageShape{1, 28, 28});
  REQUIRE(test_all.shape() == ImageShape{1, 28, 28});
  CHECK(train_all.size() == 60000);
  CHECK(test_all.size() == 10000);
  CHECK(train_all.num_classes() == 10);
  if (fs::path(root).filename().string().find("fashion") != std::string::npos)
    CHECK(train_all.class_names == fashion_mnist_class_names());
  const Dataset train = nn::take_subset(train_all, 768, 1);
  const Dataset test = nn::take_subset(test_all, 300, 2);

  // QAT from scratch: the stem takes the data's one channel.
  quant::QatConfig q;   // the study's defaults: QDQv2, half to even, 8 bits, EMA ranges ...
  q.quant_delay = 0.5;  // ... but fake quant for the second half of this short run
  auto model = nn::make_model("resnet20", train.num_classes(), 3, nn::ConvInit::torch, train.channels);
  REQUIRE(model->config().in_channels == 1);
  quant::prepare(*model, q);
  TempDir run;
  nn::TrainConfig tc = nn::TrainConfig::preset_config("quick");
  tc.model = "resnet20";
  tc.epochs = 3;
  tc.batch = 32;  // 24 steps per epoch
  tc.schedule.lr = 0.05;
  tc.progress = false;
  tc.eval_every = 1000;  // we evaluate ourselves
  tc.out = run.path.string();
  nn::Trainer t(tc, train, nullptr, model);
  quant::attach_qat(t, q);
  t.fit();
  REQUIRE(t.preprocess().channels() == 1);
  const double train_s = seconds_since(t0);

  // The checkpoint carries the shape; loading it rebuilds a 1-channel stem.
  quant::LoadedModel lm = quant::load_model(tc.out + "/last.ckpt");
  CHECK(lm.input_recorded);
  CHECK(lm.input == ImageShape{1, 28, 28});
  CHECK(lm.model->config().in_channels == 1);
  CHECK(lm.preprocess.channels() == 1);
  REQUIRE(lm.qat);

  // The fake-quant model of the checkpoint on the test images.
  const quant::QuantSwitches sw = quant::set_quant_mode(*lm.model, quant::QuantMode::fake_quant);
  const nn::Metrics fq = nn::evaluate(*lm.model, test, lm.preprocess, 150);
  quant::restore_quant_mode(sw);

  // Export (the input fold on one channel), then the model file's input.
  quant::ExportResult r = quant::export_model(lm);
  CHECK(r.padding_value.size() == 1);
  CHECK_FALSE(r.stem_requantized);  // one channel: one preprocessing scale, the QAT codes stay
  const std::string model_path = (run.path / "fashion.oct").string();
  r.builder.write(model_path);
  const auto engine_model = engine::Model::load(model_path);
  CHECK(engine_model->input_h() == 28);
  CHECK(engine_model->input_w() == 28);
  CHECK(engine_model->input_c() == 1);
  CHECK(engine_model->num_classes() == 10);
  CHECK(engine_model->class_names() == train_all.class_names);

  // The engine and the integer simulation on every test image used.
  const int batch = 150;
  const octet::testing::EngineCheck check = octet::testing::engine_vs_intsim(engine_model, test, batch);
  const int64_t exact = check.exact, hits = check.hits;
  const double engine_top1 = check.top1();
  MESSAGE("trained in " << train_s << " s; fake-quant top-1 " << 100 * fq.top1() << "%, engine top-1 "
                        << 100 * engine_top1 << "%, engine == intsim on " << exact << "/" << test.size()
                        << " images; model " << r.file_bytes << " bytes; total " << seconds_since(t0) << " s");
  // The bit-exact contract, on every image.
  CHECK(exact == test.size());
  // Above chance (10%) by a wide margin: Fashion-MNIST is easy, and even
  // these 72 steps on 768 images land well above it.
  CHECK(engine_top1 >= 0.25);

  // octet-run reads the IDX file at the model's shape and finds the same hits.
  const std::string runner = std::string(OCTET_BINARY_DIR) + "/engine/runner/octet-run";
  REQUIRE_MESSAGE(fs::exists(runner), "build the octet-run target first: " << runner);
  const std::string images = (run.path / "test-images-idx3-ubyte").string(),
                    labels = (run.path / "test-labels-idx1-ubyte").string();
  write_idx(test, images, labels);
  const std::string cmd = "'" + runner + "' '" + model_path + "' '" + images + "' --idx --labels '" + labels +
                          "' --threads 1 2>/dev/null";
  const octet::testing::ShellResult ran = octet::testing::run_shell(cmd);
  const std::string& out = ran.out;
  INFO(out);
  CHECK(ran.code == 0);
  CHECK(out.find("(" + std::to_string(hits) + "/" + std::to_string(test.size()) + ")") != std::string::npos);
}
