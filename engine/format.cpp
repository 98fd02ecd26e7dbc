// engine/format.cpp: encode/decode of the .oct model file (docs/format.md),
// the graph validator and ModelBuilder.
//
// The reader never trusts a count or an offset before checking it against the
// bytes actually present: every table is bounds-checked as a whole before a
// vector of its records is reserved, and constant data sizes are checked
// against the data section before they are expanded.
#include "engine/format.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>

namespace octet::engine {

namespace {

// ---- layout (docs/format.md) ------------------------------------------------
constexpr size_t kHeaderSize = 64;
constexpr size_t kTensorRecord = 64;
constexpr size_t kOpRecord = 80;
constexpr size_t kMetaRecord = 16;
constexpr size_t kCrcSize = 4;
constexpr size_t kDataAlign = 16;
constexpr uint32_t kNoInput = 0xFFFFFFFFu;
constexpr uint64_t kMaxFileBytes = uint64_t{1} << 31;
constexpr uint8_t kFlagConstant = 1;

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

[[noreturn]] void fail(FormatErrc code, const std::string& message) { throw FormatError(code, message); }

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// Little-endian loads/stores, independent of the host's byte order.
uint64_t load_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint8_t ld8(const uint8_t* p) { return p[0]; }
uint16_t ld16(const uint8_t* p) { return static_cast<uint16_t>(load_le(p, 2)); }
uint32_t ld32(const uint8_t* p) { return static_cast<uint32_t>(load_le(p, 4)); }
int32_t ldi32(const uint8_t* p) { return static_cast<int32_t>(ld32(p)); }
uint64_t ld64(const uint8_t* p) { return load_le(p, 8); }
double ldf64(const uint8_t* p) {
  const uint64_t bits = ld64(p);
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

struct Out {
  std::vector<uint8_t> bytes;
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void u8(uint8_t v) { put(v, 1); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void i32(int32_t v) { put(static_cast<uint32_t>(v), 4); }
  void u64(uint64_t v) { put(v, 8); }
  void f64(double d) {
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof d);
    put(bits, 8);
  }
  void patch32(size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<uint8_t>(v >> (8 * i));
  }
  void patch64(size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) bytes[at + i] = static_cast<uint8_t>(v >> (8 * i));
  }
};

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

bool dtype_valid(uint8_t d) { return d >= 1 && d <= 3; }
bool op_valid(uint16_t t) { return t >= 1 && t <= 7; }

int arity(OpType t) {
  switch (t) {
    case OpType::input: return 1;
    case OpType::conv2d: return 5;
    case OpType::fully_connected: return 5;
    case OpType::add: return 2;
    case OpType::max_pool: return 1;
    case OpType::avg_pool: return 1;
    case OpType::global_avg_pool: return 1;
  }
  return 0;
}
// How many params slots an op type uses (the rest must be 0).
int param_count(OpType t) {
  switch (t) {
    case OpType::input: return 0;
    case OpType::conv2d: return 5;
    case OpType::fully_connected: return 2;
    case OpType::add: return 9;
    case OpType::max_pool: return 4;
    case OpType::avg_pool: return 4;
    case OpType::global_avg_pool: return 0;
  }
  return 0;
}

std::pair<int32_t, int32_t> dtype_range(DType d) {
  switch (d) {
    case DType::int8: return {-128, 127};
    case DType::uint8: return {0, 255};
    case DType::int32: return {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()};
  }
  return {0, 0};
}

// ---- the graph validator ------------------------------------------------------

// Checks the graph semantics of a decoded model: order, types, shapes,
// quantization parameters, accumulator headroom. Record-level checks
// (enums, bounds, sizes) were done by the decoder.
class Validator {
 public:
  Validator(const ModelDesc& m, const std::string& name) : m_(m), name_(name) {}

  void run() {
    const size_t n = m_.tensors.size();
    defined_.assign(n, false);
    lo_.assign(n, -128);
    hi_.assign(n, 127);
    for (size_t t = 0; t < n; ++t) defined_[t] = m_.tensors[t].constant;

    check_graph_input();
    defined_[m_.input] = true;
    for (size_t i = 0; i < m_.ops.size(); ++i) check_op(i);
    check_graph_output();
    check_metadata();
  }

 private:
  const ModelDesc& m_;
  const std::string& name_;
  std::vector<bool> defined_;
  std::vector<int32_t> lo_, hi_;  // value range of each activation, int8 carry domain
  size_t op_ = 0;

  std::string tensor_ctx(uint32_t t) const { return cat("tensor ", t, " '", m_.tensors[t].name, "'"); }
  std::string op_ctx() const {
    const OpDesc& op = m_.ops[op_];
    return cat(name_, ": op ", op_, " (", op_name(op.type), " '", op.name, "'): ");
  }
  [[noreturn]] void op_fail(FormatErrc code, const std::string& what) const { fail(code, op_ctx() + what); }

  static int32_t carry_offset(DType d) { return d == DType::uint8 ? 128 : 0; }
  int32_t carry_zp(uint32_t t) const { return m_.tensors[t].zero_point - carry_offset(m_.tensors[t].dtype); }

  void check_graph_input() {
    const TensorDesc& t = m_.tensors[m_.input];
    const std::string ctx = cat(name_, ": graph input ", tensor_ctx(m_.input), ": ");
    if (t.constant || t.dtype != DType::uint8)
      fail(FormatErrc::type_mismatch, ctx + cat("must be a uint8 activation (pixels), not a ",
                                                t.constant ? "constant " : "", dtype_name(t.dtype)));
    if (t.shape.size() != 3)
      fail(FormatErrc::shape_mismatch, ctx + "must have shape [H, W, C], not " + shape_str(t.shape));
  }

  void check_graph_output() {
    const TensorDesc& t = m_.tensors[m_.output];
    const std::string ctx = cat(name_, ": graph output ", tensor_ctx(m_.output), ": ");
    if (t.constant || m_.output == m_.input || !defined_[m_.output])
      fail(FormatErrc::graph_order, ctx + "is not produced by any op");
    if (t.dtype != DType::int8) fail(FormatErrc::type_mismatch, ctx + cat("logits must be int8, not ", dtype_name(t.dtype)));
  }

  void check_metadata() {
    std::set<std::string> keys;
    for (const auto& [k, v] : m_.metadata) {
      if (!keys.insert(k).second) fail(FormatErrc::bad_metadata, cat(name_, ": metadata key '", k, "' appears twice"));
    }
    if (const std::string* names = m_.find_metadata("class_names")) {
      int64_t count = names->empty() ? 0 : 1;
      for (char c : *names) count += c == '\n';
      const int64_t classes = m_.tensors[m_.output].numel();
      if (count != classes)
        fail(FormatErrc::bad_metadata,
             cat(name_, ": metadata class_names lists ", count, " names, the model has ", classes, " outputs"));
    }
  }

