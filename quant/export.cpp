// quant/export.cpp: prepared ResNet -> engine model (see export.h).
// Over 600 lines: the Exporter is one sequence of named steps (export.h lists
// them) that share the builder and the ActQuant -> tensor map; each step is
// short, and splitting them across files would scatter that one state.
#include "quant/export.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "core/tensor.h"
#include "engine/fixedpoint.h"

namespace octet::quant {

namespace {

using engine::DType;
using engine::OpType;
namespace param = engine::param;

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

template <class... A>
std::string cat(const A&... a) {
  std::ostringstream s;
  s.precision(6);
  (s << ... << a);
  return s.str();
}

[[noreturn]] void refuse(const std::string& layer, const std::string& why) {
  throw ExportError("export: layer '" + layer + "': " + why);
}

// The engine dtype of an activation grid, or a refusal.
DType dtype_of(const QuantParams& p, const std::string& layer) {
  if (p.qmin >= 0 && p.qmax <= 255) return DType::uint8;
  if (p.qmin >= -128 && p.qmax <= 127) return DType::int8;
  refuse(layer, cat("activation codes [", p.qmin, ", ", p.qmax,
                    "] do not fit 8 bits (the engine holds activations as int8 or uint8)"));
}

engine::OutQuant out_quant(const QuantParams& p, const std::string& layer) {
  if (!(p.scale > 0) || !std::isfinite(p.scale)) refuse(layer, cat("output scale ", p.scale, " is not a positive number"));
  return {static_cast<double>(p.scale), static_cast<int32_t>(p.zero_point), dtype_of(p, layer)};
}

// The clamp of an op's output, passed to the builder with the op: the grid's
// codes [qmin, qmax] (so a 4-bit grid stays 4-bit), from the zero point up
// when a ReLU is fused.
engine::Clamp clamp_of(const QuantParams& p, bool relu) {
  const int32_t lo = static_cast<int32_t>(relu ? std::max<int64_t>(p.qmin, p.zero_point) : p.qmin);
  return {lo, static_cast<int32_t>(p.qmax)};
}

// Integer codes of a weight tensor [Cout, ...] from its fake-quantized values
// y (exactly on the grids p[c]) and checks the engine's rules.
struct IntWeights {
  std::vector<int8_t> codes;  // same layout as y
  std::vector<double> scales;
  int bits = 8;
};
IntWeights weight_codes(const Tensor& y, const std::vector<QuantParams>& p, int bits, const std::string& layer) {
  const int64_t out_c = y.dim(0);
  const int64_t per = y.numel() / out_c;
  if (static_cast<int64_t>(p.size()) != out_c)
    refuse(layer, cat("weight quantizer has ", p.size(), " grids for ", out_c, " output channels"));
  if (bits < 2 || bits > 8) refuse(layer, cat(bits, "-bit weights: the engine stores weights in 2..8 bits"));
  const int64_t lo = -(int64_t{1} << (bits - 1)), hi = (int64_t{1} << (bits - 1)) - 1;
  IntWeights w;
  w.bits = bits;
  w.codes.resize(static_cast<size_t>(y.numel()));
  const float* yd = y.data();
  for (int64_t c = 0; c < out_c; ++c) {
    const QuantParams& g = p[static_cast<size_t>(c)];
    if (g.zero_point != 0)
      refuse(layer, cat("channel ", c, " weight zero point is ", g.zero_point,
                        ": the engine needs symmetric weights (QatConfig symmetric_weights)"));
    if (g.qmin < lo || g.qmax > hi)
      refuse(layer, cat("channel ", c, " weight codes [", g.qmin, ", ", g.qmax, "] do not fit ", bits, " bits"));
    w.scales.push_back(g.scale);
    for (int64_t i = 0; i < per; ++i) {
      const float v = yd[c * per + i];
      if (!std::isfinite(v)) refuse(layer, cat("weight ", c * per + i, " is not finite"));
      w.codes[static_cast<size_t>(c * per + i)] = static_cast<int8_t>(quantize(v, g, RoundMode::half_to_even));
    }
  }
  return w;
}

// [Cout, Cin, KH, KW] -> [Cout, KH, KW, Cin].
std::vector<int8_t> to_ohwi(const std::vector<int8_t>& oihw, int out_c, int in_c, int kh, int kw) {
  std::vector<int8_t> r(oihw.size());
  for (int o = 0; o < out_c; ++o)
    for (int i = 0; i < in_c; ++i)
      for (int y = 0; y < kh; ++y)
        for (int x = 0; x < kw; ++x)
          r[((static_cast<size_t>(o) * kh + y) * kw + x) * in_c + i] = oihw[((static_cast<size_t>(o) * in_c + i) * kh + y) * kw + x];
  return r;
}

std::vector<int32_t> bias_codes(const std::vector<double>& b, double s_in, const std::vector<double>& s_w,
                                const std::string& layer) {
  std::vector<int32_t> q(b.size());
  for (size_t c = 0; c < b.size(); ++c) {
    const double s = s_in * s_w[c];
    if (!std::isfinite(b[c])) refuse(layer, cat("bias of channel ", c, " is not finite"));
    const double v = std::round(b[c] / s);  // ties away from zero
    if (!(std::fabs(v) <= static_cast<double>(kInt32Max)))
      refuse(layer, cat("bias of channel ", c, " (", b[c], ") at scale s_in * s_w = ", s, " is ", v,
                        " steps: outside int32 (the channel's weights are tiny next to its bias)"));
    q[c] = static_cast<int32_t>(v);
  }
  return q;
}

// A weight quantizer's forward with fake quant switched on: the exact values
// QAT used (or, for a model trained without weight fake quant, the float weights).
Tensor fake_quantized(WeightQuant& wq, const Tensor& w) {
  const bool was = wq.fake_quant_enabled();
  wq.set_fake_quant(true);
  Tensor y = wq.forward(w);
  wq.set_fake_quant(was);
  return y.clone();
}

std::vector<double> to_double(const Tensor& t) {
  std::vector<double> r(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) r[static_cast<size_t>(i)] = t.data()[i];
  return r;
}


}  // namespace

// ---- headroom ---------------------------------------------------------------

double LayerHeadroom::spare_bits() const {
  return bound > 0 ? std::log2(static_cast<double>(kInt32Max) / static_cast<double>(bound)) : 31.0;
}

std::vector<LayerHeadroom> headroom_report(const engine::ModelDesc& m) {
  // The range each activation can hold, in its dtype's domain (as the loader reasons).
  std::vector<std::pair<int64_t, int64_t>> range(m.tensors.size(), {-128, 127});
  std::vector<LayerHeadroom> out;
  for (const engine::OpDesc& op : m.ops) {
    const auto& p = op.params;
    auto& r = range.at(op.output);
    switch (op.type) {
      case OpType::input: r = {-128, 127}; break;
      case OpType::conv2d:
      case OpType::fully_connected: {
        const bool conv = op.type == OpType::conv2d;
        const engine::TensorDesc& x = m.tensors.at(op.inputs[0]);
        const engine::TensorDesc& w = m.tensors.at(op.inputs[1]);
        const std::vector<int32_t>& bias = m.tensors.at(op.inputs[2]).i32;
        const auto [lo, hi] = range.at(op.inputs[0]);
        LayerHeadroom h;
        h.name = op.name;
        h.kind = engine::op_name(op.type);
        h.weight_bits = w.bits;
        h.max_x = static_cast<int32_t>(std::max(std::abs(lo - x.zero_point), std::abs(hi - x.zero_point)));
        const int64_t out_c = w.shape[0];
        h.k = w.numel() / out_c;
        for (int64_t c = 0; c < out_c; ++c) {
          int32_t mw = 0;
          for (int64_t i = 0; i < h.k; ++i) mw = std::max<int32_t>(mw, std::abs(static_cast<int32_t>(w.i8[static_cast<size_t>(c * h.k + i)])));
          const int64_t b = bias.empty() ? 0 : std::abs(static_cast<int64_t>(bias[static_cast<size_t>(c)]));
          h.max_w = std::max(h.max_w, mw);
          h.max_bias = std::max(h.max_bias, b);
          h.bound = std::max(h.bound, h.k * mw * h.max_x + b);
        }
        out.push_back(h);
        r = {conv ? p[param::kConvActMin] : p[param::kFcActMin], conv ? p[param::kConvActMax] : p[param::kFcActMax]};
        break;
      }
      case OpType::add: r = {p[param::kAddActMin], p[param::kAddActMax]}; break;
      case OpType::max_pool:
      case OpType::avg_pool:
      case OpType::global_avg_pool: r = range.at(op.inputs[0]); break;
    }
  }
  return out;
}

uint64_t float_weight_bytes(const nn::ResNetConfig& config) {
  Rng rng(0);
  nn::ResNet m(config, rng);
  return static_cast<uint64_t>(m.num_parameters()) * 4;
}

std::string ExportResult::summary() const {
  std::ostringstream s;
  const auto pct = [&](uint64_t v) { return float_weight_bytes ? 100.0 * static_cast<double>(v) / static_cast<double>(float_weight_bytes) : 0.0; };
  char line[256];
  std::snprintf(line, sizeof line, "model file   %10llu bytes = %.4fx the float weights (%llu bytes, 4 per parameter)\n",
                static_cast<unsigned long long>(file_bytes), pct(file_bytes) / 100, static_cast<unsigned long long>(float_weight_bytes));
  s << line;
  std::snprintf(line, sizeof line, "  weights    %10llu bytes packed (%.1f%%)\n", static_cast<unsigned long long>(weight_bytes),
                pct(weight_bytes));
  s << line;
  std::snprintf(line, sizeof line, "input        uint8 pixels, real = %.6g * (pixel - %d); padding pixel %d preprocesses to (",
                input_scale, input_zero_point, input_zero_point);
  s << line;
  for (size_t c = 0; c < padding_value.size(); ++c) s << (c ? ", " : "") << padding_value[c];
  s << ")\n";
  std::snprintf(line, sizeof line, "             border error of the stem: at most %.3g output steps at a corner\n", border_error_steps);
  s << line;
  const LayerHeadroom* tight = nullptr;
  for (const LayerHeadroom& h : headroom)
    if (!tight || h.spare_bits() < tight->spare_bits()) tight = &h;
  if (tight) {
    std::snprintf(line, sizeof line, "headroom     every conv/fc proven; tightest '%s': %lld <= 2^31 - 1 (%.1f spare bits)\n",
                  tight->name.c_str(), static_cast<long long>(tight->bound), tight->spare_bits());
    s << line;
  }
  for (const std::string& n : notes) s << "note: " << n << "\n";
  return s.str();
}

// ---- the exporter ---------------------------------------------------------------

namespace {

// One export in progress: the model and its settings, the result being filled
// (its builder), and the engine tensor of each ActQuant produced so far.
// export_model calls the steps below in order; each adds its ops to the
// builder and refuses (ExportError naming the layer) what the engine cannot run.
struct Exporter {
  nn::ResNet& model;
  const QatConfig& config;
  const Preprocess& pre;
  const ExportOptions& opt;
  const nn::ResNetConfig& rc;
  ExportResult R;
  engine::ModelBuilder& b;                             // R.builder
  std::map<const ActQuant*, std::string> aq_name;      // every ActQuant's dotted name
  std::map<const ActQuant*, engine::TensorId> tensor;  // its engine tensor, once an op produced it
  engine::TensorId pixels;                             // the input's int8 tensor, which the stem reads
  bool uniform = true;                                 // a[c] is the same in every channel
  uint64_t weight_bytes = 0;                           // packed weights so far

