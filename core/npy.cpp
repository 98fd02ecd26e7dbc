#include "core/npy.h"

#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include "core/checkpoint.h"

namespace octet {

// The data are copied as they lie in the file; that is little-endian only on a
// little-endian host (every CPU Octet targets: x86-64, AArch64).
static_assert(std::endian::native == std::endian::little, "core/npy.cpp assumes a little-endian host");

namespace {

constexpr uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
constexpr size_t kAlign = 64;  // numpy's ARRAY_ALIGN: the data start at a multiple of it

template <class T>
constexpr NpyDtype dtype_of() {
  if constexpr (std::is_same_v<T, uint8_t>) return NpyDtype::u8;
  else if constexpr (std::is_same_v<T, int8_t>) return NpyDtype::i8;
  else {
    static_assert(std::is_same_v<T, float>, "npy arrays are uint8_t, int8_t or float");
    return NpyDtype::f32;
  }
}

size_t itemsize(NpyDtype t) { return t == NpyDtype::f32 ? 4 : 1; }

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw std::runtime_error(source + ": " + what);
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

// The header dict, a Python literal. Only what numpy writes is accepted: string
// keys, and values that are strings, True/False or tuples of integers.
class HeaderParser {
 public:
  HeaderParser(std::string text, std::string source) : s_(std::move(text)), source_(std::move(source)) {}

  NpyHeader parse() {
    bool has_descr = false, has_order = false, has_shape = false;
    std::string descr;
    bool fortran = false;
    NpyHeader h;
    skip_ws();
    expect('{');
    for (;;) {
      skip_ws();
      if (peek() == '}') {
        ++i_;
        break;
      }
      const std::string key = string_literal();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        if (has_descr) bad("'descr' given twice");
        descr = string_literal();
        has_descr = true;
      } else if (key == "fortran_order") {
        if (has_order) bad("'fortran_order' given twice");
        fortran = boolean();
        has_order = true;
      } else if (key == "shape") {
        if (has_shape) bad("'shape' given twice");
        h.shape = int_tuple();
        has_shape = true;
      } else {
        bad("unknown key '" + key + "'");
      }
      skip_ws();
      if (peek() == ',') {
        ++i_;
      } else if (peek() != '}') {
        bad("',' or '}' expected at byte " + std::to_string(i_) + " of the header");
      }
    }
    skip_ws();
    if (i_ != s_.size()) bad("text after the closing '}'");
    if (!has_descr || !has_order || !has_shape) bad("the header lacks 'descr', 'fortran_order' or 'shape'");
    if (fortran) fail(source_, "a Fortran-order (column-major) array; only C order is read (np.ascontiguousarray)");
    if (descr == "|u1" || descr == "<u1" || descr == "=u1") {
      h.dtype = NpyDtype::u8;
    } else if (descr == "|i1" || descr == "<i1" || descr == "=i1") {
      h.dtype = NpyDtype::i8;
    } else if (descr == "<f4") {
      h.dtype = NpyDtype::f32;
    } else {
      fail(source_, "dtype '" + descr + "' is not read (uint8 '|u1', int8 '|i1', float32 '<f4')");
    }
    for (int64_t d : h.shape)
      if (d < 0) bad("negative dimension in shape " + shape_string(h.shape));
    return h;
  }

 private:
  [[noreturn]] void bad(const std::string& why) { fail(source_, "malformed .npy header: " + why); }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    if (peek() != c) bad(std::string("'") + c + "' expected at byte " + std::to_string(i_) + " of the header");
    ++i_;
  }
  std::string string_literal() {
    const char q = peek();
    if (q != '\'' && q != '"') bad("a quoted string expected at byte " + std::to_string(i_) + " of the header");
    const size_t end = s_.find(q, i_ + 1);
    if (end == std::string::npos) bad("unterminated string");
    std::string v = s_.substr(i_ + 1, end - i_ - 1);
    i_ = end + 1;
    return v;
  }
  bool boolean() {
    if (s_.compare(i_, 4, "True") == 0) {
      i_ += 4;
      return true;
    }
    if (s_.compare(i_, 5, "False") == 0) {
      i_ += 5;
      return false;
    }
    bad("True or False expected at byte " + std::to_string(i_) + " of the header");
  }
  std::vector<int64_t> int_tuple() {
    std::vector<int64_t> v;
    expect('(');
    for (;;) {
      skip_ws();
      if (peek() == ')') {
        ++i_;
        return v;
      }
      if (peek() < '0' || peek() > '9') bad("a dimension expected at byte " + std::to_string(i_) + " of the header");
      int64_t d = 0;
      while (peek() >= '0' && peek() <= '9') {
        if (d > (std::numeric_limits<int64_t>::max() - 9) / 10) bad("a dimension too large");
        d = d * 10 + (s_[i_++] - '0');
      }
      if (peek() == 'L') ++i_;  // Python 2 longs, as old numpy wrote them
      v.push_back(d);
      skip_ws();
      if (peek() == ',') {
        ++i_;
      } else if (peek() != ')') {
        bad("',' or ')' expected at byte " + std::to_string(i_) + " of the header");
      }
    }
  }