  // The operand `slot` (named `role`) of the current op: checks it is defined
  // and of the wanted kind.
  const TensorDesc& operand(int slot, const char* role) {
    const uint32_t id = m_.ops[op_].inputs[slot];
    if (!defined_[id])
      op_fail(FormatErrc::graph_order,
              cat("input ", slot, " (", role, ") reads ", tensor_ctx(id),
                  " before any op defines it (ops must be in topological order; is there a cycle?)"));
    return m_.tensors[id];
  }
  const TensorDesc& activation_in(int slot, const char* role) {
    const TensorDesc& t = operand(slot, role);
    const uint32_t id = m_.ops[op_].inputs[slot];
    if (t.constant || t.dtype == DType::int32)
      op_fail(FormatErrc::type_mismatch,
              cat("input ", slot, " (", role, ") must be an int8/uint8 activation, ", tensor_ctx(id), " is a ",
                  t.constant ? "constant " : "", dtype_name(t.dtype), " tensor"));
    if (id == m_.input && m_.ops[op_].type != OpType::input)
      op_fail(FormatErrc::type_mismatch,
              cat("input ", slot, " (", role, ") is the graph input (raw uint8 pixels); only an input op reads it"));
    return t;
  }
  const TensorDesc& constant_in(int slot, const char* role, DType dtype, const std::vector<int64_t>* shape) {
    const TensorDesc& t = operand(slot, role);
    const uint32_t id = m_.ops[op_].inputs[slot];
    if (!t.constant || t.dtype != dtype)
      op_fail(FormatErrc::type_mismatch, cat("input ", slot, " (", role, ") must be a constant ", dtype_name(dtype),
                                             " tensor, ", tensor_ctx(id), " is a ", t.constant ? "constant " : "",
                                             dtype_name(t.dtype), t.constant ? "" : " activation"));
    if (shape && t.shape != *shape)
      op_fail(FormatErrc::shape_mismatch, cat("input ", slot, " (", role, ") ", tensor_ctx(id), " has shape ",
                                              shape_str(t.shape), ", expected ", shape_str(*shape)));
    return t;
  }

  const TensorDesc& output_checked(const std::vector<int64_t>& shape) {
    const OpDesc& op = m_.ops[op_];
    const uint32_t id = op.output;
    const TensorDesc& t = m_.tensors[id];
    if (t.constant || id == m_.input || defined_[id])
      op_fail(FormatErrc::graph_order,
              cat("output ", tensor_ctx(id), " is already defined (",
                  t.constant ? "a constant" : id == m_.input ? "the graph input" : "by an earlier op",
                  "); every activation has exactly one producer"));
    if (t.dtype == DType::int32)
      op_fail(FormatErrc::type_mismatch, cat("output ", tensor_ctx(id), " must be int8 or uint8, not int32"));
    if (t.shape != shape)
      op_fail(FormatErrc::shape_mismatch, cat("output ", tensor_ctx(id), " is declared ", shape_str(t.shape),
                                              " but the op produces ", shape_str(shape)));
    return t;
  }

  void check_clamp(int32_t act_min, int32_t act_max, const TensorDesc& out) {
    const auto [lo, hi] = dtype_range(out.dtype);
    if (act_min < lo || act_max > hi || act_min > act_max)
      op_fail(FormatErrc::bad_quant, cat("activation clamp [", act_min, ", ", act_max, "] must satisfy ", lo,
                                         " <= act_min <= act_max <= ", hi, " (", dtype_name(out.dtype), " output)"));
    const int32_t off = carry_offset(out.dtype);
    lo_[m_.ops[op_].output] = act_min - off;
    hi_[m_.ops[op_].output] = act_max - off;
  }

  void check_multiplier(int32_t m, int32_t shift, int32_t min_shift, int32_t max_shift, const std::string& what) {
    const bool m_ok = m == 0 || (m >= (int32_t{1} << 30));  // int32 cannot reach 2^31
    if (!m_ok)
      op_fail(FormatErrc::bad_quant,
              cat(what, " multiplier ", m, " must be 0 or in [2^30, 2^31) = [1073741824, 2147483647]"));
    if (shift < min_shift || shift > max_shift)
      op_fail(FormatErrc::bad_quant, cat(what, " shift ", shift, " must be in [", min_shift, ", ", max_shift, "]"));
  }

  void check_zp_same(const TensorDesc& x, const TensorDesc& y) {
    if (x.dtype != y.dtype)
      op_fail(FormatErrc::type_mismatch, cat("output must keep the input's dtype ", dtype_name(x.dtype), ", not ",
                                             dtype_name(y.dtype)));
    if (x.zero_point != y.zero_point)
      op_fail(FormatErrc::bad_zero_point,
              cat("output zero point ", y.zero_point, " must equal the input's ", x.zero_point));
  }

  // K * max|w[c]| * max|x - x_zp| + |bias[c]| <= INT32_MAX for every channel.
  void check_headroom(uint32_t x_id, const TensorDesc& w, const TensorDesc& bias, int64_t k) {
    const int64_t zp = carry_zp(x_id);
    const int64_t max_dx = std::max(std::abs(lo_[x_id] - zp), std::abs(hi_[x_id] - zp));
    const int64_t out_c = w.shape[0];
    const int64_t per = static_cast<int64_t>(w.i8.size()) / out_c;
    for (int64_t c = 0; c < out_c; ++c) {
      int64_t max_w = 0;
      for (int64_t i = 0; i < per; ++i) max_w = std::max<int64_t>(max_w, std::abs(int{w.i8[c * per + i]}));
      const int64_t bound = k * max_w * max_dx + std::abs(static_cast<int64_t>(bias.i32[c]));
      if (bound > std::numeric_limits<int32_t>::max())
        op_fail(FormatErrc::headroom,
                cat("accumulator headroom violated for output channel ", c, ": K * max|w| * max|x - zp| + |bias| = ",
                    k, " * ", max_w, " * ", max_dx, " + ", std::abs(static_cast<int64_t>(bias.i32[c])), " = ", bound,
                    " exceeds 2^31 - 1"));
    }
  }

  void check_requant_vectors(const TensorDesc& mult, const TensorDesc& shift) {
    for (size_t c = 0; c < mult.i32.size(); ++c)
      check_multiplier(mult.i32[c], shift.i32[c], kMinShift, kMaxShift, cat("channel ", c));
  }

