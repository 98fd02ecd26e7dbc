// The model file: round trips, bit packing, and one test per kind of
// malformed file (each asserting its own error kind and message), plus random
// corruption that must never crash.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

#include "engine/builder.h"
#include "engine/engine.h"
#include "engine/format.h"
#include "engine/samples.h"

using namespace octet::engine;

namespace {

using Bytes = std::vector<uint8_t>;

void put32(Bytes& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
void put64(Bytes& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

uint32_t tensor_index(const ModelDesc& d, const std::string& name) {
  for (size_t i = 0; i < d.tensors.size(); ++i)
    if (d.tensors[i].name == name) return static_cast<uint32_t>(i);
  FAIL("no tensor " << name);
  return 0;
}
size_t op_index(const ModelDesc& d, const std::string& name) {
  for (size_t i = 0; i < d.ops.size(); ++i)
    if (d.ops[i].name == name) return i;
  FAIL("no op " << name);
  return 0;
}

ModelDesc tiny_desc() { return tiny_model(1).desc(); }
Bytes tiny_bytes() { return tiny_model(1).serialize(); }

// Decoding `bytes` must throw FormatError of kind `code` whose message
// contains `text` (and starts with the file name).
void expect_error(const Bytes& bytes, FormatErrc code, const std::string& text) {
  try {
    decode(bytes, "model.oct");
    FAIL("decoded a malformed file; expected " << errc_name(code) << ": " << text);
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    CHECK(std::string(errc_name(e.code())) == std::string(errc_name(code)));
    CHECK(msg.find(text) != std::string::npos);
    CHECK(msg.rfind("model.oct: ", 0) == 0);
  }
}
void expect_error(const ModelDesc& d, FormatErrc code, const std::string& text) { expect_error(encode(d), code, text); }

}  // namespace

TEST_CASE("round trip: encode(decode(bytes)) is the identity and the model is unchanged") {
  const ModelBuilder b = tiny_model(3);
  const Bytes bytes = b.serialize();
  const ModelDesc d = decode(bytes, "tiny");
  CHECK(encode(d) == bytes);
  const ModelDesc& src = b.desc();
  REQUIRE(d.tensors.size() == src.tensors.size());
  for (size_t i = 0; i < d.tensors.size(); ++i) {
    const TensorDesc &x = d.tensors[i], &y = src.tensors[i];
    CHECK(x.name == y.name);
    CHECK(x.dtype == y.dtype);
    CHECK(x.bits == y.bits);
    CHECK(x.shape == y.shape);
    CHECK(x.zero_point == y.zero_point);
    CHECK(x.scale == y.scale);
    CHECK(x.constant == y.constant);
    CHECK(x.i8 == y.i8);
    CHECK(x.i32 == y.i32);
  }
  REQUIRE(d.ops.size() == src.ops.size());
  for (size_t i = 0; i < d.ops.size(); ++i) {
    CHECK(d.ops[i].type == src.ops[i].type);
    CHECK(d.ops[i].name == src.ops[i].name);
    CHECK(d.ops[i].inputs == src.ops[i].inputs);
    CHECK(d.ops[i].output == src.ops[i].output);
    CHECK(d.ops[i].params == src.ops[i].params);
  }
  CHECK(d.metadata == src.metadata);
  CHECK(d.input == src.input);
  CHECK(d.output == src.output);
  REQUIRE(d.find_metadata("model_name"));
  CHECK(*d.find_metadata("model_name") == "tiny");
  CHECK(*d.find_metadata("class_names") == "a\nb\nc\nd\ne");
}

TEST_CASE("the header is laid out as docs/format.md says") {
  const Bytes b = tiny_bytes();
  const ModelDesc d = tiny_desc();
  CHECK(std::string(reinterpret_cast<const char*>(b.data()), 8) == std::string("OCTET\0\r\n", 8));
  auto u32 = [&](size_t at) { return b[at] | b[at + 1] << 8 | b[at + 2] << 16 | static_cast<uint32_t>(b[at + 3]) << 24; };
  CHECK(u32(8) == 1);                   // version
  CHECK(u32(16) == b.size());           // file size (low half)
  CHECK(u32(24) == d.tensors.size());
  CHECK(u32(28) == d.ops.size());
  CHECK(u32(32) == d.metadata.size());
  CHECK(u32(36) == d.input);
  CHECK(u32(40) == d.output);
  CHECK(u32(b.size() - 4) == crc32(std::span<const uint8_t>(b).first(b.size() - 4)));
  CHECK(crc32(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>("123456789"), 9)) == 0xCBF43926u);
}

TEST_CASE("write() is atomic and Model::load reads the file back") {
  const auto dir = std::filesystem::temp_directory_path() / ("octet_format_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "tiny.oct").string();
  const ModelBuilder b = tiny_model(5);
  b.write(path);
  b.write(path);  // overwrite in place
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.is_regular_file();
  CHECK(files == 1);  // no temporary left behind
  const auto model = Model::load(path);
  CHECK(model->num_classes() == 5);
  CHECK(model->input_h() == 8);
  CHECK(model->input_c() == 3);
  CHECK(model->name() == "tiny");
  CHECK(model->class_names() == std::vector<std::string>{"a", "b", "c", "d", "e"});
  CHECK_THROWS_WITH_AS(b.write((dir / "missing" / "x.oct").string()), doctest::Contains("cannot create"), FormatError);
  CHECK_THROWS_WITH_AS(Model::load((dir / "nope.oct").string()), doctest::Contains("cannot open"), FormatError);
  std::filesystem::remove_all(dir);
}

TEST_CASE("b-bit packing round trips for every bitwidth 2..8") {
  std::mt19937 gen(1);
  for (int bits = 2; bits <= 8; ++bits) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{13}, size_t{1000}}) {
      std::uniform_int_distribution<int> v(-(1 << (bits - 1)), (1 << (bits - 1)) - 1);
      std::vector<int8_t> values(n);
      for (auto& x : values) x = static_cast<int8_t>(v(gen));
      const Bytes packed = pack_bits(values, bits);
      CHECK(packed.size() == (n * bits + 7) / 8);
      std::vector<int8_t> back(n);
      unpack_bits(packed, bits, back);
      CHECK(back == values);
    }
  }
  // Known layouts: LSB first.
  const std::vector<int8_t> four{1, -1, -8, 7};
  CHECK(pack_bits(four, 4) == Bytes{0xF1, 0x78});
  const std::vector<int8_t> two{0, 1, -2, -1};
  CHECK(pack_bits(two, 2) == Bytes{0xE4});
  const std::vector<int8_t> three{3, -4, 1};  // 011 100 001 -> bits 0..8
  CHECK(pack_bits(three, 3) == Bytes{0x63, 0x00});
  const std::vector<int8_t> too_big{8};
  CHECK_THROWS_AS(pack_bits(too_big, 4), std::invalid_argument);
}

