// quant/protobuf.cpp: the protocol buffers wire format, writer and reader
// (see protobuf.h).
#include "quant/protobuf.h"

#include <bit>
#include <stdexcept>
#include <string>

namespace octet::quant::pb {

// ---- writing --------------------------------------------------------------------

void Writer::raw_varint(uint64_t value) {
  while (value >= 0x80) {
    buf_.push_back(static_cast<uint8_t>(value | 0x80));  // low 7 bits, "more follows"
    value >>= 7;
  }
  buf_.push_back(static_cast<uint8_t>(value));
}

void Writer::tag(uint32_t field, WireType type) {
  if (field < 1 || field >= (1u << 29)) throw std::invalid_argument("protobuf: field number " + std::to_string(field));
  raw_varint(uint64_t{field} << 3 | static_cast<uint64_t>(type));
}

void Writer::varint(uint32_t field, uint64_t value) {
  tag(field, WireType::varint);
  raw_varint(value);
}

void Writer::fixed32(uint32_t field, float value) {
  tag(field, WireType::fixed32);
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  for (int i = 0; i < 4; ++i) buf_.push_back(static_cast<uint8_t>(bits >> (8 * i)));
}

void Writer::bytes(uint32_t field, std::span<const uint8_t> value) {
  tag(field, WireType::length);
  raw_varint(value.size());
  buf_.insert(buf_.end(), value.begin(), value.end());
}

void Writer::string(uint32_t field, std::string_view value) {
  bytes(field, std::span(reinterpret_cast<const uint8_t*>(value.data()), value.size()));
}

void Writer::packed_int64(uint32_t field, std::span<const int64_t> values) {
  if (values.empty()) return;
  Writer payload;
  for (int64_t v : values) payload.raw_varint(static_cast<uint64_t>(v));
  bytes(field, payload.data());
}

void Writer::packed_float(uint32_t field, std::span<const float> values) {
  if (values.empty()) return;
  tag(field, WireType::length);
  raw_varint(4 * values.size());
  for (float v : values) {
    const uint32_t bits = std::bit_cast<uint32_t>(v);
    for (int i = 0; i < 4; ++i) buf_.push_back(static_cast<uint8_t>(bits >> (8 * i)));
  }
}

// ---- reading --------------------------------------------------------------------

namespace {

[[noreturn]] void malformed(const std::string& what, size_t at) {
  throw std::runtime_error("protobuf: " + what + " at byte " + std::to_string(at));
}

uint64_t load_le(std::span<const uint8_t> p) {
  uint64_t v = 0;
  for (size_t i = p.size(); i-- > 0;) v = v << 8 | p[i];
  return v;
}

}  // namespace

float Field::as_float() const { return std::bit_cast<float>(static_cast<uint32_t>(value)); }

uint64_t Reader::read_varint() {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos_ >= data_.size()) malformed("truncated varint", pos_);
    const uint8_t b = data_[pos_++];
    v |= uint64_t{b & 0x7Fu} << shift;
    if (!(b & 0x80)) return v;
  }
  malformed("varint longer than 10 bytes", pos_);
}

bool Reader::next(Field& f) {
  if (pos_ >= data_.size()) return false;
  const size_t at = pos_;
  const uint64_t key = read_varint();
  f = Field{};
  f.number = static_cast<uint32_t>(key >> 3);
  if (f.number == 0 || key >> 32) malformed("bad field number", at);
  auto take = [&](uint64_t n) {
    if (n > data_.size() - pos_) malformed("field runs past the end of the message", at);
    const std::span<const uint8_t> s = data_.subspan(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  };
  switch (key & 7) {
    case 0: f.type = WireType::varint; f.value = read_varint(); break;
    case 1: f.type = WireType::fixed64; f.value = load_le(take(8)); break;
    case 2: f.type = WireType::length; f.bytes = take(read_varint()); break;
    case 5: f.type = WireType::fixed32; f.value = load_le(take(4)); break;
    default: malformed("unsupported wire type " + std::to_string(key & 7), at);  // 3, 4: groups (deprecated)
  }
  return true;
}

std::vector<int64_t> unpack_varints(std::span<const uint8_t> packed) {
  // The payload is the varints back to back, without tags.
  std::vector<int64_t> out;
  uint64_t v = 0;
  int shift = 0;
  for (size_t i = 0; i < packed.size(); ++i) {
    if (shift >= 64) malformed("varint longer than 10 bytes in a packed field", i);
    v |= uint64_t{packed[i] & 0x7Fu} << shift;
    shift += 7;
    if (!(packed[i] & 0x80)) {
      out.push_back(static_cast<int64_t>(v));
      v = 0;
      shift = 0;
    }
  }
  if (shift) malformed("truncated varint in a packed field", packed.size());
  return out;
}

std::vector<float> unpack_floats(std::span<const uint8_t> packed) {
  if (packed.size() % 4) malformed("packed floats of " + std::to_string(packed.size()) + " bytes", 0);
  std::vector<float> out(packed.size() / 4);
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = std::bit_cast<float>(static_cast<uint32_t>(load_le(packed.subspan(4 * i, 4))));
  return out;
}

}  // namespace octet::quant::pb
