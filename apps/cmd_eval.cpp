// apps/cmd_eval.cpp: `octet eval CKPT|MODEL --data PATH`: top-1, top-5,
// per-class precision/recall and the confusion matrix of
//   - a training checkpoint, in float, fake-quant or integer simulation
//     (or the engine, through an in-memory export), or
//   - an Octet model file (.oct), in the integer engine (optionally checked
//     against the integer simulation, image for image).
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <cstdio>
#include <memory>
#include <string>

#include "apps/args.h"
#include "apps/commands.h"
#include "apps/model_io.h"
#include "core/checkpoint.h"
#include "core/dataset.h"
#include "core/parallel.h"
#include "engine/engine.h"
#include "nn/trainer.h"
#include "quant/analysis.h"
#include "quant/export.h"
#include "quant/intsim.h"

namespace octet::app {

namespace {
const char* kUsage = R"(usage: octet eval CKPT|MODEL [--data PATH] [options]

Evaluates on a data set split: top-1, top-5, per-class precision and recall,
and the confusion matrix.

  CKPT (a checkpoint of octet train / octet calibrate), with --mode:
    float       the float network (quantizers off; BN folded for QAT models)
    fakequant   the QAT / PTQ forward (a float checkpoint is PTQ-calibrated first)
    intsim      exported in memory and run by the integer simulation (quant/intsim.h)
    engine      exported in memory and run by the integer engine
  MODEL (an .oct file of octet export): the integer engine.

options:
  --data PATH           data set (default: $OCTET_DATA)
  --split test|train    (default test)
  --mode MODE           for checkpoints (default float)
  --intsim              with MODEL (or --mode engine): also run the integer simulation and
                        count the images whose int8 logits equal the engine's exactly
  --limit N             a class-mixed sample of N images (seeded)
  --tta flip            test-time augmentation, --mode float or fakequant: average the logits
                        of each image and its mirror image (default none; training is unchanged)
  --bn-stats clean|augmented
                        float checkpoints: first set every BN's running statistics to the
                        average of its batch statistics over one pass of the train split,
                        clean images or augmented as in training (crop, flip); the momentum
                        averages of training weigh the last batches most
  --bn-batch N          batch size of that pass (default 128, the training batch)
  --batch N  --threads N
)";

// Int8 logits [n, C] -> a float tensor of their real values (for Metrics).
Tensor real_logits(const int8_t* q, int64_t n, int classes, double scale, int32_t zp) {
  Tensor t = Tensor::empty({n, classes});
  for (int64_t i = 0; i < n * classes; ++i) t.data()[i] = static_cast<float>(scale * (q[i] - zp));
  return t;
}

// Engine (and optionally intsim) over the data set; prints speed and the exact-match count.
nn::Metrics eval_integer(const std::shared_ptr<const engine::Model>& model, const Dataset& ds, int64_t count, int batch,
                         bool with_intsim, bool engine_path) {
  const int classes = model->num_classes();
  if (ds.channels != model->input_c() || ds.height != model->input_h() || ds.width != model->input_w())
    throw std::runtime_error("the data set's images are " + std::to_string(ds.channels) + "x" + std::to_string(ds.height) +
                             "x" + std::to_string(ds.width) + ", the model takes " + std::to_string(model->input_c()) +
                             "x" + std::to_string(model->input_h()) + "x" + std::to_string(model->input_w()));
  const engine::TensorDesc& out = model->desc().tensors[model->desc().output];
  std::unique_ptr<engine::Session> session;
  if (engine_path) session = std::make_unique<engine::Session>(model, batch);
  std::unique_ptr<quant::IntSim> sim;
  if (with_intsim || !engine_path) sim = std::make_unique<quant::IntSim>(model->desc());
  nn::Metrics m(classes);
  int64_t exact = 0;
  double engine_s = 0;
  for (int64_t start = 0; start < count; start += batch) {
    const int n = static_cast<int>(std::min<int64_t>(batch, count - start));
    const std::vector<uint8_t> px = images_nhwc(ds, start, n);
    std::vector<int8_t> logits;
    if (engine_path) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::span<const int8_t> e = session->run(px.data(), n);
      engine_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      logits.assign(e.begin(), e.end());
    }
    if (sim) {
      const std::vector<int8_t> s = sim->run(px.data(), n);
      if (engine_path) {
        for (int i = 0; i < n; ++i)
          exact += std::equal(s.begin() + i * classes, s.begin() + (i + 1) * classes, logits.begin() + i * classes);
      } else {
        logits = s;
      }
    }
    const std::span<const int> labels(ds.labels.data() + start, static_cast<size_t>(n));
    m.add(real_logits(logits.data(), n, classes, out.scale, out.zero_point), labels);
  }
  if (engine_path)
    std::printf("engine: %s, %lld images in %.2f s (%.0f img/s, batch %d)\n", engine::isa_name(session->isa()),
                static_cast<long long>(count), engine_s, static_cast<double>(count) / std::max(engine_s, 1e-9), batch);
  if (engine_path && with_intsim)
    std::printf("engine == integer simulation (int8 logits, bit for bit): %lld of %lld images\n",
                static_cast<long long>(exact), static_cast<long long>(count));
  return m;
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  Args a(argc, argv, "octet eval", std::string(kUsage) + "\n" + PtqFlags::usage());
  if (a.help()) {
    std::fputs(a.usage().c_str(), stdout);
    return 0;
  }
  const std::string data = a.get("--data", "");
  const std::string split = a.get("--split", "test");
  const std::string mode = a.get("--mode", "");
  const bool with_intsim = a.flag("--intsim");
  const long long limit = a.get_int64("--limit", 0);
  const int batch = a.get_int("--batch", 500);
  const int threads = a.get_int("--threads", 0);
  const std::string tta_name = a.get("--tta", "none");
  const std::string bn_stats = a.get("--bn-stats", "none");
  const int bn_batch = a.get_int("--bn-batch", 128);
  const PtqFlags ptq = PtqFlags::read(a, data);
  a.finish();
  const std::string path = a.positional_at(0, "the checkpoint or model file (CKPT|MODEL)");
  if (split != "test" && split != "train") throw UsageError("octet eval: --split must be test or train");
  if (batch < 1) throw UsageError("octet eval: --batch must be >= 1");
  if (limit < 0) throw UsageError("octet eval: --limit must be >= 0");
  if (tta_name != "none" && tta_name != "flip") throw UsageError("octet eval: --tta must be none or flip");
  if (bn_stats != "none" && bn_stats != "clean" && bn_stats != "augmented")
    throw UsageError("octet eval: --bn-stats must be clean or augmented");
  if (bn_batch < 1) throw UsageError("octet eval: --bn-batch must be >= 1");
  if (bn_stats != "none" && !mode.empty() && mode != "float")
    throw UsageError("octet eval: --bn-stats is for the float forward of a checkpoint (--mode float)");
  const nn::TestTimeAugment tta = tta_name == "flip" ? nn::TestTimeAugment::flip : nn::TestTimeAugment::none;
  set_num_threads(threads);
  engine::set_num_threads(threads);

