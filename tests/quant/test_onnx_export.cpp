// The ONNX exporter (quant/onnx_export.h) and the protobuf wire format under
// it (quant/protobuf.h): small engine models built with ModelBuilder are
// exported with uint8 and int8 activations, parsed back with the protobuf
// reader, and checked field by field: the node sequence, the weights relaid
// out to [Cout, Cin/g, KH, KW], the per-channel scales against the engine's
// multipliers, biases, zero points in the emitted type, clamps, metadata;
// and the models ONNX cannot express are refused. The onnx package's own
// checker runs on exported models in tests/quant/test_onnx_checker.cpp.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "engine/builder.h"
#include "engine/format.h"
#include "quant/onnx_export.h"
#include "quant/protobuf.h"

using namespace octet;
using engine::DType;
namespace pb = quant::pb;

namespace {

using Bytes = std::vector<uint8_t>;

// ---- a reader of the ONNX messages the exporter writes ---------------------------
// Field numbers from onnx/onnx.proto, written out here independently of the
// exporter's own table.

struct OnnxTensor {
  std::string name;
  int64_t data_type = 0;  // 1 float, 2 uint8, 3 int8, 6 int32, 7 int64
  std::vector<int64_t> dims;
  Bytes raw;
  std::vector<float> floats;

  // The values of an integer tensor (raw_data, little-endian).
  std::vector<int64_t> ints() const {
    std::vector<int64_t> v;
    if (data_type == 2)
      for (uint8_t b : raw) v.push_back(b);
    if (data_type == 3)
      for (uint8_t b : raw) v.push_back(static_cast<int8_t>(b));
    if (data_type == 6)
      for (size_t i = 0; i + 4 <= raw.size(); i += 4)
        v.push_back(static_cast<int32_t>(raw[i] | raw[i + 1] << 8 | raw[i + 2] << 16 | static_cast<uint32_t>(raw[i + 3]) << 24));
    if (data_type == 7)
      for (size_t i = 0; i + 8 <= raw.size(); i += 8) {
        uint64_t u = 0;
        for (int k = 7; k >= 0; --k) u = u << 8 | raw[i + k];
        v.push_back(static_cast<int64_t>(u));
      }
    return v;
  }
  std::vector<double> doubles() const {  // data_type 11, raw_data
    std::vector<double> v;
    for (size_t i = 0; data_type == 11 && i + 8 <= raw.size(); i += 8) {
      double d;
      std::memcpy(&d, raw.data() + i, 8);
      v.push_back(d);
    }
    return v;
  }
};

struct OnnxAttr {
  std::string name;
  int64_t type = 0, i = 0;
  std::vector<int64_t> ints;
};

struct OnnxNode {
  std::string op_type, name;
  std::vector<std::string> inputs, outputs;
  std::vector<OnnxAttr> attrs;
  const OnnxAttr* attr(const std::string& n) const {
    for (const OnnxAttr& a : attrs)
      if (a.name == n) return &a;
    return nullptr;
  }
};

struct OnnxValue {
  std::string name;
  int64_t elem_type = 0;
  std::vector<std::string> dims;  // a number as text, or the symbolic name
};

struct OnnxModel {
  int64_t ir_version = 0;
  std::string producer_name, producer_version, doc_string, graph_name;
  std::vector<std::pair<std::string, int64_t>> opsets;
  std::vector<OnnxNode> nodes;
  std::map<std::string, OnnxTensor> inits;
  std::vector<OnnxValue> inputs, outputs;
  std::map<std::string, std::string> metadata;
  size_t metadata_entries = 0;

