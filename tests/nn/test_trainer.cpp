// tests/nn/test_trainer.cpp: the trainer (nn/trainer.h): a run end to end,
// resume and fork bit for bit, the configuration, NaN losses, EMA, SAM,
// self-distillation, BN statistics. Over 600 lines: one suite per class, each
// case a user-visible guarantee with its own tiny data.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <sstream>

#include "core/blas.h"
#include "core/checkpoint.h"
#include "core/loader.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "nn/trainer.h"
#include "tests/nn/random_data.h"

using namespace octet;
using namespace octet::nn;
using octet::testing::random_dataset;
namespace fs = std::filesystem;

namespace {

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

// How many of the tensors differ in any bit (the names and sizes must match).
int64_t differing_tensors(const NamedTensors& a, const NamedTensors& b) {
  REQUIRE(a.size() == b.size());
  int64_t differing = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].first == b[i].first);
    REQUIRE(a[i].second.numel() == b[i].second.numel());
    differing += std::memcmp(a[i].second.data(), b[i].second.data(), a[i].second.numel() * sizeof(float)) != 0;
  }
  return differing;
}

void check_same_state(const NamedTensors& a, const NamedTensors& b) { CHECK(differing_tensors(a, b) == 0); }

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
  c1.ema_decay = 0.9;  // the weight average is training state too
  c1.sam_rho = 0.05f;  // and the sharpness-aware pass must resume as it ran
  c1.self_distill = 0.8f;  // and so must the past predictions self-distillation trains on
  Trainer straight(c1, train, &test);
  straight.fit();

  TrainConfig c2 = tiny_config(d2.string());
  c2.epochs = 2;
  c2.ema_decay = 0.9;
  c2.sam_rho = 0.05f;
  c2.self_distill = 0.8f;
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
  check_same_state(straight.ema()->shadow(), resumed.ema()->shadow());

  // The final checkpoints hold the same tensors, and the log has both epochs.
  Checkpoint a = load_checkpoint((d1 / "last.ckpt").string()), b = load_checkpoint((d2 / "last.ckpt").string());
  check_same_state(a.tensors, b.tensors);
  CHECK(b.with_prefix("ema.").size() == resumed.model().named_state().size());
  CHECK(b.tensor("self_distill.predictions").shape() == Shape{40, 4});
  CHECK(fs::exists(d2 / "log.csv"));
  CHECK(fs::exists(d2 / "loss.png"));
  CHECK(fs::exists(d2 / "best.ckpt"));
  CHECK(b.get("history").find("\n2,10,") != std::string::npos);

  // Same threads, same OpenBLAS kernels: nothing to warn about. Under other
  // numerics the resume goes on and says why its bits will drift.
  CHECK(resumed.resume_notice().empty());
  CHECK(mid.get("numerics.threads") == std::to_string(num_threads()));
  CHECK(mid.get("numerics.blas_core") == openblas_corename());
  {
    Checkpoint elsewhere = mid;
    elsewhere.meta["numerics.blas_core"] = "NotThisCore";
    elsewhere.meta["numerics.threads"] = std::to_string(num_threads() + 7);
    Trainer moved(c2, train, &test);
    moved.restore(elsewhere);
    CHECK(moved.epochs_done() == 1);
    CHECK(moved.resume_notice().find("OpenBLAS core NotThisCore then, " + openblas_corename() + " now") !=
          std::string::npos);
    CHECK(moved.resume_notice().find("threads " + std::to_string(num_threads() + 7) + " then") != std::string::npos);
    elsewhere.meta.erase("numerics.blas_core");  // written before the key existed: no claim either way
    elsewhere.meta.erase("numerics.threads");
    Trainer old(c2, train, &test);
    old.restore(elsewhere);
    CHECK(old.resume_notice().empty());
  }

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

