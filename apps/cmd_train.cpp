// apps/cmd_train.cpp: `octet train`, the training command (nn/trainer.h).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "apps/args.h"
#include "apps/commands.h"
#include "apps/qat_flags.h"
#include "core/blas.h"
#include "core/dataset.h"
#include "core/distributed.h"
#include "core/parallel.h"
#include "nn/resnet.h"
#include "nn/trainer.h"
#include "quant/qat.h"
#include "quant/qat_training.h"

namespace octet::app {

namespace {

const char* kUsage = R"(usage: octet train [--preset quick|full] --data PATH --out DIR [options]

Trains a ResNet on CIFAR-10, MNIST or Fashion-MNIST (IDX files, .gz or not),
or any class-per-folder image tree; the model takes the training images'
shape (gray stays one channel). Each epoch:
a progress bar, test evaluation, a row in DIR/log.csv, DIR/loss.png and
DIR/accuracy.png, and DIR/last.ckpt (+ DIR/best.ckpt), written atomically.

presets (flags given after them override single values):
  quick   resnet20, 2 epochs, the full recipe otherwise (the default)
  full    resnet20, 40 epochs, SGD Nesterov 0.9, wd 5e-4, batch 128,
          one-cycle to lr 0.1 (pct_start 0.25, momentum 0.95..0.85),
          crop pad 4 + flip, standard normalization, PyTorch's default
          conv init (the peer recipe), plus label smoothing 0.1

options:
  --model NAME          resnet20|32|44|56|110, resnet18, resnet50, ... (default resnet20)
  --weight-init torch|he  conv weights: PyTorch's nn.Conv2d default, U(+-1/sqrt(fan_in))
                        (default, as the peer script), or He normal, fan out (torchvision)
  --zero-init-residual  start the last BN scale of every residual block at 0
                        (torchvision's zero_init_residual; default off)
  --reparam KINDS       none, or a comma list of 1x1, 1x3, 3x1: train every 3x3
                        conv of a residual block with parallel convs of those
                        kernels, each + BN (structural re-parameterization: 1x1
                        as in RepVGG, 1x3,3x1 ACNet's asymmetric pair; Ding et al.
                        2019/2021); every checkpoint holds the model with the
                        branches folded into the 3x3 convs, the plain ResNet
                        (default none; float training only)
  --data PATH           dataset folder (default: $OCTET_DATA): CIFAR-10 binary batches,
                        IDX files (e.g. /usr/share/datasets/fashion-mnist), or an image
                        tree PATH/{train,test}/<class>/*.png|jpg
  --epochs N  --batch N
  --optimizer sgd|rmsprop|adam   --momentum M  --nesterov[=false]  --wd W
  --no-wd-bn            no weight decay on BN parameters and biases
  --rms-decay D  --rms-epsilon E  (rmsprop, TF semantics; defaults 0.9, 1.0)
  --schedule onecycle|cosine|step|exp|constant   --lr LR (peak for onecycle)
  --pct-start P  --div-factor D  --final-div-factor F  --no-cycle-momentum (onecycle)
  --milestones E1,E2 --gamma G (step)   --decay-rate R --decay-epochs E --no-staircase (exp)
  --min-lr LR (exp floor, cosine minimum)   --warmup-epochs E (linear warmup, any schedule)
  --label-smoothing EPS  --preprocess standard|vgg|inception  --no-augment
  --alternate-flip      draw each image's flip coin once, then mirror it in
                        alternate epochs (Jordan 2024; default: a fresh coin each epoch)
  --cutout N            after crop and flip, set an N x N square at a random centre
                        to the pixel that preprocesses to 0, the channel mean
                        (DeVries & Taylor 2017; default 0, off)
  --cutout-until E      cutout in epochs 1..E only, clean images in the rest, e.g.
                        the last annealing epochs (default: every epoch)
  --ema DECAY           also keep an exponential moving average of the weights
                        (TF's ExponentialMovingAverage, e.g. 0.999), evaluate it
                        each epoch beside the raw weights and write DIR/ema.ckpt
                        with it as the model (default 0, off)
  --sam RHO             sharpness-aware minimization (Foret et al. 2021): each
                        step also takes the gradient at w + RHO * g / ||g|| and
                        steps with that one; two passes per step (e.g. 0.05;
                        default 0, off)
  --self-distill A      progressive self-distillation (Kim et al. 2021): in epoch e
                        of E the target is (1 - a) * label + a * the image's own
                        prediction of the last epoch, a = A * e / E; no extra pass
                        (e.g. 0.8; default 0, off)
  --seed S  --threads N (0 = all cores)  --subset N (train on N images)  --test-subset N
  --eval-every N        test evaluation every N epochs (and after the last)
  --out DIR             run folder (default runs/<model>)
  --resume              continue the run in --out from its last.ckpt (same flags;
                        bit for bit with the same threads and OpenBLAS core)
  --fork CKPT           start from CKPT, a checkpoint of another run (e.g. one kept by
                        --snapshots-from), with all its training state: weights,
                        optimizer, step, weight average, log; then train on under the
                        flags given here, which may differ from that run's except
                        --model, --batch and --subset. Under that run's own flags
                        the fork repeats it bit for bit. --out must be a new folder
  --snapshots-from E    also keep DIR/epoch_N.ckpt after every epoch N >= E (default
                        0, none): points to --fork from
  --stop-after E        stop after epoch E of --epochs (the schedule still spans them
                        all); --resume later goes on from there (default 0: run all)
  --log-every N         the mean training loss of every N steps into DIR/steps.csv
                        (default 10; 0 = off)
  --no-progress         no progress bar

data-parallel training (mpirun -np N octet train ...; README, "Training on
several machines"): each rank trains on its shard of every global batch of
--batch images; gradients are summed over the ranks during the backward pass;
rank 0 writes the run folder and prints. --threads is per rank.
  --sync-bn             BatchNorm over the global batch, not each rank's shard
                        (PyTorch's SyncBatchNorm; default: per-rank statistics,
                        their running averages averaged over the ranks)
  --comm-timeout S      a rank that waits S seconds for the others (a rank died
                        or hangs) ends the whole run with an error (default 300)

quantization-aware training (quant/qat.h; the study's defaults: QDQv2,
half_to_even, 8 bits, signed, per-channel weights + activations, EMA ranges,
fake quant from 80% of the steps; BN folded into the conv during training):
  --qat                 prepare the model for QAT (every flag below needs it)
  --init CKPT           start from a float checkpoint (QAT fine-tuning)
  --quant-delay F       fake quant starts after this fraction of the steps (default 0.8)
  --quant-delay-step N  ... or at this global step
  --observer-freeze F   ranges freeze after this fraction of the steps (default never)
  --bn-freeze F         BN uses running statistics after this fraction (default never)
)";

bool get_bool(Args& a, const std::string& name, bool fallback) {
  const bool given = a.has(name);
  const bool v = a.flag(name);
  return given ? v : fallback;
}

// A flag that names one value of an enum: a bad name exits 2 naming the flag and the choices.
template <class E>
E get_enum(Args& a, const std::string& name, E fallback, const char* (*to_name)(E), E (*parse)(const std::string&)) {
  const std::string v = a.get(name, to_name(fallback));
  try {
    return parse(v);
  } catch (const std::invalid_argument& e) {
    throw UsageError("octet train: " + name + ": " + e.what());
  }
}

// Loads the data, builds the model (prepared for QAT when asked) and trains;
// the flags are read and checked already.
int train(nn::TrainConfig c, const quant::QatConfig& q, bool qat, const std::string& init,
          const std::shared_ptr<Communicator>& world) {
  set_num_threads(c.threads);
  const std::string root = resolve_data_path(c.data);
  c.data = root;
  std::printf("octet train: threads %d, OpenBLAS core %s, data %s\n", num_threads(),
              openblas_core_banner().c_str(), root.c_str());
  Dataset train = load_dataset(root, Split::train);
  // The training images' shape is the model's input (recorded in every
  // checkpoint, declared by the exporter): the test images must have it too.
  LoadOptions test_shape;
  test_shape.channels = train.channels;
  test_shape.height = train.height;
  test_shape.width = train.width;
  test_shape.wanted_by = "the training images' shape";
  Dataset test = load_dataset(root, Split::test, test_shape);
  std::printf("train %lld images, test %lld images, %d classes, images %s\n", static_cast<long long>(train.size()),
              static_cast<long long>(test.size()), train.num_classes(), train.shape().str().c_str());

  std::shared_ptr<nn::ResNet> qmodel;
  if (qat) {
    if (init.empty()) {
      qmodel = nn::make_model(c.model, train.num_classes(), c.seed, c.weight_init, train.channels);
      if (c.zero_init_residual) nn::zero_init_residual(*qmodel);
    } else {
      quant::LoadedModel lm = quant::load_model(init);
      if (lm.qat) throw std::runtime_error("--init " + init + " is already a quantized checkpoint (use --resume)");
      if (lm.model->config().name != c.model)
        throw std::runtime_error("--init " + init + " holds a " + lm.model->config().name + ", not a " + c.model +
                                 " (give --model " + lm.model->config().name + ")");
      if (lm.input.channels != train.channels)
        throw std::runtime_error("--init " + init + " was trained on " + lm.input.str() + " images, the training images of " +
                                 root + " are " + train.shape().str() + ": the stem takes another channel count");
      qmodel = lm.model;
    }
    quant::prepare(*qmodel, q);
  }
  nn::Trainer t(c, train, &test, qmodel);
  t.distribute(world);  // before the QAT hooks: the observers combine over t.group()
  if (world->size() > 1)
    std::printf("data-parallel: %s, global batch %d (%d to %d images per rank), %d threads per rank%s\n",
                world->describe().c_str(), c.batch, c.batch / world->size(), (c.batch + world->size() - 1) / world->size(),
                num_threads(), c.sync_bn ? ", BatchNorm over the global batch (--sync-bn)" : "");
  if (qat) {
    quant::attach_qat(t, q);
    if (!init.empty()) t.extra_config["qat_init"] = init;
    std::printf("QAT: fake quant from step %lld of %lld%s\n", static_cast<long long>(quant::quant_delay_step(t, q)),
                static_cast<long long>(t.steps_per_epoch() * c.epochs),
                init.empty() ? "" : (", initialized from " + init).c_str());
  }
  const int64_t branch_params = nn::branch_parameters(t.model());
  std::printf("model %s: %lld parameters", c.model.c_str(),
              static_cast<long long>(t.model().num_parameters() - branch_params));
  if (branch_params > 0)
    std::printf(" (+ %lld in train-time %s branches, folded away in every checkpoint)",
                static_cast<long long>(branch_params), t.config().reparam.c_str());
  std::printf("\nconfiguration:\n%s", c.to_string().c_str());
  if (qat) std::printf("qat configuration:\n%s", q.to_string().c_str());
  if (c.resume) {
    if (c.out.empty()) throw UsageError("octet train: --resume needs --out (the run folder)");
    t.resume();  // after the QAT hooks: they restore the observers' states
    std::printf("resuming after epoch %d (step %lld)\n", t.epochs_done(), static_cast<long long>(t.global_step()));
    if (!t.resume_notice().empty()) std::fprintf(stderr, "octet train: note: %s\n", t.resume_notice().c_str());
  } else if (!c.fork.empty()) {
    t.fork(c.fork);  // after the QAT hooks, as for --resume
    std::printf("%s\n", t.fork_notice().c_str());
    if (!t.resume_notice().empty()) std::fprintf(stderr, "octet train: note: %s\n", t.resume_notice().c_str());
  }
  std::fflush(stdout);
  auto ran = t.fit();
  if (!ran.empty()) {
    const auto& s = ran.back();
    std::printf("final: epoch %d test top1 %.2f%% top5 %.2f%%", s.epoch, 100.0 * s.test_top1, 100.0 * s.test_top5);
    if (s.ema_test_top1 >= 0)
      std::printf(" (weight average: top1 %.2f%% top5 %.2f%%, %s/ema.ckpt)", 100.0 * s.ema_test_top1,
                  100.0 * s.ema_test_top5, c.out.c_str());
    std::printf("; run folder %s\n", c.out.c_str());
    if (t.epochs_done() < c.epochs)
      std::printf("stopped after epoch %d of %d (--stop-after); --resume goes on\n", t.epochs_done(), c.epochs);
  } else if (t.epochs_done() < c.epochs) {
    std::printf("nothing to do: the run in %s stopped after epoch %d of %d (--stop-after %d)\n", c.out.c_str(),
                t.epochs_done(), c.epochs, c.stop_after);
  } else {
    std::printf("nothing to do: the run in %s already finished its %d epochs\n", c.out.c_str(), c.epochs);
  }
  return 0;
}

}  // namespace

int cmd_train(int argc, char** argv) {
  const std::string usage = std::string(kUsage) + kQatFlagsHelp;
  Args a(argc, argv, "octet train", usage);
  if (a.help()) {
    std::fputs(usage.c_str(), stdout);
    return 0;
  }
  nn::TrainConfig c = nn::TrainConfig::preset_config(a.get("--preset", "quick"));
  c.model = a.get("--model", c.model);
  c.weight_init = get_enum(a, "--weight-init", c.weight_init, nn::conv_init_name, nn::parse_conv_init);
  c.zero_init_residual = get_bool(a, "--zero-init-residual", c.zero_init_residual);
  c.reparam = a.get("--reparam", c.reparam);
  c.data = a.get("--data", c.data);
  c.epochs = a.get_int("--epochs", c.epochs);
  c.batch = a.get_int("--batch", c.batch);
  c.optim.kind = a.get("--optimizer", c.optim.kind);
  c.optim.momentum = static_cast<float>(a.get_double("--momentum", c.optim.momentum));
  c.optim.nesterov = get_bool(a, "--nesterov", c.optim.nesterov);
  c.optim.weight_decay = static_cast<float>(a.get_double("--wd", c.optim.weight_decay));
  c.optim.no_decay_1d = get_bool(a, "--no-wd-bn", c.optim.no_decay_1d);
  c.optim.rms_decay = static_cast<float>(a.get_double("--rms-decay", c.optim.rms_decay));
  c.optim.epsilon = static_cast<float>(a.get_double("--rms-epsilon", c.optim.epsilon));
  c.schedule.kind = a.get("--schedule", c.schedule.kind);
  c.schedule.lr = a.get_double("--lr", c.schedule.lr);
  c.schedule.pct_start = a.get_double("--pct-start", c.schedule.pct_start);
  c.schedule.div_factor = a.get_double("--div-factor", c.schedule.div_factor);
  c.schedule.final_div_factor = a.get_double("--final-div-factor", c.schedule.final_div_factor);
  c.schedule.cycle_momentum = !get_bool(a, "--no-cycle-momentum", !c.schedule.cycle_momentum);
  c.schedule.milestones = a.get_int_list("--milestones", c.schedule.milestones);
  c.schedule.gamma = a.get_double("--gamma", c.schedule.gamma);
  c.schedule.decay_rate = a.get_double("--decay-rate", c.schedule.decay_rate);
  c.schedule.decay_epochs = a.get_double("--decay-epochs", c.schedule.decay_epochs);
  c.schedule.staircase = !get_bool(a, "--no-staircase", !c.schedule.staircase);
  c.schedule.floor_lr = a.get_double("--min-lr", c.schedule.floor_lr);
  c.schedule.warmup_epochs = a.get_double("--warmup-epochs", c.schedule.warmup_epochs);
  c.label_smoothing = static_cast<float>(a.get_double("--label-smoothing", c.label_smoothing));
  c.preprocess = get_enum(a, "--preprocess", c.preprocess, preprocess_name, parse_preprocess);
  c.augment = !get_bool(a, "--no-augment", !c.augment);
  c.alternate_flip = get_bool(a, "--alternate-flip", c.alternate_flip);
  c.cutout = a.get_int("--cutout", c.cutout);
  c.cutout_until = a.get_int("--cutout-until", c.cutout_until);
  c.ema_decay = a.get_double("--ema", c.ema_decay);
  c.sam_rho = static_cast<float>(a.get_double("--sam", c.sam_rho));
  c.self_distill = static_cast<float>(a.get_double("--self-distill", c.self_distill));
  c.seed = static_cast<uint64_t>(a.get_int64("--seed", static_cast<long long>(c.seed)));
  c.threads = a.get_int("--threads", c.threads);
  c.subset = a.get_int64("--subset", c.subset);
  c.test_subset = a.get_int64("--test-subset", c.test_subset);
  c.eval_every = a.get_int("--eval-every", c.eval_every);
  c.out = a.get("--out", "runs/" + c.model);
  c.resume = a.flag("--resume");
  c.fork = a.get("--fork", c.fork);
  c.snapshots_from = a.get_int("--snapshots-from", c.snapshots_from);
  c.stop_after = a.get_int("--stop-after", c.stop_after);
  c.log_every = a.get_int("--log-every", c.log_every);
  c.progress = !a.flag("--no-progress");
  c.sync_bn = a.flag("--sync-bn");
  const double comm_timeout = a.get_double("--comm-timeout", 300);
  // QAT knobs
  const bool qat = a.flag("--qat");
  quant::QatConfig q;
  bool qat_flags = read_qat_flags(a, q, "octet train");
  qat_flags |= read_qat_schedule_flags(a, q);
  const std::string init = a.get("--init", "");
  a.finish();
  if ((qat_flags || !init.empty()) && !qat) throw UsageError("octet train: the quantization flags need --qat");
  if (!(comm_timeout > 0)) throw UsageError("octet train: --comm-timeout must be > 0 seconds");
  if (qat) {
    try {
      q.validate();
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string("octet train: ") + e.what());
    }
  }
  if (a.has("--cutout-until") && c.cutout_until < 1)
    throw UsageError("octet train: --cutout-until needs --cutout N and an epoch >= 1");
  try {
    c.validate();
    if (qat) quant::check_qat_compatible(c);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("octet train: ") + e.what());
  }
  if (!c.fork.empty() && !init.empty())
    throw UsageError("octet train: --fork and --init exclude each other (--fork loads the whole training state)");
  std::error_code no_such_folder;
  if (!c.fork.empty() &&
      std::filesystem::equivalent(std::filesystem::absolute(c.fork).parent_path(), c.out, no_such_folder))
    throw UsageError("octet train: --fork " + c.fork + " comes from the --out folder; give the fork a new folder");
  if (!init.empty() && a.has("--weight-init"))
    throw UsageError("octet train: --weight-init and --init exclude each other (--init loads the weights)");
  if (!init.empty() && c.zero_init_residual)
    throw UsageError("octet train: --zero-init-residual and --init exclude each other (--init loads the weights)");

  // Under mpirun: one rank of a data-parallel run. Rank 0 prints for all
  // (the other ranks' standard output goes nowhere; errors stay on stderr).
  std::shared_ptr<Communicator> world = join_world(comm_timeout);
  if (world->size() > 1 && world->rank() != 0 && !std::freopen("/dev/null", "w", stdout))
    throw std::runtime_error("octet train: cannot silence the standard output of rank " + std::to_string(world->rank()));
  try {
    return train(c, q, qat, init, world);
  } catch (const std::exception& e) {
    if (world->size() == 1) throw;
    // Failing alone would leave the other ranks waiting for this one.
    std::fprintf(stderr, "octet train: rank %d of %d failed: %s\n(ending all ranks)\n", world->rank(), world->size(),
                 e.what());
    world->abort(1);
    throw;
  }
}

}  // namespace octet::app