  std::vector<std::string> op_types() const {
    std::vector<std::string> t;
    for (const OnnxNode& n : nodes) t.push_back(n.op_type);
    return t;
  }
  const OnnxNode& producer(const std::string& value) const {
    for (const OnnxNode& n : nodes)
      for (const std::string& o : n.outputs)
        if (o == value) return n;
    FAIL("no node produces " << value);
    return nodes.front();
  }
  const OnnxTensor& init(const std::string& name) const {
    const auto it = inits.find(name);
    REQUIRE_MESSAGE(it != inits.end(), "no initializer " << name);
    return it->second;
  }
};

std::string text(const pb::Field& f) { return f.as_string(); }

OnnxTensor parse_tensor(std::span<const uint8_t> b) {
  OnnxTensor t;
  pb::Reader r(b);
  for (pb::Field f; r.next(f);) {
    if (f.number == 1 && f.type == pb::WireType::length) t.dims = pb::unpack_varints(f.bytes);
    if (f.number == 1 && f.type == pb::WireType::varint) t.dims.push_back(f.as_int64());
    if (f.number == 2) t.data_type = f.as_int64();
    if (f.number == 4) t.floats = pb::unpack_floats(f.bytes);
    if (f.number == 8) t.name = text(f);
    if (f.number == 9) t.raw.assign(f.bytes.begin(), f.bytes.end());
  }
  return t;
}

OnnxNode parse_node(std::span<const uint8_t> b) {
  OnnxNode n;
  pb::Reader r(b);
  for (pb::Field f; r.next(f);) {
    if (f.number == 1) n.inputs.push_back(text(f));
    if (f.number == 2) n.outputs.push_back(text(f));
    if (f.number == 3) n.name = text(f);
    if (f.number == 4) n.op_type = text(f);
    CHECK(f.number != 7);  // domain: the default one, left out
    if (f.number == 5) {
      OnnxAttr a;
      pb::Reader ar(f.bytes);
      for (pb::Field g; ar.next(g);) {
        if (g.number == 1) a.name = text(g);
        if (g.number == 20) a.type = g.as_int64();
        if (g.number == 3) a.i = g.as_int64();
        if (g.number == 8) a.ints = pb::unpack_varints(g.bytes);
      }
      n.attrs.push_back(a);
    }
  }
  return n;
}

OnnxValue parse_value_info(std::span<const uint8_t> b) {
  OnnxValue v;
  pb::Reader r(b);
  for (pb::Field f; r.next(f);) {
    if (f.number == 1) v.name = text(f);
    if (f.number != 2) continue;
    pb::Reader type(f.bytes);                                  // TypeProto
    for (pb::Field t; type.next(t);) {
      if (t.number != 1) continue;
      pb::Reader tensor(t.bytes);                              // TypeProto.Tensor
      for (pb::Field e; tensor.next(e);) {
        if (e.number == 1) v.elem_type = e.as_int64();
        if (e.number != 2) continue;
        pb::Reader shape(e.bytes);                             // TensorShapeProto
        for (pb::Field d; shape.next(d);) {
          pb::Reader dim(d.bytes);                             // Dimension
          for (pb::Field x; dim.next(x);) {
            if (x.number == 1) v.dims.push_back(std::to_string(x.as_int64()));
            if (x.number == 2) v.dims.push_back(text(x));
          }
        }
      }
    }
  }
  return v;
}

OnnxModel parse_model(const Bytes& bytes) {
  OnnxModel m;
  pb::Reader r(bytes);
  for (pb::Field f; r.next(f);) {
    switch (f.number) {
      case 1: m.ir_version = f.as_int64(); break;
      case 2: m.producer_name = text(f); break;
      case 3: m.producer_version = text(f); break;
      case 6: m.doc_string = text(f); break;
      case 8: {
        std::pair<std::string, int64_t> o;
        pb::Reader op(f.bytes);
        for (pb::Field g; op.next(g);) {
          if (g.number == 1) o.first = text(g);
          if (g.number == 2) o.second = g.as_int64();
        }
        m.opsets.push_back(o);
        break;
      }
      case 14: {
        std::string k, v;
        pb::Reader e(f.bytes);
        for (pb::Field g; e.next(g);) (g.number == 1 ? k : v) = text(g);
        m.metadata[k] = v;
        ++m.metadata_entries;
        break;
      }
      case 7: {
        pb::Reader g(f.bytes);
        for (pb::Field h; g.next(h);) {
          if (h.number == 1) m.nodes.push_back(parse_node(h.bytes));
          if (h.number == 2) m.graph_name = text(h);
          if (h.number == 5) {
            OnnxTensor t = parse_tensor(h.bytes);
            CHECK_MESSAGE(!m.inits.count(t.name), "initializer " << t.name << " twice");
            m.inits[t.name] = t;
          }
          if (h.number == 11) m.inputs.push_back(parse_value_info(h.bytes));
          if (h.number == 12) m.outputs.push_back(parse_value_info(h.bytes));
        }
        break;
      }
      default: FAIL("unexpected ModelProto field " << f.number);
    }
  }
  return m;
}

// ---- the models ------------------------------------------------------------------

// Deterministic small weights of `bits` bits, [out_c][kh][kw][in_c].
engine::Weights weights(int out_c, int kh, int kw, int in_c, int bits, std::vector<double> scales, int seed) {
  engine::Weights w;
  w.out_c = out_c, w.kernel_h = kh, w.kernel_w = kw, w.in_c = in_c, w.bits = bits, w.scales = std::move(scales);
  const int hi = (1 << (bits - 1)) - 1, span = 2 * hi + 2;  // values in [-hi - 1, hi]
  for (int i = 0; i < out_c * kh * kw * in_c; ++i) w.values.push_back(static_cast<int8_t>((i * 7 + seed * 13) % span - hi - 1));
  return w;
}

// input 6x6x3 -> c1 (3x3 conv, ReLU from zero point -10: a Relu node)
//   -> c2 (3x3 conv, 4-bit weights, explicit clamp [-8, 7]: a Clip node)
//   -> mp (2x2 max pool) -> c3 (1x1 conv, no clamp) -> add(mp, c3) (uint8 output)
//   -> gap -> fc (5 classes)
engine::ModelBuilder hand_model() {
  engine::ModelBuilder b("hand");
  engine::TensorId x = b.add_input("image", 6, 6, 3, 1.0 / 64, 128);
  const engine::TensorId c1 = b.add_conv("c1", x, weights(4, 3, 3, 3, 8, {0.01, 0.02, 0.015, 0.03}, 1),
                                         {100, -200, 300, -400}, {.stride = 1, .pad = 1}, {0.05, -10}, engine::Act::relu);
  const engine::TensorId c2 = b.add_conv("c2", c1, weights(4, 3, 3, 4, 4, {0.04, 0.05, 0.06, 0.07}, 2), {7, -7, 0, 1},
                                         {.pad = 1}, {0.1, 0}, engine::Clamp(-8, 7));
  const engine::TensorId mp = b.add_pool("mp", c2, engine::ModelBuilder::Pool::max, 2, 2);
  const engine::TensorId c3 = b.add_conv("c3", mp, weights(4, 1, 1, 4, 8, {0.003}, 3), {}, {}, {0.08, 3});
  const engine::TensorId sum = b.add_add("add", mp, c3, {0.12, 128, DType::uint8});
  const engine::TensorId gap = b.add_global_avg_pool("gap", sum);
  b.set_output(b.add_fc("fc", gap, weights(5, 1, 1, 4, 8, {0.02, 0.021, 0.022, 0.023, 0.024}, 4),
                        {50, 40, 30, 20, 10}, {0.1, 2}));
  b.set_class_names({"a", "b", "c", "d", "e"});
  b.set_preprocessing("inception: real = (pixel - 128) / 64");
  b.set_metadata("qat_config", "weight_bits=4; act_bits=8 (other keys: defaults)");
  b.set_metadata("source_checkpoint", "runs/q/last.ckpt");
  return b;
}

// input 3x4x2 (not square, so H and W cannot be swapped unseen) -> ap (3x3
// average pool, pad 1) -> fc over the whole [3, 4, 2] tensor (K = 24).
engine::ModelBuilder hwc_fc_model() {
  engine::ModelBuilder b("hwc");
  engine::TensorId x = b.add_input("image", 3, 4, 2, 1.0 / 255, 0);
  x = b.add_pool("ap", x, engine::ModelBuilder::Pool::avg, 3, 1, 1);
  b.set_output(b.add_fc("fc", x, weights(3, 1, 1, 24, 8, {0.01, 0.02, 0.03}, 5), {}, {0.05, 0}));
  return b;
}

quant::OnnxOptions options(DType act) {
  quant::OnnxOptions o;
  o.activations = act;
  o.producer_version = "9.8.7";
  return o;
}

OnnxModel exported(const engine::ModelBuilder& b, DType act, quant::OnnxForm form = quant::OnnxForm::qdq) {
  quant::OnnxOptions o = options(act);
  o.form = form;
  return parse_model(quant::export_onnx(b.desc(), o));
}

const engine::OpDesc& op_named(const engine::ModelDesc& d, const std::string& name) {
  for (const engine::OpDesc& op : d.ops)
    if (op.name == name) return op;
  FAIL("no op " << name);
  return d.ops.front();
}

// The checks every conv / fc shares: the node wiring, the weight and bias
// initializers against the engine's, and the scales against its multipliers.
// `relayout(o, c, h, w)` is the engine's index of ONNX weight [o][c][h][w].
template <class Relayout>
void check_conv(const OnnxModel& m, const engine::ModelDesc& d, const std::string& name, std::vector<int64_t> onnx_dims,
                Relayout relayout) {
  INFO("layer " << name);
  const engine::OpDesc& op = op_named(d, name);
  const engine::TensorDesc& x = d.tensors[op.inputs[0]];
  const engine::TensorDesc& w = d.tensors[op.inputs[1]];
  const engine::TensorDesc& bias = d.tensors[op.inputs[2]];
  const engine::TensorDesc& mult = d.tensors[op.inputs[3]];
  const engine::TensorDesc& shift = d.tensors[op.inputs[4]];
  const engine::TensorDesc& y = d.tensors[op.output];

  const OnnxNode& conv = m.producer(name + ".conv");
  CHECK(conv.op_type == "Conv");
  REQUIRE(conv.inputs.size() == 3);
  const OnnxNode& wdq = m.producer(conv.inputs[1]);
  const OnnxNode& bdq = m.producer(conv.inputs[2]);
  CHECK(wdq.op_type == "DequantizeLinear");
  CHECK(bdq.op_type == "DequantizeLinear");
  REQUIRE(wdq.attr("axis"));
  CHECK(wdq.attr("axis")->i == 0);
  REQUIRE(bdq.attr("axis"));
  CHECK(bdq.attr("axis")->i == 0);
  CHECK(conv.attr("kernel_shape")->ints == std::vector<int64_t>{onnx_dims[2], onnx_dims[3]});
  CHECK(conv.attr("dilations")->ints == std::vector<int64_t>{1, 1});

  // Weights: int8 [Cout, Cin/g, KH, KW], zero points 0.
  const OnnxTensor& wt = m.init(wdq.inputs[0]);
  CHECK(wt.name == w.name);
  CHECK(wt.data_type == 3);
  CHECK(wt.dims == onnx_dims);
  const std::vector<int64_t> codes = wt.ints();
  REQUIRE(codes.size() == w.i8.size());
  for (int64_t o = 0; o < onnx_dims[0]; ++o)
    for (int64_t c = 0; c < onnx_dims[1]; ++c)
      for (int64_t h = 0; h < onnx_dims[2]; ++h)
        for (int64_t v = 0; v < onnx_dims[3]; ++v)
          REQUIRE(codes[((o * onnx_dims[1] + c) * onnx_dims[2] + h) * onnx_dims[3] + v] == w.i8[relayout(o, c, h, v)]);
  const OnnxTensor& wz = m.init(wdq.inputs[2]);
  CHECK(wz.data_type == 3);
  CHECK(wz.ints() == std::vector<int64_t>(onnx_dims[0], 0));

  // s_in * s_w[c] / s_out in float32 is the engine's multiplier M0 * 2^(shift - 31).
  const float s_in = static_cast<float>(x.scale), s_out = static_cast<float>(y.scale);
  const std::vector<float>& s_w = m.init(wdq.inputs[1]).floats;
  REQUIRE(s_w.size() == static_cast<size_t>(onnx_dims[0]));
  for (size_t c = 0; c < s_w.size(); ++c) {
    const double real = std::ldexp(static_cast<double>(mult.i32[c]), shift.i32[c] - 31);
    const float product = s_in * s_w[c];
    const float requant = product / s_out;
    CHECK(std::fabs(requant / real - 1) <= std::ldexp(1.0, -22));  // two float32 ulps
  }

  // Bias: the engine's int32 values, scale s_in * s_w[c] in float32, zero point 0.
  const OnnxTensor& bt = m.init(bdq.inputs[0]);
  CHECK(bt.name == bias.name);
  CHECK(bt.data_type == 6);
  CHECK(bt.dims == std::vector<int64_t>{onnx_dims[0]});
  CHECK(bt.ints() == std::vector<int64_t>(bias.i32.begin(), bias.i32.end()));
  const std::vector<float>& s_b = m.init(bdq.inputs[1]).floats;
  REQUIRE(s_b.size() == s_w.size());
  for (size_t c = 0; c < s_b.size(); ++c) CHECK(s_b[c] == s_in * s_w[c]);
  CHECK(m.init(bdq.inputs[2]).data_type == 6);
  CHECK(m.init(bdq.inputs[2]).ints() == std::vector<int64_t>(onnx_dims[0], 0));
}

// The scale and zero point of the QuantizeLinear that makes engine tensor `name`.
struct Grid {
  float scale = 0;
  int64_t zero_point = 0;
  int64_t type = 0;
};
Grid grid(const OnnxModel& m, const std::string& name) {
  const OnnxNode& q = m.producer(name);
  REQUIRE(q.op_type == "QuantizeLinear");
  const OnnxTensor& s = m.init(q.inputs[1]);
  const OnnxTensor& z = m.init(q.inputs[2]);
  CHECK(s.dims.empty());  // per tensor: scalars
  CHECK(z.dims.empty());
  REQUIRE(s.floats.size() == 1);
  REQUIRE(z.ints().size() == 1);
  return {s.floats[0], z.ints()[0], z.data_type};
}

}  // namespace

