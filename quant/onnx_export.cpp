// quant/onnx_export.cpp: engine model -> ONNX (see onnx_export.h). The
// Exporter walks the engine's ops in order and appends ONNX nodes and
// initializers (plain structs); serialize() turns them into the protobuf
// bytes of a ModelProto (quant/protobuf.h).
#include "quant/onnx_export.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <sstream>
#include <type_traits>
#include <utility>

#include "engine/builder.h"
#include "quant/protobuf.h"

namespace octet::quant {

namespace {

using engine::DType;
using engine::OpDesc;
using engine::OpType;
using engine::TensorDesc;
namespace param = engine::param;

// ---- the parts of onnx/onnx.proto this file writes ----------------------------

namespace onnx {
constexpr int64_t kIrVersion = 7;
constexpr int64_t kOpset = 13;
constexpr int32_t kFloat = 1, kUint8 = 2, kInt8 = 3, kInt32 = 6, kInt64 = 7, kDouble = 11;  // TensorProto.DataType values
constexpr int32_t kAttrInt = 2, kAttrInts = 7;                   // AttributeProto.AttributeType values
// Field numbers, one namespace per message.
namespace model {
constexpr uint32_t kIrVersion = 1, kProducerName = 2, kProducerVersion = 3, kDocString = 6, kGraph = 7,
                   kOpsetImport = 8, kMetadataProps = 14;
}
namespace opset_id { constexpr uint32_t kVersion = 2; }            // OperatorSetIdProto (domain 1: "", the default)
namespace entry { constexpr uint32_t kKey = 1, kValue = 2; }      // StringStringEntryProto
namespace graph { constexpr uint32_t kNode = 1, kName = 2, kInitializer = 5, kInput = 11, kOutput = 12; }
namespace node { constexpr uint32_t kInput = 1, kOutput = 2, kName = 3, kOpType = 4, kAttribute = 5; }
namespace attr { constexpr uint32_t kName = 1, kI = 3, kInts = 8, kType = 20; }
namespace tensor { constexpr uint32_t kDims = 1, kDataType = 2, kFloatData = 4, kName = 8, kRawData = 9; }
namespace value_info { constexpr uint32_t kName = 1, kType = 2; }
namespace type_proto { constexpr uint32_t kTensorType = 1; }
namespace tensor_type { constexpr uint32_t kElemType = 1, kShape = 2; }  // TypeProto.Tensor
namespace shape { constexpr uint32_t kDim = 1; }                       // TensorShapeProto
namespace dim { constexpr uint32_t kValue = 1, kParam = 2; }           // TensorShapeProto.Dimension
}  // namespace onnx

// The graph's input and output names, fixed by the contract (onnx_export.h).
const char* const kPixels = "pixels";
const char* const kLogits = "logits";

// ---- the graph, before it becomes bytes ------------------------------------------

struct Attribute {
  std::string name;
  int32_t type = onnx::kAttrInt;
  int64_t i = 0;              // kAttrInt
  std::vector<int64_t> ints;  // kAttrInts
};
Attribute attr_int(const std::string& name, int64_t v) { return {name, onnx::kAttrInt, v, {}}; }
Attribute attr_ints(const std::string& name, std::vector<int64_t> v) { return {name, onnx::kAttrInts, 0, std::move(v)}; }

struct Node {
  std::string op_type;
  std::string name;  // the name of its output: unique, since values are
  std::vector<std::string> inputs, outputs;
  std::vector<Attribute> attributes;
};

struct Initializer {
  std::string name;
  int32_t data_type = onnx::kFloat;
  std::vector<int64_t> dims;  // empty: a scalar
  std::vector<uint8_t> raw;   // integer types: little-endian raw_data
  std::vector<float> floats;  // kFloat: float_data
};

template <class... A>
std::string cat(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}

// A float as text that reads back to the same float32 (and double, mostly).
std::string num(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

// Values as little-endian bytes (TensorProto.raw_data), whatever the host's byte order.
template <class T>
std::vector<uint8_t> le_bytes(std::span<const T> values) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  static_assert(sizeof(T) == sizeof(U));
  std::vector<uint8_t> raw;
  raw.reserve(sizeof(T) * values.size());
  for (const T& v : values) {
    const U bits = std::bit_cast<U>(v);
    for (size_t k = 0; k < sizeof(T); ++k) raw.push_back(static_cast<uint8_t>(bits >> (8 * k)));
  }
  return raw;
}

std::pair<int32_t, int32_t> code_range(DType d) { return d == DType::uint8 ? std::pair{0, 255} : std::pair{-128, 127}; }

// The engine's real multiplier M0 * 2^(shift - 31) (engine/fixedpoint.h); M0 = 0 is 0.
double real_multiplier(int32_t m0, int32_t shift) { return std::ldexp(static_cast<double>(m0), shift - 31); }

// The float32 weight scale s_w for which s_in * s_w / s_out, evaluated in
// float32 the way ONNX Runtime's QLinearConv computes its requantization
// scale, is closest to the engine's real multiplier m: the rounded quotient
// and its float32 neighbours a few ulps either side.
float weight_scale(float s_in, float s_out, double m) {
  if (m == 0) return 0.0f;
  auto error = [&](float s_w) {
    const float product = s_in * s_w;
    const float requant = product / s_out;
    return std::fabs(static_cast<double>(requant) - m);
  };
  const float start = static_cast<float>(m * s_out / s_in);
  float best = start, down = start, up = start;
  for (int i = 0; i < 4; ++i) {
    down = std::nextafter(down, 0.0f);
    up = std::nextafter(up, std::numeric_limits<float>::infinity());
    for (float c : {down, up})
      if (error(c) < error(best)) best = c;
  }
  return best;
}

class Exporter {
 public:
  Exporter(const engine::ModelDesc& m, const OnnxOptions& opt)
      : m_(m), opt_(opt), act_(opt.activations), float_twin_(opt.form == OnnxForm::float_twin),
        integer_(opt.form == OnnxForm::integer) {
    names_.insert(kPixels);  // reserved: an engine tensor of that name gets a suffix
    names_.insert(kLogits);
  }