  Exporter(nn::ResNet& m, const QatConfig& c, const Preprocess& p, const ExportOptions& o)
      : model(m), config(c), pre(p), opt(o), rc(m.config()), b(R.builder) {
    R.builder = engine::ModelBuilder(opt.model_name.empty() ? rc.name : opt.model_name);
    for (auto& [name, aq] : act_quants(model)) aq_name[aq] = name;
  }

  std::string name_of(const ActQuant* a) const {
    auto it = aq_name.find(a);
    return it == aq_name.end() ? std::string("?") : it->second;
  }
  engine::TensorId tensor_for(const ActQuant* a, const std::string& layer) const {
    auto it = tensor.find(a);
    if (it == tensor.end()) refuse(layer, "its input '" + name_of(a) + "' is not produced by an earlier op");
    return it->second;
  }
  void record(const ActQuant* a, engine::TensorId t, const std::string& op) {
    tensor[a] = t;
    R.tensor_of_actquant[name_of(a)] = t.id;
    R.op_output.emplace_back(op, name_of(a));
  }
  QuantParams grid(const ActQuant* a, const std::string& layer) const {
    if (!a) refuse(layer, "has no output quantizer");
    if (!a->has_range()) refuse(layer, "output '" + name_of(a) + "' has no range (never observed or calibrated)");
    return a->params();
  }
  double scale_of(engine::TensorId t) const { return b.desc().tensors[t.id].scale; }

