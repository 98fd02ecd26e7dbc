// nn/trainer.h: the training loop behind `octet train`.
//
//   TrainConfig cfg = TrainConfig::preset("quick");
//   cfg.out = "runs/r20";
//   Trainer t(cfg, train_set, &test_set);
//   t.fit();                    // epochs of: batches -> forward -> loss -> backward -> step
//
// One step, in order: lr/momentum from the schedule at the global step;
// forward on an augmented, preprocessed batch; softmax cross-entropy (label
// smoothing optional; with cfg.self_distill > 0 against the label mixed with
// the image's prediction of the last epoch, see below); a non-finite loss
// stops the run; backward; with
// cfg.sam_rho > 0 the second, sharpness-aware pass on the same batch
// (nn/sam.h); optimizer step; zero_grad. After each epoch: test evaluation (every eval_every
// epochs and at the last), a row in <out>/log.csv, the curves
// <out>/loss.png and <out>/accuracy.png, and the checkpoint <out>/last.ckpt
// (plus <out>/best.ckpt when test top-1 improved), written atomically.
// With cfg.ema_decay > 0 an exponential moving average of the weights
// (nn/ema.h) is updated after every step and evaluated beside the raw
// weights; <out>/ema.ckpt is the same checkpoint with the averaged weights as
// its model (what `octet eval` and `octet export` then read).
//
// Self-distillation (cfg.self_distill = A > 0; Kim et al. 2021, "progressive
// self-knowledge distillation"): the model is its own teacher, one epoch
// behind. The trainer keeps each training image's latest softmax (recorded
// at its step, under that step's augmentation; free: no extra pass), and in
// epoch e (0-based) of E trains on the target
//     (1 - a_e) * label + a_e * last prediction,   a_e = A * e / E,
// where label is the (smoothed) one-hot target. So epoch 0 trains on labels
// alone, and the weight of the model's own past opinion grows linearly. An
// image without a prediction yet (drop_last may skip it) uses its label.
// The training loss in the log is then this mixed cross-entropy.
//
// Determinism and resume: everything random derives from cfg.seed: the
// weights (make_model(seed)), the epoch order and each sample's augmentation
// (core/loader.h: a pure function of (seed, epoch, index)). The checkpoint
// holds the model's parameters and BN buffers, the optimizer slots and step
// count, the epoch and global step, the configuration and the log history.
// So `resume` from last.ckpt after epoch e runs epochs e+1.. exactly as an
// uninterrupted run would, bit for bit, given the same thread count and the
// same OpenBLAS kernels (the float sums run in another order otherwise).
// Every checkpoint records both ("numerics.threads", "numerics.blas_core");
// a resume under others goes on, and resume_notice() says why its numbers
// will drift from the uninterrupted run's. The schedule is a pure function
// of the global step (nn/schedule.h) and keeps no state.
//
// With cfg.reparam = "1x1" (or "1x3,3x1", "1x1,1x3,3x1") the model the trainer
// makes trains with a 1x1 (1x3, 3x1) conv + BN beside every 3x3 conv of its
// blocks (nn/resnet.h, add_branches). Every checkpoint's "model." is then the
// folded, plain ResNet (fold_branches), so eval, QAT --init and export read it
// like any other; the branched state goes to "train_model." for a resume or a fork.
//
// Checkpoint layout: tensors "model.<name>" (named_state) and
// "optim.<param>.<slot>" (and "ema.<name>", the averaged state;
// "train_model.<name>", the state with train-time branches;
// "self_distill.predictions", [images, classes]); metadata "config.<key>" (every TrainConfig field),
// "model", "epoch" (completed epochs), "step", "optim.steps",
// "preprocess.mode/scale/offset" (the exact float affine map, for eval and
// the exporter), "input.channels/height/width" (the shape of the training
// images: what the model takes, for eval, run and the exporter), "best_top1",
// "history" (the CSV rows), "step_history" (the rows of steps.csv), "classes".
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/augment.h"
#include "core/checkpoint.h"
#include "core/dataset.h"
#include "core/distributed.h"
#include "nn/ema.h"
#include "nn/metrics.h"
#include "nn/optim.h"
#include "nn/resnet.h"
#include "nn/sam.h"
#include "nn/schedule.h"

namespace octet {
struct Batch;  // core/loader.h
}

