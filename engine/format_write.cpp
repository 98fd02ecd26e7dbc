// engine/format_write.cpp: the model file writer (engine/builder.h): encode()
// (a model as it is, into the bytes of docs/format.md), write_file_atomic(),
// bit packing and the trailing CRC, and ModelBuilder, which assembles a model
// from integer weights and float scales and checks it with the reader before
// it returns any bytes.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/builder.h"
#include "engine/fixedpoint.h"
#include "engine/format.h"
#include "engine/format_internal.h"

namespace octet::engine {

using namespace detail;

// ---- bytes ---------------------------------------------------------------------

void fix_crc(std::vector<uint8_t>& file) {
  if (file.size() < kCrcSize) return;
  const size_t at = file.size() - kCrcSize;
  const uint32_t c = crc32(std::span<const uint8_t>(file).first(at));
  for (int i = 0; i < 4; ++i) file[at + i] = static_cast<uint8_t>(c >> (8 * i));
}

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

std::pair<int32_t, int32_t> activation_bounds(const Clamp& clamp, const OutQuant& out) {
  if (clamp.bounds) return *clamp.bounds;
  const auto [lo, hi] = dtype_range(out.dtype);
  switch (clamp.act) {
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

const TensorDesc& ModelBuilder::activation(TensorId t, const std::string& op) const {
  if (t.id >= desc_.tensors.size() || desc_.tensors[t.id].constant || t.id == desc_.input)
    throw std::invalid_argument(cat("ModelBuilder: '", op, "': tensor ", t.id, " is not an activation of this model"));
  return desc_.tensors[t.id];
}

const std::vector<int64_t>& ModelBuilder::shape(TensorId t) const { return activation(t, "shape").shape; }

TensorId ModelBuilder::add_input(const std::string& name, int h, int w, int c, double scale, int32_t zero_point) {
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
  q.zero_point = zero_point - carry_offset(DType::uint8);
  const uint32_t out = add_tensor(std::move(q));
  desc_.ops.push_back(OpDesc{OpType::input, name, {desc_.input}, out, {}});
  return TensorId{out};
}

TensorId ModelBuilder::add_matmul_like(OpType type, const std::string& name, TensorId x, const Weights& w,
                                       std::vector<int32_t> bias, ConvParams p, OutQuant out, const Clamp& clamp,
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
  const auto [act_min, act_max] = activation_bounds(clamp, out);
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
  return TensorId{y_id};
}

TensorId ModelBuilder::add_conv(const std::string& name, TensorId x, const Weights& w, std::vector<int32_t> bias,
                                ConvParams p, OutQuant out, Clamp clamp,
                                std::optional<std::vector<QuantizedMultiplier>> multipliers) {
  return add_matmul_like(OpType::conv2d, name, x, w, std::move(bias), p, out, clamp, std::move(multipliers));
}

TensorId ModelBuilder::add_fc(const std::string& name, TensorId x, const Weights& w, std::vector<int32_t> bias,
                              OutQuant out, Clamp clamp, std::optional<std::vector<QuantizedMultiplier>> multipliers) {
  return add_matmul_like(OpType::fully_connected, name, x, w, std::move(bias), {}, out, clamp, std::move(multipliers));
}

TensorId ModelBuilder::add_add(const std::string& name, TensorId a, TensorId b, OutQuant out, Clamp clamp) {
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
  const auto [act_min, act_max] = activation_bounds(clamp, out);
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
  return TensorId{y_id};
}

TensorId ModelBuilder::add_pool(const std::string& name, TensorId x, Pool kind, int kernel, int stride, int pad) {
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
  return TensorId{y_id};
}

TensorId ModelBuilder::add_global_avg_pool(const std::string& name, TensorId x) {
  const TensorDesc& xt = activation(x, name);
  if (xt.shape.size() != 3)
    throw std::invalid_argument(cat("ModelBuilder: global_avg_pool '", name, "': input must be [H, W, C]"));
  TensorDesc y = xt;
  y.name = name;
  y.shape = {xt.shape[2]};
  const uint32_t y_id = add_tensor(std::move(y));
  desc_.ops.push_back(OpDesc{OpType::global_avg_pool, name, {x.id}, y_id, {}});
  return TensorId{y_id};
}

void ModelBuilder::set_output(TensorId logits) {
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