  // The input: uint8 pixels, real = s_px * (pixel - z), of opt's height and
  // width (32x32 when unset) and the model's channels. Picks the z that
  // minimizes max_c |a[c] z + o[c]| (the preprocessed value the engine pads
  // with, e[c]; export.h) and s_px = max_c a[c]; with one channel (gray) the
  // fold is that of any channel. Checks: the preprocessing has the model's
  // channel count (and opt's, when set), positive, finite scales, a size >= 1.
  void input() {
    const int C = pre.channels();
    if (C != rc.in_channels) refuse("input", cat("preprocessing has ", C, " channels, the model ", rc.in_channels));
    if (opt.input_c != 0 && opt.input_c != rc.in_channels)
      refuse("input", cat("the input is to have ", opt.input_c, " channels, but the model's stem takes ", rc.in_channels));
    const int H = opt.input_h ? opt.input_h : 32, W = opt.input_w ? opt.input_w : 32;
    if (H < 1 || W < 1) refuse("input", cat("input size ", W, "x", H, " is not positive"));
    int best_z = 0;
    double best_e = std::numeric_limits<double>::infinity();
    for (int z = 0; z < 256; ++z) {
      double e = 0;
      for (int c = 0; c < C; ++c) e = std::max(e, std::fabs(double(pre.scale[size_t(c)]) * z + double(pre.offset[size_t(c)])));
      if (e < best_e) {
        best_e = e;
        best_z = z;
      }
    }
    double s_px = 0;
    for (int c = 0; c < C; ++c) {
      if (!(pre.scale[size_t(c)] > 0) || !std::isfinite(pre.scale[size_t(c)]))
        refuse("input", cat("preprocessing scale of channel ", c, " is ", pre.scale[size_t(c)]));
      uniform = uniform && pre.scale[size_t(c)] == pre.scale[0];
      s_px = std::max(s_px, double(pre.scale[size_t(c)]));
    }
    R.input_zero_point = best_z;
    R.input_scale = s_px;
    for (int c = 0; c < C; ++c) R.padding_value.push_back(double(pre.scale[size_t(c)]) * best_z + double(pre.offset[size_t(c)]));
    pixels = b.add_input("image", H, W, C, s_px, best_z);
  }