namespace octet::nn {

struct TrainConfig {
  std::string preset;  // informational: the preset the values came from
  std::string model = "resnet20";
  ConvInit weight_init = ConvInit::torch;  // conv weights (nn/module.h)
  bool zero_init_residual = false;    // last BN gamma of each block = 0 (nn/resnet.h); for a model the trainer makes
  // "1x1", "1x3,3x1", ...: train-time branches beside the blocks' 3x3 convs, folded away in every
  // checkpoint's model (nn/resnet.h, add_branches); for a model the trainer makes.
  std::string reparam = "none";
  std::string data;  // dataset path (not part of the run's identity)
  int epochs = 40;
  int batch = 128;
  OptimizerConfig optim{.kind = "sgd", .lr = 0.1f, .momentum = 0.9f, .nesterov = true, .weight_decay = 5e-4f};
  ScheduleConfig schedule{};  // kind onecycle, lr 0.1, pct_start 0.25 (the peer recipe)
  float label_smoothing = 0.0f;
  PreprocessMode preprocess = PreprocessMode::standard;  // standard (train-set mean/std) | vgg | inception
  bool augment = true;                  // random crop (pad 4) + horizontal flip
  bool alternate_flip = false;          // flip coin drawn once per image, then alternating by epoch
  int cutout = 0;                       // cutout square side after crop + flip (0 = off)
  int cutout_until = 0;                 // > 0: cutout in epochs 1..cutout_until only, clean images after
  double ema_decay = 0;  // > 0: also keep and evaluate an exponential moving average of the weights (nn/ema.h)
  float sam_rho = 0;     // > 0: sharpness-aware minimization with this radius (nn/sam.h; two passes per step)
  float self_distill = 0;  // > 0: progressive self-distillation, the final weight of the last epoch's predictions
  uint64_t seed = 0;
  int threads = 0;  // 0 = all cores
  std::string out;  // run folder; "" = no files (tests)
  bool resume = false;
  std::string fork;        // start from this checkpoint of another run, under changed flags (Trainer::fork)
  int snapshots_from = 0;  // > 0: also keep out/epoch_N.ckpt for every epoch N >= this (trunks to fork from)
  int stop_after = 0;      // > 0: stop after this epoch of `epochs` (the schedule still spans them all);
                           // a later --resume goes on (a trunk run only as far as its forks need)
  int log_every = 10;      // the training loss every N steps into out/steps.csv (0: off)
  int64_t subset = 0;     // > 0: train on this many images (a seeded, class-mixed sample)
  int64_t test_subset = 0;
  int eval_every = 1;     // test evaluation every N epochs (and after the last)
  int eval_batch = 500;
  bool progress = true;   // progress bar on stderr
  // Data-parallel training (Trainer::distribute): BatchNorm normalizes with
  // the statistics of the whole global batch instead of each rank's shard
  // (PyTorch's SyncBatchNorm); one process: no effect.
  bool sync_bn = false;

  // The named presets: "full" (the 40-epoch recipe of the peer script, plus
  // label smoothing 0.1) and "quick" (the same squeezed into 2 epochs).
  // Throws for other names.
  static TrainConfig preset_config(const std::string& name);

  // Every field as "key" -> "value" (stable keys, used in checkpoints/logs).
  std::map<std::string, std::string> to_map() const;
  // Sets the fields present in `m`; unknown keys or bad values throw,
  // naming the key.
  void from_map(const std::map<std::string, std::string>& m);
  std::string to_string() const;  // "key = value" lines

  // Throws std::invalid_argument naming the first field out of its range or
  // two fields that do not go together (e.g. cutout with augment off); the
  // message names the command-line flag too. Canonicalizes reparam ("3x1,1x3"
  // is "1x3,3x1"). The Trainer calls it; octet train calls it to say so as a
  // usage error.
  void validate();
};

struct EpochStats {
  int epoch = 0;  // 1-based
  int64_t step = 0;  // global steps done
  double lr = 0, train_loss = 0, train_acc = 0;
  double test_loss = -1, test_top1 = -1, test_top5 = -1;  // -1: not evaluated
  double ema_test_loss = -1, ema_test_top1 = -1, ema_test_top5 = -1;  // the averaged weights (-1: no EMA)
  double seconds = 0, img_s = 0;
  std::string csv() const;
  static std::string csv_header();
};

// One row of out/steps.csv: the mean training loss over a window of steps
// (log_every steps, shorter at the end of an epoch), for loss-against-step
// plots finer than the per-epoch log.
struct StepStats {
  int64_t step = 0;  // global steps done at the end of the window
  int steps = 0;     // steps in the window
  double lr = 0, train_loss = 0;
  std::string csv() const;
  static std::string csv_header();
  static StepStats parse(const std::string& row, const std::string& where);
};

// Thrown when the loss stops being finite; the run folder keeps its last
// good checkpoint.
struct NonFiniteLoss : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Trainer {
 public:
  // model: nullptr = make_model(cfg.model, classes, cfg.seed), its stem taking
  // the training images' channels. quant/ passes its prepared (fake-quant)
  // model here, whose stem must take them too. Construction reads no files: a
  // resumed run is restored by resume(), or by fit() itself.
  Trainer(TrainConfig cfg, const Dataset& train, const Dataset* test, std::shared_ptr<Module> model = nullptr);

