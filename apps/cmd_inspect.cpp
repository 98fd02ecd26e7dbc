// apps/cmd_inspect.cpp: `octet inspect MODEL`: everything an Octet model file
// holds, layer by layer: shapes, bitwidths, scales, zero points, clamps,
// (M0, shift), biases, and the accumulator headroom proof.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "apps/args.h"
#include "apps/commands.h"
#include "apps/model_io.h"
#include "core/plot.h"
#include "engine/engine.h"
#include "quant/analysis.h"
#include "quant/export.h"

namespace octet::app {

namespace {
const char* kUsage = R"(usage: octet inspect MODEL [--channels] [--metadata] [--histograms DIR] [--rounding]

Prints each op of an Octet model file: its input and output tensors (shape,
dtype, scale, zero point), the output clamp, and for conv / fully connected
layers the weight bits, per-channel scales, (M0, shift) and biases, and the
accumulator headroom proof K * max|w| * max|x - zp| + |bias| <= 2^31 - 1.
The real multiplier of a channel is M0 * 2^(shift - 31) = s_in * s_w / s_out,
so s_w = M0 * 2^(shift - 31) * s_out / s_in.

  --channels        every output channel's bias, M0, shift and weight scale
  --metadata        all metadata (the QAT configuration, the preprocessing fold)
  --histograms DIR  a PNG histogram of each layer's weight codes: DIR/<layer>.png
  --rounding        per conv / fc, the share of outputs where the engine's two
                    roundings (gemmlowp's MultiplyByQuantizedMultiplier) give
                    another code than one rounding half to even (ONNX's
                    QuantizeLinear): why ONNX Runtime differs by a step
                    (docs/quantization.md section 16)
)";

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ',';
    r += std::to_string(s[i]);
  }
  return r + "]";
}

std::string tensor_str(const engine::TensorDesc& t) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s %s scale %.6g zp %d", engine::dtype_name(t.dtype), shape_str(t.shape).c_str(), t.scale,
                t.zero_point);
  return buf;
}

double real_multiplier(int32_t m0, int32_t shift) { return std::ldexp(static_cast<double>(m0), shift - 31); }

}  // namespace