  std::vector<uint8_t> run() {
    for (op_index_ = 0; op_index_ < m_.ops.size(); ++op_index_) {
      const OpDesc& op = m_.ops[op_index_];
      switch (op.type) {
        case OpType::input: integer_ ? int_input(op) : input(op); break;
        case OpType::conv2d:
        case OpType::fully_connected: integer_ ? int_conv(op) : conv(op); break;
        case OpType::add: integer_ ? int_add(op) : add(op); break;
        case OpType::max_pool:
        case OpType::avg_pool:
        case OpType::global_avg_pool: integer_ ? int_pool(op) : pool(op); break;
        default: refuse(op, "an op type ONNX export does not know");
      }
    }
    output();
    check_order();
    return serialize();
  }

 private:
  // ---- errors and names ----

  [[noreturn]] void refuse(const OpDesc& op, const std::string& why) const {
    throw OnnxExportError(cat("onnx export: op ", op_index_, " (", engine::op_name(op.type), " '", op.name, "'): ", why));
  }

  // A value name not used yet: base, else base_2, base_3, ...
  std::string unique(const std::string& base) {
    const std::string b = base.empty() ? "unnamed" : base;
    std::string name = b;
    for (int k = 2; !names_.insert(name).second; ++k) name = cat(b, "_", k);
    return name;
  }

  const TensorDesc& tensor(uint32_t id) const { return m_.tensors.at(id); }

  // ---- initializers and nodes ----

  std::string add_init(const std::string& base, int32_t type, std::vector<int64_t> dims, std::vector<uint8_t> raw) {
    inits_.push_back({unique(base), type, std::move(dims), std::move(raw), {}});
    return inits_.back().name;
  }
  std::string add_floats(const std::string& base, std::vector<int64_t> dims, std::vector<float> values) {
    inits_.push_back({unique(base), onnx::kFloat, std::move(dims), {}, std::move(values)});
    return inits_.back().name;
  }
  // A scalar zero point (or [n] zero points of one value) in dtype d.
  std::string add_codes(const std::string& base, DType d, int32_t value, int64_t n = 0) {
    return add_init(base, d == DType::uint8 ? onnx::kUint8 : onnx::kInt8, n ? std::vector<int64_t>{n} : std::vector<int64_t>{},
                    std::vector<uint8_t>(n ? n : 1, static_cast<uint8_t>(value)));
  }

  // Appends a node with one output named after out_base; returns that name.
  std::string add_node(const std::string& op_type, const std::string& out_base, std::vector<std::string> inputs,
                       std::vector<Attribute> attributes = {}) {
    const std::string out = unique(out_base);
    nodes_.push_back({op_type, out, std::move(inputs), {out}, std::move(attributes)});
    return out;
  }

  // ---- activations ----

  // An engine code of dtype `from` in the emitted dtype (uint8 = int8 + 128).
  int32_t code(int32_t q, DType from) const { return q - engine::carry_offset(from) + engine::carry_offset(act_); }

  // The float32 scale of an activation, refused unless it is a normal
  // positive float32 (QuantizeLinear divides by it; 0 means "unknown" in .oct).
  float scale_of(uint32_t id, const OpDesc& op) const {
    const TensorDesc& t = tensor(id);
    const float s = static_cast<float>(t.scale);
    if (!(t.scale > 0) || !std::isnormal(s))
      refuse(op, cat("tensor '", t.name, "' has scale ", num(t.scale),
                     ", which is not a positive float32: ONNX's QuantizeLinear needs it"));
    return s;
  }

  // The float value that stands for an engine activation (its DequantizeLinear).
  const std::string& real(uint32_t id, const OpDesc& op) const {
    const auto it = real_of_.find(id);
    if (it == real_of_.end()) refuse(op, cat("reads tensor '", tensor(id).name, "', which no earlier op produced"));
    return it->second;
  }

  // QuantizeLinear -> DequantizeLinear of `value` on the grid of engine tensor
  // `id`, in the emitted dtype. The integer value takes the tensor's name:
  // its codes are the engine's (+ 128 when emitted as uint8).
  void quantize(uint32_t id, const std::string& value, const OpDesc& op) {
    if (float_twin_) {  // no grid: the float value stands for the tensor
      real_of_[id] = value;
      return;
    }
    const TensorDesc& t = tensor(id);
    const std::string s = add_floats(t.name + ".scale", {}, {scale_of(id, op)});
    const std::string z = add_codes(t.name + ".zero_point", act_, code(t.zero_point, t.dtype));
    const std::string q = add_node("QuantizeLinear", t.name, {value, s, z});
    real_of_[id] = add_node("DequantizeLinear", t.name + ".dq", {q, s, z});
  }

  // The op's output clamp [act_min, act_max] (its output dtype's codes) on
  // `value`, before QuantizeLinear: nothing when it is the emitted dtype's
  // full range (QuantizeLinear saturates there), a Relu when it runs from the
  // zero point to the top, otherwise a Clip at the bounds' real values
  // (sub-8-bit grids, ReLU6).
  std::string clamp(const OpDesc& op, const std::string& value, int32_t act_min, int32_t act_max) {
    const TensorDesc& y = tensor(op.output);
    const int32_t lo = code(act_min, y.dtype), hi = code(act_max, y.dtype), zp = code(y.zero_point, y.dtype);
    const auto [qmin, qmax] = code_range(act_);
    if (lo == qmin && hi == qmax) return value;
    if (lo == zp && hi == qmax) return add_node("Relu", op.name + ".relu", {value});
    const float s = scale_of(op.output, op);
    const std::string lo_real = add_floats(op.name + ".clip_min", {}, {s * static_cast<float>(lo - zp)});
    const std::string hi_real = add_floats(op.name + ".clip_max", {}, {s * static_cast<float>(hi - zp)});
    return add_node("Clip", op.name + ".clip", {value, lo_real, hi_real});
  }