  void check_op(size_t i) {
    op_ = i;
    const OpDesc& op = m_.ops[i];
    const auto& p = op.params;
    switch (op.type) {
      case OpType::input: {
        if (op.inputs[0] != m_.input)
          op_fail(FormatErrc::type_mismatch, cat("reads ", tensor_ctx(op.inputs[0]), ", an input op reads the graph input ",
                                                 tensor_ctx(m_.input)));
        const TensorDesc& x = activation_in(0, "pixels");
        const TensorDesc& y = output_checked(x.shape);
        if (y.dtype != DType::int8)
          op_fail(FormatErrc::type_mismatch, cat("output must be int8, not ", dtype_name(y.dtype)));
        if (y.zero_point != x.zero_point - 128)
          op_fail(FormatErrc::bad_zero_point, cat("output zero point ", y.zero_point,
                                                  " must be the pixels' zero point - 128 = ", x.zero_point - 128));
        lo_[op.output] = -128;
        hi_[op.output] = 127;
        break;
      }
      case OpType::conv2d: {
        const TensorDesc& x = activation_in(0, "x");
        if (x.shape.size() != 3) op_fail(FormatErrc::shape_mismatch, "x must be [H, W, C], not " + shape_str(x.shape));
        const TensorDesc& w = constant_in(1, "weights", DType::int8, nullptr);
        if (w.shape.size() != 4)
          op_fail(FormatErrc::shape_mismatch, "weights must be [Cout, KH, KW, Cin/groups], not " + shape_str(w.shape));
        const int64_t h = x.shape[0], wd = x.shape[1], cin = x.shape[2];
        const int64_t cout = w.shape[0], kh = w.shape[1], kw = w.shape[2];
        const int32_t stride = p[param::kStride], pad = p[param::kPad], groups = p[param::kGroups];
        if (groups < 1 || cin % groups || cout % groups)
          op_fail(FormatErrc::shape_mismatch,
                  cat("groups ", groups, " must be >= 1 and divide Cin ", cin, " and Cout ", cout));
        if (w.shape[3] != cin / groups)
          op_fail(FormatErrc::shape_mismatch, cat("weights ", shape_str(w.shape), " need Cin/groups = ", cin / groups,
                                                  " in their last dimension"));
        const std::vector<int64_t> geo = pool_like_shape(h, wd, kh, kw, stride, pad, cout);
        const std::vector<int64_t> vec{cout};
        const TensorDesc& bias = constant_in(2, "bias", DType::int32, &vec);
        const TensorDesc& mult = constant_in(3, "multiplier", DType::int32, &vec);
        const TensorDesc& shift = constant_in(4, "shift", DType::int32, &vec);
        check_weights_zp(w);
        const TensorDesc& y = output_checked(geo);
        check_requant_vectors(mult, shift);
        check_clamp(p[param::kConvActMin], p[param::kConvActMax], y);
        check_headroom(op.inputs[0], w, bias, kh * kw * (cin / groups));
        break;
      }
      case OpType::fully_connected: {
        const TensorDesc& x = activation_in(0, "x");
        const TensorDesc& w = constant_in(1, "weights", DType::int8, nullptr);
        if (w.shape.size() != 2 || w.shape[1] != x.numel())
          op_fail(FormatErrc::shape_mismatch, cat("weights ", shape_str(w.shape), " must be [Cout, K] with K = ",
                                                  x.numel(), " (the flattened input ", shape_str(x.shape), ")"));
        const std::vector<int64_t> vec{w.shape[0]};
        const TensorDesc& bias = constant_in(2, "bias", DType::int32, &vec);
        const TensorDesc& mult = constant_in(3, "multiplier", DType::int32, &vec);
        const TensorDesc& shift = constant_in(4, "shift", DType::int32, &vec);
        check_weights_zp(w);
        const TensorDesc& y = output_checked(vec);
        check_requant_vectors(mult, shift);
        check_clamp(p[param::kFcActMin], p[param::kFcActMax], y);
        check_headroom(op.inputs[0], w, bias, x.numel());
        break;
      }
      case OpType::add: {
        const TensorDesc& a = activation_in(0, "a");
        const TensorDesc& b = activation_in(1, "b");
        if (a.shape != b.shape)
          op_fail(FormatErrc::shape_mismatch, cat("inputs have different shapes ", shape_str(a.shape), " and ",
                                                  shape_str(b.shape)));
        const TensorDesc& y = output_checked(a.shape);
        if (p[param::kLeftShift] < 0 || p[param::kLeftShift] > kMaxAddLeftShift)
          op_fail(FormatErrc::bad_quant,
                  cat("left_shift ", p[param::kLeftShift], " must be in [0, ", kMaxAddLeftShift, "]"));
        check_multiplier(p[param::kAMult], p[param::kAShift], kMinShift, 0, "input a");
        check_multiplier(p[param::kBMult], p[param::kBShift], kMinShift, 0, "input b");
        check_multiplier(p[param::kOutMult], p[param::kOutShift], kMinShift, kMaxShift, "output");
        check_clamp(p[param::kAddActMin], p[param::kAddActMax], y);
        break;
      }
      case OpType::max_pool:
      case OpType::avg_pool: {
        const TensorDesc& x = activation_in(0, "x");
        if (x.shape.size() != 3) op_fail(FormatErrc::shape_mismatch, "x must be [H, W, C], not " + shape_str(x.shape));
        const std::vector<int64_t> geo = pool_like_shape(x.shape[0], x.shape[1], p[param::kPoolKH], p[param::kPoolKW],
                                                         p[param::kPoolStride], p[param::kPoolPad], x.shape[2]);
        const TensorDesc& y = output_checked(geo);
        check_zp_same(x, y);
        lo_[op.output] = lo_[op.inputs[0]];
        hi_[op.output] = hi_[op.inputs[0]];
        break;
      }
      case OpType::global_avg_pool: {
        const TensorDesc& x = activation_in(0, "x");
        if (x.shape.size() != 3) op_fail(FormatErrc::shape_mismatch, "x must be [H, W, C], not " + shape_str(x.shape));
        const TensorDesc& y = output_checked({x.shape[2]});
        check_zp_same(x, y);
        lo_[op.output] = lo_[op.inputs[0]];
        hi_[op.output] = hi_[op.inputs[0]];
        break;
      }
    }
    defined_[op.output] = true;
  }

  void check_weights_zp(const TensorDesc& w) {
    if (w.zero_point != 0)
      op_fail(FormatErrc::bad_zero_point,
              cat("weights '", w.name, "' have zero point ", w.zero_point, "; weights are symmetric (zero point 0)"));
  }

  // [OH, OW, C] of a kernel_h x kernel_w window with stride and symmetric pad.
  std::vector<int64_t> pool_like_shape(int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t stride, int64_t pad,
                                       int64_t c) {
    if (kh < 1 || kw < 1 || kh > kMaxDim || kw > kMaxDim)
      op_fail(FormatErrc::shape_mismatch, cat("kernel ", kh, "x", kw, " must be at least 1x1"));
    if (stride < 1 || stride > kMaxDim) op_fail(FormatErrc::bad_field, cat("stride ", stride, " must be in [1, 2^24]"));
    if (pad < 0 || pad >= kh || pad >= kw)
      op_fail(FormatErrc::bad_field, cat("pad ", pad, " must be in [0, kernel) for a ", kh, "x", kw, " kernel"));
    if (h + 2 * pad < kh || w + 2 * pad < kw)
      op_fail(FormatErrc::shape_mismatch,
              cat("a ", kh, "x", kw, " kernel does not fit the ", h, "x", w, " input padded by ", pad));
    return {(h + 2 * pad - kh) / stride + 1, (w + 2 * pad - kw) / stride + 1, c};
  }
};

// ---- the decoder ------------------------------------------------------------

class Decoder {
 public:
  Decoder(std::span<const uint8_t> b, const std::string& name) : b_(b), name_(name) {}

  ModelDesc run() {
    header();
    tables();
    ModelDesc m;
    m.input = input_;
    m.output = output_;
    m.tensors.reserve(tensor_count_);  // bounded: the table fits in the file
    for (uint32_t i = 0; i < tensor_count_; ++i) m.tensors.push_back(tensor(i));
    m.ops.reserve(op_count_);
    for (uint32_t i = 0; i < op_count_; ++i) m.ops.push_back(op(i));
    m.metadata.reserve(meta_count_);
    for (uint32_t i = 0; i < meta_count_; ++i) m.metadata.push_back(meta(i));
    if (input_ >= tensor_count_)
      fail(FormatErrc::out_of_bounds, cat(name_, ": header (byte 36): input tensor ", input_, " does not exist (",
                                          tensor_count_, " tensors)"));
    if (output_ >= tensor_count_)
      fail(FormatErrc::out_of_bounds, cat(name_, ": header (byte 40): output tensor ", output_, " does not exist (",
                                          tensor_count_, " tensors)"));
    Validator(m, name_).run();
    return m;
  }

 private:
  std::span<const uint8_t> b_;
  const std::string& name_;
  uint32_t tensor_count_ = 0, op_count_ = 0, meta_count_ = 0, input_ = 0, output_ = 0, strings_size_ = 0;
  uint64_t tensors_at_ = 0, ops_at_ = 0, meta_at_ = 0, strings_at_ = 0, data_at_ = 0, data_size_ = 0;

  std::string at(uint64_t byte) const { return cat(" (byte ", byte, ")"); }

