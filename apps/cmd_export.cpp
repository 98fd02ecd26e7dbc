// apps/cmd_export.cpp: `octet export CKPT -o MODEL`, a QAT (or PTQ-calibrated)
// checkpoint -> an integer model file for the engine (quant/export.h), and/or
// the same integer model as ONNX (--onnx FILE, quant/onnx_export.h).
#include <cstdio>
#include <string>

#include "apps/args.h"
#include "apps/commands.h"
#include "apps/model_io.h"
#include "core/parallel.h"
#include "quant/export.h"
#include "quant/onnx_export.h"

namespace octet::app {

namespace {
const char* kUsage = R"(usage: octet export CKPT -o MODEL [--onnx FILE] [options]
       octet export CKPT --onnx FILE [options]
       octet export MODEL.oct --onnx FILE [--onnx-form F] [--onnx-activations T]

Turns a checkpoint into an Octet model file (.oct) that the integer engine
runs: BN folded into the convs, the input preprocessing folded into the first
conv (the engine reads raw uint8 pixels), per-channel symmetric weights with
the QAT codes, int32 biases, (M0, shift) for every requantization, and the
accumulator headroom proven for every layer. A QAT checkpoint (octet train
--qat) or a PTQ one (octet calibrate) exports as it is; a float checkpoint is
PTQ-calibrated first (flags below, needs --data).

With --onnx, the same integer model is also (or only) written as ONNX (IR 7,
opset 13, QDQ form): uint8 NHWC pixels "pixels" in, float32 "logits" out,
int8 weights with per-channel scales, int32 biases, every activation as
QuantizeLinear -> DequantizeLinear with the model's own scale and zero point.
--onnx-form integer writes the engine's integer arithmetic itself in ONNX
integer ops instead (ConvInteger, int64 fixed-point requantization): ONNX
Runtime then gives the engine's logits bit for bit, about 10x slower. An
existing model file (.oct) converts to ONNX the same way. Check the ONNX file
in ONNX Runtime against the engine with
  octet eval FILE.onnx --data PATH --against MODEL.oct

options:
  -o, --out MODEL       the model file to write
  --onnx FILE           the ONNX file to write (alone or beside -o MODEL)
  --onnx-form F         qdq (default: what runtimes run in int8 kernels; agrees
                        with the engine to within a step), integer (the engine's
                        arithmetic, bit for bit), or float (the float twin:
                        weights dequantized, activations not quantized)
  --onnx-activations T  uint8 (default: ONNX Runtime runs the QDQ form in
                        integer kernels end to end on x86) or int8; the codes
                        convert exactly
  --name NAME           model name stored in the file (default: the architecture)
  --data PATH           data set for PTQ of a float checkpoint (default: $OCTET_DATA)
  --layers              print the per-layer headroom table
  --threads N
)";
}  // namespace

int cmd_export(int argc, char** argv) {
  Args a(argc, argv, "octet export", std::string(kUsage) + "\n" + PtqFlags::usage());
  if (a.help()) {
    std::fputs(a.usage().c_str(), stdout);
    return 0;
  }
  const std::string out = a.get("--out", "");
  const std::string onnx = a.get("--onnx", "");
  const std::string onnx_form = a.get("--onnx-form", "qdq");
  const std::string onnx_act = a.get("--onnx-activations", "uint8");
  const std::string name = a.get("--name", "");
  const std::string data = a.get("--data", "");
  const bool layers = a.flag("--layers");
  set_num_threads(a.get_int("--threads", 0));
  const PtqFlags ptq = PtqFlags::read(a, data);
  a.finish();
  const std::string ckpt = a.positional_at(0, "the checkpoint (CKPT)");
  if (out.empty() && onnx.empty())
    throw UsageError("octet export: give the file(s) to write: -o MODEL and/or --onnx FILE");
  quant::OnnxOptions oo;
  if (onnx_form == "qdq")
    oo.form = quant::OnnxForm::qdq;
  else if (onnx_form == "integer")
    oo.form = quant::OnnxForm::integer;
  else if (onnx_form == "float")
    oo.form = quant::OnnxForm::float_twin;
  else
    throw UsageError("octet export: --onnx-form must be qdq, integer or float, not '" + onnx_form + "'");
  if (onnx_act != "uint8" && onnx_act != "int8")
    throw UsageError("octet export: --onnx-activations must be uint8 or int8, not '" + onnx_act + "'" +
                     (onnx_act == "float32" ? " (the float twin is --onnx-form float)" : ""));
  oo.activations = onnx_act == "int8" ? engine::DType::int8 : engine::DType::uint8;
  oo.producer_version = OCTET_VERSION_STRING;
  oo.source = ckpt;

  // A model file: only the ONNX conversion (nothing to export again).
  if (ckpt.size() > 4 && ckpt.compare(ckpt.size() - 4, 4, ".oct") == 0) {
    if (!out.empty() || onnx.empty())
      throw UsageError("octet export: " + ckpt + " is a model file already: convert it with --onnx FILE (no -o)");
    const engine::ModelDesc md = engine::read_model_file(ckpt);
    const uint64_t bytes = quant::write_onnx(onnx, md, oo);
    std::printf("wrote %s (%s)\n", onnx.c_str(), human_bytes(bytes).c_str());
    return 0;
  }

  quant::LoadedModel m = load_checkpoint_model(ckpt, /*need_quantized=*/true, ptq);
  quant::ExportOptions opt;
  opt.model_name = name;
  opt.class_names = checkpoint_class_names(m.checkpoint);
  if (static_cast<int>(opt.class_names.size()) != m.model->config().num_classes) opt.class_names.clear();
  const quant::ExportResult r = quant::export_model(m, opt);
  if (!out.empty()) {
    r.builder.write(out);
    std::printf("wrote %s (%s)\n", out.c_str(), human_bytes(r.file_bytes).c_str());
  }
  if (!onnx.empty()) {
    const uint64_t bytes = quant::write_onnx(onnx, r.builder.desc(), oo);
    std::printf("wrote %s (%s)\n", onnx.c_str(), human_bytes(bytes).c_str());
  }
  std::fputs(r.summary().c_str(), stdout);
  if (layers) {
    std::printf("\n%-24s %-16s %6s %5s %6s %6s %12s %12s %6s\n", "layer", "op", "K", "bits", "max|w|", "max|x|", "max|bias|",
                "bound", "spare");
    for (const quant::LayerHeadroom& h : r.headroom)
      std::printf("%-24s %-16s %6lld %5d %6d %6d %12lld %12lld %6.1f\n", h.name.c_str(), h.kind.c_str(),
                  static_cast<long long>(h.k), h.weight_bits, h.max_w, h.max_x, static_cast<long long>(h.max_bias),
                  static_cast<long long>(h.bound), h.spare_bits());
  }
  return 0;
}

}  // namespace octet::app
