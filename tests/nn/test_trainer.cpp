#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/checkpoint.h"
#include "nn/trainer.h"

using namespace octet;
using namespace octet::nn;
namespace fs = std::filesystem;

namespace {

// n random 3x8x8 images with random labels of 4 classes: learning them is
// pure memorization.
Dataset random_dataset(int64_t n, uint64_t seed) {
  Dataset d;
  d.channels = 3;
  d.height = d.width = 8;
  d.class_names = {"a", "b", "c", "d"};
  d.source = "generated";
  Rng rng(seed);
  d.images.resize(static_cast<size_t>(n * d.image_numel()));
  for (auto& p : d.images) p = static_cast<uint8_t>(rng.below(256));
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(static_cast<int>(rng.below(4)));
  return d;
}

TrainConfig tiny_config(const std::string& out) {
  TrainConfig c;
  c.model = "resnet20";
  c.epochs = 2;
  c.batch = 8;
  c.schedule.kind = "onecycle";
  c.schedule.lr = 0.05;
  c.progress = false;
  c.out = out;
  c.seed = 5;
  c.eval_batch = 16;
  return c;
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("octet_test_trainer_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

void check_same_state(const NamedTensors& a, const NamedTensors& b) {
  REQUIRE(a.size() == b.size());
  int64_t differing = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].first == b[i].first);
    REQUIRE(a[i].second.numel() == b[i].second.numel());
    differing += std::memcmp(a[i].second.data(), b[i].second.data(), a[i].second.numel() * sizeof(float)) != 0;
  }
  CHECK(differing == 0);
}

}  // namespace

TEST_CASE("a small run overfits 64 images") {
  Dataset train = random_dataset(64, 1);
  TrainConfig c = tiny_config("");
  c.epochs = 30;
  c.batch = 16;
  c.augment = false;
  c.schedule.kind = "cosine";  // annealed to 0, so the end is not noisy
  c.schedule.lr = 0.05;
  c.optim.weight_decay = 0;
  Trainer t(c, train, &train);
  auto stats = t.fit();
  REQUIRE(stats.size() == 30);
  // 120 steps of SGD memorize random labels: the loss falls from ~1.4 (ln 4) to below 0.1.
  CHECK(stats.front().train_loss > 1.0);
  CHECK(stats.back().train_loss < 0.1);
  CHECK(stats.back().test_top1 > 0.95);
  CHECK(t.global_step() == 120);
}

TEST_CASE("resume ends bit-identical to an uninterrupted run") {
  Dataset train = random_dataset(40, 2);  // 5 steps per epoch of 8, with augmentation
  Dataset test = random_dataset(16, 3);
  fs::path d1 = temp_dir("straight"), d2 = temp_dir("resumed");

  TrainConfig c1 = tiny_config(d1.string());
  Trainer straight(c1, train, &test);
  straight.fit();

  TrainConfig c2 = tiny_config(d2.string());
  c2.epochs = 2;
  {
    Trainer first(c2, train, &test);
    // Stop after one epoch by running a 2-epoch trainer's first epoch only:
    // the checkpoint after epoch 1 is what a killed run leaves.
    first.on_step_begin = [&](int64_t step) {
      if (step == first.steps_per_epoch()) throw std::runtime_error("killed");
    };
    CHECK_THROWS_WITH(first.fit(), "killed");
  }
  Checkpoint mid = load_checkpoint((d2 / "last.ckpt").string());
  CHECK(mid.get("epoch") == "1");
  CHECK(mid.get("step") == "5");

  c2.resume = true;
  Trainer resumed(c2, train, &test);
  CHECK(resumed.epochs_done() == 0);  // construction reads no files
  resumed.resume();
  CHECK(resumed.epochs_done() == 1);
  auto ran = resumed.fit();
  CHECK(ran.size() == 1);
  CHECK(resumed.global_step() == straight.global_step());
  check_same_state(straight.model().named_state(), resumed.model().named_state());
  check_same_state(straight.optimizer().state(), resumed.optimizer().state());

  // The final checkpoints hold the same tensors, and the log has both epochs.
  Checkpoint a = load_checkpoint((d1 / "last.ckpt").string()), b = load_checkpoint((d2 / "last.ckpt").string());
  check_same_state(a.tensors, b.tensors);
  CHECK(fs::exists(d2 / "log.csv"));
  CHECK(fs::exists(d2 / "loss.png"));
  CHECK(fs::exists(d2 / "best.ckpt"));
  CHECK(b.get("history").find("\n2,10,") != std::string::npos);

  // Resuming with another recipe is refused with the differing key.
  TrainConfig c3 = c2;
  c3.schedule.lr = 0.2;
  Trainer other(c3, train, &test);
  CHECK_THROWS_WITH_AS(other.fit(), doctest::Contains("lr: checkpoint 0.05"), std::runtime_error);

  // A finished run has nothing left to do.
  Trainer done(c2, train, &test);
  CHECK(done.fit().empty());
  fs::remove_all(d1);
  fs::remove_all(d2);
}