  std::string s_;
  std::string source_;
  size_t i_ = 0;
};

// The header of a file whose first `bytes` are given (all of them, or at least
// the header); sets data_offset.
NpyHeader parse_header(std::span<const uint8_t> bytes, const std::string& source) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    fail(source, "not a .npy file (no \\x93NUMPY magic)");
  const int major = bytes[6];
  size_t header_len = 0, start = 0;
  if (major == 1) {
    header_len = bytes[8] | (size_t(bytes[9]) << 8);
    start = 10;
  } else if (major == 2) {
    if (bytes.size() < 12) fail(source, "truncated .npy header");
    header_len = bytes[8] | (size_t(bytes[9]) << 8) | (size_t(bytes[10]) << 16) | (size_t(bytes[11]) << 24);
    start = 12;
  } else {
    fail(source, ".npy format version " + std::to_string(major) + "." + std::to_string(bytes[7]) +
                     " (versions 1.x and 2.x are read)");
  }
  if (bytes.size() - start < header_len)
    fail(source, "truncated .npy header: " + std::to_string(header_len) + " bytes announced, " +
                     std::to_string(bytes.size() - start) + " in the file");
  for (size_t k = start; k < start + header_len; ++k)
    if (bytes[k] >= 0x80 || bytes[k] == 0) fail(source, "malformed .npy header: a byte that is not ASCII text");
  NpyHeader h = HeaderParser(std::string(reinterpret_cast<const char*>(bytes.data()) + start, header_len), source).parse();
  h.data_offset = start + header_len;
  return h;
}

// prod(shape) * itemsize, or a throw when it does not fit (no file is that large).
size_t data_bytes(const NpyHeader& h, const std::string& source) {
  size_t n = itemsize(h.dtype);
  for (int64_t d : h.shape) {
    const auto ud = static_cast<size_t>(d);
    if (ud != 0 && n > std::numeric_limits<size_t>::max() / ud) fail(source, "shape " + shape_string(h.shape) + " is too large");
    n *= ud;
  }
  return n;
}

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error("cannot read " + path);
  return bytes;
}

}  // namespace

const char* npy_dtype_name(NpyDtype t) {
  switch (t) {
    case NpyDtype::u8: return "uint8";
    case NpyDtype::i8: return "int8";
    case NpyDtype::f32: return "float32";
  }
  return "?";
}

const char* npy_descr(NpyDtype t) {
  switch (t) {
    case NpyDtype::u8: return "|u1";
    case NpyDtype::i8: return "|i1";
    case NpyDtype::f32: return "<f4";
  }
  return "?";
}

NpyHeader read_npy_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  // Version 1 headers are at most 10 + 65535 bytes; version 2 ones say how long they are.
  std::vector<uint8_t> head(12);
  in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  if (head.size() >= 12 && std::memcmp(head.data(), kMagic, sizeof kMagic) == 0 && (head[6] == 1 || head[6] == 2)) {
    const size_t len = head[6] == 1 ? 10 + (head[8] | (size_t(head[9]) << 8))
                                    : 12 + (head[8] | (size_t(head[9]) << 8) | (size_t(head[10]) << 16) |
                                            (size_t(head[11]) << 24));
    const size_t have = head.size();
    if (len > have && len < (size_t(1) << 30)) {
      head.resize(len);
      in.read(reinterpret_cast<char*>(head.data() + have), static_cast<std::streamsize>(len - have));
      head.resize(have + static_cast<size_t>(in.gcount()));
    }
  }
  return parse_header(head, path);
}