int cmd_inspect(int argc, char** argv) {
  Args a(argc, argv, "octet inspect", kUsage);
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const bool channels = a.flag("--channels");
  const bool metadata = a.flag("--metadata");
  const std::string hist_dir = a.get("--histograms", "");
  const bool rounding = a.flag("--rounding");
  a.finish();
  const std::string path = a.positional_at(0, "the model file (MODEL)");

  const auto model = engine::Model::load(path);
  const engine::ModelDesc& d = model->desc();
  const std::vector<quant::LayerHeadroom> headroom = quant::headroom_report(d);
  std::printf("%s: model '%s', %zu ops, %zu tensors\n", path.c_str(), model->name().c_str(), d.ops.size(), d.tensors.size());
  std::printf("input  %s (raw pixels, NHWC)\noutput %s (int8 logits)\n", tensor_str(d.tensors[d.input]).c_str(),
              tensor_str(d.tensors[d.output]).c_str());
  std::printf("file %s; packed weights %s; %.2f M multiply-adds and %s of activations per image\n",
              human_bytes(std::filesystem::file_size(path)).c_str(), human_bytes(model->weight_bytes_stored()).c_str(),
              static_cast<double>(model->macs_per_image()) / 1e6, human_bytes(model->activation_bytes_per_image()).c_str());
  if (const std::string* p = d.find_metadata("preprocessing")) std::printf("preprocessing: %s\n", p->c_str());
  if (metadata)
    for (const auto& [k, v] : d.metadata) std::printf("metadata %s:\n%s\n", k.c_str(), v.c_str());
  if (!hist_dir.empty()) std::filesystem::create_directories(hist_dir);

  size_t hi = 0;  // next headroom entry (one per conv/fc, in op order)
  double rounding_sum = 0, rounding_values = 0;  // --rounding: weighted by each layer's outputs
  for (size_t i = 0; i < d.ops.size(); ++i) {
    const engine::OpDesc& op = d.ops[i];
    const auto& p = op.params;
    const engine::TensorDesc& y = d.tensors[op.output];
    std::printf("\n[%zu] %s '%s'\n", i, engine::op_name(op.type), op.name.c_str());
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const engine::TensorDesc& t = d.tensors[op.inputs[k]];
      if (t.constant) continue;
      std::printf("    in   %s\n", tensor_str(t).c_str());
    }
    std::printf("    out  %s\n", tensor_str(y).c_str());
    switch (op.type) {
      case engine::OpType::conv2d:
      case engine::OpType::fully_connected: {
        const bool conv = op.type == engine::OpType::conv2d;
        const engine::TensorDesc& x = d.tensors[op.inputs[0]];
        const engine::TensorDesc& w = d.tensors[op.inputs[1]];
        const std::vector<int32_t>& bias = d.tensors[op.inputs[2]].i32;
        const std::vector<int32_t>& m0 = d.tensors[op.inputs[3]].i32;
        const std::vector<int32_t>& sh = d.tensors[op.inputs[4]].i32;
        const int lo = conv ? p[engine::param::kConvActMin] : p[engine::param::kFcActMin];
        const int hi_c = conv ? p[engine::param::kConvActMax] : p[engine::param::kFcActMax];
        if (conv)
          std::printf("    stride %d pad %d groups %d; ", p[engine::param::kStride], p[engine::param::kPad],
                      p[engine::param::kGroups]);
        else
          std::printf("    ");
        std::printf("clamp [%d, %d]%s\n", lo, hi_c, lo == y.zero_point ? " (ReLU)" : "");
        std::printf("    weights %s, %d bits (%s packed)\n", shape_str(w.shape).c_str(), w.bits,
                    human_bytes(engine::packed_size(static_cast<size_t>(w.numel()), w.bits)).c_str());
        const int out_c = static_cast<int>(w.shape[0]);
        int smin = 99, smax = -99;
        double wmin = 1e300, wmax = 0;
        for (int c = 0; c < out_c; ++c) {
          smin = std::min(smin, sh[size_t(c)]);
          smax = std::max(smax, sh[size_t(c)]);
          const double sw = real_multiplier(m0[size_t(c)], sh[size_t(c)]) * y.scale / x.scale;
          if (m0[size_t(c)] != 0) {
            wmin = std::min(wmin, sw);
            wmax = std::max(wmax, sw);
          }
        }
        std::printf("    requant channel 0: M0 %d shift %d = %.9g = s_in * s_w / s_out; shifts in [%d, %d]\n", m0[0], sh[0],
                    real_multiplier(m0[0], sh[0]), smin, smax);
        std::printf("    weight scales s_w in [%.6g, %.6g]\n", wmin, wmax);
        if (rounding) {
          double share = 0;
          for (int c = 0; c < out_c; ++c) share += quant::double_rounding_share(m0[size_t(c)], sh[size_t(c)]);
          share /= out_c;
          rounding_sum += share * static_cast<double>(y.numel());
          rounding_values += static_cast<double>(y.numel());
          std::printf("    two roundings != one rounding on %.3f%% of outputs\n", 100 * share);
        }
        if (hi < headroom.size() && headroom[hi].name == op.name) {
          const quant::LayerHeadroom& h = headroom[hi++];
          std::printf("    headroom: K %lld * max|w| %d * max|x - zp| %d + max|bias| %lld -> %lld <= 2147483647 (%.1f spare bits)\n",
                      static_cast<long long>(h.k), h.max_w, h.max_x, static_cast<long long>(h.max_bias),
                      static_cast<long long>(h.bound), h.spare_bits());
        }
        if (channels) {
          std::printf("    %5s %12s %11s %6s %14s %14s\n", "ch", "bias", "M0", "shift", "multiplier", "s_w");
          for (int c = 0; c < out_c; ++c)
            std::printf("    %5d %12d %11d %6d %14.9g %14.9g\n", c, bias.empty() ? 0 : bias[size_t(c)], m0[size_t(c)],
                        sh[size_t(c)], real_multiplier(m0[size_t(c)], sh[size_t(c)]),
                        real_multiplier(m0[size_t(c)], sh[size_t(c)]) * y.scale / x.scale);
        }
        if (!hist_dir.empty()) {
          std::vector<double> v(w.i8.begin(), w.i8.end());
          HistogramChart h = make_histogram(std::span<const double>(v), std::min(1 << w.bits, 64),
                                            op.name + " weights (" + std::to_string(w.bits) + "-bit codes)", "code");
          const std::string file = hist_dir + "/" + op.name + ".png";
          write_histogram(file, h);
        }
        break;
      }
      case engine::OpType::add:
        std::printf("    left_shift %d; a: M0 %d shift %d; b: M0 %d shift %d; out: M0 %d shift %d; clamp [%d, %d]%s\n",
                    p[engine::param::kLeftShift], p[engine::param::kAMult], p[engine::param::kAShift], p[engine::param::kBMult],
                    p[engine::param::kBShift], p[engine::param::kOutMult], p[engine::param::kOutShift],
                    p[engine::param::kAddActMin], p[engine::param::kAddActMax],
                    p[engine::param::kAddActMin] == y.zero_point ? " (ReLU)" : "");
        break;
      case engine::OpType::max_pool:
      case engine::OpType::avg_pool:
        std::printf("    kernel %dx%d stride %d pad %d\n", p[engine::param::kPoolKH], p[engine::param::kPoolKW],
                    p[engine::param::kPoolStride], p[engine::param::kPoolPad]);
        break;
      default: break;
    }
  }
  if (!hist_dir.empty()) std::printf("\nweight histograms written to %s/\n", hist_dir.c_str());
  if (rounding && rounding_values > 0)
    std::printf("\nrounding: the engine's two roundings differ from one rounding on %.3f%% of all conv/fc outputs\n",
                100 * rounding_sum / rounding_values);
  const quant::LayerHeadroom* tight = nullptr;
  for (const auto& h : headroom)
    if (!tight || h.spare_bits() < tight->spare_bits()) tight = &h;
  if (tight)
    std::printf("\nheadroom: every conv/fc fits int32; the tightest is '%s' with %.1f spare bits\n", tight->name.c_str(),
                tight->spare_bits());
  return 0;
}

}  // namespace octet::app