// ---- protobuf ------------------------------------------------------------------------

TEST_CASE("protobuf: the writer produces the wire format's documented bytes") {
  pb::Writer w;
  w.varint(1, 150);                                           // 08 96 01: the encoding guide's example
  w.string(2, "testing");                                     // 12 07 "testing"
  w.int64(3, -1);                                             // 18 + 10 bytes: negative int64s take 10
  w.fixed32(5, 1.0f);                                         // 2D 00 00 80 3F
  const std::vector<int64_t> packed = {3, 270, 86942};
  w.packed_int64(4, packed);                                  // 22 06 03 8E 02 9E A7 05
  w.packed_float(6, std::vector<float>{});                    // nothing
  const Bytes want = {0x08, 0x96, 0x01, 0x12, 0x07, 't',  'e',  's',  't',  'i',  'n',  'g',  0x18, 0xFF, 0xFF,
                      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x2D, 0x00, 0x00, 0x80, 0x3F, 0x22, 0x06,
                      0x03, 0x8E, 0x02, 0x9E, 0xA7, 0x05};
  CHECK(w.data() == want);
}

TEST_CASE("protobuf: the reader reads back what the writer wrote, submessages included") {
  pb::Writer inner;
  inner.string(1, "x");
  inner.packed_float(2, std::vector<float>{0.5f, -2.0f, 3.25f});
  pb::Writer outer;
  outer.int64(1, -7);
  outer.message(2, inner);
  outer.varint(3, uint64_t{1} << 63);
  outer.fixed32(4, -0.1f);
  pb::Reader r(outer.data());
  pb::Field f;
  REQUIRE(r.next(f));
  CHECK(f.number == 1);
  CHECK(f.type == pb::WireType::varint);
  CHECK(f.as_int64() == -7);
  REQUIRE(r.next(f));
  CHECK(f.number == 2);
  CHECK(f.type == pb::WireType::length);
  pb::Reader ir(f.bytes);
  pb::Field g;
  REQUIRE(ir.next(g));
  CHECK(g.as_string() == "x");
  REQUIRE(ir.next(g));
  CHECK(pb::unpack_floats(g.bytes) == std::vector<float>{0.5f, -2.0f, 3.25f});
  CHECK_FALSE(ir.next(g));
  REQUIRE(r.next(f));
  CHECK(f.value == uint64_t{1} << 63);
  REQUIRE(r.next(f));
  CHECK(f.type == pb::WireType::fixed32);
  CHECK(f.as_float() == -0.1f);
  CHECK_FALSE(r.next(f));

  // Truncated input: a string longer than what is left, a varint cut short.
  pb::Writer hello;
  hello.varint(1, 1);
  hello.string(2, "hello");
  const Bytes cut(hello.data().begin(), hello.data().end() - 1);
  pb::Reader bad(cut);
  CHECK(bad.next(f));
  CHECK_THROWS_WITH_AS(bad.next(f), doctest::Contains("past the end"), std::runtime_error);
  const Bytes open_varint = {0x08, 0x96};
  pb::Reader bad2(open_varint);
  CHECK_THROWS_WITH_AS(bad2.next(f), doctest::Contains("truncated varint"), std::runtime_error);
  CHECK(pb::unpack_varints(Bytes{0x03, 0x8E, 0x02, 0x9E, 0xA7, 0x05}) == std::vector<int64_t>{3, 270, 86942});
}

