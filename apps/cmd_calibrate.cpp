// apps/cmd_calibrate.cpp: `octet calibrate CKPT`, post-training quantization
// (quant/qat.h calibrate): a float checkpoint -> a quantized checkpoint of the
// same form a QAT run writes, ready for `octet export`.
#include <chrono>
#include <cstdio>
#include <string>

#include "apps/args.h"
#include "apps/commands.h"
#include "apps/qat_flags.h"
#include "core/checkpoint.h"
#include "core/dataset.h"
#include "core/parallel.h"
#include "nn/trainer.h"
#include "quant/qat.h"

namespace octet::app {

namespace {
const char* kUsage = R"(usage: octet calibrate CKPT --data PATH -o OUT.ckpt (or --out OUT.ckpt) [--observer minmax|percentile|entropy|mse|ema|meanstd]
                       [--images N] [--batch N] [--seed S] [--cle] [--bias-correction]
                       [--no-eval] [--threads N] [quantization flags]

Post-training quantization of a float checkpoint (`octet train` last/best.ckpt):
folds BN into the convs, runs N training images (a seeded, class-mixed
sample, no augmentation, the checkpoint's own preprocessing) through the model
in eval mode to measure the range of every tensor the integer engine sees,
freezes the ranges and turns fake quant on. OUT.ckpt has the same form as a
QAT checkpoint (`octet export` treats both alike). Unless --no-eval, prints
the float and the fake-quantized test accuracy.

  --observer K          range estimate per tensor (default minmax):
                        minmax, percentile (--percentile P, default 99.99),
                        entropy (TensorRT KL), mse, ema (--ema-decay D), meanstd
  --images N            calibration images (default 1000)
  --batch N             calibration batch (default 100)
  --seed S              which sample of the training set (default 0)
  --cle                 cross-layer equalization of the conv pairs inside each block first
  --bias-correction     correct each conv's and the fc's bias for the mean shift of weight quantization
)";
}  // namespace

int cmd_calibrate(int argc, char** argv) {
  const std::string usage = std::string(kUsage) + "\nquantization flags:\n" + kQatFlagsHelp;
  Args a(argc, argv, "octet calibrate", usage);
  if (a.help()) {
    std::fputs(usage.c_str(), stdout);
    return 0;
  }
  const std::string data = a.get("--data", "");
  const std::string out = a.get("--out", "");
  const long long images = a.get_int64("--images", 1000);
  const int batch = a.get_int("--batch", 100);
  const long long seed = a.get_int64("--seed", 0);
  const bool eval = !a.flag("--no-eval");
  const int threads = a.get_int("--threads", 0);
  quant::QatConfig q;
  q.act_observer.kind = "minmax";
  read_qat_flags(a, q, "octet calibrate");
  if (a.flag("--cle")) q.cross_layer_equalization = true;
  if (a.flag("--bias-correction")) q.bias_correction = true;
  a.finish();
  const auto& pos = a.positional();
  if (pos.empty()) throw UsageError("octet calibrate: missing the float checkpoint (CKPT)");
  if (pos.size() > 1) throw UsageError("octet calibrate: unexpected argument '" + pos[1] + "'");
  const std::string path = pos[0];
  if (out.empty()) throw UsageError("octet calibrate: -o OUT.ckpt is required");
  if (images < 1) throw UsageError("octet calibrate: --images must be >= 1");
  if (batch < 1) throw UsageError("octet calibrate: --batch must be >= 1");
  set_num_threads(threads);

  quant::LoadedModel lm = quant::load_model(path);
  if (lm.qat) throw std::runtime_error(path + " is already quantized (a QAT or calibrated checkpoint)");
  const std::string root = resolve_data_path(data);
  const Dataset train = load_dataset(root, Split::train);
  if (train.num_classes() != lm.model->config().num_classes)
    throw std::runtime_error("the data set has " + std::to_string(train.num_classes()) + " classes, the model " +
                             std::to_string(lm.model->config().num_classes));
  std::printf("checkpoint %s: model %s; calibrating on %lld training images with observer %s\n", path.c_str(),
              lm.model->config().name.c_str(), images, q.act_observer.kind.c_str());
  std::fflush(stdout);
  Dataset test;
  double float_top1 = -1;
  if (eval) {
    test = load_dataset(root, Split::test);
    float_top1 = nn::evaluate(*lm.model, test, lm.preprocess).top1();
  }
  const auto t0 = std::chrono::steady_clock::now();
  quant::calibrate(*lm.model, q, train, lm.preprocess, images, batch, static_cast<uint64_t>(seed));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("calibrated in %.1f s\n", secs);

  // The output: the input's metadata (run config, preprocessing, classes,
  // history), the prepared model's state, no optimizer slots, and the QAT/PTQ config.
  Checkpoint ck;
  for (auto& [k, v] : lm.checkpoint.meta)
    if (k.rfind("qat.", 0) != 0) ck.meta[k] = v;
  ck.meta["ptq.source"] = path;
  ck.meta["ptq.observer"] = q.act_observer.kind;
  ck.meta["ptq.images"] = std::to_string(images);
  ck.meta["ptq.seed"] = std::to_string(seed);
  for (auto& [n, t] : lm.model->named_state()) ck.tensors.emplace_back("model." + n, t);
  quant::write_qat_meta(*lm.model, q, ck);
  if (eval) {
    const nn::Metrics m = nn::evaluate(*lm.model, test, lm.preprocess);
    std::printf("test top-1: float %.2f%%, fake-quantized (%d-bit weights, %d-bit activations) %.2f%%, top-5 %.2f%%\n",
                100.0 * float_top1, q.weight_bits, q.act_bits, 100.0 * m.top1(), 100.0 * m.top5());
    ck.meta["ptq.test_top1"] = std::to_string(m.top1());
    ck.meta["ptq.float_top1"] = std::to_string(float_top1);
  }
  save_checkpoint(out, ck);
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

}  // namespace octet::app