  // The stem's weight codes (conv() calls it for the conv that reads the
  // pixels): folds the preprocessing, w' = w * a[c] / s_px and
  // bias[o] += sum_{c,kh,kw} w * e[c], and records the worst border error (the
  // top-left corner's padded taps, in output steps). With the same a[c] in
  // every channel the codes are the QAT codes, unchanged; otherwise the folded
  // weights are requantized per output channel at the same bits (a note).
  // Checks: as weight_codes.
  IntWeights stem_weights(const QuantEdge& e, const Tensor& y, const std::vector<QuantParams>& wp,
                          const QuantParams& og, std::vector<double>& bias) {
    ConvBn& cb = *e.conv;
    const int out_c = cb.out_channels, in_c = cb.in_channels, k = cb.kernel;
    if (cb.input_quant() && cb.input_quant()->fake_quant_enabled())
      R.notes.push_back("'" + e.name + "': the model fake-quantized its (preprocessed) input; the engine "
                        "reads exact pixels instead, so it skips that rounding");
    const double* ev = R.padding_value.data();
    const float* yd = y.data();
    std::vector<double> corner(static_cast<size_t>(out_c), 0.0);
    for (int o = 0; o < out_c; ++o)
      for (int c = 0; c < in_c; ++c)
        for (int kh = 0; kh < k; ++kh)
          for (int kw = 0; kw < k; ++kw) {
            const double w = yd[((static_cast<size_t>(o) * in_c + c) * k + kh) * k + kw];
            bias[size_t(o)] += w * ev[c];
            if (kh < cb.pad || kw < cb.pad) corner[size_t(o)] += std::fabs(w * ev[c]);  // padded at the top-left corner
          }
    for (int o = 0; o < out_c; ++o) R.border_error_steps = std::max(R.border_error_steps, corner[size_t(o)] / og.scale);
    if (uniform) return weight_codes(y, wp, cb.weight_bits(), e.name);  // the QAT codes, unchanged

    // Per-channel a[c]: requantize w * a[c] / s_px per output channel, same bits and code range.
    Tensor y2 = y.clone();
    float* d = y2.data();
    std::vector<QuantParams> wp2 = wp;
    for (int o = 0; o < out_c; ++o) {
      double mx = 0;
      for (int c = 0; c < in_c; ++c)
        for (int t = 0; t < k * k; ++t) {
          float& v = d[(static_cast<size_t>(o) * in_c + c) * k * k + t];
          v = static_cast<float>(v * double(pre.scale[size_t(c)]) / R.input_scale);
          mx = std::max(mx, std::fabs(double(v)));
        }
      QuantParams& g = wp2[size_t(o)];
      g.zero_point = 0;
      g.scale = mx > 0 ? static_cast<float>(mx / static_cast<double>(g.qmax)) : 1.0f;
      for (int t = 0; t < in_c * k * k; ++t) {
        float& v = d[static_cast<size_t>(o) * in_c * k * k + t];
        v = static_cast<float>(std::clamp<double>(std::nearbyint(v / g.scale), g.qmin, g.qmax) * g.scale);
      }
    }
    IntWeights iw = weight_codes(y2, wp2, cb.weight_bits(), e.name);
    R.stem_requantized = true;
    R.notes.push_back("'" + e.name + "': the preprocessing scales differ per channel (" +
                      std::string(preprocess_name(pre.mode)) +
                      "), so the stem's folded weights were requantized per output channel "
                      "(same bits); its codes differ from the QAT codes");
    return iw;
  }

