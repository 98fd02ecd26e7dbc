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
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "apps/args.h"
#include "apps/commands.h"
#include "apps/eval_onnx.h"
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
  MODEL.onnx (octet export --onnx): ONNX Runtime, optionally against the .oct
              file in the engine (octet eval MODEL.onnx --help).

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
  --intsim-images N     with --intsim on the engine: simulate only the first N images (the
                        simulation is a slow reference; default 0: all)
  --json FILE           also write the figures as JSON (written atomically): top1, top5,
                        loss, per-class precision and recall, the confusion matrix, the
                        images counted, engine == simulation count (with --intsim), and
                        for checkpoints the weight and bias counts of the folded model
  --batch N  --threads N
)";

// Int8 logits [n, C] -> a float tensor of their real values (for Metrics).
Tensor real_logits(const int8_t* q, int64_t n, int classes, double scale, int32_t zp) {
  Tensor t = Tensor::empty({n, classes});
  for (int64_t i = 0; i < n * classes; ++i) t.data()[i] = static_cast<float>(scale * (q[i] - zp));
  return t;
}

// Engine (and optionally intsim) over the data set; prints speed and the
// exact-match count (also into *exact_out when given).
// With the engine, the simulation checks the first `sim_images` images (all when <= 0).
nn::Metrics eval_integer(const std::shared_ptr<const engine::Model>& model, const Dataset& ds, int64_t count, int batch,
                         bool with_intsim, bool engine_path, int64_t* exact_out = nullptr, int64_t* checked_out = nullptr,
                         int64_t sim_images = 0) {
  const int classes = model->num_classes();
  const ImageShape takes{model->input_c(), model->input_h(), model->input_w()};
  if (ds.shape() != takes)
    throw std::runtime_error("the data set's images are " + ds.shape().str() + ", the model takes " + takes.str());
  const engine::TensorDesc& out = model->desc().tensors[model->desc().output];
  std::unique_ptr<engine::Session> session;
  if (engine_path) session = std::make_unique<engine::Session>(model, batch);
  std::unique_ptr<quant::IntSim> sim;
  if (with_intsim || !engine_path) sim = std::make_unique<quant::IntSim>(model->desc());
  nn::Metrics m(classes);
  int64_t exact = 0, checked = 0;
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
    const bool simulate = sim && (!engine_path || sim_images <= 0 || start < sim_images);
    if (simulate) {
      const int sim_n = engine_path && sim_images > 0 ? static_cast<int>(std::min<int64_t>(n, sim_images - start)) : n;
      const std::vector<int8_t> s = sim->run(px.data(), sim_n);
      if (engine_path) {
        for (int i = 0; i < sim_n; ++i)
          exact += std::equal(s.begin() + i * classes, s.begin() + (i + 1) * classes, logits.begin() + i * classes);
        checked += sim_n;
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
    std::printf("engine == integer simulation (int8 logits, bit for bit): %lld of %lld images%s\n",
                static_cast<long long>(exact), static_cast<long long>(checked),
                checked < count ? " (the first ones, --intsim-images)" : "");
  if (exact_out) *exact_out = exact;
  if (checked_out) *checked_out = checked;
  return m;
}

// The figures of one evaluation as JSON (fractions in [0, 1]).
nlohmann::ordered_json metrics_json(const nn::Metrics& m, const std::vector<std::string>& names) {
  nlohmann::ordered_json j;
  j["images"] = m.count();
  j["top1"] = m.top1();
  j["top5"] = m.top5();
  j["loss"] = m.mean_loss();
  j["class_names"] = names;
  std::vector<double> precision, recall;
  std::vector<std::vector<int64_t>> confusion;
  for (int c = 0; c < m.num_classes(); ++c) {
    precision.push_back(m.precision(c));
    recall.push_back(m.recall(c));
    std::vector<int64_t> row;
    for (int p = 0; p < m.num_classes(); ++p) row.push_back(m.confusion(c, p));
    confusion.push_back(row);
  }
  j["precision"] = precision;
  j["recall"] = recall;
  j["confusion"] = confusion;
  return j;
}

void write_json_atomic(const std::string& path, const nlohmann::ordered_json& j) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(1) << "\n";
    if (!out.flush()) throw std::runtime_error("cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

// Weights (conv and fc kernels) and biases (one per output channel) of a
// model with BN folded: what an integer model file stores.
std::pair<int64_t, int64_t> folded_parameter_counts(nn::Module& model) {
  int64_t weights = 0, biases = 0;
  for (auto& [name, t] : model.named_parameters()) {
    const bool kernel = (t.ndim() == 4 || t.ndim() == 2) && name.size() >= 6 && name.substr(name.size() - 6) == "weight";
    if (kernel) {
      weights += t.numel();
      biases += t.dim(0);
    }
  }
  return {weights, biases};
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  // An ONNX model (octet export --onnx) runs in ONNX Runtime: apps/eval_onnx.h.
  if (is_onnx_eval(argc, argv)) return eval_onnx(argc, argv);
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
  const std::string json_path = a.get("--json", "");
  const long long intsim_images = a.get_int64("--intsim-images", 0);
  const PtqFlags ptq = PtqFlags::read(a, data);
  a.finish();
  const std::string path = a.positional_at(0, "the checkpoint or model file (CKPT|MODEL)");
  if (split != "test" && split != "train") throw UsageError("octet eval: --split must be test or train");
  if (batch < 1) throw UsageError("octet eval: --batch must be >= 1");
  if (intsim_images < 0) throw UsageError("octet eval: --intsim-images must be >= 0");
  if (intsim_images > 0 && !with_intsim) throw UsageError("octet eval: --intsim-images needs --intsim");
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

  // The model first: the data are loaded in the shape it takes (a model
  // file's input, a checkpoint's training images), never resized to fit.
  std::shared_ptr<const engine::Model> engine_model;
  std::optional<quant::LoadedModel> loaded;
  LoadOptions shape;
  if (model_file) {
    engine_model = engine::Model::load(path);
    shape = data_options({engine_model->input_c(), engine_model->input_h(), engine_model->input_w()},
                         "the input of " + path);
  } else {
    loaded = load_checkpoint_model(path, (mode.empty() ? "float" : mode) != "float", ptq);
    shape = data_options(*loaded, path);
  }
  const Dataset all = load_dataset(resolve_data_path(data), split == "test" ? Split::test : Split::train, shape);
  // --limit: a seeded class-mixed sample (image trees are sorted by class).
  const Dataset ds = limit > 0 && limit < all.size() ? nn::take_subset(all, limit, 0) : all;
  const int64_t count = ds.size();
  std::printf("%s split of %s: %lld images%s\n", split.c_str(), all.source.c_str(), static_cast<long long>(count),
              count < all.size() ? " (a class-mixed sample, --limit)" : "");

  nn::Metrics metrics(1);
  std::vector<std::string> names = ds.class_names;
  nlohmann::ordered_json extra;
  int64_t exact = -1, checked = 0;
  if (model_file) {
    const auto& model = engine_model;
    std::printf("model %s: %s, %d classes, %s weights, %s file\n", path.c_str(), model->name().c_str(),
                model->num_classes(), human_bytes(model->weight_bytes_stored()).c_str(),
                human_bytes(std::filesystem::file_size(path)).c_str());
    if (model->num_classes() != ds.num_classes())
      throw std::runtime_error("the data set has " + std::to_string(ds.num_classes()) + " classes, the model " +
                               std::to_string(model->num_classes()));
    metrics = eval_integer(model, ds, count, batch, with_intsim, true, &exact, &checked, intsim_images);
    extra["model_file_bytes"] = std::filesystem::file_size(path);
  } else {
    const std::string m = mode.empty() ? "float" : mode;
    quant::LoadedModel& lm = *loaded;
    if (ds.num_classes() != lm.model->config().num_classes)
      throw std::runtime_error("the data set has " + std::to_string(ds.num_classes()) + " classes, the model " +
                               std::to_string(lm.model->config().num_classes));
    const auto [weights, biases] = folded_parameter_counts(*lm.model);
    extra["parameters"] = {{"weights", weights}, {"biases", biases}};
    if (m == "float" || m == "fakequant") {
      if (bn_stats != "none") {
        if (lm.qat) throw UsageError("octet eval: --bn-stats is for float checkpoints; " + path + " is a QAT one");
        const Dataset train = load_dataset(resolve_data_path(data), Split::train, shape);
        nn::BnStatsOptions bo;
        bo.augment = bn_stats == "augmented";
        bo.batch = bn_batch;
        const int64_t n = nn::recompute_bn_stats(*lm.model, train, lm.preprocess, bo);
        std::printf("BN statistics: the average of %lld batches of %d %s training images\n", static_cast<long long>(n),
                    bo.batch, bo.augment ? "augmented" : "clean");
      }
      if (lm.qat) {
        const quant::QuantSwitches sw =
            quant::set_quant_mode(*lm.model, m == "float" ? quant::QuantMode::float32 : quant::QuantMode::fake_quant);
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
      metrics = eval_integer(model, ds, count, batch, with_intsim, m == "engine", &exact, &checked, intsim_images);
    }
  }
  if (!json_path.empty()) {
    nlohmann::ordered_json j = metrics_json(metrics, names);
    j["path"] = path;
    j["mode"] = model_file ? "engine" : (mode.empty() ? "float" : mode);
    j["split"] = split;
    if (with_intsim && exact >= 0 && checked > 0) {
      j["equal_intsim"] = exact;
      j["intsim_images"] = checked;
    }
    for (auto& [k, v] : extra.items()) j[k] = v;
    write_json_atomic(json_path, j);
  }
  std::printf("\n");
  std::fputs(metrics.report(names).c_str(), stdout);
  return 0;
}

}  // namespace octet::app
