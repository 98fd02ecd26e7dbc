// core/npy.h: NumPy .npy arrays of uint8, int8 or float32, the exchange format
// with tools outside Octet (scripts/ort_run.mjs runs ONNX Runtime on them;
// numpy.load reads them as they are).
//
// Format (numpy.lib.format):
//   magic      6 bytes  "\x93NUMPY"
//   version    2 bytes  major, minor: 1.0 is written; 1.x and 2.x are read
//   header_len u16 (version 1) or u32 (version 2), little-endian
//   header     a Python dict literal, ASCII, padded with spaces and ending in '\n':
//                {'descr': '|u1', 'fortran_order': False, 'shape': (N, H, W, C), }
//              descr: '|u1' uint8, '|i1' int8, '<f4' float32 ('<' and '=' are also
//              taken for the one-byte types, as some writers put them)
//   data       prod(shape) items, C order (row-major), little-endian
// The writer pads the header so the data start at a multiple of 64 bytes, as
// numpy does. Nothing may follow the data.
//
// Reading validates everything (magic, version, header syntax, every key, the
// dtype asked for, C order, dims >= 0, the data size exactly) and throws
// std::runtime_error whose message names the file. Writing is atomic
// (write_file_atomic of core/checkpoint.h: a temporary file in the same folder,
// fsync'ed and renamed), so a reader never sees a half-written array.
//
//   write_npy<uint8_t>("x.npy", {n, 32, 32, 3}, pixels);
//   NpyArray<float> y = read_npy<float>("logits.npy");   // y.shape, y.data
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace octet {

enum class NpyDtype { u8, i8, f32 };
const char* npy_dtype_name(NpyDtype t);  // "uint8", "int8", "float32"
const char* npy_descr(NpyDtype t);       // "|u1", "|i1", "<f4" (what the writer puts)

template <class T>
struct NpyArray {
  std::vector<int64_t> shape;  // empty: a scalar (one item)
  std::vector<T> data;         // prod(shape) items, C order
  int64_t numel() const { return static_cast<int64_t>(data.size()); }
};

// What a file's header says, without reading the data.
struct NpyHeader {
  NpyDtype dtype = NpyDtype::u8;
  std::vector<int64_t> shape;
  size_t data_offset = 0;  // bytes before the data
};
NpyHeader read_npy_header(const std::string& path);

// Parses a whole file held in memory; `source` names it in messages.
// Throws if the file does not hold a T array (T is uint8_t, int8_t or float).
template <class T>
NpyArray<T> decode_npy(std::span<const uint8_t> bytes, const std::string& source);
template <class T>
NpyArray<T> read_npy(const std::string& path);

// The file's bytes for a T array of `shape` (data.size() must be prod(shape)).
template <class T>
std::vector<uint8_t> encode_npy(const std::vector<int64_t>& shape, std::span<const T> data);
template <class T>
void write_npy(const std::string& path, const std::vector<int64_t>& shape, std::span<const T> data);

}  // namespace octet