TEST_CASE("file size reflects the weight bitwidth") {
  ResNetSpec spec;
  spec.bits = 8;
  const size_t s8 = random_resnet(spec).serialize().size();
  spec.bits = 4;
  const size_t s4 = random_resnet(spec).serialize().size();
  spec.bits = 2;
  const size_t s2 = random_resnet(spec).serialize().size();
  const ModelBuilder b2 = random_resnet(spec);
  int64_t weights = 0;
  for (const TensorDesc& t : b2.desc().tensors)
    if (t.constant && t.dtype == DType::int8) weights += t.numel();
  CHECK(weights > 250000);  // ResNet-20: ~270k weights
  const int64_t slack = 16 * 30;  // alignment of each constant
  CHECK(std::llabs(static_cast<int64_t>(s8 - s4) - weights / 2) < slack);
  CHECK(std::llabs(static_cast<int64_t>(s8 - s2) - weights * 3 / 4) < slack);
  // 4-bit weights load back exactly.
  spec.bits = 4;
  const ModelBuilder b4 = random_resnet(spec);
  const ModelDesc d = decode(b4.serialize());
  const ModelDesc& src = b4.desc();
  for (size_t i = 0; i < d.tensors.size(); ++i) CHECK(d.tensors[i].i8 == src.tensors[i].i8);
}

// ---- one test per kind of malformed file --------------------------------------------

TEST_CASE("malformed: truncated") {
  Bytes b = tiny_bytes();
  b.erase(b.end() - 10, b.end());
  expect_error(b, FormatErrc::truncated, "truncated: the header (byte 16) says");
  Bytes tiny(b.begin(), b.begin() + 20);
  expect_error(tiny, FormatErrc::truncated, "an Octet header alone needs 68");
  expect_error(Bytes{}, FormatErrc::truncated, "the file has 0 bytes");
}

TEST_CASE("malformed: trailing bytes") {
  Bytes b = tiny_bytes();
  b.push_back(0);
  expect_error(b, FormatErrc::trailing_bytes, "1 unexpected bytes after the end");
}

