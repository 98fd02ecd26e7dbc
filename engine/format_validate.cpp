// engine/format_validate.cpp: the graph validator of the model file reader
// (docs/format.md): order, types, shapes, quantization ranges, accumulator
// headroom and metadata of a model whose records format_read.cpp has already
// checked. A model it accepts runs without overflow.
#include <algorithm>
#include <cstdlib>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "engine/format.h"
#include "engine/format_internal.h"

namespace octet::engine::detail {

namespace {

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
        const int32_t carried = x.zero_point - carry_offset(DType::uint8);
        if (y.zero_point != carried)
          op_fail(FormatErrc::bad_zero_point, cat("output zero point ", y.zero_point,
                                                  " must be the pixels' zero point - 128 = ", carried));
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

}  // namespace

void validate_graph(const ModelDesc& m, const std::string& name) { Validator(m, name).run(); }

}  // namespace octet::engine::detail
