// engine/format.h: the Octet model file (.oct), its in-memory form and the
// validating reader. docs/format.md describes every byte; the writer
// (ModelBuilder, encode) is engine/builder.h.
//
// A model file is a list of tensors and a list of ops in topological order:
//
//   header | tensor table | op table | metadata table | strings | data | CRC32
//
// Tensors are activations (int8 or uint8, NHWC per image: [H, W, C] or [C];
// the batch dimension is not stored) or constants (int8 weights stored packed
// at 2..8 bits, int32 biases and requantization multipliers/shifts). Every
// op names its input and output tensors by index; zero points live in the
// tensors, the op holds its own integer parameters (strides, clamps, the Add
// multipliers). Scales are stored as float64 for tools only: nothing on the
// run path reads them.
//
// Reading: decode(bytes, name) checks EVERY field before anything is
// allocated from it and throws FormatError naming the file, the record, the
// field and its byte offset. A model that decodes runs without overflow:
// shapes agree between producer and consumer, quantization parameters are in
// range and every conv/fc proves its int32 accumulator headroom.
// (engine/format_read.cpp decodes, engine/format_validate.cpp checks the graph.)
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace octet::engine {

// ---- errors ---------------------------------------------------------------

// What is wrong with a model file; every kind has its own message too.
enum class FormatErrc {
  io,               // cannot open/read/write the file
  truncated,        // shorter than its header says (or than a header)
  trailing_bytes,   // longer than its header says
  bad_magic,        // not an Octet model file
  bad_version,      // a format version this reader does not know
  bad_crc,          // CRC32 mismatch: the file is corrupted
  bad_field,        // a reserved/padding field is not zero, a count or enum is invalid
  too_large,        // a dimension or element count above the engine's limits
  out_of_bounds,    // an offset/size pointing outside its section or the file
  unknown_op,       // an op type this reader does not know
  graph_order,      // use before definition, cycle, tensor defined twice
  type_mismatch,    // wrong dtype / constness for an op's operand
  shape_mismatch,   // producer and consumer (or declared) shapes disagree
  bad_zero_point,   // zero point outside its dtype's range
  bad_quant,        // multiplier/shift/clamp outside the documented ranges
  headroom,         // an accumulator could overflow int32
  bad_metadata,     // duplicate keys, class_names count != outputs
};
const char* errc_name(FormatErrc e);

// The one error type of the reader and the validator. what() reads like
// "model.oct: op 7 (conv2d 'layer2.0.conv1'): <what is wrong>".
class FormatError : public std::runtime_error {
 public:
  FormatError(FormatErrc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  FormatErrc code() const { return code_; }

 private:
  FormatErrc code_;
};

// ---- the in-memory model ----------------------------------------------------

inline constexpr char kMagic[8] = {'O', 'C', 'T', 'E', 'T', '\0', '\r', '\n'};
inline constexpr uint32_t kVersion = 1;

enum class DType : uint8_t { int8 = 1, uint8 = 2, int32 = 3 };
const char* dtype_name(DType t);

// Inside the engine a uint8 tensor is carried as int8: codes q8 = q - 128,
// zero point zp - 128, clamps - 128 (the real values are the same, so every
// kernel sees int8). The offset a dtype's codes move down by: 128 for uint8,
// 0 otherwise. The one place this offset is derived.
constexpr int32_t carry_offset(DType d) { return d == DType::uint8 ? 128 : 0; }

enum class OpType : uint16_t {
  input = 1,            // (x: uint8 [H,W,C]) -> int8 [H,W,C], zp_out = zp_in - 128
  conv2d = 2,           // (x, w, bias, multiplier, shift) -> [OH,OW,Cout]
  fully_connected = 3,  // (x, w [Cout,K], bias, multiplier, shift) -> [Cout]; x flattened (HWC order)
  add = 4,              // (a, b) -> same shape
  max_pool = 5,         // (x) -> [OH,OW,C]
  avg_pool = 6,         // (x) -> [OH,OW,C]
  global_avg_pool = 7,  // (x [H,W,C]) -> [C]
};
const char* op_name(OpType t);

// The params slots of an op record, by op type (unused slots are 0).
namespace param {
// conv2d: stride, pad, groups, act_min, act_max (clamps in the output dtype's domain)
inline constexpr int kStride = 0, kPad = 1, kGroups = 2, kConvActMin = 3, kConvActMax = 4;
// fully_connected: act_min, act_max
inline constexpr int kFcActMin = 0, kFcActMax = 1;
// add: left_shift, a/b/out multipliers and shifts, act_min, act_max
inline constexpr int kLeftShift = 0, kAMult = 1, kAShift = 2, kBMult = 3, kBShift = 4, kOutMult = 5,
                     kOutShift = 6, kAddActMin = 7, kAddActMax = 8;
// max_pool / avg_pool: kernel_h, kernel_w, stride, pad
inline constexpr int kPoolKH = 0, kPoolKW = 1, kPoolStride = 2, kPoolPad = 3;
}  // namespace param
inline constexpr int kMaxParams = 10;
inline constexpr int kMaxInputs = 6;

struct TensorDesc {
  std::string name;
  DType dtype = DType::int8;
  int bits = 8;                // storage bits: 8 for activations, 2..8 for int8 constants, 32 for int32
  std::vector<int64_t> shape;  // rank 1..4; activations: [H,W,C] or [C] per image
  int32_t zero_point = 0;      // in the dtype's own range (uint8: 0..255)
  double scale = 0;            // real = scale * (q - zero_point); metadata, never on the run path; 0 = unknown
  bool constant = false;
  std::vector<int8_t> i8;      // constant int8 data, expanded (numel values)
  std::vector<int32_t> i32;    // constant int32 data (numel values)

  int64_t numel() const;
};

struct OpDesc {
  OpType type = OpType::input;
  std::string name;
  std::vector<uint32_t> inputs;
  uint32_t output = 0;
  std::array<int32_t, kMaxParams> params{};
};

struct ModelDesc {
  std::vector<TensorDesc> tensors;
  std::vector<OpDesc> ops;  // topological order
  std::vector<std::pair<std::string, std::string>> metadata;  // e.g. model_name, class_names, preprocessing
  uint32_t input = 0;   // the graph input: a uint8 [H,W,C] activation, consumed by an input op
  uint32_t output = 0;  // the logits: an int8 activation produced by an op

  const std::string* find_metadata(const std::string& key) const;
};

// ---- limits (docs/format.md, "Limits") ---------------------------------------

inline constexpr int64_t kMaxDim = int64_t{1} << 24;               // any one dimension
inline constexpr int64_t kMaxActivationElems = int64_t{1} << 24;   // per image, per activation
inline constexpr int32_t kMinShift = -31, kMaxShift = 30;          // requant shifts
inline constexpr int32_t kMaxAddLeftShift = 22;                    // 255 << 22 < 2^30

// ---- reading ----------------------------------------------------------------

// Reads and validates a whole file held in memory. `name` (usually the path)
// starts every error message.
ModelDesc decode(std::span<const uint8_t> bytes, const std::string& name = "<memory>");
// Reads the file at `path` and decodes it (FormatErrc::io if unreadable).
ModelDesc read_model_file(const std::string& path);

// CRC-32 (IEEE 802.3, the zlib/PNG one) of bytes.
uint32_t crc32(std::span<const uint8_t> bytes);
// Recomputes the trailing CRC of an encoded file in place (tests, fuzzing).
void fix_crc(std::vector<uint8_t>& file);

// b-bit two's complement packing, LSB first: value i occupies bits
// [i*b, (i+1)*b) of the little-endian bit stream. Values must lie in
// [-2^(b-1), 2^(b-1) - 1]; unused bits of the last byte are 0.
// (pack_bits, the writer's half, is in engine/builder.h.)
size_t packed_size(size_t count, int bits);
void unpack_bits(std::span<const uint8_t> packed, int bits, std::span<int8_t> out);

}  // namespace octet::engine