  // ---- the ops ----

  // The raw pixels, NHWC uint8 -> NCHW -> real = s_px * (p - z_px). The
  // engine's input op only moves the uint8 codes to its int8 carry (same
  // real values): as uint8 the pixels are that tensor already; as int8 it is
  // one more (exact) Q -> DQ.
  void input(const OpDesc& op) {
    const TensorDesc& px = tensor(op.inputs[0]);
    const TensorDesc& y = tensor(op.output);
    if (op.inputs[0] != m_.input) refuse(op, "reads a tensor other than the graph input");
    if (!pixels_real_.empty()) refuse(op, "a second input op (the ONNX graph has one pixel input)");
    if (px.scale != y.scale)
      refuse(op, cat("changes the scale ", num(px.scale), " of the pixels to ", num(y.scale),
                     ", which the engine ignores but ONNX would apply"));
    const std::string nchw = add_node("Transpose", cat(kPixels, ".nchw"), {kPixels}, {attr_ints("perm", {0, 3, 1, 2})});
    const std::string s = add_floats(px.name + ".scale", {}, {scale_of(op.inputs[0], op)});
    const std::string z = add_codes(px.name + ".zero_point", DType::uint8, px.zero_point);
    pixels_real_ = add_node("DequantizeLinear", cat(kPixels, ".dq"), {nchw, s, z});
    if (act_ == DType::uint8 || float_twin_)
      real_of_[op.output] = pixels_real_;
    else
      quantize(op.output, pixels_real_, op);
  }

  // A conv or fc as ONNX sees it: conv2d, and fully_connected as a Conv whose
  // kernel is its whole input (an engine [C] tensor is [N, C, 1, 1] in ONNX:
  // a 1x1 conv). The weight codes are relaid out from the engine's
  // [Cout][KH][KW][Cg] to ONNX's [Cout][Cg][KH][KW].
  struct ConvShape {
    int64_t cout = 0, cg = 0, kh = 1, kw = 1;
    std::vector<uint8_t> codes;      // int8 weight codes, ONNX order
    std::vector<Attribute> attributes;  // Conv's and ConvInteger's
  };
  ConvShape conv_shape(const OpDesc& op) const {
    const bool fc = op.type == OpType::fully_connected;
    const TensorDesc& x = tensor(op.inputs[0]);
    const TensorDesc& w = tensor(op.inputs[1]);
    ConvShape c;
    c.cout = w.shape[0];
    // The fc's weights [Cout][K], K in HWC order, are [Cout][H][W][C]: the conv layout.
    if (!fc) {
      c.kh = w.shape[1], c.kw = w.shape[2], c.cg = w.shape[3];
    } else if (x.shape.size() == 3) {
      c.kh = x.shape[0], c.kw = x.shape[1], c.cg = x.shape[2];
    } else if (x.shape.size() == 1) {
      c.cg = x.shape[0];
    } else {
      refuse(op, cat("input '", x.name, "' has rank ", x.shape.size(), " (an activation is [H, W, C] or [C])"));
    }
    c.codes.resize(w.i8.size());
    for (int64_t o = 0; o < c.cout; ++o)
      for (int64_t h = 0; h < c.kh; ++h)
        for (int64_t v = 0; v < c.kw; ++v)
          for (int64_t i = 0; i < c.cg; ++i)
            c.codes[static_cast<size_t>(((o * c.cg + i) * c.kh + h) * c.kw + v)] =
                static_cast<uint8_t>(w.i8[static_cast<size_t>(((o * c.kh + h) * c.kw + v) * c.cg + i)]);
    const int64_t stride = fc ? 1 : op.params[param::kStride], pad = fc ? 0 : op.params[param::kPad];
    const int64_t groups = fc ? 1 : op.params[param::kGroups];
    c.attributes = {attr_ints("dilations", {1, 1}), attr_int("group", groups), attr_ints("kernel_shape", {c.kh, c.kw}),
                    attr_ints("pads", {pad, pad, pad, pad}), attr_ints("strides", {stride, stride})};
    return c;
  }

  // The op's output clamp [act_min, act_max], in the output dtype's codes.
  static std::pair<int32_t, int32_t> act_range(const OpDesc& op) {
    const auto& p = op.params;
    switch (op.type) {
      case OpType::conv2d: return {p[param::kConvActMin], p[param::kConvActMax]};
      case OpType::fully_connected: return {p[param::kFcActMin], p[param::kFcActMax]};
      default: return {p[param::kAddActMin], p[param::kAddActMax]};
    }
  }

