// core/checkpoint.h: checkpoint files, named float32 tensors plus a string
// metadata map (model name, run configuration, epoch, step, optimizer step
// count, ...).
//
// Format, version 1, all integers little-endian:
//   magic     8 bytes  "OCTETCKP"
//   version   u32      1
//   n_meta    u32
//   n_tensor  u32
//   n_meta x    { u32 key_len, key bytes, u32 value_len, value bytes }
//   n_tensor x  { u32 name_len, name bytes, u32 ndim (<= 8), i64 dims[ndim],
//                 f32 data[prod(dims)] }
//   crc32     u32      CRC-32 (IEEE, as zlib) of every byte before it
// Nothing may follow the CRC. Names and keys are unique, non-empty.
//
// Writing is atomic: the bytes go to "<path>.tmp.<pid>" in the same folder,
// which is fsync'ed and renamed over <path> (then the folder is fsync'ed), so
// a crash leaves either the old file or the new one, never a torn file.
// Loading validates everything (magic, version, every length against the
// bytes left, dims >= 0, duplicate names, CRC, trailing bytes) and throws
// std::runtime_error naming the file, the field and its byte offset.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace octet {

struct Checkpoint {
  std::map<std::string, std::string> meta;
  std::vector<std::pair<std::string, Tensor>> tensors;  // in file order

  bool has_tensor(const std::string& name) const;
  // Throws std::runtime_error naming the missing entry (and `source` if set).
  const Tensor& tensor(const std::string& name) const;
  const std::string& get(const std::string& key) const;
  std::string get(const std::string& key, const std::string& fallback) const;
  // Entries whose name starts with prefix, with the prefix removed.
  std::vector<std::pair<std::string, Tensor>> with_prefix(const std::string& prefix) const;

  std::string source;  // file it was loaded from, for messages
};

inline constexpr uint32_t kCheckpointVersion = 1;

// Serialization to and from bytes (the file body, CRC included).
std::vector<uint8_t> encode_checkpoint(const Checkpoint& ckpt);
Checkpoint decode_checkpoint(const std::vector<uint8_t>& bytes, const std::string& source);

// Atomic write (see above). Throws std::runtime_error naming the path on any
// I/O failure; the previous file, if any, is then left untouched.
void save_checkpoint(const std::string& path, const Checkpoint& ckpt);
Checkpoint load_checkpoint(const std::string& path);

// Writes `bytes` to `path` atomically (temp file + fsync + rename).
void write_file_atomic(const std::string& path, const void* bytes, size_t size);

uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

}  // namespace octet