  void header() {
    const uint64_t size = b_.size();
    const uint64_t min_size = kHeaderSize + kCrcSize;
    if (size >= sizeof kMagic && std::memcmp(b_.data(), kMagic, sizeof kMagic) != 0)
      fail(FormatErrc::bad_magic, cat(name_, ": not an Octet model file (bad magic at byte 0; expected \"OCTET\\0\\r\\n\")"));
    if (size < min_size)
      fail(FormatErrc::truncated, cat(name_, ": truncated: the file has ", size, " bytes, an Octet header alone needs ",
                                      min_size));
    const uint32_t version = ld32(&b_[8]);
    if (version != kVersion)
      fail(FormatErrc::bad_version, cat(name_, ": format version ", version, " is not supported (this reader knows version ",
                                        kVersion, ")", at(8)));
    const uint64_t file_size = ld64(&b_[16]);
    if (size < file_size)
      fail(FormatErrc::truncated, cat(name_, ": truncated: the header (byte 16) says ", file_size, " bytes, the file has ", size));
    if (size > file_size)
      fail(FormatErrc::trailing_bytes, cat(name_, ": ", size - file_size, " unexpected bytes after the end the header (byte 16) gives (",
                                           file_size, " bytes)"));
    const uint32_t stored = ld32(&b_[size - kCrcSize]);
    const uint32_t actual = crc32(b_.first(size - kCrcSize));
    if (stored != actual) {
      char buf[160];
      std::snprintf(buf, sizeof buf, ": CRC32 mismatch (stored 0x%08x at byte %llu, computed 0x%08x): the file is corrupted",
                    stored, static_cast<unsigned long long>(size - kCrcSize), actual);
      fail(FormatErrc::bad_crc, name_ + buf);
    }
    const uint32_t flags = ld32(&b_[12]);
    if (flags != 0) fail(FormatErrc::bad_field, cat(name_, ": header flags ", flags, " must be 0", at(12)));
    tensor_count_ = ld32(&b_[24]);
    op_count_ = ld32(&b_[28]);
    meta_count_ = ld32(&b_[32]);
    input_ = ld32(&b_[36]);
    output_ = ld32(&b_[40]);
    strings_size_ = ld32(&b_[44]);
    data_at_ = ld64(&b_[48]);
    data_size_ = ld64(&b_[56]);
  }

  void tables() {
    const uint64_t end = b_.size() - kCrcSize;  // where the data section must end
    tensors_at_ = kHeaderSize;
    ops_at_ = tensors_at_ + uint64_t{tensor_count_} * kTensorRecord;
    meta_at_ = ops_at_ + uint64_t{op_count_} * kOpRecord;
    strings_at_ = meta_at_ + uint64_t{meta_count_} * kMetaRecord;
    const uint64_t strings_end = strings_at_ + strings_size_;
    auto check = [&](uint64_t table_end, const char* what, uint64_t count, uint64_t count_at) {
      if (table_end > end)
        fail(FormatErrc::out_of_bounds, cat(name_, ": the ", what, " (", count, " entries, count at byte ", count_at,
                                            ") would end at byte ", table_end, ", beyond the file's ", end, " bytes of content"));
    };
    check(ops_at_, "tensor table", tensor_count_, 24);
    check(meta_at_, "op table", op_count_, 28);
    check(strings_at_, "metadata table", meta_count_, 32);
    check(strings_end, "string section", strings_size_, 44);
    if (tensor_count_ == 0) fail(FormatErrc::bad_field, cat(name_, ": the model has no tensors", at(24)));
    if (op_count_ == 0) fail(FormatErrc::bad_field, cat(name_, ": the model has no ops", at(28)));
    const uint64_t want_data_at = align_up(strings_end, kDataAlign);
    if (data_at_ != want_data_at)
      fail(FormatErrc::out_of_bounds, cat(name_, ": data offset ", data_at_, at(48), " must be ", want_data_at,
                                          " (the end of the strings rounded up to 16)"));
    if (data_at_ > end || data_size_ != end - data_at_)
      fail(FormatErrc::out_of_bounds, cat(name_, ": data section [", data_at_, ", +", data_size_, ")", at(56),
                                          " must end where the CRC begins, at byte ", end));
    for (uint64_t i = strings_end; i < data_at_; ++i)
      if (b_[i]) fail(FormatErrc::bad_field, cat(name_, ": padding byte ", i, " before the data section must be 0"));
  }

  std::string str(uint32_t off, uint32_t len, const std::string& ctx, uint64_t field_at) const {
    if (uint64_t{off} + len > strings_size_)
      fail(FormatErrc::out_of_bounds, cat(name_, ": ", ctx, ": string [", off, ", +", len, ")", at(field_at),
                                          " lies outside the string section (", strings_size_, " bytes)"));
    const char* p = reinterpret_cast<const char*>(b_.data() + strings_at_ + off);
    return std::string(p, len);
  }

  TensorDesc tensor(uint32_t i) {
    const uint64_t rec = tensors_at_ + uint64_t{i} * kTensorRecord;
    const uint8_t* r = &b_[rec];
    TensorDesc t;
    t.name = str(ld32(r), ld32(r + 4), cat("tensor ", i), rec);
    const std::string ctx = cat(name_, ": tensor ", i, " '", t.name, "' (record at byte ", rec, "): ");
    const uint8_t dtype = ld8(r + 8), bits = ld8(r + 9), rank = ld8(r + 10), flags = ld8(r + 11);
    if (!dtype_valid(dtype)) fail(FormatErrc::bad_field, ctx + cat("unknown dtype ", int{dtype}, at(rec + 8)));
    t.dtype = static_cast<DType>(dtype);
    t.bits = bits;
    if (flags & ~kFlagConstant) fail(FormatErrc::bad_field, ctx + cat("unknown flags ", int{flags}, at(rec + 11)));
    t.constant = flags & kFlagConstant;
    if (rank < 1 || rank > 4) fail(FormatErrc::bad_field, ctx + cat("rank ", int{rank}, " must be 1..4", at(rec + 10)));
    uint64_t numel = 1;
    for (int d = 0; d < 4; ++d) {
      const uint32_t dim = ld32(r + 12 + 4 * d);
      const uint64_t field = rec + 12 + 4 * d;
      if (d >= rank) {
        if (dim != 0) fail(FormatErrc::bad_field, ctx + cat("unused dimension ", d, " must be 0", at(field)));
        continue;
      }
      if (dim == 0) fail(FormatErrc::bad_field, ctx + cat("dimension ", d, " is 0", at(field)));
      if (dim > kMaxDim)
        fail(FormatErrc::too_large, ctx + cat("dimension ", d, " = ", dim, " exceeds the limit 2^24", at(field)));
      t.shape.push_back(dim);
      numel *= dim;
      if (numel > (uint64_t{1} << 40))
        fail(FormatErrc::too_large, ctx + cat("element count exceeds 2^40", at(field)));
    }
    t.zero_point = ldi32(r + 28);
    t.scale = ldf64(r + 32);
    const uint64_t off = ld64(r + 40), size = ld64(r + 48), reserved = ld64(r + 56);
    if (reserved != 0) fail(FormatErrc::bad_field, ctx + cat("reserved field must be 0", at(rec + 56)));
    if (!std::isfinite(t.scale) || t.scale < 0)
      fail(FormatErrc::bad_field, ctx + cat("scale ", t.scale, " must be finite and >= 0", at(rec + 32)));
    if (!t.constant && t.dtype == DType::int32)
      fail(FormatErrc::type_mismatch, ctx + "an int32 tensor must be a constant (bias, multiplier, shift), not an activation");
    if (t.constant && t.dtype == DType::uint8) fail(FormatErrc::type_mismatch, ctx + "constants are int8 or int32, not uint8");
    const auto [zlo, zhi] = t.dtype == DType::int32 ? std::pair<int32_t, int32_t>{0, 0} : dtype_range(t.dtype);
    if (t.zero_point < zlo || t.zero_point > zhi)
      fail(FormatErrc::bad_zero_point, ctx + cat("zero point ", t.zero_point, " is outside [", zlo, ", ", zhi, "] for ",
                                                 dtype_name(t.dtype), at(rec + 28)));
    if (!t.constant) {
      if (bits != 8) fail(FormatErrc::bad_field, ctx + cat("activations have 8 bits, not ", int{bits}, at(rec + 9)));
      if (off != 0 || size != 0)
        fail(FormatErrc::bad_field, ctx + cat("an activation has no data (offset and size must be 0)", at(rec + 40)));
      if (numel > static_cast<uint64_t>(kMaxActivationElems))
        fail(FormatErrc::too_large, ctx + cat("activation of ", numel, " elements per image exceeds the limit 2^24"));
      return t;
    }
    // A constant: int8 stored at 2..8 bits, or int32 at 32 bits.
    const bool bits_ok = t.dtype == DType::int8 ? (bits >= 2 && bits <= 8) : bits == 32;
    if (!bits_ok)
      fail(FormatErrc::bad_field, ctx + cat("bitwidth ", int{bits}, " is invalid for ", dtype_name(t.dtype),
                                            t.dtype == DType::int8 ? " (2..8)" : " (32)", at(rec + 9)));
    const uint64_t want = t.dtype == DType::int8 ? (numel * bits + 7) / 8 : numel * 4;
    if (size != want)
      fail(FormatErrc::bad_field, ctx + cat("data size ", size, at(rec + 48), " must be ", want, " for ", numel, " ",
                                            int{bits}, "-bit values"));
    if (off > data_size_ || size > data_size_ - off)
      fail(FormatErrc::out_of_bounds, ctx + cat("data [", off, ", +", size, ")", at(rec + 40),
                                                " lies outside the data section (", data_size_, " bytes)"));
    const std::span<const uint8_t> data = b_.subspan(data_at_ + off, size);  // numel is now bounded by the file size
    if (t.dtype == DType::int8) {
      const uint64_t used_bits = numel * bits % 8;
      if (used_bits != 0 && (data.back() >> used_bits) != 0)
        fail(FormatErrc::bad_field, ctx + cat("unused bits of the last data byte", at(data_at_ + off + size - 1), " must be 0"));
      t.i8.resize(numel);
      unpack_bits(data, bits, t.i8);
    } else {
      t.i32.resize(numel);
      for (uint64_t k = 0; k < numel; ++k) t.i32[k] = ldi32(&data[4 * k]);
    }
    return t;
  }