  void conv(const OpDesc& op) {
    const TensorDesc& w = tensor(op.inputs[1]);
    const TensorDesc& bias = tensor(op.inputs[2]);
    const TensorDesc& mult = tensor(op.inputs[3]);
    const TensorDesc& shift = tensor(op.inputs[4]);
    const float s_in = scale_of(op.inputs[0], op), s_out = scale_of(op.output, op);
    ConvShape shape = conv_shape(op);
    const int64_t cout = shape.cout, cg = shape.cg, kh = shape.kh, kw = shape.kw;
    std::vector<uint8_t>& codes = shape.codes;

    // Per-channel weight scales from the multipliers; the bias scale is
    // s_in * s_w[c] in float32, as ONNX Runtime takes it.
    std::vector<float> w_scale(static_cast<size_t>(cout)), b_scale(static_cast<size_t>(cout));
    for (int64_t c = 0; c < cout; ++c) {
      const double m = real_multiplier(mult.i32[c], shift.i32[c]);
      const float s_w = weight_scale(s_in, s_out, m);
      const float s_b = s_in * s_w;
      if (m > 0 && !(std::isnormal(s_w) && std::isnormal(s_b)))
        refuse(op, cat("channel ", c, ": multiplier ", num(m), " gives the weight scale ", num(s_w), " and bias scale ",
                       num(s_b), ", not normal float32 numbers"));
      w_scale[c] = s_w;
      b_scale[c] = s_b;
    }
    std::vector<uint8_t> bias_raw = le_bytes<int32_t>(bias.i32);

    std::string wr, br;  // the real weights and bias
    if (float_twin_) {
      // The same values DequantizeLinear would give, stored as float32.
      std::vector<float> wf(codes.size()), bf(static_cast<size_t>(cout));
      const size_t per_channel = codes.size() / static_cast<size_t>(cout);
      for (size_t i = 0; i < codes.size(); ++i)
        wf[i] = static_cast<float>(static_cast<int8_t>(codes[i])) * w_scale[i / per_channel];
      for (int64_t c = 0; c < cout; ++c) bf[static_cast<size_t>(c)] = static_cast<float>(bias.i32[c]) * b_scale[c];
      wr = add_floats(w.name, {cout, cg, kh, kw}, std::move(wf));
      br = add_floats(bias.name, {cout}, std::move(bf));
    } else {
      const std::string wq = add_init(w.name, onnx::kInt8, {cout, cg, kh, kw}, std::move(codes));
      const std::string ws = add_floats(w.name + ".scale", {cout}, std::move(w_scale));
      const std::string wz = add_codes(w.name + ".zero_point", DType::int8, 0, cout);
      wr = add_node("DequantizeLinear", w.name + ".dq", {wq, ws, wz}, {attr_int("axis", 0)});
      const std::string bq = add_init(bias.name, onnx::kInt32, {cout}, std::move(bias_raw));
      const std::string bs = add_floats(bias.name + ".scale", {cout}, std::move(b_scale));
      const std::string bz = add_init(bias.name + ".zero_point", onnx::kInt32, {cout}, std::vector<uint8_t>(4 * cout, 0));
      br = add_node("DequantizeLinear", bias.name + ".dq", {bq, bs, bz}, {attr_int("axis", 0)});
    }

    const std::string y = add_node("Conv", op.name + ".conv", {real(op.inputs[0], op), wr, br}, shape.attributes);
    const auto [lo, hi] = act_range(op);
    quantize(op.output, clamp(op, y, lo, hi), op);
    note_weight_bits(op);
  }

  // Weights of fewer than 8 bits, named in the metadata (int8 holds them).
  void note_weight_bits(const OpDesc& op) {
    const TensorDesc& w = tensor(op.inputs[1]);
    if (w.bits >= 8) return;
    const int lo = -(1 << (w.bits - 1)), hi = (1 << (w.bits - 1)) - 1;
    weight_bits_.emplace_back(op.name, cat(w.bits, " (stored as int8 within the ", w.bits, "-bit range [", lo, ", ", hi, "])"));
  }

  // y = a + b in real terms. ONNX's Add reads the real values, i.e. the
  // tensors' scales; the engine's add uses its own multipliers, which the
  // builder derives from the same scales (TFLite's scheme). An add whose
  // multipliers say otherwise cannot be written as an Add: refused.
  void add(const OpDesc& op) {
    const TensorDesc &a = tensor(op.inputs[0]), &b = tensor(op.inputs[1]), &y = tensor(op.output);
    for (uint32_t id : {op.inputs[0], op.inputs[1], op.output}) scale_of(id, op);  // refuses unusable scales
    const auto& p = op.params;
    const double out = std::ldexp(real_multiplier(p[param::kOutMult], p[param::kOutShift]), p[param::kLeftShift]);
    const double got_a = real_multiplier(p[param::kAMult], p[param::kAShift]) * out;
    const double got_b = real_multiplier(p[param::kBMult], p[param::kBShift]) * out;
    const double want_a = a.scale / y.scale, want_b = b.scale / y.scale;
    // Each multiplier carries 31 bits; 1e-6 leaves room for their rounding only.
    const double tolerance = 1e-6 * std::max(want_a, want_b);
    if (std::fabs(got_a - want_a) > tolerance || std::fabs(got_b - want_b) > tolerance)
      refuse(op, cat("rescales its inputs by ", num(got_a), " and ", num(got_b), " where the tensors' scales give ",
                     num(want_a), " and ", num(want_b), " (ONNX's Add reads the scales)"));
    const std::string sum = add_node("Add", op.name + ".add", {real(op.inputs[0], op), real(op.inputs[1], op)});
    const auto [lo, hi] = act_range(op);
    quantize(op.output, clamp(op, sum, lo, hi), op);
  }

  // Pools keep their input's grid, so they commute with Q/DQ. The engine's
  // pools read only the in-image elements of a window (padding excluded):
  // MaxPool does the same, AveragePool with count_include_pad = 0.
  void pool(const OpDesc& op) {
    const TensorDesc &x = tensor(op.inputs[0]), &y = tensor(op.output);
    if (x.dtype != y.dtype || x.zero_point != y.zero_point || x.scale != y.scale)
      refuse(op, cat("its output grid (", num(y.scale), ", ", y.zero_point, ") differs from its input's (", num(x.scale),
                     ", ", x.zero_point, "): the engine copies codes, ONNX would requantize"));
    const std::string& in = real(op.inputs[0], op);
    std::string out;
    if (op.type == OpType::global_avg_pool) {
      out = add_node("GlobalAveragePool", op.name + ".pool", {in});
    } else {
      const auto& p = op.params;
      const int64_t pad = p[param::kPoolPad], stride = p[param::kPoolStride];
      std::vector<Attribute> attrs = {attr_ints("kernel_shape", {p[param::kPoolKH], p[param::kPoolKW]}),
                                      attr_ints("pads", {pad, pad, pad, pad}), attr_ints("strides", {stride, stride})};
      if (op.type == OpType::avg_pool) attrs.push_back(attr_int("count_include_pad", 0));
      out = add_node(op.type == OpType::max_pool ? "MaxPool" : "AveragePool", op.name + ".pool", {in}, std::move(attrs));
    }
    quantize(op.output, out, op);
  }

  // ---- the integer form: the engine's arithmetic in ONNX integer ops ----