// ---- the ONNX model --------------------------------------------------------------------

TEST_CASE("onnx: IR 7, opset 13, producer, the pixel input and the logits output") {
  const OnnxModel m = exported(hand_model(), DType::uint8);
  CHECK(m.ir_version == 7);
  REQUIRE(m.opsets.size() == 1);
  CHECK(m.opsets[0].first == "");
  CHECK(m.opsets[0].second == 13);
  CHECK(m.producer_name == "octet");
  CHECK(m.producer_version == "9.8.7");
  CHECK(m.graph_name == "hand");
  REQUIRE(m.inputs.size() == 1);
  CHECK(m.inputs[0].name == "pixels");
  CHECK(m.inputs[0].elem_type == 2);  // uint8
  CHECK(m.inputs[0].dims == std::vector<std::string>{"batch", "6", "6", "3"});
  REQUIRE(m.outputs.size() == 1);
  CHECK(m.outputs[0].name == "logits");
  CHECK(m.outputs[0].elem_type == 1);  // float
  CHECK(m.outputs[0].dims == std::vector<std::string>{"batch", "5"});

  // Node names are unique; every input is defined before it is read.
  std::set<std::string> names, defined = {"pixels"};
  for (const auto& [name, t] : m.inits) defined.insert(name);
  for (const OnnxNode& n : m.nodes) {
    CHECK(names.insert(n.name).second);
    for (const std::string& in : n.inputs) CHECK_MESSAGE(defined.count(in), n.name << " reads " << in);
    for (const std::string& out : n.outputs) CHECK(defined.insert(out).second);
  }
  CHECK(m.nodes.back().op_type == "Flatten");
  CHECK(m.nodes.back().outputs == std::vector<std::string>{"logits"});
  CHECK(m.nodes.back().attr("axis")->i == 1);
}

TEST_CASE("onnx: the node sequence, uint8 activations") {
  const OnnxModel m = exported(hand_model(), DType::uint8);
  const std::vector<std::string> want = {
      "Transpose", "DequantizeLinear",                                                      // pixels
      "DequantizeLinear", "DequantizeLinear", "Conv", "Relu", "QuantizeLinear", "DequantizeLinear",  // c1
      "DequantizeLinear", "DequantizeLinear", "Conv", "Clip", "QuantizeLinear", "DequantizeLinear",  // c2
      "MaxPool", "QuantizeLinear", "DequantizeLinear",                                      // mp
      "DequantizeLinear", "DequantizeLinear", "Conv", "QuantizeLinear", "DequantizeLinear",  // c3
      "Add", "QuantizeLinear", "DequantizeLinear",                                          // add
      "GlobalAveragePool", "QuantizeLinear", "DequantizeLinear",                            // gap
      "DequantizeLinear", "DequantizeLinear", "Conv", "QuantizeLinear", "DequantizeLinear",  // fc
      "Flatten"};
  CHECK(m.op_types() == want);
  CHECK(m.nodes[0].attr("perm")->ints == std::vector<int64_t>{0, 3, 1, 2});
  CHECK(m.nodes[0].inputs == std::vector<std::string>{"pixels"});
  // The pixels dequantize with their own grid: uint8, zero point 128, scale 1/64.
  const OnnxNode& px = m.nodes[1];
  CHECK(m.init(px.inputs[1]).floats == std::vector<float>{1.0f / 64});
  CHECK(m.init(px.inputs[2]).data_type == 2);
  CHECK(m.init(px.inputs[2]).ints() == std::vector<int64_t>{128});
  // ... and c1 reads them directly.
  CHECK(m.producer("c1.conv").inputs[0] == px.outputs[0]);
  // The add reads the DQs of its two producers.
  CHECK(m.producer("add.add").inputs == std::vector<std::string>{"mp.dq", "c3.dq"});
}

