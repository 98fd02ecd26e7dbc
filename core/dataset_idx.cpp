// core/dataset_idx.cpp: the IDX files of MNIST and Fashion-MNIST (plain or
// gzip, read with zlib), one split at a time (core/dataset.h, layout 2).
#include "core/dataset.h"
#include "core/dataset_internal.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "core/image.h"
#include "core/parallel.h"

namespace fs = std::filesystem;

namespace octet {

using detail::lower;
using detail::wanted_by;

namespace {

// ---- IDX file names ----

constexpr int kIdxMaxSide = 4096;  // rows and columns beyond this are a corrupt header, not an image
constexpr uint32_t kIdxImagesMagic = 0x00000803, kIdxLabelsMagic = 0x00000801;

// The IDX base names of a split: images, labels.
std::pair<std::string, std::string> idx_names(Split split) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  return {prefix + "-images-idx3-ubyte", prefix + "-labels-idx1-ubyte"};
}

// dir/base when it exists, else dir/base.gz when that does, else "".
std::string idx_file(const fs::path& dir, const std::string& base) {
  std::error_code ec;
  if (fs::is_regular_file(dir / base, ec)) return (dir / base).string();
  if (fs::is_regular_file(dir / (base + ".gz"), ec)) return (dir / (base + ".gz")).string();
  return "";
}


uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08" PRIX32, v);
  return buf;
}

// What an IDX magic says, for the message about a wrong one.
std::string idx_magic_meaning(uint32_t magic) {
  if (magic == kIdxImagesMagic) return " (IDX images)";
  if (magic == kIdxLabelsMagic) return " (IDX labels)";
  if ((magic >> 16) == 0x1f8b) return " (gzip data inside a gzip stream?)";
  if ((magic >> 16) != 0) return " (not an IDX file: its first two bytes must be 0)";
  char buf[64];
  std::snprintf(buf, sizeof buf, " (IDX of element type 0x%02X in %u dimensions)", unsigned((magic >> 8) & 0xff),
                unsigned(magic & 0xff));
  return buf;
}
}  // namespace