  // On int64 comparisons: every int64 value the integer form compares
  // (Clip, Sign) stays within int32, because ONNX Runtime 1.31.1 on x86 orders int64 values in [2^31, 2^32)
  // below zero in Clip, Max, Min and Sign (Clip(2^31 + 129, 0, 255) = 0,
  // Sign(2^31) = -1; values from 2^32 up and below -2^31 compare correctly).
  // Wider values are only added, multiplied and divided, which it gets right.

  int32_t act_type() const { return act_ == DType::uint8 ? onnx::kUint8 : onnx::kInt8; }

  // int64 constants: one value (a scalar) or one per channel ([C, 1, 1],
  // broadcast over NCHW), always as int64 raw data.
  std::string add_i64(const std::string& base, const std::vector<int64_t>& values, std::vector<int64_t> dims = {}) {
    return add_init(base, onnx::kInt64, std::move(dims), le_bytes<int64_t>(values));
  }
  // Per-channel values as [C, 1, 1], or one scalar when every channel has the same value.
  std::string add_channels(const std::string& base, const std::vector<int64_t>& values) {
    const bool same = std::all_of(values.begin(), values.end(), [&](int64_t v) { return v == values.front(); });
    if (same) return add_i64(base, {values.front()});
    return add_i64(base, values, {static_cast<int64_t>(values.size()), 1, 1});
  }

  std::string add_f64(const std::string& base, double value) {
    return add_init(base, onnx::kDouble, {}, le_bytes<double>({&value, 1}));
  }

  std::string cast(const std::string& value, int32_t to, const std::string& out_base) {
    return add_node("Cast", out_base, {value}, {attr_int("to", to)});
  }

  // The engine's codes of activation `id`, in the emitted type.
  const std::string& codes(uint32_t id, const OpDesc& op) const {
    const auto it = codes_of_.find(id);
    if (it == codes_of_.end()) refuse(op, cat("reads tensor '", tensor(id).name, "', which no earlier op produced"));
    return it->second;
  }

  // Sign(v) * ((Abs(v) + d / 2) / d) per channel: v / d rounded to nearest,
  // ties away from zero. d = 2^e is RoundingDivideByPOT, d = a count is
  // RoundedDivide; d = 1 everywhere is no node at all.
  std::string round_divide(const std::string& v, const std::vector<int64_t>& d, const std::string& base,
                           std::vector<int64_t> dims = {}) {
    if (std::all_of(d.begin(), d.end(), [](int64_t x) { return x == 1; })) return v;
    std::vector<int64_t> half(d.size());
    std::transform(d.begin(), d.end(), half.begin(), [](int64_t x) { return x / 2; });
    const bool per_element = !dims.empty();
    const std::string dn = per_element ? add_i64(base + ".divisor", d, dims) : add_channels(base + ".divisor", d);
    const std::string hn = per_element ? add_i64(base + ".half", half, dims) : add_channels(base + ".half", half);
    const std::string sign = add_node("Sign", base + ".sign", {v});
    const std::string abs = add_node("Abs", base + ".abs", {v});
    const std::string q = add_node("Div", base + ".div", {add_node("Add", base + ".round", {abs, hn}), dn});
    return add_node("Mul", base + ".rounded", {q, sign});
  }

  // MultiplyByQuantizedMultiplier(x, M0[c], shift[c]) on the int64 value x
  // (int32 range), per channel (one entry: every channel), bit for bit as
  // engine/fixedpoint.h (the top of onnx_export.h spells out the steps).
  std::string multiply(std::string x, const std::vector<int32_t>& m0, const std::vector<int32_t>& shift,
                       const std::string& base) {
    std::vector<int64_t> lift(shift.size()), divisor(shift.size()), mult(m0.begin(), m0.end());
    for (size_t c = 0; c < shift.size(); ++c) {
      lift[c] = int64_t{1} << std::max(shift[c], 0);
      divisor[c] = int64_t{1} << std::max(-shift[c], 0);
    }
    if (std::any_of(lift.begin(), lift.end(), [](int64_t l) { return l > 1; })) {
      // Saturated to int32 in float64, which holds every int32 exactly and
      // rounds larger values to at least 2^31 (see the note on int64 comparisons).
      x = add_node("Mul", base + ".lifted", {x, add_channels(base + ".lift", lift)});
      const std::string wide = cast(x, onnx::kDouble, base + ".lifted_f64");
      const std::string clipped = add_node("Clip", base + ".saturated_f64",
                                           {wide, add_f64(base + ".int32_min", std::numeric_limits<int32_t>::min()),
                                            add_f64(base + ".int32_max", std::numeric_limits<int32_t>::max())});
      x = cast(clipped, onnx::kInt64, base + ".saturated");
    }
    // SaturatingRoundingDoublingHighMul; M0 >= 0, so its one saturating case never occurs.
    const std::string two31 = add_i64(base + ".two31", {int64_t{1} << 31});
    const std::string product = add_node("Mul", base + ".product", {x, add_channels(base + ".multiplier", mult)});
    const std::string nudged = add_node("Add", base + ".nudged",
                                        {product, add_i64(base + ".nudge", {(int64_t{1} << 30) + (int64_t{1} << 62)})});
    const std::string high =
        add_node("Sub", base + ".high", {add_node("Div", base + ".quotient", {nudged, two31}), two31});
    return round_divide(high, divisor, base + ".shift");
  }

  // zp + v clamped to [act_min, act_max], stored as the output's codes. The
  // clamp comes first, at [act_min - zp, act_max - zp], so that Clip sees v
  // (an int32) and not zp + v, which may leave int32 (see the note on int64 comparisons).
  void store(const OpDesc& op, const std::string& v) {
    const TensorDesc& y = tensor(op.output);
    const auto [lo, hi] = act_range(op);
    const int64_t zp = code(y.zero_point, y.dtype);
    const std::string clipped = add_node("Clip", op.name + ".clip",
                                         {v, add_i64(op.name + ".act_min", {code(lo, y.dtype) - zp}),
                                          add_i64(op.name + ".act_max", {code(hi, y.dtype) - zp})});
    const std::string shifted = add_node("Add", op.name + ".zp", {clipped, add_i64(op.name + ".zero_point", {zp})});
    codes_of_[op.output] = cast(shifted, act_type(), y.name);
  }