  // A conv (ConvBn): the folded weight through the model's own weight
  // quantizer gives the codes QAT trained, relaid out [Cout][KH][KW][Cin];
  // bias_q = round(b_fold / (s_in * s_w)); the op clamps to the output grid
  // (clamp_of). The stem (no input ActQuant) reads the pixels and folds the
  // preprocessing first (stem_weights). Checks: the output grid, the weight
  // codes (weight_codes), the bias in int32 (bias_codes).
  void conv(const QuantEdge& e) {
    ConvBn& cb = *e.conv;
    const QuantParams og = grid(e.output, e.name);
    const bool is_stem = e.input == nullptr;
    const engine::TensorId x = is_stem ? pixels : tensor_for(e.input, e.name);
    const Tensor y = fake_quantized(cb.weight_quant(), cb.folded_weight());
    const std::vector<QuantParams> wp = cb.weight_params();
    std::vector<double> bias = to_double(cb.folded_bias());
    const IntWeights iw = is_stem ? stem_weights(e, y, wp, og, bias) : weight_codes(y, wp, cb.weight_bits(), e.name);
    engine::Weights w;
    w.values = to_ohwi(iw.codes, cb.out_channels, cb.in_channels, cb.kernel, cb.kernel);
    w.out_c = cb.out_channels;
    w.kernel_h = w.kernel_w = cb.kernel;
    w.in_c = cb.in_channels;
    w.scales = iw.scales;
    w.bits = iw.bits;
    weight_bytes += engine::packed_size(w.values.size(), w.bits);
    const std::vector<int32_t> bq = bias_codes(bias, scale_of(x), iw.scales, e.name);
    record(e.output,
           b.add_conv(e.name, x, w, bq, {.stride = cb.stride, .pad = cb.pad}, out_quant(og, e.name), clamp_of(og, e.relu)),
           e.name);
  }