namespace detail {

bool has_idx_files(const fs::path& dir) {
  return !idx_file(dir, idx_names(Split::train).first).empty() || !idx_file(dir, idx_names(Split::test).first).empty();
}

std::string wanted_by(const LoadOptions& opt) { return opt.wanted_by.empty() ? "" : " (" + opt.wanted_by + ")"; }

std::string lower(std::string s) {
  for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

}  // namespace detail

// ---- IDX (MNIST, Fashion-MNIST) ----

namespace {

// Decompressed sizes beyond this are refused: no IDX file of this kind comes
// near it (Fashion-MNIST's train images are 47 MB), and a corrupt or hostile
// .gz must not take the machine's memory.
constexpr uint64_t kMaxGunzipBytes = uint64_t(1) << 32;

// Every member of a gzip file (gzip and gunzip allow several, concatenated),
// inflated with zlib; `file` names the file in errors.
std::vector<uint8_t> gunzip(const std::vector<uint8_t>& in, const std::string& file) {
  z_stream zs{};
  // 16 + MAX_WBITS: a gzip wrapper (header, CRC-32 and length trailer, both checked by zlib).
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw std::runtime_error(file + ": cannot start zlib's inflate");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, &inflateEnd);
  constexpr size_t kChunk = size_t(1) << 30;  // avail_in and avail_out are 32-bit
  std::vector<uint8_t> out;
  // The last member's trailer holds its length mod 2^32: a first guess for
  // the size, trusted no further than deflate's best ratio (about 1032:1).
  if (in.size() >= 18) {
    const uint64_t isize = uint64_t(in[in.size() - 4]) | uint64_t(in[in.size() - 3]) << 8 |
                           uint64_t(in[in.size() - 2]) << 16 | uint64_t(in[in.size() - 1]) << 24;
    out.reserve(size_t(std::min({isize, uint64_t(in.size()) * 1032 + 65536, kMaxGunzipBytes})));
  }
  size_t in_pos = 0, total = 0;  // in_pos: input handed to zlib so far; total: bytes produced
  const auto feed = [&](size_t from) {
    const size_t n = std::min(in.size() - from, kChunk);
    zs.next_in = const_cast<Bytef*>(in.data() + from);
    zs.avail_in = uInt(n);
    in_pos = from + n;
  };
  feed(0);
  for (;;) {
    if (zs.avail_in == 0 && in_pos < in.size()) feed(in_pos);
    if (total == out.size()) {
      if (out.size() >= kMaxGunzipBytes)
        throw std::runtime_error(file + ": decompresses to more than " + std::to_string(kMaxGunzipBytes >> 30) +
                                 " GiB; not an IDX file of this kind");
      const size_t grow = out.capacity() > out.size() ? out.capacity() : std::max(out.size() * 2, size_t(1) << 20);
      out.resize(size_t(std::min<uint64_t>(grow, kMaxGunzipBytes)));
    }
    const size_t room = std::min(out.size() - total, kChunk);
    zs.next_out = out.data() + total;
    zs.avail_out = uInt(room);
    const int ret = inflate(&zs, Z_NO_FLUSH);
    total += room - zs.avail_out;
    if (ret == Z_OK) continue;
    if (ret == Z_STREAM_END) {
      // The end of one member: the file ends, another member follows, or junk does.
      const size_t pos = in_pos - zs.avail_in, left = in.size() - pos;
      if (left == 0) break;
      if (left >= 2 && in[pos] == 0x1f && in[pos + 1] == 0x8b) {
        if (inflateReset(&zs) != Z_OK) throw std::runtime_error(file + ": cannot restart zlib's inflate");
        feed(pos);
        continue;
      }
      throw std::runtime_error(file + ": " + std::to_string(left) +
                               " bytes after the end of the gzip stream, which are no further gzip member");
    }
    // There is always room for output, so a buffer error means the input ran out.
    if (ret == Z_BUF_ERROR && zs.avail_in == 0) {
      if (in_pos < in.size()) continue;
      throw std::runtime_error(file + ": truncated gzip file: the compressed stream ends early (after " +
                               std::to_string(in.size()) + " compressed bytes, " + std::to_string(total) +
                               " decompressed)");
    }
    if (ret == Z_MEM_ERROR) throw std::runtime_error(file + ": out of memory while decompressing");
    throw std::runtime_error(file + ": corrupt gzip data (zlib: " + (zs.msg ? std::string(zs.msg) : "error " + std::to_string(ret)) +
                             ")");
  }
  out.resize(total);
  out.shrink_to_fit();
  return out;
}

bool is_gzip(const std::vector<uint8_t>& b) { return b.size() >= 2 && b[0] == 0x1f && b[1] == 0x8b; }

// "holds N bytes" or, for a gzip file, "holds N bytes once decompressed".
std::string holds(uint64_t n, bool gz) {
  return "holds " + std::to_string(n) + " bytes" + (gz ? " once decompressed" : "");
}

// The IDX header of `file`: checks the magic and that the bytes hold `dims`
// 32-bit sizes after it; returns them.
std::vector<uint32_t> idx_header(const std::vector<uint8_t>& b, bool gz, const std::string& file, uint32_t magic,
                                 const char* what) {
  const size_t dims = magic & 0xff, header = 4 + 4 * dims;
  if (b.size() < 4)
    throw std::runtime_error(file + ": " + holds(b.size(), gz) + ", too short for an IDX header (" +
                             std::to_string(header) + " bytes for " + what + ")");
  const uint32_t m = be32(b.data());
  if (m != magic)
    throw std::runtime_error(file + ": bad magic number " + hex32(m) + idx_magic_meaning(m) + ", expected " +
                             hex32(magic) + " (IDX " + what + ")");
  if (b.size() < header)
    throw std::runtime_error(file + ": truncated IDX header: " + holds(b.size(), gz) + ", the header of " + what +
                             " is " + std::to_string(header));
  std::vector<uint32_t> d;
  for (size_t i = 0; i < dims; ++i) d.push_back(be32(b.data() + 4 + 4 * i));
  return d;
}

// The file's size against what its header says.
void check_idx_size(const std::vector<uint8_t>& b, bool gz, const std::string& file, uint64_t want,
                    const std::string& header_says) {
  if (b.size() == want) return;
  throw std::runtime_error(file + ": " + holds(b.size(), gz) + ", but its header (" + header_says + ") needs " +
                           std::to_string(want) +
                           (b.size() < want ? ": the file is truncated" : ": extra bytes after the data"));
}

}  // namespace

std::vector<uint8_t> read_maybe_gzip(const std::string& file) {
  std::vector<uint8_t> bytes = read_file_bytes(file);
  return is_gzip(bytes) ? gunzip(bytes, file) : bytes;
}

IdxImages read_idx_images(const std::string& file) {
  std::vector<uint8_t> raw = read_file_bytes(file);
  const bool gz = is_gzip(raw);
  std::vector<uint8_t> b = gz ? gunzip(raw, file) : std::move(raw);
  const std::vector<uint32_t> d = idx_header(b, gz, file, kIdxImagesMagic, "images: count, rows, columns");
  IdxImages out;
  out.count = d[0];
  if (d[1] < 1 || d[1] > uint32_t(kIdxMaxSide) || d[2] < 1 || d[2] > uint32_t(kIdxMaxSide))
    throw std::runtime_error(file + ": the header says the images are " + std::to_string(d[1]) + "x" +
                             std::to_string(d[2]) + " (rows x columns); each must be 1.." +
                             std::to_string(kIdxMaxSide));
  out.rows = int(d[1]);
  out.cols = int(d[2]);
  if (out.count == 0) throw std::runtime_error(file + ": the header says it holds 0 images");
  const uint64_t want = 16 + uint64_t(out.count) * uint64_t(out.rows) * uint64_t(out.cols);
  check_idx_size(b, gz, file, want,
                 std::to_string(out.count) + " images of " + std::to_string(out.rows) + "x" + std::to_string(out.cols));
  out.pixels.assign(b.begin() + 16, b.end());
  return out;
}