TEST_CASE("malformed: bad magic") {
  Bytes b = tiny_bytes();
  b[0] = 'P';
  expect_error(b, FormatErrc::bad_magic, "not an Octet model file (bad magic at byte 0");
}

TEST_CASE("malformed: bad version") {
  Bytes b = tiny_bytes();
  put32(b, 8, 2);
  fix_crc(b);
  expect_error(b, FormatErrc::bad_version, "format version 2 is not supported (this reader knows version 1) (byte 8)");
}

TEST_CASE("malformed: bad CRC") {
  Bytes b = tiny_bytes();
  b[b.size() / 2] ^= 0x10;
  expect_error(b, FormatErrc::bad_crc, "CRC32 mismatch");
}

TEST_CASE("malformed: huge counts and dimensions are rejected before any allocation") {
  SUBCASE("tensor count") {
    Bytes b = tiny_bytes();
    put32(b, 24, 0xFFFFFFFFu);
    fix_crc(b);
    expect_error(b, FormatErrc::out_of_bounds, "the tensor table (4294967295 entries, count at byte 24)");
  }
  SUBCASE("op count") {
    Bytes b = tiny_bytes();
    put32(b, 28, 100000000);
    fix_crc(b);
    expect_error(b, FormatErrc::out_of_bounds, "the op table (100000000 entries");
  }
  SUBCASE("a dimension above 2^24") {
    ModelDesc d = tiny_desc();
    d.tensors[d.input].shape[0] = int64_t{1} << 25;
    expect_error(d, FormatErrc::too_large, "dimension 0 = 33554432 exceeds the limit 2^24");
  }
  SUBCASE("an activation above 2^24 elements") {
    ModelDesc d = tiny_desc();
    d.tensors[d.input].shape = {4096, 4096, 3};
    expect_error(d, FormatErrc::too_large, "activation of 50331648 elements per image exceeds the limit 2^24");
  }
  SUBCASE("a constant claiming more elements than its data holds") {
    ModelDesc d = tiny_desc();
    const uint32_t w = tensor_index(d, "conv1.weight");
    d.tensors[w].shape = {1 << 12, 1 << 12, 3, 3};  // data is still the original 216 values
    expect_error(d, FormatErrc::bad_field, "data size 216 (byte 240) must be 150994944 for 150994944 8-bit values");
    d.tensors[w].shape = {1 << 20, 1 << 20, 1 << 20, 3};
    expect_error(d, FormatErrc::too_large, "element count exceeds 2^40");
  }
}

TEST_CASE("malformed: offsets and sizes outside the file") {
  const ModelDesc d = tiny_desc();
  const uint32_t w = tensor_index(d, "conv1.weight");
  SUBCASE("constant data offset") {
    Bytes b = tiny_bytes();
    put64(b, 64 + 64 * w + 40, uint64_t{1} << 40);
    fix_crc(b);
    expect_error(b, FormatErrc::out_of_bounds, "lies outside the data section");
  }
  SUBCASE("string offset") {
    Bytes b = tiny_bytes();
    put32(b, 64 + 64 * w + 0, 0xFFFFFF00u);
    fix_crc(b);
    expect_error(b, FormatErrc::out_of_bounds, "lies outside the string section");
  }
  SUBCASE("data section offset") {
    Bytes b = tiny_bytes();
    put64(b, 48, b.size() + 100);
    fix_crc(b);
    expect_error(b, FormatErrc::out_of_bounds, "data offset");
  }
  SUBCASE("op input names a tensor that does not exist") {
    ModelDesc m = tiny_desc();
    m.ops[1].inputs[0] = 999;
    expect_error(m, FormatErrc::out_of_bounds, "input 0 names tensor 999, which does not exist");
  }
  SUBCASE("graph output does not exist") {
    ModelDesc m = tiny_desc();
    m.output = 12345;
    expect_error(m, FormatErrc::out_of_bounds, "output tensor 12345 does not exist");
  }
}