  // A Linear (the fc): the same from the Linear and its weight quantizer
  // (without one, the float weights on config.weight_bits). Checks: signed
  // int8 logit codes, the input holds in_features values, weights and bias.
  void linear(const QuantEdge& e) {
    nn::Linear& fc = *e.linear;
    const QuantParams og = grid(e.output, e.name);
    if (og.qmin < -128 || og.qmax > 127 || og.qmin >= 0)
      refuse(e.name, cat("logit codes [", og.qmin, ", ", og.qmax, "]: the engine's logits are signed int8"));
    const engine::TensorId x = tensor_for(e.input, e.name);
    auto* wq = dynamic_cast<WeightQuant*>(fc.weight_transform());
    const Tensor y = wq ? fake_quantized(*wq, fc.weight()) : fc.weight().clone();
    const int bits = wq ? wq->spec().bits : config.weight_bits;
    const IntWeights iw = weight_codes(y, linear_weight_params(fc), bits, e.name);
    if (b.shape(x).size() != 1 || b.shape(x)[0] != fc.in_features)
      refuse(e.name, cat("input has ", b.desc().tensors[x.id].numel(), " values, the layer ", fc.in_features));
    engine::Weights w;
    w.values = iw.codes;  // [out, in] already
    w.out_c = fc.out_features;
    w.in_c = fc.in_features;
    w.scales = iw.scales;
    w.bits = iw.bits;
    weight_bytes += engine::packed_size(w.values.size(), w.bits);
    Tensor fb = fc.bias();
    std::vector<double> bias = fb.defined() ? to_double(fb) : std::vector<double>(size_t(fc.out_features), 0.0);
    const std::vector<int32_t> bq = bias_codes(bias, scale_of(x), iw.scales, e.name);
    record(e.output, b.add_fc(e.name, x, w, bq, out_quant(og, e.name), clamp_of(og, e.relu)), e.name);
  }

  // A residual add: TFLite's rescale of the two producers' grids into the
  // output grid (ModelBuilder::add_add); a fused ReLU is the clamp. With
  // Add-input quantizers (QatConfig::add_inputs tied or untied) each input
  // is first requantized onto its slot's grid, as training rounds it there.
  // Checks: the output grid, both inputs produced earlier, the slots' grids.
  void add(const QuantEdge& e) {
    const QuantParams og = grid(e.output, e.name);
    engine::TensorId a = tensor_for(e.input, e.name);
    engine::TensorId c = tensor_for(e.input_b, e.name);
    if (e.add_slot_a) a = requantize(e.add_slot_a, a);
    if (e.add_slot_b) c = requantize(e.add_slot_b, c);
    record(e.output, b.add_add(e.name, a, c, out_quant(og, e.name), clamp_of(og, e.relu)), e.name);
  }

  // x onto the grid of the ActQuant `slot` (an Add-input quantizer, named
  // like "layer1.0.add.input_a"): y = clamp(zp_y + round(M (x - zp_x))) with
  // M = s_x / s_y, the int8 -> int8 requantization of TFLite's QUANTIZE op.
  // The engine needs no op of its own for it: a depthwise 1x1 conv with unit
  // weights (code 1 at scale 1) and no bias computes exactly that, through
  // the same fixed-point requantization as every conv.
  engine::TensorId requantize(const ActQuant* slot, engine::TensorId x) {
    const std::string name = name_of(slot);
    const QuantParams g = grid(slot, name);
    const int channels = static_cast<int>(b.shape(x).back());
    engine::Weights unit;
    unit.values.assign(static_cast<size_t>(channels), 1);
    unit.out_c = channels;
    unit.in_c = 1;
    unit.scales = {1.0};
    const engine::TensorId y =
        b.add_conv(name, x, unit, {}, {.groups = channels}, out_quant(g, name), clamp_of(g, /*relu=*/false));
    record(slot, y, name);
    return y;
  }

