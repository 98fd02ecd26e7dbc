// apps/cmd_eval.cpp: `octet eval CKPT --data PATH`, float evaluation of a
// training checkpoint: top-1, top-5, per-class precision/recall, confusion matrix.
#include <cstdio>
#include <string>

#include "apps/args.h"
#include "apps/commands.h"
#include "core/checkpoint.h"
#include "core/dataset.h"
#include "core/parallel.h"
#include "nn/trainer.h"

namespace octet::app {

namespace {
const char* kUsage = R"(usage: octet eval CKPT [--data PATH] [--split test|train] [--batch N] [--threads N]

Evaluates a training checkpoint (last.ckpt / best.ckpt of `octet train`) in
float with the checkpoint's own preprocessing: top-1, top-5, per-class
precision and recall, and the confusion matrix.
)";
}  // namespace

int cmd_eval(int argc, char** argv) {
  Args a(argc, argv, "octet eval", kUsage);
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::string data = a.get("--data", "");
  const std::string split = a.get("--split", "test");
  const int batch = a.get_int("--batch", 500);
  const int threads = a.get_int("--threads", 0);
  a.finish();
  const std::string path = a.positional_at(0, "the checkpoint file (CKPT)");
  if (split != "test" && split != "train") throw UsageError("octet eval: --split must be test or train");
  if (batch < 1) throw UsageError("octet eval: --batch must be >= 1");
  set_num_threads(threads);

  const Checkpoint ck = load_checkpoint(path);
  auto model = nn::model_from_checkpoint(ck);
  const Preprocess pre = nn::preprocess_from_checkpoint(ck);
  const Dataset ds = load_dataset(resolve_data_path(data), split == "test" ? Split::test : Split::train);
  if (ds.num_classes() != model->config().num_classes)
    throw std::runtime_error("the data set has " + std::to_string(ds.num_classes()) + " classes, the model " +
                             std::to_string(model->config().num_classes));
  std::printf("checkpoint %s: model %s, epoch %s, preprocess %s\n%s split: %lld images\n\n", path.c_str(),
              ck.get("model").c_str(), ck.get("epoch", "?").c_str(), ck.get("preprocess.mode").c_str(),
              split.c_str(), static_cast<long long>(ds.size()));
  const nn::Metrics m = nn::evaluate(*model, ds, pre, batch);
  std::fputs(m.report(ds.class_names).c_str(), stdout);
  return 0;
}

}  // namespace octet::app