TEST_CASE("malformed: use before definition / cycle / two producers") {
  SUBCASE("ops out of order") {
    ModelDesc d = tiny_desc();
    const size_t dw = op_index(d, "dw"), conv1 = op_index(d, "conv1");
    std::swap(d.ops[dw], d.ops[conv1]);
    expect_error(d, FormatErrc::graph_order, "(conv2d 'dw'): input 0 (x) reads tensor");
    expect_error(d, FormatErrc::graph_order, "before any op defines it (ops must be in topological order; is there a cycle?)");
  }
  SUBCASE("a cycle: conv1 reads the output of add, which depends on conv1") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "conv1")].inputs[0] = d.ops[op_index(d, "add")].output;
    expect_error(d, FormatErrc::graph_order, "before any op defines it");
  }
  SUBCASE("two ops write the same tensor") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "pw")].output = d.ops[op_index(d, "dw")].output;
    expect_error(d, FormatErrc::graph_order, "is already defined (by an earlier op)");
  }
  SUBCASE("an op writes a constant") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "pw")].output = tensor_index(d, "conv1.bias");
    expect_error(d, FormatErrc::graph_order, "is already defined (a constant)");
  }
  SUBCASE("the output is never produced") {
    ModelDesc d = tiny_desc();
    d.ops.pop_back();
    expect_error(d, FormatErrc::graph_order, "graph output tensor");
  }
}

TEST_CASE("malformed: type mismatch between ops") {
  SUBCASE("an int32 tensor fed as an activation") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "pw")].inputs[0] = tensor_index(d, "conv1.bias");
    expect_error(d, FormatErrc::type_mismatch,
                 "op 4 (conv2d 'pw'): input 0 (x) must be an int8/uint8 activation, tensor");
    expect_error(d, FormatErrc::type_mismatch, "is a constant int32 tensor");
  }
  SUBCASE("an activation where weights belong") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "pw")].inputs[1] = d.ops[op_index(d, "maxpool")].output;
    expect_error(d, FormatErrc::type_mismatch, "input 1 (weights) must be a constant int8 tensor");
  }
  SUBCASE("an int32 activation") {
    ModelDesc d = tiny_desc();
    d.tensors[d.ops[op_index(d, "dw")].output].dtype = DType::int32;
    expect_error(d, FormatErrc::type_mismatch, "an int32 tensor must be a constant");
  }
  SUBCASE("the raw pixels read by a conv") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "conv1")].inputs[0] = d.input;
    expect_error(d, FormatErrc::type_mismatch, "is the graph input (raw uint8 pixels); only an input op reads it");
  }
  SUBCASE("uint8 logits") {
    ModelDesc d = tiny_desc();
    d.output = d.ops[op_index(d, "maxpool")].output;
    d.metadata.pop_back();  // class_names
    expect_error(d, FormatErrc::type_mismatch, "logits must be int8, not uint8");
  }
}

TEST_CASE("malformed: shape mismatch between producer and consumer") {
  SUBCASE("declared output shape") {
    ModelDesc d = tiny_desc();
    d.tensors[d.ops[op_index(d, "dw")].output].shape = {4, 5, 8};
    expect_error(d, FormatErrc::shape_mismatch, "is declared [4, 5, 8] but the op produces [4, 4, 8]");
  }
  SUBCASE("add of different shapes") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "add")].inputs[1] = d.ops[op_index(d, "conv1")].output;
    expect_error(d, FormatErrc::shape_mismatch, "inputs have different shapes [4, 4, 8] and [8, 8, 8]");
  }
  SUBCASE("fc weights of the wrong K") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "fc")].inputs[0] = d.ops[op_index(d, "avgpool")].output;  // [4,4,8] = 128, weights [5,8]
    expect_error(d, FormatErrc::shape_mismatch, "must be [Cout, K] with K = 128");
  }
  SUBCASE("bias of the wrong length") {
    ModelDesc d = tiny_desc();
    const uint32_t bias = tensor_index(d, "conv1.bias");
    d.tensors[bias].i32.push_back(0);
    d.tensors[bias].shape = {9};
    expect_error(d, FormatErrc::shape_mismatch, "has shape [9], expected [8]");
  }
}