TEST_CASE("onnx: the node sequence, int8 activations: the pixels go through one more Q -> DQ") {
  const OnnxModel m = exported(hand_model(), DType::int8);
  const std::vector<std::string> types = m.op_types();
  REQUIRE(types.size() == 36);
  CHECK(std::vector<std::string>(types.begin(), types.begin() + 5) ==
        std::vector<std::string>{"Transpose", "DequantizeLinear", "QuantizeLinear", "DequantizeLinear", "DequantizeLinear"});
  const Grid g = grid(m, "image.int8");
  CHECK(g.type == 3);
  CHECK(g.zero_point == 0);  // the pixels' 128, in int8
  CHECK(g.scale == 1.0f / 64);
  CHECK(m.producer("c1.conv").inputs[0] == "image.int8.dq");
}

TEST_CASE("onnx: weights relaid out to [Cout, Cin/g, KH, KW], scales reproduce the multipliers, biases") {
  const engine::ModelBuilder b = hand_model();
  const engine::ModelDesc& d = b.desc();
  for (DType act : {DType::uint8, DType::int8}) {
    INFO("activations " << engine::dtype_name(act));
    const OnnxModel m = exported(b, act);
    // Engine conv weights [Cout][KH][KW][Cin/g].
    auto conv_index = [](int64_t kh, int64_t kw, int64_t cg) {
      return [=](int64_t o, int64_t c, int64_t h, int64_t v) { return ((o * kh + h) * kw + v) * cg + c; };
    };
    check_conv(m, d, "c1", {4, 3, 3, 3}, conv_index(3, 3, 3));
    check_conv(m, d, "c2", {4, 4, 3, 3}, conv_index(3, 3, 4));
    check_conv(m, d, "c3", {4, 4, 1, 1}, conv_index(1, 1, 4));
    // The fc after the global pool: engine [5][4], a 1x1 conv.
    check_conv(m, d, "fc", {5, 4, 1, 1}, conv_index(1, 1, 4));
    CHECK(m.producer("c1.conv").attr("pads")->ints == std::vector<int64_t>{1, 1, 1, 1});
    CHECK(m.producer("c1.conv").attr("strides")->ints == std::vector<int64_t>{1, 1});
    CHECK(m.producer("c1.conv").attr("group")->i == 1);
    CHECK(m.producer("fc.conv").attr("pads")->ints == std::vector<int64_t>{0, 0, 0, 0});
  }
}

TEST_CASE("onnx: an fc over an [H, W, C] tensor is a Conv over the whole input; avg pool excludes the padding") {
  const engine::ModelBuilder b = hwc_fc_model();
  const OnnxModel m = exported(b, DType::uint8);
  CHECK(m.op_types() == std::vector<std::string>{"Transpose", "DequantizeLinear", "AveragePool", "QuantizeLinear",
                                                 "DequantizeLinear", "DequantizeLinear", "DequantizeLinear", "Conv",
                                                 "QuantizeLinear", "DequantizeLinear", "Flatten"});
  // Engine fc weights [Cout][K] with K = (h * W + w) * C + c over the [3, 4, 2] input.
  check_conv(m, b.desc(), "fc", {3, 2, 3, 4},
             [](int64_t o, int64_t c, int64_t h, int64_t v) { return o * 24 + (h * 4 + v) * 2 + c; });
  CHECK(m.producer("fc.conv").attr("kernel_shape")->ints == std::vector<int64_t>{3, 4});
  const OnnxNode& ap = m.producer("ap.pool");
  CHECK(ap.attr("kernel_shape")->ints == std::vector<int64_t>{3, 3});
  CHECK(ap.attr("pads")->ints == std::vector<int64_t>{1, 1, 1, 1});
  CHECK(ap.attr("strides")->ints == std::vector<int64_t>{1, 1});
  REQUIRE(ap.attr("count_include_pad"));
  CHECK(ap.attr("count_include_pad")->i == 0);
  // The pool keeps the pixels' grid.
  const Grid g = grid(m, "ap");
  CHECK(g.zero_point == 0);
  CHECK(g.scale == static_cast<float>(1.0 / 255));
}

TEST_CASE("onnx: zero points and clamps in the emitted type") {
  const engine::ModelBuilder b = hand_model();
  const OnnxModel u = exported(b, DType::uint8);
  const OnnxModel s = exported(b, DType::int8);
  // c1: int8 zero point -10 in the engine, ReLU from it: a Relu either way.
  CHECK(grid(u, "c1").type == 2);
  CHECK(grid(u, "c1").zero_point == 118);
  CHECK(grid(s, "c1").type == 3);
  CHECK(grid(s, "c1").zero_point == -10);
  CHECK(u.producer("c1").inputs[0] == "c1.relu");
  CHECK(s.producer("c1").inputs[0] == "c1.relu");
  // c2: a 4-bit grid [-8, 7] around zero point 0: a Clip at the same real bounds.
  for (const OnnxModel* m : {&u, &s}) {
    const OnnxNode& clip = m->producer("c2.clip");
    CHECK(clip.op_type == "Clip");
    CHECK(m->producer("c2").inputs[0] == "c2.clip");
    CHECK(m->init(clip.inputs[1]).floats == std::vector<float>{0.1f * -8});
    CHECK(m->init(clip.inputs[2]).floats == std::vector<float>{0.1f * 7});
  }
  CHECK(grid(u, "c2").zero_point == 128);
  CHECK(grid(s, "c2").zero_point == 0);
  // c3: no clamp, full range: QuantizeLinear straight after the Conv.
  CHECK(u.producer("c3").inputs[0] == "c3.conv");
  CHECK(grid(u, "c3").zero_point == 131);
  CHECK(grid(s, "c3").zero_point == 3);
  // add: a uint8 tensor of the engine (zero point 128).
  CHECK(u.producer("add").inputs[0] == "add.add");
  CHECK(grid(u, "add").zero_point == 128);
  CHECK(grid(s, "add").type == 3);
  CHECK(grid(s, "add").zero_point == 0);
  CHECK(grid(s, "add").scale == 0.12f);
  // The pools keep their input's grid.
  CHECK(grid(u, "mp").zero_point == grid(u, "c2").zero_point);
  CHECK(grid(u, "mp").scale == grid(u, "c2").scale);
  CHECK(grid(s, "gap").zero_point == grid(s, "add").zero_point);
  // The logits.
  CHECK(grid(u, "fc").zero_point == 130);
  CHECK(grid(s, "fc").zero_point == 2);
  CHECK(u.metadata.at("octet.output_zero_point") == "130");
  CHECK(s.metadata.at("octet.output_zero_point") == "2");
  CHECK(std::stof(u.metadata.at("octet.output_scale")) == 0.1f);
}