  OpDesc op(uint32_t i) {
    const uint64_t rec = ops_at_ + uint64_t{i} * kOpRecord;
    const uint8_t* r = &b_[rec];
    OpDesc op;
    op.name = str(ld32(r + 4), ld32(r + 8), cat("op ", i), rec + 4);
    const uint16_t type = ld16(r);
    const std::string ctx0 = cat(name_, ": op ", i, " '", op.name, "' (record at byte ", rec, "): ");
    if (!op_valid(type)) fail(FormatErrc::unknown_op, ctx0 + cat("unknown op type ", type, at(rec)));
    op.type = static_cast<OpType>(type);
    const std::string ctx = cat(name_, ": op ", i, " (", op_name(op.type), " '", op.name, "', record at byte ", rec, "): ");
    const uint8_t count = ld8(r + 2);
    if (count != arity(op.type))
      fail(FormatErrc::bad_field, ctx + cat("has ", int{count}, " inputs, ", op_name(op.type), " takes ", arity(op.type),
                                            at(rec + 2)));
    if (ld8(r + 3) != 0) fail(FormatErrc::bad_field, ctx + cat("reserved byte must be 0", at(rec + 3)));
    op.output = ld32(r + 12);
    if (op.output >= tensor_count_)
      fail(FormatErrc::out_of_bounds, ctx + cat("output tensor ", op.output, " does not exist (", tensor_count_,
                                                " tensors)", at(rec + 12)));
    for (int k = 0; k < kMaxInputs; ++k) {
      const uint32_t id = ld32(r + 16 + 4 * k);
      if (k >= count) {
        if (id != kNoInput)
          fail(FormatErrc::bad_field, ctx + cat("unused input slot ", k, " must be 0xFFFFFFFF", at(rec + 16 + 4 * k)));
        continue;
      }
      if (id >= tensor_count_)
        fail(FormatErrc::out_of_bounds, ctx + cat("input ", k, " names tensor ", id, ", which does not exist (",
                                                  tensor_count_, " tensors)", at(rec + 16 + 4 * k)));
      op.inputs.push_back(id);
    }
    for (int k = 0; k < kMaxParams; ++k) {
      op.params[k] = ldi32(r + 40 + 4 * k);
      if (k >= param_count(op.type) && op.params[k] != 0)
        fail(FormatErrc::bad_field, ctx + cat("unused parameter ", k, " must be 0", at(rec + 40 + 4 * k)));
    }
    return op;
  }

  std::pair<std::string, std::string> meta(uint32_t i) {
    const uint64_t rec = meta_at_ + uint64_t{i} * kMetaRecord;
    const uint8_t* r = &b_[rec];
    std::string key = str(ld32(r), ld32(r + 4), cat("metadata ", i, " key"), rec);
    std::string value = str(ld32(r + 8), ld32(r + 12), cat("metadata ", i, " value"), rec + 8);
    if (key.empty()) fail(FormatErrc::bad_metadata, cat(name_, ": metadata entry ", i, at(rec), " has an empty key"));
    return {std::move(key), std::move(value)};
  }
};

}  // namespace

// ---- small public helpers ----------------------------------------------------

const char* errc_name(FormatErrc e) {
  switch (e) {
    case FormatErrc::io: return "io";
    case FormatErrc::truncated: return "truncated";
    case FormatErrc::trailing_bytes: return "trailing_bytes";
    case FormatErrc::bad_magic: return "bad_magic";
    case FormatErrc::bad_version: return "bad_version";
    case FormatErrc::bad_crc: return "bad_crc";
    case FormatErrc::bad_field: return "bad_field";
    case FormatErrc::too_large: return "too_large";
    case FormatErrc::out_of_bounds: return "out_of_bounds";
    case FormatErrc::unknown_op: return "unknown_op";
    case FormatErrc::graph_order: return "graph_order";
    case FormatErrc::type_mismatch: return "type_mismatch";
    case FormatErrc::shape_mismatch: return "shape_mismatch";
    case FormatErrc::bad_zero_point: return "bad_zero_point";
    case FormatErrc::bad_quant: return "bad_quant";
    case FormatErrc::headroom: return "headroom";
    case FormatErrc::bad_metadata: return "bad_metadata";
  }
  return "?";
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::int8: return "int8";
    case DType::uint8: return "uint8";
    case DType::int32: return "int32";
  }
  return "?";
}

const char* op_name(OpType t) {
  switch (t) {
    case OpType::input: return "input";
    case OpType::conv2d: return "conv2d";
    case OpType::fully_connected: return "fully_connected";
    case OpType::add: return "add";
    case OpType::max_pool: return "max_pool";
    case OpType::avg_pool: return "avg_pool";
    case OpType::global_avg_pool: return "global_avg_pool";
  }
  return "?";
}

int64_t TensorDesc::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const std::string* ModelDesc::find_metadata(const std::string& key) const {
  for (const auto& [k, v] : metadata)
    if (k == key) return &v;
  return nullptr;
}