TEST_CASE("malformed: quantization parameters out of range") {
  SUBCASE("multiplier below 2^30") {
    ModelDesc d = tiny_desc();
    d.tensors[tensor_index(d, "conv1.multiplier")].i32[2] = 12345;
    expect_error(d, FormatErrc::bad_quant, "channel 2 multiplier 12345 must be 0 or in [2^30, 2^31)");
  }
  SUBCASE("negative multiplier") {
    ModelDesc d = tiny_desc();
    d.tensors[tensor_index(d, "fc.multiplier")].i32[0] = -(1 << 30);
    expect_error(d, FormatErrc::bad_quant, "multiplier -1073741824 must be 0 or in [2^30, 2^31)");
  }
  SUBCASE("shift out of range") {
    ModelDesc d = tiny_desc();
    d.tensors[tensor_index(d, "conv1.shift")].i32[0] = 31;
    expect_error(d, FormatErrc::bad_quant, "channel 0 shift 31 must be in [-31, 30]");
  }
  SUBCASE("add input shift above 0") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "add")].params[param::kAShift] = 1;
    expect_error(d, FormatErrc::bad_quant, "input a shift 1 must be in [-31, 0]");
  }
  SUBCASE("add left shift") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "add")].params[param::kLeftShift] = 23;
    expect_error(d, FormatErrc::bad_quant, "left_shift 23 must be in [0, 22]");
  }
  SUBCASE("clamp outside the output dtype") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "conv1")].params[param::kConvActMax] = 300;  // uint8 output
    expect_error(d, FormatErrc::bad_quant, "activation clamp [0, 300] must satisfy 0 <= act_min <= act_max <= 255");
  }
}

TEST_CASE("malformed: accumulator headroom") {
  ModelDesc d = tiny_desc();
  d.tensors[tensor_index(d, "conv1.bias")].i32[3] = 2147000000;
  expect_error(d, FormatErrc::headroom, "(conv2d 'conv1'): accumulator headroom violated for output channel 3");
  // K large enough on its own: an fc over 256*256*2 raw pixels (max|x - zp| = 255).
  // 131072 * 64 * 255 = 2139095040 fits int32; 131072 * 65 * 255 does not.
  auto fc_model = [](int8_t w_max) {
    ModelBuilder b;
    TensorId x = b.add_input("x", 256, 256, 2, 1.0, 0);
    Weights w;
    w.out_c = 1;
    w.in_c = 256 * 256 * 2;
    w.values.assign(w.in_c, 1);
    w.values[77] = w_max;
    w.scales = {1.0};
    b.set_output(b.add_fc("big", x, w, {}, {}, Act::none, std::vector<QuantizedMultiplier>{{1 << 30, -20}}));
    return b;
  };
  CHECK_NOTHROW(fc_model(64).serialize());
  CHECK_THROWS_WITH_AS(fc_model(65).serialize(),
                       doctest::Contains("(fully_connected 'big'): accumulator headroom violated for output channel 0: "
                                         "K * max|w| * max|x - zp| + |bias| = 131072 * 65 * 255 + 0 = 2172518400 "
                                         "exceeds 2^31 - 1"),
                       FormatError);
}

TEST_CASE("malformed: unknown op type") {
  ModelDesc d = tiny_desc();
  d.ops[3].type = static_cast<OpType>(99);
  expect_error(d, FormatErrc::unknown_op, "unknown op type 99");
}

TEST_CASE("malformed: zero points outside the dtype range") {
  SUBCASE("int8") {
    ModelDesc d = tiny_desc();
    d.tensors[d.ops[op_index(d, "dw")].output].zero_point = 200;
    expect_error(d, FormatErrc::bad_zero_point, "zero point 200 is outside [-128, 127] for int8");
  }
  SUBCASE("uint8") {
    ModelDesc d = tiny_desc();
    d.tensors[d.input].zero_point = -1;
    expect_error(d, FormatErrc::bad_zero_point, "zero point -1 is outside [0, 255] for uint8");
  }
  SUBCASE("int32") {
    ModelDesc d = tiny_desc();
    d.tensors[tensor_index(d, "fc.bias")].zero_point = 5;
    expect_error(d, FormatErrc::bad_zero_point, "zero point 5 is outside [0, 0] for int32");
  }
  SUBCASE("asymmetric weights") {
    ModelDesc d = tiny_desc();
    d.tensors[tensor_index(d, "pw.weight")].zero_point = 3;
    expect_error(d, FormatErrc::bad_zero_point, "weights are symmetric (zero point 0)");
  }
  SUBCASE("input op") {
    ModelDesc d = tiny_desc();
    d.tensors[d.ops[0].output].zero_point = 0;
    expect_error(d, FormatErrc::bad_zero_point, "must be the pixels' zero point - 128 = -128");
  }
}