  // Restores the run in cfg.out from its last.ckpt. fit() calls it when
  // cfg.resume is set and nothing was restored yet; call it yourself to see
  // epochs_done() before fit(). Set the hooks below first.
  void resume();

  // Starts from a checkpoint of another run (the trunk): its weights,
  // optimizer state, step, weight average, self-distillation table and log,
  // and continues under this run's configuration, which may differ from the
  // trunk's in every key but model, batch and subset, and in the extra_config
  // keys (a QAT fork may change its quantization knobs; a change that alters
  // the state's structure fails to load). Under the trunk's own configuration
  // the fork computes what the trunk computed, bit for bit.
  // fit() calls it when cfg.fork is set and nothing was restored yet
  // (cfg.resume, continuing a killed fork, comes first). Checkpoints of the
  // fork record the trunk ("fork.source", "fork.epoch", "fork.changes").
  void fork(const std::string& checkpoint_path);

  // Trains over a group of processes (core/distributed.h; under `mpirun -np
  // N octet train` MPI's world): every rank runs the same Trainer with the
  // same configuration and trains on its shard of every global batch of
  // cfg.batch images (nn/data_parallel.h). Rank 0's state is broadcast when
  // fit() starts (after resume or fork); gradients are summed while the
  // backward pass runs; BatchNorm statistics are averaged (or, with
  // cfg.sync_bn, computed over the global batch); the test set is split over
  // the ranks and the metrics summed; rank 0 alone writes the run folder and
  // prints. Call before resume(), fork() and fit(). Throws for what does not
  // go with it yet (self-distillation; a global batch smaller than the group).
  void distribute(std::shared_ptr<Communicator> group);
  Communicator& group() const { return *group_; }

  // Trains the remaining epochs (all, or those after the checkpoint when
  // cfg.resume). Returns the stats of the epochs it ran.
  std::vector<EpochStats> fit();

  // Top-1/top-5/loss/confusion of the model (eval mode) on a dataset.
  Metrics evaluate(const Dataset& data);