uint32_t crc32(std::span<const uint8_t> bytes) {
  uint32_t c = 0xFFFFFFFFu;
  for (uint8_t b : bytes) c = kCrcTable[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

void fix_crc(std::vector<uint8_t>& file) {
  if (file.size() < kCrcSize) return;
  const size_t at = file.size() - kCrcSize;
  const uint32_t c = crc32(std::span<const uint8_t>(file).first(at));
  for (int i = 0; i < 4; ++i) file[at + i] = static_cast<uint8_t>(c >> (8 * i));
}

size_t packed_size(size_t count, int bits) { return (count * static_cast<size_t>(bits) + 7) / 8; }

std::vector<uint8_t> pack_bits(std::span<const int8_t> values, int bits) {
  if (bits < 1 || bits > 8) throw std::invalid_argument(cat("pack_bits: bitwidth ", bits, " is not in 1..8"));
  const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
  std::vector<uint8_t> out(packed_size(values.size(), bits), 0);
  const uint32_t mask = (1u << bits) - 1;
  size_t bit = 0;
  for (size_t i = 0; i < values.size(); ++i, bit += bits) {
    const int v = values[i];
    if (v < lo || v > hi)
      throw std::invalid_argument(cat("pack_bits: value ", v, " at index ", i, " does not fit ", bits, " bits [", lo,
                                      ", ", hi, "]"));
    const uint32_t raw = static_cast<uint32_t>(v) & mask;
    out[bit / 8] |= static_cast<uint8_t>(raw << (bit % 8));
    if (bit % 8 + bits > 8) out[bit / 8 + 1] |= static_cast<uint8_t>(raw >> (8 - bit % 8));
  }
  return out;
}

void unpack_bits(std::span<const uint8_t> packed, int bits, std::span<int8_t> out) {
  if (bits < 1 || bits > 8) throw std::invalid_argument(cat("unpack_bits: bitwidth ", bits, " is not in 1..8"));
  if (packed.size() < packed_size(out.size(), bits))
    throw std::invalid_argument(cat("unpack_bits: ", packed.size(), " bytes cannot hold ", out.size(), " ", bits,
                                    "-bit values"));
  if (bits == 8) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<int8_t>(packed[i]);
    return;
  }
  const uint32_t mask = (1u << bits) - 1, sign = 1u << (bits - 1);
  size_t bit = 0;
  for (size_t i = 0; i < out.size(); ++i, bit += bits) {
    uint32_t raw = packed[bit / 8] >> (bit % 8);
    if (bit % 8 + bits > 8) raw |= static_cast<uint32_t>(packed[bit / 8 + 1]) << (8 - bit % 8);
    raw &= mask;
    out[i] = static_cast<int8_t>(static_cast<int>(raw) - ((raw & sign) ? (1 << bits) : 0));
  }
}

// ---- decode / encode ----------------------------------------------------------

ModelDesc decode(std::span<const uint8_t> bytes, const std::string& name) { return Decoder(bytes, name).run(); }

ModelDesc read_model_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(FormatErrc::io, cat(path, ": cannot open: ", std::strerror(errno)));
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    if (bytes.size() + n > kMaxFileBytes) {
      std::fclose(f);
      fail(FormatErrc::too_large, cat(path, ": larger than the 2 GiB a model file may have"));
    }
    bytes.insert(bytes.end(), buf, buf + n);
  }
  const bool error = std::ferror(f);
  std::fclose(f);
  if (error) fail(FormatErrc::io, cat(path, ": read error"));
  return decode(bytes, path);
}

std::vector<uint8_t> encode(const ModelDesc& m) {
  auto need_u32 = [](uint64_t v, const std::string& what) {
    if (v > 0xFFFFFFFFu) throw std::invalid_argument(cat("encode: ", what, " = ", v, " does not fit 32 bits"));
    return static_cast<uint32_t>(v);
  };
  // Strings and data first, so the tables can point into them.
  std::string strings;
  auto add_string = [&](const std::string& s) {
    const uint32_t off = need_u32(strings.size(), "string section size");
    strings += s;
    return std::pair<uint32_t, uint32_t>{off, need_u32(s.size(), "string length")};
  };
  std::vector<uint8_t> data;
  std::vector<std::pair<uint64_t, uint64_t>> spans(m.tensors.size());
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    const TensorDesc& t = m.tensors[i];
    if (!t.i8.empty() && !t.i32.empty())
      throw std::invalid_argument(cat("encode: tensor '", t.name, "' has both int8 and int32 data"));
    data.resize(align_up(data.size(), kDataAlign), 0);
    const uint64_t off = data.size();
    if (!t.i8.empty()) {
      const std::vector<uint8_t> packed = pack_bits(t.i8, t.bits);
      data.insert(data.end(), packed.begin(), packed.end());
    }
    for (int32_t v : t.i32)
      for (int k = 0; k < 4; ++k) data.push_back(static_cast<uint8_t>(static_cast<uint32_t>(v) >> (8 * k)));
    spans[i] = {data.size() == off ? 0 : off, data.size() - off};
  }

  Out o;
  o.bytes.reserve(kHeaderSize + m.tensors.size() * kTensorRecord + m.ops.size() * kOpRecord + data.size() + 64);
  for (char c : kMagic) o.u8(static_cast<uint8_t>(c));
  o.u32(kVersion);
  o.u32(0);  // flags
  const size_t file_size_at = o.bytes.size();
  o.u64(0);  // file size, patched below
  o.u32(need_u32(m.tensors.size(), "tensor count"));
  o.u32(need_u32(m.ops.size(), "op count"));
  o.u32(need_u32(m.metadata.size(), "metadata count"));
  o.u32(m.input);
  o.u32(m.output);
  const size_t strings_size_at = o.bytes.size();
  o.u32(0);
  const size_t data_at = o.bytes.size();
  o.u64(0);
  o.u64(data.size());

  for (size_t i = 0; i < m.tensors.size(); ++i) {
    const TensorDesc& t = m.tensors[i];
    if (t.shape.empty() || t.shape.size() > 4)
      throw std::invalid_argument(cat("encode: tensor '", t.name, "' has rank ", t.shape.size(), " (1..4)"));
    if (t.bits < 0 || t.bits > 255) throw std::invalid_argument(cat("encode: tensor '", t.name, "' bits ", t.bits));
    const auto [off, len] = add_string(t.name);
    o.u32(off);
    o.u32(len);
    o.u8(static_cast<uint8_t>(t.dtype));
    o.u8(static_cast<uint8_t>(t.bits));
    o.u8(static_cast<uint8_t>(t.shape.size()));
    o.u8(t.constant ? kFlagConstant : 0);
    for (size_t d = 0; d < 4; ++d) {
      const int64_t dim = d < t.shape.size() ? t.shape[d] : 0;
      if (dim < 0 || dim > 0xFFFFFFFFll)
        throw std::invalid_argument(cat("encode: tensor '", t.name, "' dimension ", dim, " does not fit 32 bits"));
      o.u32(static_cast<uint32_t>(dim));
    }
    o.i32(t.zero_point);
    o.f64(t.scale);
    o.u64(spans[i].first);
    o.u64(spans[i].second);
    o.u64(0);
  }
  for (const OpDesc& op : m.ops) {
    if (op.inputs.size() > static_cast<size_t>(kMaxInputs))
      throw std::invalid_argument(cat("encode: op '", op.name, "' has ", op.inputs.size(), " inputs (at most 6)"));
    const auto [off, len] = add_string(op.name);
    o.u16(static_cast<uint16_t>(op.type));
    o.u8(static_cast<uint8_t>(op.inputs.size()));
    o.u8(0);
    o.u32(off);
    o.u32(len);
    o.u32(op.output);
    for (int k = 0; k < kMaxInputs; ++k) o.u32(k < static_cast<int>(op.inputs.size()) ? op.inputs[k] : kNoInput);
    for (int32_t p : op.params) o.i32(p);
  }
  for (const auto& [k, v] : m.metadata) {
    const auto [ko, kl] = add_string(k);
    const auto [vo, vl] = add_string(v);
    o.u32(ko);
    o.u32(kl);
    o.u32(vo);
    o.u32(vl);
  }
  o.patch32(strings_size_at, need_u32(strings.size(), "string section size"));
  o.bytes.insert(o.bytes.end(), strings.begin(), strings.end());
  o.bytes.resize(align_up(o.bytes.size(), kDataAlign), 0);
  o.patch64(data_at, o.bytes.size());
  o.bytes.insert(o.bytes.end(), data.begin(), data.end());
  o.patch64(file_size_at, o.bytes.size() + kCrcSize);
  o.u32(0);
  fix_crc(o.bytes);
  return std::move(o.bytes);
}