TEST_CASE("a fork continues another run's state: bit for bit under its flags, and under changed ones from then on") {
  Dataset train = random_dataset(40, 2);  // 5 steps per epoch of 8
  Dataset test = random_dataset(16, 3);
  const fs::path trunk_dir = temp_dir("trunk");
  TrainConfig trunk_cfg = tiny_config(trunk_dir.string());
  trunk_cfg.epochs = 3;
  trunk_cfg.cutout = 4;  // in every epoch
  trunk_cfg.ema_decay = 0.9;
  trunk_cfg.snapshots_from = 1;
  Trainer trunk(trunk_cfg, train, &test);
  trunk.fit();
  for (int e = 1; e <= 3; ++e) CHECK(fs::exists(trunk_dir / ("epoch_" + std::to_string(e) + ".ckpt")));
  CHECK_FALSE(fs::exists(trunk_dir / "epoch_0.ckpt"));
  const std::string after1 = (trunk_dir / "epoch_1.ckpt").string(), after2 = (trunk_dir / "epoch_2.ckpt").string();
  CHECK(load_checkpoint(after2).get("epoch") == "2");

  SUBCASE("under the trunk's flags the fork repeats the trunk") {
    TrainConfig c = trunk_cfg;
    c.out = temp_dir("fork_same").string();
    c.snapshots_from = 0;
    c.fork = after1;
    Trainer f(c, train, &test);
    CHECK(f.fit().size() == 2);  // epochs 2 and 3
    check_same_state(trunk.model().named_state(), f.model().named_state());
    check_same_state(trunk.optimizer().state(), f.optimizer().state());
    check_same_state(trunk.ema()->shadow(), f.ema()->shadow());
    CHECK(f.fork_notice().find("no flag changed") != std::string::npos);
    const Checkpoint last = load_checkpoint(c.out + "/last.ckpt");
    CHECK(last.get("fork.source") == after1);
    CHECK(last.get("fork.epoch") == "1");
    CHECK(last.get("fork.changes") == "none");
    // The log holds the trunk's epoch 1 row (timings included) and the fork's 2 and 3.
    const std::string h = last.get("history"), th = load_checkpoint(after1).get("history");
    CHECK(h.rfind(th, 0) == 0);
    CHECK(std::count(h.begin(), h.end(), '\n') == 3);
  }

  SUBCASE("a changed flag: the fork equals a straight run with it, and a killed fork resumes to the same bits") {
    TrainConfig straight_cfg = trunk_cfg;  // cutout in epochs 1 and 2 only: the trunk until epoch 2
    straight_cfg.out = temp_dir("straight_cut2").string();
    straight_cfg.snapshots_from = 0;
    straight_cfg.cutout_until = 2;
    Trainer straight(straight_cfg, train, &test);
    straight.fit();
    // The change matters, so the comparisons below can fail.
    CHECK(differing_tensors(trunk.model().named_state(), straight.model().named_state()) > 0);

    TrainConfig c = straight_cfg;
    c.out = temp_dir("fork_cut2").string();
    c.fork = after1;
    {
      Trainer killed(c, train, &test);
      killed.on_step_begin = [&](int64_t step) {
        if (step == 2 * killed.steps_per_epoch()) throw std::runtime_error("killed");
      };
      CHECK_THROWS_WITH(killed.fit(), "killed");
      CHECK(killed.fork_notice().find("cutout_until 0 -> 2") != std::string::npos);
    }
    CHECK(load_checkpoint(c.out + "/last.ckpt").get("epoch") == "2");
    c.resume = true;  // --resume wins over --fork: the fork's own last.ckpt
    Trainer resumed(c, train, &test);
    CHECK(resumed.fit().size() == 1);
    check_same_state(straight.model().named_state(), resumed.model().named_state());
    check_same_state(straight.optimizer().state(), resumed.optimizer().state());
    const Checkpoint last = load_checkpoint(c.out + "/last.ckpt");
    CHECK(last.get("fork.epoch") == "1");  // a resumed fork still names its trunk
    CHECK(last.get("fork.changes").find("cutout_until 0 -> 2") != std::string::npos);
  }

  SUBCASE("what a fork may not change, and state it cannot invent") {
    TrainConfig c = trunk_cfg;
    c.out = temp_dir("fork_bad").string();
    c.fork = after1;
    c.batch = 4;
    try {
      Trainer(c, train, &test).fit();
      FAIL("a fork with another batch size ran");
    } catch (const std::runtime_error& e) {
      const std::string m = e.what();
      CHECK(m.find("a fork may change any flag but these") != std::string::npos);
      CHECK(m.find("batch: checkpoint 8, now 4") != std::string::npos);
    }
    TrainConfig plain = tiny_config(temp_dir("plain_trunk").string());
    plain.snapshots_from = 1;
    Trainer(plain, train, &test).fit();
    TrainConfig with_ema = plain;
    with_ema.out = temp_dir("fork_ema").string();
    with_ema.fork = plain.out + "/epoch_1.ckpt";
    with_ema.ema_decay = 0.9;
    CHECK_THROWS_WITH_AS(Trainer(with_ema, train, &test).fit(), doctest::Contains("holds no weight average"),
                         std::runtime_error);
    with_ema.fork = plain.out + "/epoch_9.ckpt";
    CHECK_THROWS_WITH_AS(Trainer(with_ema, train, &test).fit(), doctest::Contains("no checkpoint"), std::runtime_error);
  }
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
  CHECK(c.weight_init == ConvInit::torch);  // the peer script's init is the default
  c.weight_init = ConvInit::he;
  CHECK(c.cutout == 0);  // off unless asked for
  c.cutout = 8;
  CHECK(c.cutout_until == 0);  // every epoch unless asked for
  c.cutout_until = 32;
  CHECK_FALSE(c.alternate_flip);  // a fresh coin each epoch unless asked for
  c.alternate_flip = true;
  CHECK(c.ema_decay == 0);
  c.ema_decay = 0.999;
  CHECK_FALSE(c.zero_init_residual);
  c.zero_init_residual = true;
  CHECK(c.reparam == "none");
  c.reparam = "1x1";
  TrainConfig d;
  d.from_map(c.to_map());
  CHECK(d.to_map() == c.to_map());
  CHECK(d.label_smoothing == 0.1f);
  CHECK(d.schedule.milestones == std::vector<int>{3, 7});
  CHECK(d.weight_init == ConvInit::he);
  CHECK(d.cutout == 8);
  CHECK(d.cutout_until == 32);
  CHECK(d.alternate_flip);
  CHECK(d.ema_decay == 0.999);
  CHECK(d.zero_init_residual == c.zero_init_residual);
  CHECK(d.reparam == "1x1");
  // A checkpoint from before a key existed reads back with that key's default.
  std::map<std::string, std::string> old = c.to_map();
  old.erase("cutout");
  old.erase("cutout_until");
  old.erase("ema_decay");
  old.erase("alternate_flip");
  old.erase("reparam");
  TrainConfig e;
  e.from_map(old);
  CHECK(e.cutout == 0);
  CHECK(e.cutout_until == 0);
  CHECK(e.ema_decay == 0);
  CHECK_FALSE(e.alternate_flip);
  CHECK(e.reparam == "none");
  CHECK(e.weight_init == ConvInit::he);
  CHECK_THROWS_WITH_AS(d.from_map({{"epochs", "x"}}), doctest::Contains("'epochs'"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(d.from_map({{"bogus", "1"}}), doctest::Contains("bogus"), std::invalid_argument);
  CHECK_THROWS_AS(TrainConfig::preset_config("slow"), std::invalid_argument);
}

TEST_CASE("zero_init_residual: the trainer zeroes the blocks' last BN of the model it makes") {
  Dataset train = random_dataset(16, 8);
  TrainConfig c = tiny_config("");
  c.zero_init_residual = true;
  Trainer t(c, train, nullptr);
  auto gamma = [&](const char* bn) { return t.model().find(bn).named_parameters().front().second.data()[0]; };
  CHECK(gamma("layer3.2.bn2") == 0.0f);
  CHECK(gamma("layer3.2.bn1") == 1.0f);
  t.fit();
  CHECK(gamma("layer3.2.bn2") != 0.0f);  // the gradient reaches a zero gamma: it learns
}

TEST_CASE("train-time 1x1 branches: checkpoints hold the folded plain model, a killed run resumes bit for bit") {
  Dataset train = random_dataset(40, 12);
  Dataset test = random_dataset(16, 13);
  fs::path d1 = temp_dir("rep_straight"), d2 = temp_dir("rep_resumed");
  TrainConfig c = tiny_config(d1.string());
  c.reparam = "1x1";
  c.ema_decay = 0.8;
  Trainer straight(c, train, &test);
  CHECK(straight.model().named_parameters().size() == make_model("resnet20", 4, 0)->named_parameters().size() + 18 * 3);
  auto stats = straight.fit();
  REQUIRE(stats.size() == 2);

  // last.ckpt: "model." is the plain resnet20, the same function as the
  // branched model the trainer evaluated; "train_model." is that model.
  Checkpoint last = load_checkpoint((d1 / "last.ckpt").string());
  check_same_state(last.with_prefix("train_model."), straight.model().named_state());
  auto plain = model_from_checkpoint(last);
  CHECK(plain->num_parameters() == make_model("resnet20", 4, 0)->num_parameters());
  Metrics m = evaluate(*plain, test, straight.preprocess(), c.eval_batch);
  CHECK(m.top1() == stats.back().test_top1);
  CHECK(m.mean_loss() == doctest::Approx(stats.back().test_loss).epsilon(1e-4));
  // ema.ckpt folds the average the same way.
  auto averaged = model_from_checkpoint(load_checkpoint((d1 / "ema.ckpt").string()));
  Metrics me = evaluate(*averaged, test, straight.preprocess(), c.eval_batch);
  CHECK(me.top1() == stats.back().ema_test_top1);
  CHECK(me.mean_loss() == doctest::Approx(stats.back().ema_test_loss).epsilon(1e-4));

  // Killed after epoch 1 and resumed: the branches come back from "train_model.".
  TrainConfig c2 = c;
  c2.out = d2.string();
  {
    Trainer first(c2, train, &test);
    first.on_step_begin = [&](int64_t step) {
      if (step == first.steps_per_epoch()) throw std::runtime_error("killed");
    };
    CHECK_THROWS_WITH(first.fit(), "killed");
  }
  c2.resume = true;
  Trainer resumed(c2, train, &test);
  resumed.resume();
  resumed.fit();
  check_same_state(straight.model().named_state(), resumed.model().named_state());
  check_same_state(straight.ema()->shadow(), resumed.ema()->shadow());
  check_same_state(last.tensors, load_checkpoint((d2 / "last.ckpt").string()).tensors);

  // The branches are part of the state's shape: a fork keeps them as they were.
  TrainConfig f = c;
  f.reparam = "none";
  f.out = temp_dir("rep_fork").string();
  Trainer fork(f, train, &test);
  CHECK_THROWS_WITH_AS(fork.fork((d1 / "last.ckpt").string()),
                       doctest::Contains("reparam: checkpoint 1x1, now none"), std::runtime_error);
  // Only for a model the trainer makes, and only the kinds there are.
  CHECK_THROWS_WITH_AS(Trainer(c, train, &test, make_model("resnet20", 4, 0)),
                       doctest::Contains("adds branches to a model the trainer makes"), std::invalid_argument);
  TrainConfig bad = c;
  bad.reparam = "acb";
  CHECK_THROWS_WITH_AS(Trainer(bad, train, &test),
                       doctest::Contains("reparam must be none or a comma list of 1x1, 1x3, 3x1: branch kinds 'acb'"),
                       std::invalid_argument);
  // The kinds are recorded in canonical order, whatever order they were given in.
  TrainConfig acb = c;
  acb.reparam = "3x1,1x3";
  acb.out = "";
  Trainer t_acb(acb, train, &test);
  CHECK(t_acb.config().reparam == "1x3,3x1");
  CHECK(t_acb.model().named_parameters().size() == make_model("resnet20", 4, 0)->named_parameters().size() + 18 * 6);
  fs::remove_all(d1);
  fs::remove_all(d2);
}

TEST_CASE("recompute_bn_stats: each BN's running statistics become the plain average of its batch statistics") {
  Dataset data = random_dataset(70, 21);  // 4 full batches of 16, 6 images left over
  auto model = make_model("resnet20", 4, 2);
  const Preprocess pre = make_preprocess(PreprocessMode::standard, data);
  auto& stem = dynamic_cast<BatchNorm2d&>(model->find("bn1"));
  std::fill(stem.running_mean().data(), stem.running_mean().data() + 16, 7.0f);  // stale values, to be replaced
  const NamedTensors params_before = [&] {
    NamedTensors copy;
    for (auto& [n, t] : model->named_parameters()) copy.emplace_back(n, t.clone());
    return copy;
  }();
  model->eval();
  BnStatsOptions o;
  o.batch = 16;
  o.seed = 3;
  CHECK(recompute_bn_stats(*model, data, pre, o) == 4);
  CHECK_FALSE(model->training());  // the mode is put back
  CHECK(stem.momentum == 0.1f);    // and so is every momentum
  check_same_state(params_before, model->named_parameters());  // no weight moved

  // By hand: the stem conv's output on the same 4 batches (the loader's
  // order for that seed); per channel, the mean of the batch means and of
  // the unbiased batch variances.
  LoaderOptions lo;
  lo.batch_size = 16;
  lo.drop_last = true;
  lo.preprocess = pre;
  lo.seed = 3;
  Loader loader(data, lo);
  loader.start_epoch(0);
  std::vector<double> mean(16, 0.0), var(16, 0.0);
  Batch b;
  int batches = 0;
  NoGradGuard no_grad;
  while (loader.next(b)) {
    const Tensor z = model->find("conv1").forward(Tensor::from({b.n, b.c, b.h, b.w}, b.images));
    const int64_t hw = z.dim(2) * z.dim(3), m = z.dim(0) * hw;
    for (int64_t c = 0; c < 16; ++c) {
      double s1 = 0, s2 = 0;
      for (int64_t n = 0; n < z.dim(0); ++n)
        for (int64_t i = 0; i < hw; ++i) {
          const double v = z.data()[(n * 16 + c) * hw + i];
          s1 += v, s2 += v * v;
        }
      const double mu = s1 / m;
      mean[c] += mu;
      var[c] += (s2 / m - mu * mu) * m / (m - 1);
    }
    ++batches;
  }
  REQUIRE(batches == 4);
  for (int64_t c = 0; c < 16; ++c) {
    CAPTURE(c);
    CHECK(stem.running_mean().data()[c] == doctest::Approx(mean[c] / 4).epsilon(1e-4));
    CHECK(stem.running_var().data()[c] == doctest::Approx(var[c] / 4).epsilon(1e-4));
  }
  // max_batches caps the pass; a batch larger than the data set is an error.
  o.max_batches = 2;
  CHECK(recompute_bn_stats(*model, data, pre, o) == 2);
  o.batch = 100;
  CHECK_THROWS_WITH_AS(recompute_bn_stats(*model, data, pre, o), doctest::Contains("70 images make no batch of 100"),
                       std::invalid_argument);
}

TEST_CASE("exponential moving average: TF's update rule, exact swap, checked load") {
  BatchNorm2d bn(1);  // state: weight 1, bias 0, running_mean 0, running_var 1
  ExponentialMovingAverage ema(bn, 0.5);
  CHECK(ema.decay_at(0) == doctest::Approx(0.1));       // (1 + 0) / (10 + 0)
  CHECK(ema.decay_at(1) == doctest::Approx(2.0 / 11));  // the warm-up term is smaller than 0.5
  CHECK(ema.decay_at(100) == 0.5);                      // 101 / 110 > 0.5: the decay itself
  bn.weight().data()[0] = 3.0f;
  ema.update(bn, 1);  // 1 - (9/11) (1 - 3) = 2.636364
  CHECK(ema.shadow()[0].first == "weight");
  CHECK(ema.shadow()[0].second.data()[0] == doctest::Approx(1.0 + 18.0 / 11).epsilon(1e-6));
  bn.weight().data()[0] = -1.0f;
  ema.update(bn, 100);  // 2.636364 - 0.5 (2.636364 + 1) = 0.818182
  CHECK(ema.shadow()[0].second.data()[0] == doctest::Approx(9.0 / 11).epsilon(1e-6));
  CHECK(ema.shadow()[1].second.data()[0] == 0.0f);  // bias stayed 0: so does its average
  {
    AveragedWeights use(ema, bn);
    CHECK(bn.weight().data()[0] == doctest::Approx(9.0 / 11).epsilon(1e-6));
  }
  CHECK(bn.weight().data()[0] == -1.0f);  // the raw weight is back, exactly
  CHECK(ema.shadow()[0].second.data()[0] == doctest::Approx(9.0 / 11).epsilon(1e-6));

  NamedTensors partial = ema.shadow();
  partial.pop_back();
  CHECK_THROWS_WITH_AS(ema.load(partial), doctest::Contains("missing 'running_var'"), std::runtime_error);
  BatchNorm2d two(2);
  CHECK_THROWS_AS(ema.update(two, 2), std::logic_error);
  CHECK_THROWS_AS(ExponentialMovingAverage(bn, 1.0), std::invalid_argument);
}

TEST_CASE("a run with a weight average trains the same weights and writes ema.ckpt") {
  Dataset train = random_dataset(40, 6);
  Dataset test = random_dataset(16, 7);
  fs::path d = temp_dir("ema");
  TrainConfig plain = tiny_config("");
  Trainer p(plain, train, &test);
  auto ps = p.fit();
  CHECK(ps.back().ema_test_top1 == -1);  // no average, no EMA columns

  TrainConfig c = tiny_config(d.string());
  c.ema_decay = 0.8;
  Trainer t(c, train, &test);
  auto stats = t.fit();
  // Averaging only observes: the trajectory is bit-identical to the plain run.
  check_same_state(p.model().named_state(), t.model().named_state());
  REQUIRE(stats.size() == 2);
  CHECK(stats.back().ema_test_top1 >= 0);
  CHECK(stats.back().ema_test_loss != stats.back().test_loss);  // other weights, other loss

  // ema.ckpt's model is the average and evaluates to the logged figures.
  Checkpoint ck = load_checkpoint((d / "ema.ckpt").string());
  CHECK(ck.get("weights").find("decay 0.8") != std::string::npos);
  auto averaged = model_from_checkpoint(ck);
  check_same_state(averaged->named_state(), t.ema()->shadow());
  Metrics m = evaluate(*averaged, test, t.preprocess(), c.eval_batch);
  CHECK(m.top1() == stats.back().ema_test_top1);
  CHECK(m.mean_loss() == doctest::Approx(stats.back().ema_test_loss).epsilon(1e-5));
  // last.ckpt keeps the raw weights as its model.
  check_same_state(model_from_checkpoint(load_checkpoint((d / "last.ckpt").string()))->named_state(),
                   t.model().named_state());
  // History rows written before the EMA columns existed (10 columns) still read back.
  Checkpoint last = load_checkpoint((d / "last.ckpt").string());
  std::string old_rows;
  std::stringstream rows(last.get("history"));
  for (std::string row; std::getline(rows, row);) {
    for (int cut = 0; cut < 3; ++cut) row.erase(row.rfind(','));
    old_rows += row + "\n";
  }
  last.meta["history"] = old_rows;
  Trainer again(c, train, &test);
  again.restore(last);
  CHECK(again.make_checkpoint().get("history").find(",-1.000000,-1.000000,-1.000000\n") != std::string::npos);
  last.meta["history"] = "1,5,0.1,1.0\n";  // and a truncated one is an error naming the row
  CHECK_THROWS_WITH_AS(again.restore(last), doctest::Contains("malformed history row '1,5,0.1,1.0'"),
                       std::runtime_error);
  fs::remove_all(d);
}

TEST_CASE("self-distillation: the label mixed with the last epoch's prediction, recorded at each step") {
  Dataset train = random_dataset(40, 8);  // 5 steps per epoch of 8: every image once per epoch
  fs::path d = temp_dir("self_distill");
  TrainConfig c = tiny_config(d.string());
  c.label_smoothing = 0.1f;
  c.self_distill = 0.8f;
  const int64_t spe = 5;

  // The first step of epoch 2 (0-based 1) by hand, from the checkpoint after
  // epoch 1: the same batch, the same weights, the targets of the rule
  //   (1 - a) * smoothed label + a * last prediction,  a = 0.8 * 1 / 2.
  Checkpoint after1;
  float loss_at_step5 = 0;
  Trainer t(c, train, nullptr);
  t.on_step_begin = [&](int64_t step) {
    if (step == spe) after1 = load_checkpoint((d / "last.ckpt").string());
  };
  t.on_loss = [&](int64_t step, Tensor& loss) {
    if (step == spe) loss_at_step5 = loss.item();
  };
  t.fit();
  REQUIRE(after1.has_tensor("self_distill.predictions"));

  const Tensor& past = after1.tensor("self_distill.predictions");
  REQUIRE(past.shape() == Shape{40, 4});
  Loader loader(train, {.batch_size = 8, .shuffle = true, .drop_last = true, .augment = true,
                        .preprocess = t.preprocess(), .seed = c.seed});
  Batch b = loader.make_batch(1, 0);
  auto model = model_from_checkpoint(after1);
  model->train();
  Tensor logits = model->forward(Tensor::from({b.n, b.c, b.h, b.w}, b.images));
  const double a = 0.8 * 1 / 2;
  Tensor targets = Tensor::empty({b.n, 4});
  for (int i = 0; i < b.n; ++i)
    for (int j = 0; j < 4; ++j) {
      const double label = 0.1 / 4 + (j == b.labels[static_cast<size_t>(i)] ? 0.9 : 0.0);
      targets.data()[i * 4 + j] =
          static_cast<float>((1 - a) * label + a * past.data()[b.indices[static_cast<size_t>(i)] * 4 + j]);
    }
  CHECK(cross_entropy(logits, targets).item() == doctest::Approx(loss_at_step5).epsilon(1e-6));

  // Epoch 1 recorded every image's softmax: rows are distributions, not the
  // initial label targets. Epoch 2 replaced those of its first batch with
  // that step's softmax (each image is seen once per epoch).
  for (int64_t i = 0; i < 40; ++i) {
    double sum = 0;
    for (int j = 0; j < 4; ++j) sum += past.data()[i * 4 + j];
    CHECK(sum == doctest::Approx(1.0).epsilon(1e-5));
    CHECK(past.data()[i * 4 + train.labels[static_cast<size_t>(i)]] != doctest::Approx(0.9 + 0.1 / 4));
  }
  Checkpoint end = load_checkpoint((d / "last.ckpt").string());
  const Tensor& now = end.tensor("self_distill.predictions");
  for (int i = 0; i < b.n; ++i) {
    const float* z = logits.data() + i * 4;
    const double m = *std::max_element(z, z + 4);
    double se = 0;
    for (int j = 0; j < 4; ++j) se += std::exp(z[j] - m);
    for (int j = 0; j < 4; ++j)
      CHECK(now.data()[b.indices[static_cast<size_t>(i)] * 4 + j] == doctest::Approx(std::exp(z[j] - m) / se).epsilon(1e-6));
  }

  // A checkpoint whose table does not fit the run is refused, naming it.
  Checkpoint wrong = after1;
  for (auto& [name, tensor] : wrong.tensors)
    if (name == "self_distill.predictions") tensor = Tensor::zeros({3, 4});
  Trainer other(c, train, nullptr);
  CHECK_THROWS_WITH_AS(other.restore(wrong), doctest::Contains("'self_distill.predictions' has shape [3, 4]"),
                       std::runtime_error);
  // And the weight is checked.
  TrainConfig bad = c;
  bad.self_distill = 1.5f;
  CHECK_THROWS_WITH_AS(Trainer(bad, train, nullptr), doctest::Contains("self_distill must be in [0, 1]"),
                       std::invalid_argument);
  fs::remove_all(d);
}

// The same images mirrored left-right (each CHW image, each row reversed).
Dataset mirrored(const Dataset& d) {
  Dataset m = d;
  for (int64_t i = 0; i < m.size(); ++i)
    for (int row = 0; row < m.channels * m.height; ++row) {
      uint8_t* r = m.image(i) + int64_t(row) * m.width;
      std::reverse(r, r + m.width);
    }
  return m;
}

TEST_CASE("test-time flip: the mean of each image's logits and its mirror image's") {
  const Dataset test = random_dataset(12, 9);
  const Preprocess pre = Preprocess::standard();
  auto model = make_model("resnet20", 4, 3);
  model->eval();

  // By hand, image by image: the two forward passes, their mean, its loss and arg-max.
  double loss_sum = 0;
  int64_t correct = 0;
  {
    NoGradGuard no_grad;
    const int c = test.channels, h = test.height, w = test.width;
    for (int64_t i = 0; i < test.size(); ++i) {
      Tensor x = Tensor::empty({1, c, h, w}), xm = Tensor::empty({1, c, h, w});
      for (int ch = 0; ch < c; ++ch)
        for (int y = 0; y < h; ++y)
          for (int col = 0; col < w; ++col) {
            const float v = pre.apply(ch, test.image(i)[(ch * h + y) * w + col]);
            x.data()[(ch * h + y) * w + col] = v;
            xm.data()[(ch * h + y) * w + (w - 1 - col)] = v;
          }
      const Tensor logits = mul(add(model->forward(x), model->forward(xm)), 0.5f);
      const int label = test.labels[size_t(i)];
      loss_sum += cross_entropy(logits, std::span<const int>(&label, 1)).item();
      const float* l = logits.data();
      correct += std::max_element(l, l + 4) - l == label;
    }
  }
  const Metrics flip = evaluate(*model, test, pre, 5, TestTimeAugment::flip);
  CHECK(flip.mean_loss() == doctest::Approx(loss_sum / double(test.size())).epsilon(1e-5));
  CHECK(flip.top1() == doctest::Approx(double(correct) / double(test.size())));

  // Averaging over {x, mirror(x)} does not see which of the two came in;
  // one pass over the plain images does.
  const Metrics flip_of_mirrored = evaluate(*model, mirrored(test), pre, 5, TestTimeAugment::flip);
  CHECK(flip_of_mirrored.mean_loss() == doctest::Approx(flip.mean_loss()).epsilon(1e-6));
  CHECK(flip_of_mirrored.top1() == flip.top1());
  const Metrics plain = evaluate(*model, test, pre, 5);
  const Metrics plain_of_mirrored = evaluate(*model, mirrored(test), pre, 5);
  CHECK(plain.mean_loss() != doctest::Approx(plain_of_mirrored.mean_loss()).epsilon(1e-4));
  CHECK(flip.mean_loss() != doctest::Approx(plain.mean_loss()).epsilon(1e-4));
}

TEST_CASE("a sharpness-aware run: the two-pass step by hand, BN statistics moved once per step") {
  Dataset train = random_dataset(8, 9);  // one batch of 8: one step
  TrainConfig c = tiny_config("");
  c.epochs = 1;
  c.batch = 8;
  c.augment = false;
  c.schedule.kind = "constant";
  c.schedule.lr = 0.1;
  c.sam_rho = 0.5f;
  Trainer t(c, train, nullptr);
  t.fit();

  // The same step spelled out with the pieces of nn/sam.h.
  auto model = make_model(c.model, train.num_classes(), c.seed, c.weight_init);
  auto opt = make_optimizer(c.optim, model->named_parameters());
  opt->set_lr(0.1f);
  LoaderOptions lo;
  lo.batch_size = c.batch;
  lo.drop_last = true;
  lo.preprocess = t.preprocess();
  lo.seed = c.seed;
  Loader loader(train, lo);
  loader.start_epoch(0);
  Batch b;
  REQUIRE(loader.next(b));
  const Tensor x = Tensor::from({b.n, b.c, b.h, b.w}, b.images);
  cross_entropy(model->forward(x), b.labels).backward();
  const NamedTensors params = model->named_parameters();
  SharpnessAwareMinimization sam(c.sam_rho);
  sam.ascend(params);
  model->zero_grad();
  {
    FrozenBatchNormStatistics frozen(*model);
    cross_entropy(model->forward(x), b.labels).backward();
  }
  sam.descend(params);
  opt->step();
  // Parameters and BN statistics agree bit for bit (statistics moved twice,
  // or a step from w + e, would not).
  check_same_state(model->named_state(), t.model().named_state());

  // And a plain run ends elsewhere.
  c.sam_rho = 0;
  Trainer plain(c, train, nullptr);
  plain.fit();
  const NamedTensors a = plain.model().named_parameters(), s = t.model().named_parameters();
  int64_t differing = 0;
  for (size_t i = 0; i < a.size(); ++i)
    differing += std::memcmp(a[i].second.data(), s[i].second.data(), a[i].second.numel() * sizeof(float)) != 0;
  CHECK(differing > 0);

  c.sam_rho = -1;
  CHECK_THROWS_WITH_AS(Trainer(c, train, nullptr), doctest::Contains("sam_rho must be > 0"), std::invalid_argument);
}