TEST_CASE("onnx: relu6 becomes a Clip, a ReLU from the bottom of the range nothing") {
  engine::ModelBuilder b("acts");
  engine::TensorId x = b.add_input("image", 2, 2, 1, 1.0 / 255, 0);
  x = b.add_conv("r6", x, weights(2, 1, 1, 1, 8, {0.01}, 6), {}, {}, {0.05, -128}, engine::Act::relu6);
  x = b.add_conv("r", x, weights(2, 1, 1, 2, 8, {0.01}, 7), {}, {}, {0.05, -128}, engine::Act::relu);
  b.set_output(b.add_fc("fc", x, weights(2, 1, 1, 8, 8, {0.01}, 8), {}, {0.1, 0}));
  for (DType act : {DType::uint8, DType::int8}) {
    const OnnxModel m = exported(b, act);
    const OnnxNode& clip = m.producer(m.producer("r6").inputs[0]);
    CHECK(clip.op_type == "Clip");
    CHECK(m.init(clip.inputs[1]).floats == std::vector<float>{0.0f});
    CHECK(m.init(clip.inputs[2]).floats == std::vector<float>{0.05f * 120});  // round(6 / 0.05) codes
    CHECK(m.producer("r").inputs[0] == "r.conv");  // zero point at the bottom: QuantizeLinear saturates alone
  }
}

TEST_CASE("onnx: metadata and doc string") {
  const engine::ModelBuilder b = hand_model();
  const OnnxModel m = exported(b, DType::uint8);
  CHECK(m.metadata_entries == m.metadata.size());  // keys are unique
  for (const auto& [k, v] : b.desc().metadata) {
    REQUIRE_MESSAGE(m.metadata.count(k), "metadata key " << k);
    CHECK(m.metadata.at(k) == v);
  }
  CHECK(m.metadata.at("class_names") == "a\nb\nc\nd\ne");
  CHECK(m.metadata.at("octet.activations") == "uint8");
  CHECK(m.metadata.at("octet.input") == "pixels uint8 NHWC [batch, 6, 6, 3], real = 0.015625 * (p - 128)");
  CHECK(m.metadata.at("octet.weight_bits.c2") == "4 (stored as int8 within the 4-bit range [-8, 7])");
  for (const char* layer : {"c1", "c3", "fc"}) CHECK_FALSE(m.metadata.count(std::string("octet.weight_bits.") + layer));
  CHECK(exported(b, DType::int8).metadata.at("octet.activations") == "int8");

  CHECK(m.doc_string.find("Octet 9.8.7") != std::string::npos);
  CHECK(m.doc_string.find("from runs/q/last.ckpt") != std::string::npos);  // metadata source_checkpoint
  CHECK(m.doc_string.find("uint8 activations") != std::string::npos);
  CHECK(m.doc_string.find("QAT configuration: weight_bits=4; act_bits=8") != std::string::npos);
  quant::OnnxOptions o = options(DType::int8);
  o.source = "elsewhere.ckpt";
  const OnnxModel m8 = parse_model(quant::export_onnx(b.desc(), o));
  CHECK(m8.doc_string.find("from elsewhere.ckpt") != std::string::npos);
  CHECK(m8.doc_string.find("int8 activations") != std::string::npos);
}

TEST_CASE("onnx: what ONNX cannot express the same way is refused, naming the op") {
  // An add whose multipliers do not follow its tensors' scales.
  {
    engine::ModelBuilder b = hand_model();
    engine::OpDesc& add = b.mutable_desc().ops[5];
    REQUIRE(add.name == "add");
    add.params[engine::param::kAShift] -= 1;  // a at half its scale
    CHECK_THROWS_WITH_AS(quant::export_onnx(b.desc()), doctest::Contains("op 5 (add 'add'): rescales its inputs"),
                         quant::OnnxExportError);
  }
  // A pool that changes the scale (the engine copies codes; ONNX would requantize).
  {
    engine::ModelBuilder b = hand_model();
    b.mutable_desc().tensors[op_named(b.desc(), "mp").output].scale *= 2;
    CHECK_THROWS_WITH_AS(quant::export_onnx(b.desc()), doctest::Contains("(max_pool 'mp'): its output grid"),
                         quant::OnnxExportError);
  }
  // An activation without a scale (0: unknown in .oct).
  {
    engine::ModelBuilder b = hand_model();
    b.mutable_desc().tensors[op_named(b.desc(), "c3").output].scale = 0;
    CHECK_THROWS_WITH_AS(quant::export_onnx(b.desc()), doctest::Contains("(conv2d 'c3'): tensor 'c3' has scale 0"),
                         quant::OnnxExportError);
  }
  // A model the engine's reader refuses never gets that far.
  {
    engine::ModelBuilder b = hand_model();
    b.mutable_desc().ops[1].params[engine::param::kConvActMin] = 200;  // act_min > act_max
    CHECK_THROWS_AS(quant::export_onnx(b.desc()), engine::FormatError);
  }
}

// ---- the integer form ----------------------------------------------------------
// Its arithmetic is checked in ONNX Runtime against the engine, bit for bit
// (tests/apps/test_cli_onnx.cpp); here, what it is made of.