TEST_CASE("a NaN loss stops the run and keeps the last good checkpoint") {
  Dataset train = random_dataset(24, 4);  // 3 steps per epoch
  fs::path dir = temp_dir("nan");
  TrainConfig c = tiny_config(dir.string());
  c.epochs = 3;

  {
    TrainConfig one = tiny_config("");
    one.epochs = 3;
    Trainer r(one, train, nullptr);
    r.on_step_begin = [&](int64_t step) {
      if (step == 3) throw std::runtime_error("stop");
    };
    CHECK_THROWS(r.fit());
    Trainer t(c, train, nullptr);
    t.on_loss = [](int64_t step, Tensor& loss) {
      if (step == 4) loss = mul(loss, std::numeric_limits<float>::quiet_NaN());
    };
    CHECK_THROWS_WITH_AS(t.fit(), doctest::Contains("training loss is NaN at epoch 2, step 4"), NonFiniteLoss);
    Checkpoint ck = load_checkpoint((dir / "last.ckpt").string());
    CHECK(ck.get("epoch") == "1");
    auto model = model_from_checkpoint(ck);
    check_same_state(model->named_state(), r.model().named_state());
  }
  fs::remove_all(dir);
}

TEST_CASE("configuration round trip and presets") {
  TrainConfig c = TrainConfig::preset_config("full");
  CHECK(c.epochs == 40);
  CHECK(c.schedule.kind == "onecycle");
  CHECK(c.optim.nesterov);
  c.schedule.milestones = {3, 7};
  c.label_smoothing = 0.1f;
  c.seed = 12345678901ULL;
  CHECK(c.weight_init == "torch");  // the peer script's init is the default
  c.weight_init = "he";
  CHECK(c.cutout == 0);  // off unless asked for
  c.cutout = 8;
  TrainConfig d;
  d.from_map(c.to_map());
  CHECK(d.to_map() == c.to_map());
  CHECK(d.label_smoothing == 0.1f);
  CHECK(d.schedule.milestones == std::vector<int>{3, 7});
  CHECK(d.weight_init == "he");
  CHECK(d.cutout == 8);
  // A checkpoint from before a key existed reads back with that key's default.
  std::map<std::string, std::string> old = c.to_map();
  old.erase("cutout");
  TrainConfig e;
  e.from_map(old);
  CHECK(e.cutout == 0);
  CHECK(e.weight_init == "he");
  CHECK_THROWS_WITH_AS(d.from_map({{"epochs", "x"}}), doctest::Contains("'epochs'"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(d.from_map({{"bogus", "1"}}), doctest::Contains("bogus"), std::invalid_argument);
  CHECK_THROWS_AS(TrainConfig::preset_config("slow"), std::invalid_argument);
}
