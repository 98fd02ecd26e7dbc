// engine/format_internal.h: what the three parts of the model file code share
// (format_read.cpp, format_validate.cpp, format_write.cpp): the byte layout of
// docs/format.md, the little-endian loads and stores, the error helpers, and
// the graph validator's entry point. Plain data and inline helpers; not part
// of the engine's API (only engine/format_*.cpp include it).
#pragma once

#include <charconv>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/format.h"

namespace octet::engine::detail {

// ---- layout (docs/format.md) ------------------------------------------------
inline constexpr size_t kHeaderSize = 64;
inline constexpr size_t kTensorRecord = 64;
inline constexpr size_t kOpRecord = 80;
inline constexpr size_t kMetaRecord = 16;
inline constexpr size_t kCrcSize = 4;
inline constexpr size_t kDataAlign = 16;
inline constexpr uint32_t kNoInput = 0xFFFFFFFFu;
inline constexpr uint64_t kMaxFileBytes = uint64_t{1} << 31;
inline constexpr uint8_t kFlagConstant = 1;

// cat("op ", i, " '", name, "'"): the message pieces (strings, characters,
// integers, floating point as printf's %g, i.e. as an ostream prints them)
// joined. Not an ostringstream: the reader builds a context string for every
// tensor and op of a valid file too, and iostreams would page in about 0.6 MB
// of libstdc++'s locale code for it, a third of an embedded engine's
// resident memory (docs/results.md, "footprint").
inline void append_piece(std::string& s, std::string_view v) { s.append(v); }
inline void append_piece(std::string& s, char c) { s.push_back(c); }
inline void append_piece(std::string& s, const char* v) { s.append(v); }
template <std::integral T>
void append_piece(std::string& s, T v) {
  if constexpr (std::same_as<T, bool>) {
    s.push_back(v ? '1' : '0');
  } else {
    char b[24];
    s.append(b, std::to_chars(b, b + sizeof b, v).ptr);
  }
}
template <std::floating_point T>
void append_piece(std::string& s, T v) {
  char b[32];
  const int n = std::snprintf(b, sizeof b, "%g", static_cast<double>(v));
  s.append(b, static_cast<size_t>(n));
}
template <typename... Args>
std::string cat(const Args&... args) {
  std::string s;
  (append_piece(s, args), ...);
  return s;
}

[[noreturn]] inline void fail(FormatErrc code, const std::string& message) { throw FormatError(code, message); }

inline uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// Little-endian loads/stores, independent of the host's byte order.
inline uint64_t load_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint8_t ld8(const uint8_t* p) { return p[0]; }
inline uint16_t ld16(const uint8_t* p) { return static_cast<uint16_t>(load_le(p, 2)); }
inline uint32_t ld32(const uint8_t* p) { return static_cast<uint32_t>(load_le(p, 4)); }
inline int32_t ldi32(const uint8_t* p) { return static_cast<int32_t>(ld32(p)); }
inline uint64_t ld64(const uint8_t* p) { return load_le(p, 8); }
inline double ldf64(const uint8_t* p) {
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

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

inline std::pair<int32_t, int32_t> dtype_range(DType d) {
  switch (d) {
    case DType::int8: return {-128, 127};
    case DType::uint8: return {0, 255};
    case DType::int32: return {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()};
  }
  return {0, 0};
}

// ---- the graph validator (format_validate.cpp) ---------------------------------

// Checks the graph semantics of a model whose records the decoder has
// checked (enums, bounds, sizes, tensor indices): order, types, shapes,
// quantization parameters, accumulator headroom, metadata. `name` starts every
// message. Throws FormatError.
void validate_graph(const ModelDesc& m, const std::string& name);

}  // namespace octet::engine::detail