TEST_CASE("onnx integer form: the node sequence; no Q/DQ but the logits'") {
  const OnnxModel m = exported(hand_model(), DType::uint8, quant::OnnxForm::integer);
  // MBQM with right shifts only: the high multiply, then the rounding shift.
  const std::vector<std::string> mbqm = {"Mul", "Add", "Div", "Sub", "Sign", "Abs", "Add", "Div", "Mul"};
  const std::vector<std::string> store = {"Clip", "Add", "Cast"};  // clamped before the zero point: Clip sees int32
  std::vector<std::string> want = {"Transpose"};                   // uint8 pixels are the input op's codes
  for (const std::string layer : {"c1", "c2", "c3"}) {
    want.insert(want.end(), {"ConvInteger", "Cast"});
    if (layer != "c3") want.push_back("Add");  // the bias (c3 has none)
    want.insert(want.end(), mbqm.begin(), mbqm.end());
    want.insert(want.end(), store.begin(), store.end());
    if (layer == "c2") want.push_back("MaxPool");
  }
  // add: each input lifted and rescaled; a (mp, the larger scale) by 0.5 =
  // 2^30 * 2^(0 - 31): shift 0, no rounding shift; b by less.
  want.insert(want.end(), {"Cast", "Sub", "Mul", "Mul", "Add", "Div", "Sub"});
  want.insert(want.end(), {"Cast", "Sub", "Mul"});
  want.insert(want.end(), mbqm.begin(), mbqm.end());
  want.push_back("Add");
  want.insert(want.end(), mbqm.begin(), mbqm.end());
  want.insert(want.end(), store.begin(), store.end());
  // gap: the sum of the int8 carries (uint8 codes less 128 each), rounded mean, back to uint8.
  want.insert(want.end(), {"Cast", "ReduceSum", "Sub", "Sign", "Abs", "Add", "Div", "Mul", "Add", "Cast"});
  want.insert(want.end(), {"ConvInteger", "Cast", "Add"});  // fc
  want.insert(want.end(), mbqm.begin(), mbqm.end());
  want.insert(want.end(), store.begin(), store.end());
  want.insert(want.end(), {"DequantizeLinear", "Flatten"});
  auto joined = [](const std::vector<std::string>& v) {
    std::string j;
    for (const std::string& t : v) j += t + " ";
    return j;
  };
  CHECK(joined(m.op_types()) == joined(want));
  CHECK(m.metadata.at("octet.form") == "integer");
  CHECK(m.metadata.at("octet.activations") == "uint8");
  CHECK(m.doc_string.find("integer form") != std::string::npos);

  // int8 activations: the pixels become the int8 carry first.
  const OnnxModel s8 = exported(hand_model(), DType::int8, quant::OnnxForm::integer);
  const std::vector<std::string> types = s8.op_types();
  REQUIRE(types.size() > 5);
  const std::vector<std::string> head(types.begin(), types.begin() + 5);
  CHECK(head == std::vector<std::string>{"Transpose", "Cast", "Sub", "Cast", "ConvInteger"});
}

TEST_CASE("onnx integer form: the constants are the engine's multipliers, shifts, zero points and clamps") {
  const engine::ModelBuilder b = hand_model();
  const engine::ModelDesc& d = b.desc();
  const OnnxModel m = exported(b, DType::uint8, quant::OnnxForm::integer);
  const engine::OpDesc& op = op_named(d, "c1");
  const auto& mult = d.tensors[op.inputs[3]].i32;
  const auto& shift = d.tensors[op.inputs[4]].i32;

  const OnnxNode& conv = m.producer("c1.conv");
  CHECK(conv.op_type == "ConvInteger");
  CHECK(conv.inputs[0] == "pixels.nchw");
  CHECK(m.init(conv.inputs[1]).data_type == 3);
  CHECK(m.init(conv.inputs[1]).dims == std::vector<int64_t>{4, 3, 3, 3});
  CHECK(m.init(conv.inputs[2]).data_type == 2);  // the pixels' zero point, uint8
  CHECK(m.init(conv.inputs[2]).ints() == std::vector<int64_t>{128});
  CHECK(m.init(conv.inputs[3]).ints() == std::vector<int64_t>{0});
  CHECK(conv.attr("pads")->ints == std::vector<int64_t>{1, 1, 1, 1});
  CHECK(m.init(m.producer("c1.biased").inputs[1]).ints() == std::vector<int64_t>{100, -200, 300, -400});

  // Per channel [C, 1, 1]: M0, and the rounding shift's divisor 2^-shift and half of it.
  const OnnxTensor& m0 = m.init(m.producer("c1.requant.product").inputs[1]);
  CHECK(m0.data_type == 7);
  CHECK(m0.dims == std::vector<int64_t>{4, 1, 1});
  CHECK(m0.ints() == std::vector<int64_t>(mult.begin(), mult.end()));
  std::vector<int64_t> divisor, half;
  for (int32_t s : shift) {
    REQUIRE(s < 0);
    divisor.push_back(int64_t{1} << -s);
    half.push_back(int64_t{1} << (-s - 1));
  }
  CHECK(m.init(m.producer("c1.requant.shift.div").inputs[1]).ints() == divisor);
  CHECK(m.init(m.producer("c1.requant.shift.round").inputs[1]).ints() == half);
  // The high multiply's rounding constant and divisor.
  CHECK(m.init(m.producer("c1.requant.nudged").inputs[1]).ints() ==
        std::vector<int64_t>{(int64_t{1} << 30) + (int64_t{1} << 62)});
  CHECK(m.init(m.producer("c1.requant.quotient").inputs[1]).ints() == std::vector<int64_t>{int64_t{1} << 31});
  // Zero point and clamp in uint8 codes: the ReLU from zero point -10 is
  // [118, 255], applied before the zero point as [0, 137].
  const OnnxNode& clip = m.producer("c1.clip");
  CHECK(clip.inputs[0] == "c1.requant.shift.rounded");
  CHECK(m.init(clip.inputs[1]).ints() == std::vector<int64_t>{0});
  CHECK(m.init(clip.inputs[2]).ints() == std::vector<int64_t>{137});
  CHECK(m.init(m.producer("c1.zp").inputs[1]).ints() == std::vector<int64_t>{118});
  CHECK(m.producer("c1").op_type == "Cast");
  CHECK(m.producer("c1").attr("to")->i == 2);

  // The add: left shift 20 on both sides, each side's own multiplier.
  const engine::OpDesc& add = op_named(d, "add");
  CHECK(m.init(m.producer("add.a.lifted").inputs[1]).ints() ==
        std::vector<int64_t>{int64_t{1} << add.params[engine::param::kLeftShift]});
  CHECK(m.init(m.producer("add.a.rescale.product").inputs[1]).ints() ==
        std::vector<int64_t>{add.params[engine::param::kAMult]});
  CHECK(m.init(m.producer("add.b.rescale.product").inputs[1]).ints() ==
        std::vector<int64_t>{add.params[engine::param::kBMult]});
  CHECK(m.init(m.producer("add.requant.product").inputs[1]).ints() ==
        std::vector<int64_t>{add.params[engine::param::kOutMult]});
  // The gap averages the 3x3 output of the max pool: divisor 9, half 4.
  CHECK(m.init(m.producer("gap.mean.div").inputs[1]).ints() == std::vector<int64_t>{9});
  CHECK(m.init(m.producer("gap.mean.round").inputs[1]).ints() == std::vector<int64_t>{4});
}

