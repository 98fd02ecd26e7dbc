// apps/cmd_compare.cpp: `octet compare CKPT MODEL --data PATH`: where the
// integer model's error comes from, layer by layer (quant/analysis.h), and
// whether the engine and the integer simulation agree bit for bit.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "apps/args.h"
#include "apps/commands.h"
#include "apps/model_io.h"
#include "core/augment.h"
#include "core/dataset.h"
#include "core/parallel.h"
#include "engine/engine.h"
#include "nn/trainer.h"
#include "quant/analysis.h"
#include "quant/export.h"
#include "quant/intsim.h"

namespace octet::app {

namespace {
const char* kUsage = R"(usage: octet compare CKPT MODEL [--data PATH] [--images N] [options]

Runs N test images (default 200, a seeded class-mixed sample) through
  float      the checkpoint with every quantizer off,
  weights    only the weight quantizers on,
  fakequant  the QAT / PTQ forward,
  integer    the model file in the integer simulation (and in the engine),
and prints for every tensor of the model file: the float RMS, SQNR (dB) and
RMSE of each version against float, the RMSE between the integer and the
fake-quant values, and the shares of the integer model's error energy
attributed to weight rounding (%w), activation clipping (%clip), activation
rounding (%round) and the integer model itself (%int: requantization, add
rescale, pool ties, the stem's preprocessing fold) -- see quant/analysis.h. Then each
layer's accumulator headroom, argmax agreement, and the number of images
whose engine logits equal the integer simulation's exactly.

options:
  --data PATH      data set (default: $OCTET_DATA); the test split is used
  --images N       images to compare (default 200)
  --threads N
)";
}  // namespace

int cmd_compare(int argc, char** argv) {
  Args a(argc, argv, "octet compare", std::string(kUsage) + "\n" + PtqFlags::usage());
  if (a.help()) {
    std::fputs(a.usage().c_str(), stdout);
    return 0;
  }
  const std::string data = a.get("--data", "");
  const int images = a.get_int("--images", 200);
  const int threads = a.get_int("--threads", 0);
  const PtqFlags ptq = PtqFlags::read(a, data);
  a.finish();
  const std::string ckpt = a.positional_at(0, "the checkpoint (CKPT)");
  const std::string model_path = a.positional_at(1, "the model file (MODEL)");
  if (images < 1) throw UsageError("octet compare: --images must be >= 1");
  set_num_threads(threads);
  engine::set_num_threads(threads);

  quant::LoadedModel lm = load_checkpoint_model(ckpt, true, ptq);
  const auto model = engine::Model::load(model_path);
  const engine::ModelDesc& md = model->desc();
  const quant::ExportResult r = quant::export_model(lm);
  const engine::ModelDesc& ed = r.builder.desc();

  // ActQuant -> tensor of the MODEL file, by tensor name; check the file is this checkpoint's export.
  std::map<std::string, uint32_t> tensor_of;
  std::map<std::string, std::string> op_of;
  for (const auto& [op, aq] : r.op_output) op_of[aq] = op;
  bool same = md.tensors.size() == ed.tensors.size() && md.ops.size() == ed.ops.size();
  for (size_t i = 0; same && i < md.tensors.size(); ++i)
    same = md.tensors[i].name == ed.tensors[i].name && md.tensors[i].i8 == ed.tensors[i].i8 &&
           md.tensors[i].i32 == ed.tensors[i].i32 && md.tensors[i].zero_point == ed.tensors[i].zero_point;
  for (const auto& [aq, tid] : r.tensor_of_actquant) {
    const std::string& tname = ed.tensors[tid].name;
    for (uint32_t j = 0; j < md.tensors.size(); ++j)
      if (md.tensors[j].name == tname && !md.tensors[j].constant) tensor_of[aq] = j;
  }
  std::printf("model %s: %s\n", model_path.c_str(),
              same ? "identical to the export of the checkpoint (weights, biases, requantization, zero points)"
                   : "DIFFERS from the export of the checkpoint: layers are matched by tensor name");

  const Dataset all = load_dataset(resolve_data_path(data), Split::test);
  const Dataset ds = images < all.size() ? nn::take_subset(all, images, 0) : all;  // class-mixed
  const int64_t n = ds.size();
  if (ds.channels != model->input_c() || ds.height != model->input_h() || ds.width != model->input_w())
    throw std::runtime_error("the data set's image size differs from the model's input");
  const size_t per = static_cast<size_t>(ds.image_numel());
  Tensor x = Tensor::empty({n, ds.channels, ds.height, ds.width});
  for (int64_t i = 0; i < n; ++i)
    preprocess_image(ds.image(i), x.data() + i * static_cast<int64_t>(per), ds.channels, ds.height, ds.width, lm.preprocess);
  const std::vector<uint8_t> px = images_nhwc(ds, 0, n);

  const quant::IntSim sim(md);
  std::printf("comparing %lld test images (class-mixed sample) of %s\n\n", static_cast<long long>(n), ds.source.c_str());
  std::fflush(stdout);
  const quant::Comparison c = quant::compare_layers(*lm.model, sim, tensor_of, op_of, x, px.data());
  std::fputs(quant::format_comparison(c).c_str(), stdout);

  // Engine vs integer simulation, and accuracy on these images.
  engine::Session session(model, 100);
  int64_t exact = 0, hits = 0;
  const int classes = model->num_classes();
  for (int64_t start = 0; start < n; start += 100) {
    const int b = static_cast<int>(std::min<int64_t>(100, n - start));
    const std::span<const int8_t> e = session.run(px.data() + start * per, b);
    const std::vector<int8_t> s = sim.run(px.data() + start * per, b);
    for (int i = 0; i < b; ++i) {
      exact += std::equal(s.begin() + i * classes, s.begin() + (i + 1) * classes, e.begin() + i * classes);
      hits += engine::argmax(e.subspan(static_cast<size_t>(i * classes), static_cast<size_t>(classes))) ==
              ds.labels[static_cast<size_t>(start + i)];
    }
  }
  std::printf("engine top-1 on these images: %.2f%%\n", 100.0 * static_cast<double>(hits) / static_cast<double>(n));
  std::printf("engine == integer simulation (int8 logits, bit for bit): %lld of %lld images\n\n",
              static_cast<long long>(exact), static_cast<long long>(n));

  std::printf("%-24s %6s %5s %6s %6s %12s %12s %6s\n", "accumulator headroom", "K", "bits", "max|w|", "max|x|", "max|bias|",
              "bound", "spare");
  for (const quant::LayerHeadroom& h : quant::headroom_report(md))
    std::printf("%-24s %6lld %5d %6d %6d %12lld %12lld %6.1f\n", h.name.c_str(), static_cast<long long>(h.k), h.weight_bits,
                h.max_w, h.max_x, static_cast<long long>(h.max_bias), static_cast<long long>(h.bound), h.spare_bits());
  return exact == n ? 0 : 1;
}

}  // namespace octet::app