template <class T>
NpyArray<T> decode_npy(std::span<const uint8_t> bytes, const std::string& source) {
  const NpyHeader h = parse_header(bytes, source);
  constexpr NpyDtype want = dtype_of<T>();
  if (h.dtype != want)
    fail(source, std::string("holds ") + npy_dtype_name(h.dtype) + " ('" + npy_descr(h.dtype) + "'), " +
                     npy_dtype_name(want) + " was expected");
  const size_t need = data_bytes(h, source);
  const size_t have = bytes.size() - h.data_offset;
  if (have < need)
    fail(source, "truncated: shape " + shape_string(h.shape) + " of " + npy_dtype_name(h.dtype) + " needs " +
                     std::to_string(need) + " data bytes, the file has " + std::to_string(have));
  if (have > need) fail(source, std::to_string(have - need) + " bytes after the data of shape " + shape_string(h.shape));
  NpyArray<T> a;
  a.shape = h.shape;
  a.data.resize(need / sizeof(T));
  if (need) std::memcpy(a.data.data(), bytes.data() + h.data_offset, need);
  return a;
}

template <class T>
NpyArray<T> read_npy(const std::string& path) {
  const std::vector<uint8_t> bytes = read_all(path);
  return decode_npy<T>(bytes, path);
}

template <class T>
std::vector<uint8_t> encode_npy(const std::vector<int64_t>& shape, std::span<const T> data) {
  NpyHeader h;
  h.dtype = dtype_of<T>();
  h.shape = shape;
  for (int64_t d : shape)
    if (d < 0) throw std::invalid_argument("encode_npy: negative dimension in shape " + shape_string(shape));
  if (data_bytes(h, "encode_npy") != data.size_bytes())
    throw std::invalid_argument("encode_npy: shape " + shape_string(shape) + " holds " +
                                std::to_string(data_bytes(h, "encode_npy") / sizeof(T)) + " items, " +
                                std::to_string(data.size()) + " were given");
  std::string header =
      std::string("{'descr': '") + npy_descr(h.dtype) + "', 'fortran_order': False, 'shape': " + shape_string(shape) + ", }";
  // Spaces, then '\n', up to the next multiple of kAlign (counting the 10 bytes before the header).
  const size_t total = (10 + header.size() + 1 + kAlign - 1) / kAlign * kAlign;
  header.append(total - 10 - header.size() - 1, ' ');
  header += '\n';
  if (header.size() > 65535) throw std::invalid_argument("encode_npy: shape " + shape_string(shape) + " needs a header too long for .npy 1.0");
  std::vector<uint8_t> out(kMagic, kMagic + sizeof kMagic);
  out.push_back(1);  // version 1.0
  out.push_back(0);
  out.push_back(static_cast<uint8_t>(header.size() & 0xff));
  out.push_back(static_cast<uint8_t>(header.size() >> 8));
  out.insert(out.end(), header.begin(), header.end());
  const size_t at = out.size();
  out.resize(at + data.size_bytes());
  if (!data.empty()) std::memcpy(out.data() + at, data.data(), data.size_bytes());
  return out;
}

template <class T>
void write_npy(const std::string& path, const std::vector<int64_t>& shape, std::span<const T> data) {
  const std::vector<uint8_t> bytes = encode_npy<T>(shape, data);
  write_file_atomic(path, bytes.data(), bytes.size());
}

#define OCTET_NPY_INSTANTIATE(T)                                                                  \
  template NpyArray<T> decode_npy<T>(std::span<const uint8_t>, const std::string&);               \
  template NpyArray<T> read_npy<T>(const std::string&);                                            \
  template std::vector<uint8_t> encode_npy<T>(const std::vector<int64_t>&, std::span<const T>);    \
  template void write_npy<T>(const std::string&, const std::vector<int64_t>&, std::span<const T>);
OCTET_NPY_INSTANTIATE(uint8_t)
OCTET_NPY_INSTANTIATE(int8_t)
OCTET_NPY_INSTANTIATE(float)
#undef OCTET_NPY_INSTANTIATE

}  // namespace octet