TEST_CASE("malformed: reserved fields, enums, metadata") {
  SUBCASE("header flags") {
    Bytes b = tiny_bytes();
    b[12] = 1;
    fix_crc(b);
    expect_error(b, FormatErrc::bad_field, "header flags 1 must be 0 (byte 12)");
  }
  SUBCASE("dtype") {
    Bytes b = tiny_bytes();
    b[64 + 8] = 9;
    fix_crc(b);
    expect_error(b, FormatErrc::bad_field, "unknown dtype 9 (byte 72)");
  }
  SUBCASE("unused op parameter") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "gap")].params[4] = 1;
    expect_error(d, FormatErrc::bad_field, "unused parameter 4 must be 0");
  }
  SUBCASE("a scale that is not finite") {
    ModelDesc d = tiny_desc();
    d.tensors[1].scale = -1.0;
    expect_error(d, FormatErrc::bad_field, "scale -1 must be finite and >= 0");
  }
  SUBCASE("pad >= kernel") {
    ModelDesc d = tiny_desc();
    d.ops[op_index(d, "maxpool")].params[param::kPoolPad] = 2;
    expect_error(d, FormatErrc::bad_field, "pad 2 must be in [0, kernel) for a 2x2 kernel");
  }
  SUBCASE("class names vs outputs") {
    ModelDesc d = tiny_desc();
    d.metadata.back().second = "a\nb";
    expect_error(d, FormatErrc::bad_metadata, "class_names lists 2 names, the model has 5 outputs");
  }
  SUBCASE("duplicate metadata key") {
    ModelDesc d = tiny_desc();
    d.metadata.push_back(d.metadata.front());
    expect_error(d, FormatErrc::bad_metadata, "metadata key 'model_name' appears twice");
  }
}

TEST_CASE("ModelBuilder refuses to write a model the reader would reject") {
  ModelBuilder b = tiny_model(1);
  b.mutable_desc().tensors[tensor_index(b.desc(), "conv1.shift")].i32[0] = 99;
  CHECK_THROWS_WITH_AS(b.serialize(), doctest::Contains("ModelBuilder(tiny): op 1 (conv2d 'conv1'): channel 0 shift 99"),
                       FormatError);
  ModelBuilder empty;
  CHECK_THROWS_AS(empty.serialize(), std::invalid_argument);
  ModelBuilder bad;
  TensorId x = bad.add_input("x", 4, 4, 3, 1.0, 0);
  Weights w;
  w.out_c = 2;
  w.kernel_h = w.kernel_w = 3;
  w.in_c = 3;
  w.values.assign(10, 0);  // needs 54
  w.scales = {0.1};
  CHECK_THROWS_WITH_AS(bad.add_conv("c", x, w, {}, {}, {}), doctest::Contains("weights hold 10 values, their shape needs 54"),
                       std::invalid_argument);
}

TEST_CASE("random corruption never crashes: every outcome is a model or a FormatError") {
  const Bytes valid = tiny_bytes();
  std::mt19937_64 gen(2024);
  int loaded = 0, rejected = 0;
  std::vector<uint8_t> pixels(8 * 8 * 3, 77);
  for (int i = 0; i < 600; ++i) {
    Bytes b = valid;
    const int kind = i % 4;
    if (kind == 0) {  // flip a few bytes
      for (int k = 0; k < 1 + static_cast<int>(gen() % 4); ++k) b[gen() % b.size()] ^= static_cast<uint8_t>(1 + gen() % 255);
    } else if (kind == 1) {  // overwrite a 32-bit field with an extreme value
      const size_t at = (gen() % (b.size() / 4)) * 4;
      const uint32_t extremes[] = {0, 1, 0x7FFFFFFF, 0x80000000u, 0xFFFFFFFFu, 0x10000, 255};
      put32(b, std::min(at, b.size() - 4), extremes[gen() % 7]);
    } else if (kind == 2) {  // truncate or extend
      b.resize(gen() % (b.size() + 50), 0);
    } else {  // a byte inside the tables, header patched consistently
      b[64 + gen() % (b.size() - 68)] = static_cast<uint8_t>(gen());
    }
    if (i % 2 == 0 && b.size() >= 24) {  // half the time get past the size and CRC checks
      put64(b, 16, b.size());
      fix_crc(b);
    }
    try {
      auto model = Model::from_bytes(b, "mutant");
      Session s(model, 2);
      std::vector<uint8_t> px(model->input_bytes() * 2, 77);
      const auto logits = s.run(px.data(), 2);
      CHECK(logits.size() == 2 * static_cast<size_t>(model->num_classes()));
      ++loaded;
    } catch (const FormatError& e) {
      CHECK(std::string(e.what()).rfind("mutant: ", 0) == 0);
      ++rejected;
    }
  }
  CHECK(rejected > 300);
  MESSAGE("mutants loaded: " << loaded << ", rejected: " << rejected);
}