std::vector<int> read_idx_labels(const std::string& file, int num_classes) {
  std::vector<uint8_t> raw = read_file_bytes(file);
  const bool gz = is_gzip(raw);
  const std::vector<uint8_t> b = gz ? gunzip(raw, file) : std::move(raw);
  const std::vector<uint32_t> d = idx_header(b, gz, file, kIdxLabelsMagic, "labels: count");
  if (d[0] == 0) throw std::runtime_error(file + ": the header says it holds 0 labels");
  check_idx_size(b, gz, file, 8 + uint64_t(d[0]), std::to_string(d[0]) + " labels");
  std::vector<int> labels(d[0]);
  for (size_t i = 0; i < labels.size(); ++i) {
    const int v = b[8 + i];
    if (v >= num_classes)
      throw std::runtime_error(file + ": label " + std::to_string(i) + " (byte offset " + std::to_string(8 + i) +
                               ") is " + std::to_string(v) + ", out of range 0.." + std::to_string(num_classes - 1));
    labels[i] = v;
  }
  return labels;
}

std::vector<std::string> idx_class_names(const std::string& dir) {
  // Made absolute first, so that "." or "raw/.." still have their folder's name.
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  if (!ec) p = fs::weakly_canonical(p, ec);
  if (ec) p = fs::path(dir);
  if (p.filename().empty()) p = p.parent_path();  // "dir/"
  std::string name = lower(p.filename().string());
  if (name == "raw") name = lower(p.parent_path().filename().string());  // torchvision: <root>/FashionMNIST/raw
  if (name.find("fashion") != std::string::npos) return fashion_mnist_class_names();
  std::vector<std::string> digits;
  for (int i = 0; i < 10; ++i) digits.push_back(std::to_string(i));
  return digits;
}

Dataset load_idx(const std::string& dir, Split split, const LoadOptions& opt) {
  if (opt.channels && opt.channels != 1)
    throw std::invalid_argument(dir + ": IDX images are gray, one channel, but " + std::to_string(opt.channels) +
                                " channels were asked for" + wanted_by(opt));
  if (opt.resize && (opt.height <= 0 || opt.width <= 0))
    throw std::invalid_argument(dir + ": LoadOptions.resize needs a target height and width");
  const auto [images_base, labels_base] = idx_names(split);
  const std::string images_file = idx_file(dir, images_base), labels_file = idx_file(dir, labels_base);
  for (const auto& [file, base] : {std::pair{images_file, images_base}, std::pair{labels_file, labels_base}})
    if (file.empty())
      throw std::runtime_error((fs::path(dir) / base).string() + "(.gz): missing (the IDX " + split_name(split) +
                               " split needs " + images_base + " and " + labels_base + ", each optionally .gz)");
  IdxImages im = read_idx_images(images_file);
  const std::vector<int> labels = read_idx_labels(labels_file);
  if (int64_t(labels.size()) != im.count)
    throw std::runtime_error(images_file + " holds " + std::to_string(im.count) + " images but " + labels_file +
                             " holds " + std::to_string(labels.size()) + " labels: the counts must be equal");
  Dataset d;
  d.channels = 1;
  d.height = im.rows;
  d.width = im.cols;
  d.source = dir;
  d.labels = labels;
  d.class_names = idx_class_names(dir);
  const bool other_size = (opt.height && opt.height != im.rows) || (opt.width && opt.width != im.cols);
  if (other_size && !opt.resize)
    throw std::runtime_error(images_file + ": the images are " + ImageShape{1, im.rows, im.cols}.str() + ", but " +
                             ImageShape{1, opt.height ? opt.height : im.rows, opt.width ? opt.width : im.cols}.str() +
                             " was asked for" + wanted_by(opt));
  if (!other_size) {
    d.images = std::move(im.pixels);
    return d;
  }
  // Resizing, on request only: each image through the area filter.
  d.height = opt.height;
  d.width = opt.width;
  d.images.resize(size_t(im.count) * size_t(d.image_numel()));
  const size_t in_numel = size_t(im.rows) * size_t(im.cols);
  parallel_for(0, im.count, 64, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      Image src;
      src.width = im.cols;
      src.height = im.rows;
      src.channels = 1;
      src.pixels.assign(im.pixels.begin() + i * in_numel, im.pixels.begin() + (i + 1) * in_numel);
      const Image r = resize(src, d.width, d.height, ResizeFilter::area);
      std::copy(r.pixels.begin(), r.pixels.end(), d.image(i));
    }
  });
  return d;
}

}  // namespace octet
