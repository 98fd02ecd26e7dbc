// engine/format_read.cpp: the model file reader (docs/format.md): decode()
// and read_model_file(), the record-level checks of the header, the tables and
// every tensor, op and metadata record (the graph checks are in
// format_validate.cpp), plus the small helpers of the description types of
// engine/format.h (names, numel, metadata lookup, CRC-32, bit unpacking).
//
// The reader never trusts a count or an offset before checking it against the
// bytes actually present: every table is bounds-checked as a whole before a
// vector of its records is reserved, and constant data sizes are checked
// against the data section before they are expanded.
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <sys/stat.h>

#include "engine/format.h"
#include "engine/format_internal.h"

namespace octet::engine {

using namespace detail;

namespace {

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
    validate_graph(m, name_);
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

size_t packed_size(size_t count, int bits) { return (count * static_cast<size_t>(bits) + 7) / 8; }

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

// ---- decode ------------------------------------------------------------------

ModelDesc decode(std::span<const uint8_t> bytes, const std::string& name) { return Decoder(bytes, name).run(); }

ModelDesc read_model_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(FormatErrc::io, cat(path, ": cannot open: ", std::strerror(errno)));
  // Read straight into the buffer, which for a regular file is the file's
  // size from the start (grown as it is read, the doublings would leave up to
  // twice the file resident while decoding; a pipe is read in 64 KiB steps).
  std::vector<uint8_t> bytes;
  size_t step = size_t{1} << 16;
  struct stat st;
  if (::fstat(::fileno(f), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      std::fclose(f);
      fail(FormatErrc::io, cat(path, ": is a directory, not a model file"));
    }
    if (S_ISREG(st.st_mode)) {
      if (static_cast<uint64_t>(st.st_size) > kMaxFileBytes) {
        std::fclose(f);
        fail(FormatErrc::too_large, cat(path, ": ", st.st_size, " bytes, larger than the 2 GiB a model file may have"));
      }
      step = static_cast<size_t>(st.st_size) + 1;  // + 1: the read that sees the end
      bytes.reserve(step);
    }
  }
  for (;;) {
    const size_t have = bytes.size();
    bytes.resize(have + step);
    const size_t n = std::fread(bytes.data() + have, 1, step, f);
    bytes.resize(have + n);
    if (bytes.size() > kMaxFileBytes) {
      std::fclose(f);
      fail(FormatErrc::too_large, cat(path, ": larger than the 2 GiB a model file may have"));
    }
    if (n < step) break;  // the end, or an error (below)
  }
  const bool error = std::ferror(f);
  std::fclose(f);
  if (error) fail(FormatErrc::io, cat(path, ": read error"));
  return decode(bytes, path);
}

}  // namespace octet::engine