  // A pool's input tensor. Checks: the pool's output grid is its input's
  // (engine pools keep their input's grid).
  engine::TensorId pool_input(const QuantEdge& e) const {
    const engine::TensorId x = tensor_for(e.input, e.name);
    const engine::TensorDesc& xt = b.desc().tensors[x.id];
    const QuantParams og = grid(e.output, e.name);
    if (og.zero_point != xt.zero_point || std::fabs(og.scale - xt.scale) > 1e-7 * xt.scale)
      refuse(e.name, cat("output grid (scale ", og.scale, ", zero point ", og.zero_point, ") differs from its input's (",
                         xt.scale, ", ", xt.zero_point, "): engine pools keep their input's grid"));
    return x;
  }

  // A max pool: the MaxPool2d's kernel, stride and padding. Checks: pool_input,
  // the module is a MaxPool2d.
  void max_pool(const QuantEdge& e) {
    const engine::TensorId x = pool_input(e);
    auto* mp = dynamic_cast<nn::MaxPool2d*>(&model.find(e.name));
    if (!mp) refuse(e.name, "is not a MaxPool2d");
    record(e.output, b.add_pool(e.name, x, engine::ModelBuilder::Pool::max, mp->kernel, mp->stride, mp->pad), e.name);
  }

  // An average pool: global ([H,W,C] -> [C]) or an AvgPool2d's window.
  // Checks: pool_input, the module is one of the two.
  void avg_pool(const QuantEdge& e) {
    const engine::TensorId x = pool_input(e);
    nn::Module& m = model.find(e.name);
    engine::TensorId out;
    if (dynamic_cast<nn::GlobalAvgPool*>(&m)) {
      out = b.add_global_avg_pool(e.name, x);
    } else if (auto* ap = dynamic_cast<nn::AvgPool2d*>(&m)) {
      out = b.add_pool(e.name, x, engine::ModelBuilder::Pool::avg, ap->kernel, ap->stride, ap->pad);
    } else {
      refuse(e.name, "is neither a GlobalAvgPool nor an AvgPool2d");
    }
    record(e.output, out, e.name);
  }

  // The logits: the last op's output. Checks: the model has layers.
  void output() {
    if (R.op_output.empty()) refuse(rc.name, "has no layers");
    b.set_output(engine::TensorId{b.desc().ops.back().output});
  }

  // The metadata, in this order: class names, the preprocessing that was
  // folded (and the padding pixel), the QAT configuration (the grid keys and
  // what differs from the defaults), then opt.metadata. Checks: one class
  // name per class.
  void metadata() {
    if (!opt.class_names.empty()) {
      if (static_cast<int>(opt.class_names.size()) != rc.num_classes)
        refuse("fc", cat(opt.class_names.size(), " class names for ", rc.num_classes, " classes"));
      b.set_class_names(opt.class_names);
    }
    const int C = pre.channels();
    std::ostringstream p;
    p.precision(6);
    p << preprocess_name(pre.mode) << ": x = pixel * (";
    for (int c = 0; c < C; ++c) p << (c ? "," : "") << pre.scale[size_t(c)];
    p << ") + (";
    for (int c = 0; c < C; ++c) p << (c ? "," : "") << pre.offset[size_t(c)];
    p << "), folded into the first conv; pads with pixel " << R.input_zero_point << " (x = ";
    for (int c = 0; c < C; ++c) p << (c ? "," : "") << R.padding_value[size_t(c)];
    p << ")";
    b.set_preprocessing(p.str());

    const auto kv = config.to_kv(), defaults = QatConfig{}.to_kv();
    std::string q;
    for (const auto& [k, v] : kv) {
      auto d = defaults.find(k);
      const bool key = k == "op" || k == "weight_bits" || k == "act_bits" || k == "round";
      if (!key && d != defaults.end() && d->second == v) continue;
      q += (q.empty() ? "" : "; ") + k + "=" + v;
    }
    b.set_metadata("qat_config", q + " (other keys: defaults)");
    for (const auto& [k, v] : opt.metadata) b.set_metadata(k, v);
  }