  // The pixels NHWC -> NCHW; as uint8 they are the engine input op's codes
  // (its int8 carry + 128), as int8 the carry itself: p - 128.
  void int_input(const OpDesc& op) {
    if (op.inputs[0] != m_.input) refuse(op, "reads a tensor other than the graph input");
    if (!codes_of_.empty()) refuse(op, "a second input op (the ONNX graph has one pixel input)");
    std::string px = add_node("Transpose", cat(kPixels, ".nchw"), {kPixels}, {attr_ints("perm", {0, 3, 1, 2})});
    if (act_ == DType::int8) {
      const std::string wide = cast(px, onnx::kInt32, cat(kPixels, ".int32"));
      const std::string carry = add_node("Sub", cat(kPixels, ".carry"),
                                         {wide, add_init(cat(kPixels, ".offset"), onnx::kInt32, {}, {128, 0, 0, 0})});
      px = cast(carry, onnx::kInt8, tensor(op.output).name);
    }
    codes_of_[op.output] = px;
  }

  // ConvInteger -> int64 -> + bias -> MBQM per channel -> zp, clamp, codes.
  void int_conv(const OpDesc& op) {
    const TensorDesc& x = tensor(op.inputs[0]);
    const TensorDesc& w = tensor(op.inputs[1]);
    const TensorDesc& bias = tensor(op.inputs[2]);
    ConvShape shape = conv_shape(op);
    const std::string wq =
        add_init(w.name, onnx::kInt8, {shape.cout, shape.cg, shape.kh, shape.kw}, std::move(shape.codes));
    const std::string xz = add_codes(x.name + ".zero_point", act_, code(x.zero_point, x.dtype));
    const std::string wz = add_codes(w.name + ".zero_point", DType::int8, 0);
    const std::string acc =
        add_node("ConvInteger", op.name + ".conv", {codes(op.inputs[0], op), wq, xz, wz}, shape.attributes);
    std::string v = cast(acc, onnx::kInt64, op.name + ".acc");
    if (std::any_of(bias.i32.begin(), bias.i32.end(), [](int32_t b) { return b != 0; }))
      v = add_node("Add", op.name + ".biased", {v, add_channels(bias.name, {bias.i32.begin(), bias.i32.end()})});
    store(op, multiply(v, tensor(op.inputs[3]).i32, tensor(op.inputs[4]).i32, op.name + ".requant"));
    note_weight_bits(op);
  }

  // The engine's add (TFLite's scheme): both inputs to a common scale, then the sum requantized.
  void int_add(const OpDesc& op) {
    const auto& p = op.params;
    auto lifted = [&](int slot, int mult, int shift, const std::string& side) {
      const TensorDesc& t = tensor(op.inputs[slot]);
      const std::string base = op.name + "." + side;
      const std::string wide = cast(codes(op.inputs[slot], op), onnx::kInt64, base + ".int64");
      const std::string centred =
          add_node("Sub", base + ".centred", {wide, add_i64(base + ".zero_point", {code(t.zero_point, t.dtype)})});
      const std::string up =
          add_node("Mul", base + ".lifted", {centred, add_i64(base + ".lift", {int64_t{1} << p[param::kLeftShift]})});
      return multiply(up, {p[mult]}, {p[shift]}, base + ".rescale");
    };
    const std::string a = lifted(0, param::kAMult, param::kAShift, "a");
    const std::string b = lifted(1, param::kBMult, param::kBShift, "b");
    const std::string sum = add_node("Add", op.name + ".sum", {a, b});
    store(op, multiply(sum, {p[param::kOutMult]}, {p[param::kOutShift]}, op.name + ".requant"));
  }

  // Max pool on the codes; the average pools as the engine forms them: the
  // sum of the int8 carries over the in-image part of each window, divided
  // by that part's size with rounding (RoundedDivide).
  void int_pool(const OpDesc& op) {
    const TensorDesc &x = tensor(op.inputs[0]), &y = tensor(op.output);
    if (x.dtype != y.dtype || x.zero_point != y.zero_point || x.scale != y.scale)
      refuse(op, cat("its output grid (", num(y.scale), ", ", y.zero_point, ") differs from its input's (",
                     num(x.scale), ", ", x.zero_point, "): the engine copies codes"));
    const std::string& in = codes(op.inputs[0], op);
    const auto& p = op.params;
    const int64_t pad = op.type == OpType::global_avg_pool ? 0 : p[param::kPoolPad];
    const int64_t stride = op.type == OpType::global_avg_pool ? 1 : p[param::kPoolStride];
    std::vector<Attribute> window;
    if (op.type != OpType::global_avg_pool)
      window = {attr_ints("kernel_shape", {p[param::kPoolKH], p[param::kPoolKW]}),
                attr_ints("pads", {pad, pad, pad, pad}), attr_ints("strides", {stride, stride})};
    if (op.type == OpType::max_pool) {  // the padding is no element for MaxPool either
      codes_of_[op.output] = add_node("MaxPool", y.name, {in}, std::move(window));
      return;
    }
    const int64_t offset = engine::carry_offset(act_);  // emitted code - int8 carry
    std::string sum;
    std::vector<int64_t> counts, dims;
    if (op.type == OpType::global_avg_pool) {
      const std::string wide = cast(in, onnx::kInt64, op.name + ".int64");
      sum = add_node("ReduceSum", op.name + ".sum", {wide, add_i64(op.name + ".axes", {2, 3}, {2})},
                     {attr_int("keepdims", 1)});
      counts = {x.shape[0] * x.shape[1]};
    } else {
      // Window sums by a depthwise Conv of ones in float32: exact, since no
      // sum exceeds 255 * KH * KW, far below 2^24.
      const int64_t c = x.shape[2], kh = p[param::kPoolKH], kw = p[param::kPoolKW];
      const std::string f = cast(in, onnx::kFloat, op.name + ".float");
      const std::string ones =
          add_floats(op.name + ".ones", {c, 1, kh, kw}, std::vector<float>(static_cast<size_t>(c * kh * kw), 1.0f));
      window.push_back(attr_int("group", c));
      sum = cast(add_node("Conv", op.name + ".window_sum", {f, ones}, std::move(window)), onnx::kInt64,
                 op.name + ".sum_int64");
      const int64_t oh = y.shape[0], ow = y.shape[1];
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          const int64_t h0 = std::max<int64_t>(i * stride - pad, 0),
                        h1 = std::min<int64_t>(i * stride - pad + kh, x.shape[0]);
          const int64_t w0 = std::max<int64_t>(j * stride - pad, 0),
                        w1 = std::min<int64_t>(j * stride - pad + kw, x.shape[1]);
          // A window wholly in the padding has no element: its sum is 0 and
          // the engine's mean is 0, which a divisor of 1 gives too.
          counts.push_back(std::max<int64_t>((h1 - h0) * (w1 - w0), 1));
        }
      dims = {1, 1, oh, ow};
    }
    if (offset != 0) {  // the sum of the carries: offset * count less than the codes'
      std::vector<int64_t> shift(counts.size());
      std::transform(counts.begin(), counts.end(), shift.begin(), [&](int64_t n) { return offset * n; });
      sum = add_node("Sub", op.name + ".carry_sum", {sum, add_i64(op.name + ".offset", shift, dims)});
    }
    std::string mean = round_divide(sum, counts, op.name + ".mean", dims);
    if (offset != 0) mean = add_node("Add", op.name + ".code", {mean, add_i64(op.name + ".code_offset", {offset})});
    codes_of_[op.output] = cast(mean, act_type(), y.name);
  }

