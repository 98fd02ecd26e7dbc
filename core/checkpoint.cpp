#include "core/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>

namespace octet {

namespace {

constexpr char kMagic[8] = {'O', 'C', 'T', 'E', 'T', 'C', 'K', 'P'};
constexpr uint32_t kMaxDims = 8;

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void put_str(std::vector<uint8_t>& out, const std::string& s, const char* what) {
  if (s.size() > 0xFFFFFFFFu) throw std::runtime_error(std::string("checkpoint: ") + what + " too long");
  put_u32(out, static_cast<uint32_t>(s.size()));
  out.insert(out.end(), s.begin(), s.end());
}

// Bounds-checked reader; every failure names the file, the field and the offset.
struct Reader {
  const std::vector<uint8_t>& b;
  size_t end;  // exclusive: the CRC is not part of the body
  const std::string& src;
  size_t pos = 0;

  [[noreturn]] void fail(const std::string& field, const std::string& why) const {
    throw std::runtime_error("checkpoint " + src + ": " + field + " at byte " + std::to_string(pos) + ": " + why);
  }
  void need(size_t n, const std::string& field) const {
    if (n > end - pos)
      fail(field, "needs " + std::to_string(n) + " bytes, only " + std::to_string(end - pos) +
                      " left (truncated or corrupted file)");
  }
  uint32_t u32(const std::string& field) {
    need(4, field);
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t(b[pos + i]) << (8 * i);
    pos += 4;
    return v;
  }
  int64_t i64(const std::string& field) {
    need(8, field);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t(b[pos + i]) << (8 * i);
    pos += 8;
    return static_cast<int64_t>(v);
  }
  std::string str(const std::string& field) {
    uint32_t n = u32(field + " length");
    need(n, field);
    std::string s(reinterpret_cast<const char*>(b.data() + pos), n);
    pos += n;
    return s;
  }
};

}  // namespace

uint32_t crc32(const void* data, size_t size, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

bool Checkpoint::has_tensor(const std::string& name) const {
  for (auto& [n, t] : tensors)
    if (n == name) return true;
  return false;
}

const Tensor& Checkpoint::tensor(const std::string& name) const {
  for (auto& [n, t] : tensors)
    if (n == name) return t;
  throw std::runtime_error("checkpoint " + (source.empty() ? std::string("(in memory)") : source) +
                           ": no tensor named '" + name + "'");
}

const std::string& Checkpoint::get(const std::string& key) const {
  auto it = meta.find(key);
  if (it == meta.end())
    throw std::runtime_error("checkpoint " + (source.empty() ? std::string("(in memory)") : source) +
                             ": no metadata field '" + key + "'");
  return it->second;
}

std::string Checkpoint::get(const std::string& key, const std::string& fallback) const {
  auto it = meta.find(key);
  return it == meta.end() ? fallback : it->second;
}

std::vector<std::pair<std::string, Tensor>> Checkpoint::with_prefix(const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [n, t] : tensors)
    if (n.compare(0, prefix.size(), prefix) == 0) out.emplace_back(n.substr(prefix.size()), t);
  return out;
}

std::vector<uint8_t> encode_checkpoint(const Checkpoint& ckpt) {
  std::vector<uint8_t> out(kMagic, kMagic + 8);
  put_u32(out, kCheckpointVersion);
  put_u32(out, static_cast<uint32_t>(ckpt.meta.size()));
  put_u32(out, static_cast<uint32_t>(ckpt.tensors.size()));
  for (auto& [k, v] : ckpt.meta) {
    if (k.empty()) throw std::runtime_error("checkpoint: empty metadata key");
    put_str(out, k, "metadata key");
    put_str(out, v, "metadata value");
  }
  std::set<std::string> seen;
  for (auto& [name, t] : ckpt.tensors) {
    if (name.empty()) throw std::runtime_error("checkpoint: empty tensor name");
    if (!seen.insert(name).second) throw std::runtime_error("checkpoint: tensor '" + name + "' given twice");
    if (!t.defined()) throw std::runtime_error("checkpoint: tensor '" + name + "' is undefined");
    if (t.ndim() > static_cast<int>(kMaxDims))
      throw std::runtime_error("checkpoint: tensor '" + name + "' has more than 8 dims");
    put_str(out, name, "tensor name");
    put_u32(out, static_cast<uint32_t>(t.ndim()));
    for (int64_t d : t.shape()) put_u64(out, static_cast<uint64_t>(d));
    const size_t bytes = static_cast<size_t>(t.numel()) * sizeof(float);
    const size_t at = out.size();
    out.resize(at + bytes);
    if (bytes) std::memcpy(out.data() + at, t.data(), bytes);  // little-endian hosts (x86, Arm)
  }
  put_u32(out, crc32(out.data(), out.size()));
  return out;
}

Checkpoint decode_checkpoint(const std::vector<uint8_t>& b, const std::string& src) {
  if (b.size() < 8 + 12 + 4)
    throw std::runtime_error("checkpoint " + src + ": file is " + std::to_string(b.size()) +
                             " bytes, too short for a header (truncated?)");
  if (std::memcmp(b.data(), kMagic, 8) != 0)
    throw std::runtime_error("checkpoint " + src + ": bad magic at byte 0 (not an Octet checkpoint)");
  Reader r{b, b.size() - 4, src};
  r.pos = 8;
  const uint32_t version = r.u32("version");
  if (version != kCheckpointVersion)
    throw std::runtime_error("checkpoint " + src + ": version " + std::to_string(version) +
                             " at byte 8, this build reads version " + std::to_string(kCheckpointVersion));
  // The CRC before anything else: a flipped bit anywhere is reported as such.
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) stored |= uint32_t(b[b.size() - 4 + i]) << (8 * i);
  const uint32_t actual = crc32(b.data(), b.size() - 4);
  if (stored != actual) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "CRC mismatch (stored %08x, computed %08x)", stored, actual);
    throw std::runtime_error("checkpoint " + src + ": " + buf + ": the file is corrupted or truncated");
  }
  Checkpoint ck;
  ck.source = src;
  const uint32_t n_meta = r.u32("metadata count");
  const uint32_t n_tensor = r.u32("tensor count");
  for (uint32_t i = 0; i < n_meta; ++i) {
    const std::string field = "metadata entry " + std::to_string(i);
    std::string k = r.str(field + " key");
    std::string v = r.str(field + " ('" + k + "') value");
    if (k.empty()) r.fail(field, "empty key");
    if (!ck.meta.emplace(k, std::move(v)).second) r.fail(field, "duplicate key '" + k + "'");
  }
  std::set<std::string> seen;
  for (uint32_t i = 0; i < n_tensor; ++i) {
    std::string name = r.str("tensor " + std::to_string(i) + " name");
    const std::string field = "tensor '" + name + "'";
    if (name.empty()) r.fail(field, "empty name");
    if (!seen.insert(name).second) r.fail(field, "duplicate name");
    const uint32_t ndim = r.u32(field + " ndim");
    if (ndim > kMaxDims) r.fail(field, "ndim " + std::to_string(ndim) + " > 8");
    Shape shape;
    uint64_t numel = 1;
    for (uint32_t d = 0; d < ndim; ++d) {
      const int64_t v = r.i64(field + " dim " + std::to_string(d));
      if (v < 0 || v > (int64_t(1) << 40)) r.fail(field, "dim " + std::to_string(d) + " = " + std::to_string(v));
      shape.push_back(v);
      numel *= static_cast<uint64_t>(v);
      if (numel > (uint64_t(1) << 40)) r.fail(field, "too many elements");
    }
    const uint64_t bytes = numel * sizeof(float);
    r.need(static_cast<size_t>(bytes), field + " data");
    Tensor t = Tensor::empty(shape);
    if (bytes) std::memcpy(t.data(), b.data() + r.pos, static_cast<size_t>(bytes));
    r.pos += static_cast<size_t>(bytes);
    ck.tensors.emplace_back(std::move(name), std::move(t));
  }
  if (r.pos != r.end)
    throw std::runtime_error("checkpoint " + src + ": " + std::to_string(r.end - r.pos) +
                             " unexpected bytes after the last tensor, at byte " + std::to_string(r.pos));
  return ck;
}

void write_file_atomic(const std::string& path, const void* bytes, size_t size) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + tmp + ": " + std::strerror(errno));
  const auto* p = static_cast<const uint8_t*>(bytes);
  size_t left = size;
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(e));
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot flush " + tmp + ": " + std::strerror(e));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + std::strerror(e));
  }
  // Make the rename itself durable.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void save_checkpoint(const std::string& path, const Checkpoint& ckpt) {
  const std::vector<uint8_t> bytes = encode_checkpoint(ckpt);
  write_file_atomic(path, bytes.data(), bytes.size());
}

Checkpoint load_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open checkpoint " + path + ": " + std::strerror(errno));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error("cannot read checkpoint " + path);
  return decode_checkpoint(bytes, path);
}

}  // namespace octet