  Module& model() { return *model_; }
  std::shared_ptr<Module> model_ptr() const { return model_; }
  Optimizer& optimizer() { return *optim_; }
  const Preprocess& preprocess() const { return pre_; }
  const TrainConfig& config() const { return cfg_; }
  int64_t global_step() const { return step_; }
  int epochs_done() const { return epoch_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  // The weight average, or nullptr when cfg.ema_decay is 0.
  ExponentialMovingAverage* ema() { return ema_.get(); }
  // After restore(): empty, or why the resumed run will not be bit-identical
  // to an uninterrupted one (another thread count or OpenBLAS core).
  const std::string& resume_notice() const { return resume_notice_; }
  // After fork(): the trunk, the epoch and the changed flags, for the log.
  const std::string& fork_notice() const { return fork_notice_; }

  // The whole training state as a checkpoint, and back. averaged: the
  // model tensors ("model.*") are the weight average's (ema.ckpt).
  Checkpoint make_checkpoint(bool averaged = false) const;
  void restore(const Checkpoint& ck);

  // Hooks. on_step_begin(step) runs before each step's forward (QAT uses it,
  // e.g. to start quantizing after a delay); on_loss(step, loss) may inspect
  // or replace the loss before the finiteness check (tests inject NaN).
  std::function<void(int64_t step)> on_step_begin;
  std::function<void(int64_t step, Tensor& loss)> on_loss;

  // QAT (quant/qat.h) hooks:
  // extra_config: more of the run's identity as "key" -> "value" (the QAT
  //   configuration as "qat.<key>"): written into every checkpoint's metadata
  //   and into config.txt; restore() requires the checkpoint to hold the same
  //   values (fork() lists the differences as changes). Set it before
  //   resume(), fork() or restore().
  // on_save(ck): adds to every checkpoint make_checkpoint() writes (the exact
  //   observer states); on_restore(ck): reads it back at the end of restore().
  std::map<std::string, std::string> extra_config;
  std::function<void(Checkpoint&)> on_save;
  std::function<void(const Checkpoint&)> on_restore;

 private:
  void write_outputs(bool best);  // log.csv, config.txt, plots, checkpoints
  bool writes() const { return group_->rank() == 0; }  // this rank writes files and prints
  // Evaluation of the test set: split over the ranks, metrics summed.
  Metrics evaluate_test();
  void restore_state(const Checkpoint& ck, bool is_fork);  // restore() and fork()
  // Self-distillation: the weight of the past predictions in epoch `epoch`
  // (0-based); the batch's mixed targets, recording this step's predictions
  // for the next epoch.
  double self_distill_weight(int epoch) const;
  Tensor distill_targets(const Batch& b, const Tensor& logits, double alpha);

  TrainConfig cfg_;
  Dataset train_sub_, test_sub_;  // used when cfg.subset / cfg.test_subset are set
  const Dataset* train_;
  const Dataset* test_;
  Dataset test_shard_;  // this rank's part of *test_ when distributed
  std::shared_ptr<Communicator> group_;  // the group of one unless distribute()
  std::shared_ptr<Module> model_;
  std::unique_ptr<Optimizer> optim_;
  std::unique_ptr<Schedule> schedule_;
  std::unique_ptr<ExponentialMovingAverage> ema_;
  std::unique_ptr<SharpnessAwareMinimization> sam_;
  Tensor predictions_;  // self-distillation: [train images, classes], each image's latest softmax
  Preprocess pre_;
  int64_t steps_per_epoch_ = 0;
  int64_t step_ = 0;
  int epoch_ = 0;  // completed epochs
  bool restored_ = false;  // restore() ran (fit() then does not resume again)
  std::string resume_notice_, fork_notice_;
  std::map<std::string, std::string> lineage_;  // "fork.*": the trunk this run was forked from
  double best_top1_ = -1;
  std::vector<EpochStats> history_;
  std::vector<StepStats> step_history_;
};

// The Preprocess a run uses: "standard" with the mean/std of `train`
// (as the peer script), "vgg", "inception".
Preprocess make_preprocess(PreprocessMode mode, const Dataset& train);
// The exact map stored in a checkpoint.
Preprocess preprocess_from_checkpoint(const Checkpoint& ck);
// The shape of the images the checkpoint's model was trained on (metadata
// "input.channels", "input.height", "input.width"). Checkpoints written
// before these keys existed were all trained on 3-channel 32x32 images as far
// as the exporter knew (it always declared that input): they get that shape,
// and *recorded (when given) says false. Throws naming the checkpoint when a
// key is malformed or only some are present.
ImageShape input_shape_from_checkpoint(const Checkpoint& ck, bool* recorded = nullptr);

// A class-mixed sample of n images (seeded shuffle, first n); n >= size: a copy.
Dataset take_subset(const Dataset& data, int64_t n, uint64_t seed);

// Test-time augmentation for evaluate(). flip: the network sees each image
// and its mirror image (left-right), and the two logit vectors are averaged
// before the arg-max and the loss (as in the CIFAR speed-run recipes). It
// costs a second forward pass; training is unchanged.
enum class TestTimeAugment { none, flip };

// Top-1/top-5/mean loss/confusion of `model` (switched to eval mode for the
// pass, then back) on every image of `data`, in order, batches of `batch`.
Metrics evaluate(Module& model, const Dataset& data, const Preprocess& pre, int batch = 500,
                 TestTimeAugment tta = TestTimeAugment::none);

// Precise BN statistics (Wu & Johnson 2021, "Rethinking Batch in BatchNorm"):
// sets every BatchNorm2d's running mean and variance to the plain average of
// its batch statistics over batches of `data` in training mode (momentum
// 1/(k+1) at the k-th batch), touching no weight. A run ends with momentum-0.1
// averages, which weigh the last ~10 batches; these weigh every batch alike.
// With augment off the batches are the clean images, as at test time; on,
// they are augmented as in training (crop, flip, and cutout if > 0).
struct BnStatsOptions {
  int batch = 128;
  int64_t max_batches = 0;  // 0 = one pass over `data` (full batches)
  bool augment = false;
  int cutout = 0;
  uint64_t seed = 0;  // the batch order and the augmentation draws
};
// Returns the number of batches averaged.
int64_t recompute_bn_stats(Module& model, const Dataset& data, const Preprocess& pre, const BnStatsOptions& opt);

// A model rebuilt from a training checkpoint (architecture from "model",
// classes from "classes", the stem's channels from "input.channels", state
// from "model.*").
std::shared_ptr<ResNet> model_from_checkpoint(const Checkpoint& ck);

}  // namespace octet::nn