TEST_CASE("onnx integer form: average pools divide by the in-image size of each window") {
  const OnnxModel m = exported(hwc_fc_model(), DType::uint8, quant::OnnxForm::integer);
  const OnnxNode& sum = m.producer("ap.window_sum");
  CHECK(sum.op_type == "Conv");
  CHECK(sum.attr("group")->i == 2);
  CHECK(m.init(sum.inputs[1]).floats == std::vector<float>(2 * 3 * 3, 1.0f));
  // 3x4 image, 3x3 window, pad 1: 4 elements in the corners, 6 on the edges, 9 inside.
  const std::vector<int64_t> counts = {4, 6, 6, 4, 6, 9, 9, 6, 4, 6, 6, 4};
  const OnnxTensor& divisor = m.init(m.producer("ap.mean.div").inputs[1]);
  CHECK(divisor.dims == std::vector<int64_t>{1, 1, 3, 4});
  CHECK(divisor.ints() == counts);
  // uint8 codes: the carries' sum is 128 per element less.
  std::vector<int64_t> offset;
  for (int64_t c : counts) offset.push_back(128 * c);
  CHECK(m.init(m.producer("ap.carry_sum").inputs[1]).ints() == offset);
  // int8 codes are the carries: no offset either way.
  const OnnxModel s8 = exported(hwc_fc_model(), DType::int8, quant::OnnxForm::integer);
  for (const OnnxNode& n : s8.nodes) CHECK(n.name != "ap.carry_sum");
}

TEST_CASE("onnx integer form: left shifts saturate to int32 before the high multiply") {
  engine::ModelBuilder b("lift");
  engine::TensorId x = b.add_input("image", 2, 2, 1, 1.0 / 255, 0);
  const std::vector<engine::QuantizedMultiplier> mq = {{1 << 30, 3}, {1 << 30, -2}};
  b.set_output(b.add_fc("fc", x, weights(2, 1, 1, 4, 8, {0.01}, 9), {}, {0.1, 0}, engine::Act::none, mq));
  const OnnxModel m = exported(b, DType::uint8, quant::OnnxForm::integer);
  CHECK(m.init(m.producer("fc.requant.lifted").inputs[1]).ints() == std::vector<int64_t>{8, 1});
  // In float64 (exact for int32; ONNX Runtime's int64 Clip misorders [2^31, 2^32)).
  const OnnxNode& sat = m.producer("fc.requant.saturated_f64");
  CHECK(sat.op_type == "Clip");
  REQUIRE(sat.inputs.size() == 3);
  CHECK(m.producer(sat.inputs[0]).op_type == "Cast");
  CHECK(m.init(sat.inputs[1]).doubles() == std::vector<double>{INT32_MIN});
  CHECK(m.init(sat.inputs[2]).doubles() == std::vector<double>{INT32_MAX});
  CHECK(m.producer("fc.requant.saturated").attr("to")->i == 7);
  CHECK(m.init(m.producer("fc.requant.shift.div").inputs[1]).ints() == std::vector<int64_t>{1, 4});
  // Without a left shift there is no lift at all (hand_model).
  const OnnxModel h = exported(hand_model(), DType::uint8, quant::OnnxForm::integer);
  for (const OnnxNode& n : h.nodes) {
    CHECK(n.name.find("requant.lifted") == std::string::npos);
    CHECK(n.name.find("rescale.lifted") == std::string::npos);
  }
}

TEST_CASE("onnx: engine tensor names that collide with the graph's get a suffix") {
  engine::ModelBuilder b("names");
  engine::TensorId x = b.add_input("pixels", 2, 2, 1, 1.0 / 255, 0);
  b.set_output(b.add_fc("logits", x, weights(2, 1, 1, 4, 8, {0.01}, 9), {}, {0.1, 0}));
  const OnnxModel m = exported(b, DType::uint8);
  CHECK(m.inputs[0].name == "pixels");
  CHECK(m.outputs[0].name == "logits");
  CHECK(m.producer("logits").op_type == "Flatten");
  CHECK(m.producer("logits_2").op_type == "QuantizeLinear");
  CHECK(m.inits.count("pixels.scale"));
}

TEST_CASE("write_onnx writes export_onnx's bytes, atomically") {
  const auto dir = std::filesystem::temp_directory_path() / ("octet_onnx_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "hand.onnx").string();
  const engine::ModelBuilder b = hand_model();
  const Bytes want = quant::export_onnx(b.desc(), options(DType::uint8));
  CHECK(quant::write_onnx(path, b.desc(), options(DType::uint8)) == want.size());
  CHECK(quant::write_onnx(path, b.desc(), options(DType::uint8)) == want.size());  // over itself
  std::ifstream f(path, std::ios::binary);
  const Bytes got((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CHECK(got == want);
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.is_regular_file();
  CHECK(files == 1);  // no temporary left behind
  std::filesystem::remove_all(dir);
}
