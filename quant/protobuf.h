// quant/protobuf.h: just enough of the protocol buffers wire format to write
// an ONNX model by hand (quant/onnx_export.cpp) and to read one back in the
// tests, without the protobuf library. Defined in quant/protobuf.cpp.
//
// A message is a sequence of fields. Each field is a tag, the varint
// (field number << 3 | wire type), followed by its payload:
//
//   wire type 0, varint      int32, int64, uint64, bool, enum: 7 bits per byte,
//                            lowest group first, high bit set on every byte
//                            but the last. A negative int32/int64 is written
//                            as its 64-bit two's complement: 10 bytes.
//   wire type 1, fixed64     double: 8 bytes little-endian (read, never written)
//   wire type 2, length      varint byte count, then the bytes: strings, bytes,
//                            submessages, and packed repeated scalars
//   wire type 5, fixed32     float: 4 bytes little-endian IEEE-754
//
// A repeated scalar is either one field per value or "packed": one
// length-delimited field holding the values back to back (varints, or 4 bytes
// per float). Parsers accept both forms for any repeated scalar field, so the
// writer always packs. Fields may come in any order; an absent field has its
// default value.
//
//   pb::Writer shape;                        // TensorShapeProto.Dimension
//   shape.int64(1, 32);                      //   dim_value = 32
//   pb::Writer t;
//   t.message(1, shape);                     // a submessage is its bytes, length-delimited
//
//   pb::Reader r(bytes);
//   for (pb::Field f; r.next(f);)
//     if (f.number == 1 && f.type == pb::WireType::length) use(f.bytes);
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace octet::quant::pb {

enum class WireType : uint8_t { varint = 0, fixed64 = 1, length = 2, fixed32 = 5 };

// Appends fields to a growing message. Field numbers are 1 .. 2^29 - 1.
class Writer {
 public:
  void varint(uint32_t field, uint64_t value);
  void int64(uint32_t field, int64_t value) { varint(field, static_cast<uint64_t>(value)); }  // also int32, enums
  void fixed32(uint32_t field, float value);
  void bytes(uint32_t field, std::span<const uint8_t> value);
  void string(uint32_t field, std::string_view value);
  void message(uint32_t field, const Writer& sub) { bytes(field, sub.data()); }
  // Packed repeated fields; nothing is written for an empty list.
  void packed_int64(uint32_t field, std::span<const int64_t> values);
  void packed_float(uint32_t field, std::span<const float> values);

  const std::vector<uint8_t>& data() const { return buf_; }
  std::vector<uint8_t> take() { return std::move(buf_); }

 private:
  void tag(uint32_t field, WireType type);
  void raw_varint(uint64_t value);
  std::vector<uint8_t> buf_;
};

// One field as read: its number, wire type and payload.
struct Field {
  uint32_t number = 0;
  WireType type = WireType::varint;
  uint64_t value = 0;              // varint, or the raw bits of a fixed32 / fixed64
  std::span<const uint8_t> bytes;  // the payload of a length-delimited field

  int64_t as_int64() const { return static_cast<int64_t>(value); }
  float as_float() const;  // a fixed32
  std::string as_string() const { return {bytes.begin(), bytes.end()}; }
};

// Walks the fields of one message (not into submessages: read f.bytes with
// another Reader). Throws std::runtime_error on a truncated or malformed field.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> message) : data_(message) {}
  bool next(Field& f);  // false at the end of the message

 private:
  uint64_t read_varint();
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
};

// The values of a packed repeated field (Field::bytes).
std::vector<int64_t> unpack_varints(std::span<const uint8_t> packed);
std::vector<float> unpack_floats(std::span<const uint8_t> packed);

}  // namespace octet::quant::pb
