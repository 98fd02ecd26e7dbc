// apps/cmd_train.cpp: `octet train`, the training command (nn/trainer.h).
#include <cstdio>
#include <string>

#include "apps/args.h"
#include "apps/commands.h"
#include "core/dataset.h"
#include "core/parallel.h"
#include "nn/trainer.h"

namespace octet::app {

namespace {

const char* kUsage = R"(usage: octet train [--preset quick|full] --data PATH --out DIR [options]

Trains a ResNet on CIFAR-10 (or any class-per-folder image tree). Each epoch:
a progress bar, test evaluation, a row in DIR/log.csv, DIR/loss.png and
DIR/accuracy.png, and DIR/last.ckpt (+ DIR/best.ckpt), written atomically.

presets (flags given after them override single values):
  quick   resnet20, 2 epochs, the full recipe otherwise (the default)
  full    resnet20, 40 epochs, SGD Nesterov 0.9, wd 5e-4, batch 128,
          one-cycle to lr 0.1 (pct_start 0.25, momentum 0.95..0.85),
          crop pad 4 + flip, standard normalization (the peer recipe),
          plus label smoothing 0.1

options:
  --model NAME          resnet20|32|44|56|110, resnet18, resnet50, ... (default resnet20)
  --data PATH           dataset folder (default: $OCTET_DATA)
  --epochs N  --batch N
  --optimizer sgd|rmsprop|adam   --momentum M  --nesterov[=false]  --wd W
  --no-wd-bn            no weight decay on BN parameters and biases
  --rms-decay D  --rms-epsilon E  (rmsprop, TF semantics; defaults 0.9, 1.0)
  --schedule onecycle|cosine|step|exp|constant   --lr LR (peak for onecycle)
  --pct-start P  --div-factor D  --final-div-factor F  --no-cycle-momentum (onecycle)
  --milestones E1,E2 --gamma G (step)   --decay-rate R --decay-epochs E --no-staircase (exp)
  --min-lr LR (exp floor, cosine minimum)   --warmup-epochs E (linear warmup, any schedule)
  --label-smoothing EPS  --preprocess standard|vgg|inception  --no-augment
  --seed S  --threads N (0 = all cores)  --subset N (train on N images)  --test-subset N
  --eval-every N        test evaluation every N epochs (and after the last)
  --out DIR             run folder (default runs/<model>)
  --resume              continue the run in --out from its last.ckpt (same flags)
  --no-progress         no progress bar
)";

bool get_bool(Args& a, const std::string& name, bool fallback) {
  const bool given = a.has(name);
  const bool v = a.flag(name);
  return given ? v : fallback;
}

}  // namespace

int cmd_train(int argc, char** argv) {
  Args a(argc, argv, "octet train", kUsage);
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  nn::TrainConfig c = nn::TrainConfig::preset_config(a.get("--preset", "quick"));
  c.model = a.get("--model", c.model);
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
  c.preprocess = a.get("--preprocess", c.preprocess);
  c.augment = !get_bool(a, "--no-augment", !c.augment);
  c.seed = static_cast<uint64_t>(a.get_int64("--seed", static_cast<long long>(c.seed)));
  c.threads = a.get_int("--threads", c.threads);
  c.subset = a.get_int64("--subset", c.subset);
  c.test_subset = a.get_int64("--test-subset", c.test_subset);
  c.eval_every = a.get_int("--eval-every", c.eval_every);
  c.out = a.get("--out", "runs/" + c.model);
  c.resume = a.flag("--resume");
  c.progress = !a.flag("--no-progress");
  a.finish();
  if (c.label_smoothing < 0 || c.label_smoothing >= 1)
    throw UsageError("octet train: --label-smoothing must be in [0, 1)");
  if (c.subset < 0 || c.test_subset < 0) throw UsageError("octet train: --subset must be >= 0");

  set_num_threads(c.threads);
  const std::string root = resolve_data_path(c.data);
  c.data = root;
  std::printf("octet train: threads %d, data %s\n", num_threads(), root.c_str());
  Dataset train = load_dataset(root, Split::train);
  Dataset test = load_dataset(root, Split::test);
  std::printf("train %lld images, test %lld images, %d classes\n", static_cast<long long>(train.size()),
              static_cast<long long>(test.size()), train.num_classes());

  nn::Trainer t(c, train, &test);
  std::printf("model %s: %lld parameters\nconfiguration:\n%s", c.model.c_str(),
              static_cast<long long>(t.model().num_parameters()), c.to_string().c_str());
  if (c.resume) std::printf("resuming after epoch %d (step %lld)\n", t.epochs_done(), static_cast<long long>(t.global_step()));
  std::fflush(stdout);
  auto ran = t.fit();
  if (!ran.empty()) {
    const auto& s = ran.back();
    std::printf("final: epoch %d test top1 %.2f%% top5 %.2f%%; run folder %s\n", s.epoch, 100.0 * s.test_top1,
                100.0 * s.test_top5, c.out.c_str());
  } else {
    std::printf("nothing to do: the run in %s already finished its %d epochs\n", c.out.c_str(), c.epochs);
  }
  return 0;
}

}  // namespace octet::app