  // The logits: the output tensor's DQ, flattened to [batch, classes] in the
  // engine's order (HWC; a [C] tensor is [N, C, 1, 1] and needs no transpose).
  void output() {
    const TensorDesc& y = tensor(m_.output);
    const OpDesc* producer = nullptr;
    for (const OpDesc& op : m_.ops)
      if (op.output == m_.output) producer = &op;
    if (!producer) throw OnnxExportError(cat("onnx export: no op produces the output tensor '", y.name, "'"));
    if (integer_) {  // the logits' codes, dequantized: the engine's logits as float32
      const std::string s = add_floats(y.name + ".scale", {}, {scale_of(m_.output, *producer)});
      const std::string z = add_codes(y.name + ".zero_point", act_, code(y.zero_point, y.dtype));
      real_of_[m_.output] = add_node("DequantizeLinear", y.name + ".dq", {codes(m_.output, *producer), s, z});
    }
    std::string v = real(m_.output, *producer);
    if (y.shape.size() == 3 && (y.shape[0] > 1 || y.shape[1] > 1))
      v = add_node("Transpose", y.name + ".nhwc", {v}, {attr_ints("perm", {0, 2, 3, 1})});
    nodes_.push_back({"Flatten", kLogits, {v}, {kLogits}, {attr_int("axis", 1)}});
  }

  // Every node reads only initializers, the graph input and earlier outputs,
  // and every value has one producer: a bug of this file otherwise.
  void check_order() const {
    std::set<std::string> defined = {kPixels};
    for (const Initializer& t : inits_) defined.insert(t.name);
    for (const Node& n : nodes_) {
      for (const std::string& in : n.inputs)
        if (!defined.count(in)) throw std::logic_error("onnx export: node '" + n.name + "' reads '" + in + "' before it is defined");
      for (const std::string& out : n.outputs)
        if (!defined.insert(out).second) throw std::logic_error("onnx export: value '" + out + "' is defined twice");
    }
  }

  // ---- bytes ----

  // -1 in dims is the symbolic batch dimension.
  static pb::Writer value_info(const std::string& name, int32_t elem_type, const std::vector<int64_t>& dims) {
    pb::Writer shape;
    for (int64_t d : dims) {
      pb::Writer dimension;
      if (d < 0)
        dimension.string(onnx::dim::kParam, "batch");
      else
        dimension.int64(onnx::dim::kValue, d);
      shape.message(onnx::shape::kDim, dimension);
    }
    pb::Writer tensor_type;
    tensor_type.int64(onnx::tensor_type::kElemType, elem_type);
    tensor_type.message(onnx::tensor_type::kShape, shape);
    pb::Writer type;
    type.message(onnx::type_proto::kTensorType, tensor_type);
    pb::Writer vi;
    vi.string(onnx::value_info::kName, name);
    vi.message(onnx::value_info::kType, type);
    return vi;
  }

  std::vector<std::pair<std::string, std::string>> metadata() const {
    std::vector<std::pair<std::string, std::string>> md = m_.metadata;
    auto set = [&](const std::string& k, const std::string& v) {
      for (auto& [key, value] : md)
        if (key == k) {
          value = v;
          return;
        }
      md.emplace_back(k, v);
    };
    const TensorDesc& px = tensor(m_.input);
    const TensorDesc& y = tensor(m_.output);
    set("octet.form", onnx_form_name(opt_.form));
    set("octet.activations", float_twin_ ? "float32" : engine::dtype_name(act_));
    set("octet.input", cat(kPixels, " uint8 NHWC [batch, ", px.shape[0], ", ", px.shape[1], ", ", px.shape[2],
                           "], real = ", num(static_cast<float>(px.scale)), " * (p - ", px.zero_point, ")"));
    set("octet.output_scale", num(static_cast<float>(y.scale)));
    set("octet.output_zero_point", std::to_string(code(y.zero_point, y.dtype)));
    for (const auto& [layer, bits] : weight_bits_) set("octet.weight_bits." + layer, bits);
    return md;
  }