  // The headroom proof of every conv and fc (headroom_report), refused with
  // the layer's numbers when K * max|w| * max|x - zp| + |bias| > 2^31 - 1
  // (the reader checks it again).
  void prove_headroom() {
    R.headroom = headroom_report(b.desc());
    for (const LayerHeadroom& h : R.headroom)
      if (h.bound > kInt32Max)
        refuse(h.name, cat("accumulator headroom: K * max|w| * max|x - zp| + |bias| = ", h.k, " * ", h.max_w, " * ", h.max_x,
                           " + ", h.max_bias, " (at most) = ", h.bound, " > 2^31 - 1"));
  }

  // Serializes once through the engine's own reader (a refusal is an
  // ExportError), then the sizes and the border note.
  void serialize() {
    std::vector<uint8_t> bytes;
    try {
      bytes = b.serialize();
    } catch (const engine::FormatError& err) {
      throw ExportError(std::string("export: the engine's reader refuses the result: ") + err.what());
    }
    R.file_bytes = bytes.size();
    R.weight_bytes = weight_bytes;
    R.float_weight_bytes = float_weight_bytes(rc);
    if (R.border_error_steps > 0.5)
      R.notes.push_back(cat("the stem's border pixels differ from the float model's zero padding by up to ",
                            R.border_error_steps, " output steps (", preprocess_name(pre.mode),
                            " preprocessing has no integer pixel that maps to 0 in every channel)"));
  }
};

}  // namespace

ExportResult export_model(nn::ResNet& model, const QatConfig& config, const Preprocess& pre, const ExportOptions& opt) {
  if (!is_prepared(model)) throw std::logic_error("export_model: the model is not prepared (QAT or PTQ)");
  model.eval();
  NoGradGuard no_grad;
  Exporter ex(model, config, pre, opt);
  ex.input();  // uint8 pixels in; the pad pixel z
  for (const QuantEdge& e : quant_edges(model)) {  // the layers, in forward order
    switch (e.kind) {
      case QuantEdge::Kind::conv: ex.conv(e); break;  // the stem (no input) folds the preprocessing: stem_weights
      case QuantEdge::Kind::linear: ex.linear(e); break;
      case QuantEdge::Kind::add: ex.add(e); break;
      case QuantEdge::Kind::max_pool: ex.max_pool(e); break;
      case QuantEdge::Kind::avg_pool: ex.avg_pool(e); break;
    }
  }
  ex.output();
  ex.metadata();
  ex.prove_headroom();
  ex.serialize();
  return std::move(ex.R);
}

ExportResult export_model(LoadedModel& loaded, ExportOptions opt) {
  if (!loaded.qat) throw ExportError("export: '" + loaded.checkpoint.source +
                                     "' is a float checkpoint: calibrate it first (PTQ) or train with --qat");
  const Checkpoint& ck = loaded.checkpoint;
  if (opt.class_names.empty()) {
    const std::string names = ck.get("class_names", "");
    std::string cur;
    for (char ch : names + ",") {
      if (ch == ',') {
        if (!cur.empty()) opt.class_names.push_back(cur);
        cur.clear();
      } else {
        cur += ch;
      }
    }
    if (static_cast<int>(opt.class_names.size()) != loaded.model->config().num_classes) opt.class_names.clear();
  }
  // The input the model was trained on (older checkpoints: 32x32, 3 channels).
  if (opt.input_h == 0) opt.input_h = loaded.input.height;
  if (opt.input_w == 0) opt.input_w = loaded.input.width;
  if (opt.input_c == 0) opt.input_c = loaded.input.channels;
  if (!ck.source.empty()) opt.metadata.emplace_back("source_checkpoint", ck.source);
  return export_model(*loaded.model, *loaded.qat, loaded.preprocess, opt);
}

}  // namespace octet::quant