  const bool model_file = is_model_file(path);
  if (model_file && !mode.empty() && mode != "engine")
    throw UsageError("octet eval: " + path + " is a model file: it runs in the engine (--mode is for checkpoints)");
  if (!model_file && !mode.empty() && mode != "float" && mode != "fakequant" && mode != "intsim" && mode != "engine")
    throw UsageError("octet eval: --mode must be float, fakequant, intsim or engine");

  if (bn_stats != "none" && model_file)
    throw UsageError("octet eval: --bn-stats is for the float forward of a checkpoint; " + path + " is a model file");
  const bool float_forward = !model_file && (mode.empty() || mode == "float" || mode == "fakequant");
  if (tta != nn::TestTimeAugment::none && !float_forward)
    throw UsageError("octet eval: --tta is for the float and fake-quant forward of a checkpoint, not the integer engine");

  const Dataset all = load_dataset(resolve_data_path(data), split == "test" ? Split::test : Split::train);
  // --limit: a seeded class-mixed sample (image trees are sorted by class).
  const Dataset ds = limit > 0 && limit < all.size() ? nn::take_subset(all, limit, 0) : all;
  const int64_t count = ds.size();
  std::printf("%s split of %s: %lld images%s\n", split.c_str(), all.source.c_str(), static_cast<long long>(count),
              count < all.size() ? " (a class-mixed sample, --limit)" : "");

  nn::Metrics metrics(1);
  std::vector<std::string> names = ds.class_names;
  if (model_file) {
    const auto model = engine::Model::load(path);
    std::printf("model %s: %s, %d classes, %s weights, %s file\n", path.c_str(), model->name().c_str(),
                model->num_classes(), human_bytes(model->weight_bytes_stored()).c_str(),
                human_bytes(std::filesystem::file_size(path)).c_str());
    if (model->num_classes() != ds.num_classes())
      throw std::runtime_error("the data set has " + std::to_string(ds.num_classes()) + " classes, the model " +
                               std::to_string(model->num_classes()));
    metrics = eval_integer(model, ds, count, batch, with_intsim, true);
  } else {
    const std::string m = mode.empty() ? "float" : mode;
    quant::LoadedModel lm = load_checkpoint_model(path, m != "float", ptq);
    if (ds.num_classes() != lm.model->config().num_classes)
      throw std::runtime_error("the data set has " + std::to_string(ds.num_classes()) + " classes, the model " +
                               std::to_string(lm.model->config().num_classes));
    if (m == "float" || m == "fakequant") {
      if (bn_stats != "none") {
        if (lm.qat) throw UsageError("octet eval: --bn-stats is for float checkpoints; " + path + " is a QAT one");
        const Dataset train = load_dataset(resolve_data_path(data), Split::train);
        nn::BnStatsOptions bo;
        bo.augment = bn_stats == "augmented";
        bo.batch = bn_batch;
        const int64_t n = nn::recompute_bn_stats(*lm.model, train, lm.preprocess, bo);
        std::printf("BN statistics: the average of %lld batches of %d %s training images\n", static_cast<long long>(n),
                    bo.batch, bo.augment ? "augmented" : "clean");
      }
      if (lm.qat) {
        const quant::QuantSwitches sw =
            quant::set_quant_mode(*lm.model, m == "float" ? quant::QuantMode::kFloat : quant::QuantMode::kFakeQuant);
        metrics = nn::evaluate(*lm.model, ds, lm.preprocess, batch, tta);
        quant::restore_quant_mode(sw);
      } else {
        metrics = nn::evaluate(*lm.model, ds, lm.preprocess, batch, tta);
      }
      std::printf("mode %s%s\n", m.c_str(), tta == nn::TestTimeAugment::flip ? ", test-time flip (logits averaged)" : "");
    } else {
      quant::ExportResult r = quant::export_model(lm);
      std::printf("mode %s: exported in memory, %s model (%.1f%% of the float weights)\n", m.c_str(),
                  human_bytes(r.file_bytes).c_str(), 100.0 * static_cast<double>(r.file_bytes) / static_cast<double>(r.float_weight_bytes));
      const auto model = engine::Model::from_bytes(r.builder.serialize(), path + " (exported)");
      metrics = eval_integer(model, ds, count, batch, with_intsim, m == "engine");
    }
  }
  std::printf("\n");
  std::fputs(metrics.report(names).c_str(), stdout);
  return 0;
}

}  // namespace octet::app