void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  const std::string tmp = cat(path, ".tmp.", ::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(FormatErrc::io, cat(path, ": cannot create ", tmp, ": ", std::strerror(errno)));
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  ok = std::fflush(f) == 0 && ok;
  ok = ::fsync(::fileno(f)) == 0 && ok;
  const int saved = errno;
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    fail(FormatErrc::io, cat(path, ": cannot write ", tmp, ": ", std::strerror(saved)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    fail(FormatErrc::io, cat(path, ": cannot rename ", tmp, " into place: ", std::strerror(e)));
  }
}

// ---- ModelBuilder -----------------------------------------------------------------

std::pair<int32_t, int32_t> activation_bounds(Act act, const OutQuant& out) {
  const auto [lo, hi] = dtype_range(out.dtype);
  switch (act) {
    case Act::none: return {lo, hi};
    case Act::relu: return {std::clamp(out.zero_point, lo, hi), hi};
    case Act::relu6: {
      const int32_t zp = std::clamp(out.zero_point, lo, hi);
      if (!(out.scale > 0)) throw std::invalid_argument("relu6 needs the output scale");
      const double six = std::round(6.0 / out.scale);
      return {zp, six >= hi - zp ? hi : zp + static_cast<int32_t>(six)};
    }
  }
  return {lo, hi};
}

ModelBuilder::ModelBuilder(std::string model_name) {
  if (!model_name.empty()) desc_.metadata.emplace_back("model_name", std::move(model_name));
}

uint32_t ModelBuilder::add_tensor(TensorDesc t) {
  desc_.tensors.push_back(std::move(t));
  return static_cast<uint32_t>(desc_.tensors.size() - 1);
}

uint32_t ModelBuilder::add_const_i32(const std::string& name, std::vector<int32_t> values) {
  TensorDesc t;
  t.name = name;
  t.dtype = DType::int32;
  t.bits = 32;
  t.shape = {static_cast<int64_t>(values.size())};
  t.constant = true;
  t.i32 = std::move(values);
  return add_tensor(std::move(t));
}

const TensorDesc& ModelBuilder::activation(Tensor t, const std::string& op) const {
  if (t.id >= desc_.tensors.size() || desc_.tensors[t.id].constant || t.id == desc_.input)
    throw std::invalid_argument(cat("ModelBuilder: '", op, "': tensor ", t.id, " is not an activation of this model"));
  return desc_.tensors[t.id];
}

const std::vector<int64_t>& ModelBuilder::shape(Tensor t) const { return activation(t, "shape").shape; }

Tensor ModelBuilder::add_input(const std::string& name, int h, int w, int c, double scale, int32_t zero_point) {
  if (!desc_.ops.empty()) throw std::invalid_argument("ModelBuilder: add_input must come first (once)");
  if (h < 1 || w < 1 || c < 1) throw std::invalid_argument(cat("ModelBuilder: input '", name, "' has an empty shape"));
  TensorDesc px;
  px.name = name;
  px.dtype = DType::uint8;
  px.shape = {h, w, c};
  px.zero_point = zero_point;
  px.scale = scale;
  desc_.input = add_tensor(px);
  TensorDesc q = px;
  q.name = name + ".int8";
  q.dtype = DType::int8;
  q.zero_point = zero_point - 128;
  const uint32_t out = add_tensor(std::move(q));
  desc_.ops.push_back(OpDesc{OpType::input, name, {desc_.input}, out, {}});
  return Tensor{out};
}

Tensor ModelBuilder::add_matmul_like(OpType type, const std::string& name, Tensor x, const Weights& w,
                                     std::vector<int32_t> bias, ConvParams p, OutQuant out, Act act,
                                     std::optional<std::vector<QuantizedMultiplier>> multipliers) {
  const std::string what = cat("ModelBuilder: ", op_name(type), " '", name, "': ");
  const TensorDesc& xt = activation(x, name);
  const std::vector<int64_t> xs = xt.shape;
  const double s_in = xt.scale;
  if (w.out_c < 1 || w.kernel_h < 1 || w.kernel_w < 1 || w.in_c < 1)
    throw std::invalid_argument(what + "weights have an empty shape");
  const size_t count = static_cast<size_t>(w.out_c) * w.kernel_h * w.kernel_w * w.in_c;
  if (w.values.size() != count)
    throw std::invalid_argument(what + cat("weights hold ", w.values.size(), " values, their shape needs ", count));
  if (w.bits < 2 || w.bits > 8) throw std::invalid_argument(what + cat("weight bitwidth ", w.bits, " is not in 2..8"));
  if (w.scales.size() != 1 && w.scales.size() != static_cast<size_t>(w.out_c))
    throw std::invalid_argument(what + cat("weights need 1 or ", w.out_c, " scales, not ", w.scales.size()));
  if (bias.empty()) bias.assign(w.out_c, 0);
  if (bias.size() != static_cast<size_t>(w.out_c))
    throw std::invalid_argument(what + cat("bias has ", bias.size(), " values, Cout is ", w.out_c));

  std::vector<int64_t> out_shape;
  std::vector<int64_t> w_shape;
  if (type == OpType::conv2d) {
    if (xs.size() != 3) throw std::invalid_argument(what + "input must be [H, W, C]");
    if (p.groups < 1 || xs[2] % p.groups || w.out_c % p.groups || w.in_c != xs[2] / p.groups)
      throw std::invalid_argument(what + cat("groups ", p.groups, " with Cin ", xs[2], " and Cout ", w.out_c,
                                             " need weights [Cout, KH, KW, Cin/groups], got Cin/groups = ", w.in_c));
    if (p.stride < 1 || p.pad < 0 || xs[0] + 2 * p.pad < w.kernel_h || xs[1] + 2 * p.pad < w.kernel_w)
      throw std::invalid_argument(what + cat("kernel ", w.kernel_h, "x", w.kernel_w, ", stride ", p.stride, ", pad ",
                                             p.pad, " do not fit the input ", shape_str(xs)));
    out_shape = {(xs[0] + 2 * p.pad - w.kernel_h) / p.stride + 1, (xs[1] + 2 * p.pad - w.kernel_w) / p.stride + 1,
                 w.out_c};
    w_shape = {w.out_c, w.kernel_h, w.kernel_w, w.in_c};
  } else {
    int64_t k = 1;
    for (int64_t d : xs) k *= d;
    if (w.kernel_h != 1 || w.kernel_w != 1 || w.in_c != k)
      throw std::invalid_argument(what + cat("weights must be [Cout, K] with K = ", k, " (input ", shape_str(xs), ")"));
    out_shape = {w.out_c};
    w_shape = {w.out_c, w.in_c};
  }

  std::vector<int32_t> mult(w.out_c), shift(w.out_c);
  if (multipliers) {
    if (multipliers->size() != static_cast<size_t>(w.out_c))
      throw std::invalid_argument(what + cat(multipliers->size(), " multipliers given, Cout is ", w.out_c));
    for (int c = 0; c < w.out_c; ++c) {
      mult[c] = (*multipliers)[c].multiplier;
      shift[c] = (*multipliers)[c].shift;
    }
  } else {
    if (!(s_in > 0) || !(out.scale > 0))
      throw std::invalid_argument(what + "input and output scales must be > 0 to derive the multipliers");
    for (int c = 0; c < w.out_c; ++c) {
      const double s_w = w.scales.size() == 1 ? w.scales[0] : w.scales[c];
      const QuantizedMultiplier q = QuantizeMultiplier(s_in * s_w / out.scale);
      mult[c] = q.multiplier;
      shift[c] = q.shift;
    }
  }

  TensorDesc wt;
  wt.name = name + ".weight";
  wt.dtype = DType::int8;
  wt.bits = w.bits;
  wt.shape = w_shape;
  wt.scale = w.scales.size() == 1 ? w.scales[0] : 0.0;  // per-channel: implied by the multipliers
  wt.constant = true;
  wt.i8 = w.values;
  const uint32_t w_id = add_tensor(std::move(wt));
  const uint32_t b_id = add_const_i32(name + ".bias", std::move(bias));
  const uint32_t m_id = add_const_i32(name + ".multiplier", std::move(mult));
  const uint32_t s_id = add_const_i32(name + ".shift", std::move(shift));

  TensorDesc y;
  y.name = name;
  y.dtype = out.dtype;
  y.shape = out_shape;
  y.zero_point = out.zero_point;
  y.scale = out.scale;
  const uint32_t y_id = add_tensor(std::move(y));
  const auto [act_min, act_max] = activation_bounds(act, out);
  OpDesc op{type, name, {x.id, w_id, b_id, m_id, s_id}, y_id, {}};
  if (type == OpType::conv2d) {
    op.params[param::kStride] = p.stride;
    op.params[param::kPad] = p.pad;
    op.params[param::kGroups] = p.groups;
    op.params[param::kConvActMin] = act_min;
    op.params[param::kConvActMax] = act_max;
  } else {
    op.params[param::kFcActMin] = act_min;
    op.params[param::kFcActMax] = act_max;
  }
  desc_.ops.push_back(std::move(op));
  return Tensor{y_id};
}

Tensor ModelBuilder::add_conv(const std::string& name, Tensor x, const Weights& w, std::vector<int32_t> bias,
                              ConvParams p, OutQuant out, Act act,
                              std::optional<std::vector<QuantizedMultiplier>> multipliers) {
  return add_matmul_like(OpType::conv2d, name, x, w, std::move(bias), p, out, act, std::move(multipliers));
}

Tensor ModelBuilder::add_fc(const std::string& name, Tensor x, const Weights& w, std::vector<int32_t> bias,
                            OutQuant out, Act act, std::optional<std::vector<QuantizedMultiplier>> multipliers) {
  return add_matmul_like(OpType::fully_connected, name, x, w, std::move(bias), {}, out, act, std::move(multipliers));
}

Tensor ModelBuilder::add_add(const std::string& name, Tensor a, Tensor b, OutQuant out, Act act) {
  const TensorDesc& at = activation(a, name);
  const TensorDesc& bt = activation(b, name);
  const std::string what = cat("ModelBuilder: add '", name, "': ");
  if (at.shape != bt.shape)
    throw std::invalid_argument(what + cat("inputs ", shape_str(at.shape), " and ", shape_str(bt.shape), " differ"));
  if (!(at.scale > 0) || !(bt.scale > 0) || !(out.scale > 0))
    throw std::invalid_argument(what + "all scales must be > 0");
  // TFLite's scheme: both inputs at 2 * max(s_a, s_b) / 2^left_shift.
  const int left_shift = 20;
  const double twice_max = 2.0 * std::max(at.scale, bt.scale);
  const QuantizedMultiplier qa = QuantizeMultiplier(at.scale / twice_max);
  const QuantizedMultiplier qb = QuantizeMultiplier(bt.scale / twice_max);
  const QuantizedMultiplier qo = QuantizeMultiplier(twice_max / (static_cast<double>(1 << left_shift) * out.scale));
  TensorDesc y;
  y.name = name;
  y.dtype = out.dtype;
  y.shape = at.shape;
  y.zero_point = out.zero_point;
  y.scale = out.scale;
  const uint32_t y_id = add_tensor(std::move(y));
  const auto [act_min, act_max] = activation_bounds(act, out);
  OpDesc op{OpType::add, name, {a.id, b.id}, y_id, {}};
  op.params[param::kLeftShift] = left_shift;
  op.params[param::kAMult] = qa.multiplier;
  op.params[param::kAShift] = qa.shift;
  op.params[param::kBMult] = qb.multiplier;
  op.params[param::kBShift] = qb.shift;
  op.params[param::kOutMult] = qo.multiplier;
  op.params[param::kOutShift] = qo.shift;
  op.params[param::kAddActMin] = act_min;
  op.params[param::kAddActMax] = act_max;
  desc_.ops.push_back(std::move(op));
  return Tensor{y_id};
}

Tensor ModelBuilder::add_pool(const std::string& name, Tensor x, Pool kind, int kernel, int stride, int pad) {
  const TensorDesc& xt = activation(x, name);
  if (xt.shape.size() != 3 || kernel < 1 || stride < 1 || pad < 0 || pad >= kernel || xt.shape[0] + 2 * pad < kernel ||
      xt.shape[1] + 2 * pad < kernel)
    throw std::invalid_argument(cat("ModelBuilder: pool '", name, "': kernel ", kernel, ", stride ", stride, ", pad ",
                                    pad, " do not fit the input ", shape_str(xt.shape)));
  TensorDesc y = xt;
  y.name = name;
  y.shape = {(xt.shape[0] + 2 * pad - kernel) / stride + 1, (xt.shape[1] + 2 * pad - kernel) / stride + 1, xt.shape[2]};
  const uint32_t y_id = add_tensor(std::move(y));
  OpDesc op{kind == Pool::max ? OpType::max_pool : OpType::avg_pool, name, {x.id}, y_id, {}};
  op.params[param::kPoolKH] = kernel;
  op.params[param::kPoolKW] = kernel;
  op.params[param::kPoolStride] = stride;
  op.params[param::kPoolPad] = pad;
  desc_.ops.push_back(std::move(op));
  return Tensor{y_id};
}

Tensor ModelBuilder::add_global_avg_pool(const std::string& name, Tensor x) {
  const TensorDesc& xt = activation(x, name);
  if (xt.shape.size() != 3)
    throw std::invalid_argument(cat("ModelBuilder: global_avg_pool '", name, "': input must be [H, W, C]"));
  TensorDesc y = xt;
  y.name = name;
  y.shape = {xt.shape[2]};
  const uint32_t y_id = add_tensor(std::move(y));
  desc_.ops.push_back(OpDesc{OpType::global_avg_pool, name, {x.id}, y_id, {}});
  return Tensor{y_id};
}

void ModelBuilder::set_output(Tensor logits) {
  activation(logits, "set_output");
  desc_.output = logits.id;
  have_output_ = true;
}

void ModelBuilder::set_metadata(const std::string& key, const std::string& value) {
  if (key.empty()) throw std::invalid_argument("ModelBuilder: metadata key is empty");
  for (auto& [k, v] : desc_.metadata)
    if (k == key) {
      v = value;
      return;
    }
  desc_.metadata.emplace_back(key, value);
}

void ModelBuilder::set_class_names(const std::vector<std::string>& names) {
  std::string joined;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].find('\n') != std::string::npos)
      throw std::invalid_argument(cat("ModelBuilder: class name ", i, " contains a newline"));
    joined += (i ? "\n" : "") + names[i];
  }
  set_metadata("class_names", joined);
}

void ModelBuilder::set_preprocessing(const std::string& description) { set_metadata("preprocessing", description); }

std::vector<uint8_t> ModelBuilder::serialize() const {
  if (!have_output_) throw std::invalid_argument("ModelBuilder: set_output() was not called");
  std::vector<uint8_t> bytes = encode(desc_);
  const std::string* name = desc_.find_metadata("model_name");
  decode(bytes, cat("ModelBuilder(", name ? *name : std::string("unnamed"), ")"));  // throws FormatError if invalid
  return bytes;
}

void ModelBuilder::write(const std::string& path) const {
  const std::vector<uint8_t> bytes = serialize();
  write_file_atomic(path, bytes);
}

}  // namespace octet::engine