  std::string doc_string() const {
    const std::string* name = m_.find_metadata("model_name");
    const std::string* source = m_.find_metadata("source_checkpoint");
    const std::string* qat = m_.find_metadata("qat_config");
    const std::string from = !opt_.source.empty() ? opt_.source : source ? *source : "";
    std::string s = cat("Octet ", opt_.producer_version, " integer model");
    if (name) s += cat(" '", *name, "'");
    if (!from.empty()) s += cat(" from ", from);
    if (float_twin_)
      s += ", exported as its float twin: the integer model's weights and biases dequantized to float32, no "
           "quantization of the activations; uint8 NHWC pixels in (the preprocessing is folded into the first conv), "
           "float32 logits out.";
    else if (integer_)
      s += cat(", exported from the engine model in integer form: the engine's own integer arithmetic in ONNX integer "
               "ops (ConvInteger, int64 fixed-point requantization, rounded integer means), bit for bit; ",
               engine::dtype_name(act_), " activation codes, int8 weights, int32 biases; uint8 NHWC pixels in (the "
               "preprocessing is folded into the first conv), float32 logits out (the output codes dequantized).");
    else
      s += cat(", exported from the engine model in QDQ form: ", engine::dtype_name(act_),
               " activations (per-tensor scale and zero point), int8 weights with per-channel scales derived from the "
               "engine's requantization multipliers, int32 biases; uint8 NHWC pixels in (the preprocessing is folded "
               "into the first conv), float32 logits out.");
    if (qat) s += cat(" QAT configuration: ", *qat, ".");
    return s;
  }

  std::vector<uint8_t> serialize() const {
    pb::Writer g;
    for (const Node& n : nodes_) {
      pb::Writer w;
      for (const std::string& in : n.inputs) w.string(onnx::node::kInput, in);
      for (const std::string& out : n.outputs) w.string(onnx::node::kOutput, out);
      w.string(onnx::node::kName, n.name);
      w.string(onnx::node::kOpType, n.op_type);
      for (const Attribute& a : n.attributes) {
        pb::Writer aw;
        aw.string(onnx::attr::kName, a.name);
        if (a.type == onnx::kAttrInt)
          aw.int64(onnx::attr::kI, a.i);
        else
          aw.packed_int64(onnx::attr::kInts, a.ints);
        aw.int64(onnx::attr::kType, a.type);
        w.message(onnx::node::kAttribute, aw);
      }
      g.message(onnx::graph::kNode, w);
    }
    const std::string* name = m_.find_metadata("model_name");
    g.string(onnx::graph::kName, name && !name->empty() ? *name : "octet");
    for (const Initializer& t : inits_) {
      pb::Writer w;
      w.packed_int64(onnx::tensor::kDims, t.dims);
      w.int64(onnx::tensor::kDataType, t.data_type);
      if (t.data_type == onnx::kFloat)
        w.packed_float(onnx::tensor::kFloatData, t.floats);
      else
        w.bytes(onnx::tensor::kRawData, t.raw);
      w.string(onnx::tensor::kName, t.name);
      g.message(onnx::graph::kInitializer, w);
    }
    const TensorDesc& px = tensor(m_.input);
    g.message(onnx::graph::kInput, value_info(kPixels, onnx::kUint8, {-1, px.shape[0], px.shape[1], px.shape[2]}));
    g.message(onnx::graph::kOutput, value_info(kLogits, onnx::kFloat, {-1, tensor(m_.output).numel()}));

    pb::Writer model;
    model.int64(onnx::model::kIrVersion, onnx::kIrVersion);
    model.string(onnx::model::kProducerName, "octet");
    model.string(onnx::model::kProducerVersion, opt_.producer_version);
    model.string(onnx::model::kDocString, doc_string());
    model.message(onnx::model::kGraph, g);
    pb::Writer opset;
    opset.int64(onnx::opset_id::kVersion, onnx::kOpset);
    model.message(onnx::model::kOpsetImport, opset);
    for (const auto& [k, v] : metadata()) {
      pb::Writer e;
      e.string(onnx::entry::kKey, k);
      e.string(onnx::entry::kValue, v);
      model.message(onnx::model::kMetadataProps, e);
    }
    return model.take();
  }

  const engine::ModelDesc& m_;
  const OnnxOptions& opt_;
  const DType act_;
  const bool float_twin_, integer_;
  size_t op_index_ = 0;
  std::vector<Node> nodes_;
  std::vector<Initializer> inits_;
  std::set<std::string> names_;                  // every value name used so far
  std::map<uint32_t, std::string> real_of_;      // engine activation -> its float (DequantizeLinear) value
  std::map<uint32_t, std::string> codes_of_;     // integer form: engine activation -> its codes (act_ type)
  std::string pixels_real_;                      // the pixels' DequantizeLinear, once there
  std::vector<std::pair<std::string, std::string>> weight_bits_;  // layer -> "b (...)" for b < 8
};

}  // namespace

const char* onnx_form_name(OnnxForm f) {
  switch (f) {
    case OnnxForm::qdq: return "qdq";
    case OnnxForm::integer: return "integer";
    case OnnxForm::float_twin: return "float";
  }
  return "?";
}

std::vector<uint8_t> export_onnx(const engine::ModelDesc& model, const OnnxOptions& opt) {
  if (opt.activations != DType::uint8 && opt.activations != DType::int8)
    throw std::invalid_argument("export_onnx: activations must be uint8 or int8");
  // Through the engine's own writer and reader first: every field and the
  // graph (order, shapes, ranges) are then checked, and the Exporter relies on them.
  const std::string* name = model.find_metadata("model_name");
  const engine::ModelDesc checked =
      engine::decode(engine::encode(model), cat("onnx export of '", name ? *name : std::string("model"), "'"));
  return Exporter(checked, opt).run();
}

uint64_t write_onnx(const std::string& path, const engine::ModelDesc& model, const OnnxOptions& opt) {
  const std::vector<uint8_t> bytes = export_onnx(model, opt);
  engine::write_file_atomic(path, bytes);
  return bytes.size();
}

}  // namespace octet::quant
