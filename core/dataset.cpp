// core/dataset.cpp: see core/dataset.h. Finding the layout, CIFAR-10 binary,
// image trees and channel statistics; the IDX files are core/dataset_idx.cpp.
#include "core/dataset.h"
#include "core/dataset_internal.h"

#include <stb/stb_image.h>

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

using detail::has_idx_files;
using detail::lower;
using detail::wanted_by;

namespace {
constexpr int kCifarSide = 32;
constexpr int64_t kCifarImage = 3 * kCifarSide * kCifarSide;  // 3072
constexpr int64_t kCifarRecord = 1 + kCifarImage;             // 3073
constexpr int kCifarClasses = 10;

bool is_image_file(const fs::path& p) {
  std::string ext = lower(p.extension().string());
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

std::string size_str(int w, int h) { return std::to_string(w) + "x" + std::to_string(h); }


bool has_binary_batches(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "data_batch_1.bin", ec) || fs::is_regular_file(dir / "test_batch.bin", ec);
}

}  // namespace

const char* split_name(Split s) { return s == Split::train ? "train" : "test"; }

std::string ImageShape::str() const {
  return std::to_string(width) + "x" + std::to_string(height) + " (" + std::to_string(channels) +
         (channels == 1 ? " channel)" : " channels)");
}

std::vector<int64_t> Dataset::class_counts() const {
  std::vector<int64_t> counts(class_names.size(), 0);
  for (int label : labels)
    if (label >= 0 && size_t(label) < counts.size()) ++counts[size_t(label)];
  return counts;
}

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                 "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

std::string resolve_data_path(const std::string& explicit_path) {
  const char* how =
      "Octet cannot download CIFAR-10: this machine has no internet access, so it must be pointed at a "
      "local copy, either the official binary batches (a folder holding data_batch_1.bin .. data_batch_5.bin, "
      "test_batch.bin, batches.meta.txt), the IDX files of MNIST or Fashion-MNIST (train-images-idx3-ubyte.gz "
      "and the like; Debian's dataset-fashion-mnist package installs them in /usr/share/datasets/fashion-mnist) "
      "or a class-per-folder image tree (<folder>/train/<class>/*.jpg and "
      "<folder>/test/<class>/*.jpg). In this project, `scripts/data.sh build` extracts "
      "../shared/data/cifar10-jpg.tar.gz into build/data and prints that folder; then pass --data build/data "
      "or export OCTET_DATA=build/data.";
  std::error_code ec;
  if (!explicit_path.empty()) {
    if (!fs::is_directory(explicit_path, ec))
      throw std::runtime_error("--data " + explicit_path + ": no such folder. " + how);
    return explicit_path;
  }
  if (const char* env = std::getenv("OCTET_DATA"); env && *env) {
    if (!fs::is_directory(env, ec))
      throw std::runtime_error(std::string("OCTET_DATA=") + env + ": no such folder. " + how);
    return env;
  }
  throw std::runtime_error(std::string("no data folder given (neither --data nor OCTET_DATA is set). ") + how);
}

DataFormat detect_format(const std::string& path, std::string* dir) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) throw std::runtime_error(path + ": no such folder");
  const fs::path root(path);
  for (const fs::path& d : {root, root / "cifar-10-batches-bin"}) {
    if (has_binary_batches(d)) {
      if (dir) *dir = d.string();
      return DataFormat::cifar_binary;
    }
  }
  for (const fs::path& d : {root, root / "raw"}) {
    if (has_idx_files(d)) {
      if (dir) *dir = d.string();
      return DataFormat::idx;
    }
  }
  if (fs::is_directory(root / "train", ec) || fs::is_directory(root / "test", ec)) {
    if (dir) *dir = path;
    return DataFormat::image_folder;
  }
  throw std::runtime_error(path +
                           ": not a data set folder: it holds neither CIFAR-10 binary batches "
                           "(data_batch_1.bin or test_batch.bin, directly or in cifar-10-batches-bin/), nor the "
                           "IDX files of MNIST or Fashion-MNIST (train-images-idx3-ubyte or "
                           "t10k-images-idx3-ubyte, each optionally .gz, directly or in raw/), nor an "
                           "image tree (train/<class>/*.jpg, test/<class>/*.jpg)");
}

Dataset load_dataset(const std::string& path, Split split, const LoadOptions& opt) {
  std::string dir;
  switch (detect_format(path, &dir)) {
    case DataFormat::cifar_binary: return load_cifar10_binary(dir, split, opt);
    case DataFormat::idx: return load_idx(dir, split, opt);
    case DataFormat::image_folder: break;
  }
  return load_image_folder(dir, split_name(split), opt);
}

// ---- CIFAR-10 binary ----

std::vector<std::string> read_cifar10_meta(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error(file + ": cannot open");
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  if (in.bad()) throw std::runtime_error(file + ": read error");
  if (names.size() != size_t(kCifarClasses))
    throw std::runtime_error(file + ": holds " + std::to_string(names.size()) +
                             " class names, expected 10 (one per line)");
  return names;
}

void read_cifar10_batch(const std::string& file, Dataset& out, int64_t expected_records) {
  if (out.channels != 3 || out.height != kCifarSide || out.width != kCifarSide)
    throw std::invalid_argument(file + ": read_cifar10_batch needs a 3x32x32 dataset to append to");
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) throw std::runtime_error(file + ": missing CIFAR-10 batch file");
  std::vector<uint8_t> bytes = read_file_bytes(file);
  const int64_t size = int64_t(bytes.size());
  if (size == 0 || size % kCifarRecord != 0)
    throw std::runtime_error(file + ": size " + std::to_string(size) +
                             " bytes is not a positive multiple of the 3073-byte CIFAR-10 record "
                             "(1 label byte + 3072 pixel bytes)");
  const int64_t records = size / kCifarRecord;
  if (expected_records > 0 && records != expected_records)
    throw std::runtime_error(file + ": holds " + std::to_string(records) + " records, expected " +
                             std::to_string(expected_records));
  const int64_t first = out.size();
  out.labels.resize(size_t(first + records));
  out.images.resize(size_t((first + records) * kCifarImage));
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t* rec = bytes.data() + r * kCifarRecord;
    if (rec[0] >= kCifarClasses)
      throw std::runtime_error(file + ": record " + std::to_string(r) + " (byte offset " +
                               std::to_string(r * kCifarRecord) + "): label " + std::to_string(rec[0]) +
                               " out of range 0..9");
    out.labels[size_t(first + r)] = rec[0];
    std::copy(rec + 1, rec + kCifarRecord, out.images.begin() + (first + r) * kCifarImage);
  }
}

Dataset load_cifar10_binary(const std::string& dir, Split split, const LoadOptions& opt) {
  if ((opt.height && opt.height != kCifarSide) || (opt.width && opt.width != kCifarSide) ||
      (opt.channels && opt.channels != 3))
    throw std::invalid_argument(dir + ": CIFAR-10 binary images are " + ImageShape{3, kCifarSide, kCifarSide}.str() +
                                ", but " +
                                ImageShape{opt.channels ? opt.channels : 3, opt.height ? opt.height : kCifarSide,
                                           opt.width ? opt.width : kCifarSide}
                                    .str() +
                                " was asked for" + wanted_by(opt));
  Dataset d;
  d.channels = 3;
  d.height = d.width = kCifarSide;
  d.source = dir;
  std::vector<std::string> files;
  if (split == Split::train)
    for (int i = 1; i <= 5; ++i) files.push_back((fs::path(dir) / ("data_batch_" + std::to_string(i) + ".bin")).string());
  else
    files.push_back((fs::path(dir) / "test_batch.bin").string());
  std::error_code ec;
  for (const std::string& f : files)
    if (!fs::is_regular_file(f, ec))
      throw std::runtime_error(f + ": missing (the CIFAR-10 " + split_name(split) + " split needs " +
                               (split == Split::train ? "data_batch_1.bin .. data_batch_5.bin" : "test_batch.bin") +
                               ")");
  for (const std::string& f : files) read_cifar10_batch(f, d, opt.records_per_file);
  const fs::path meta = fs::path(dir) / "batches.meta.txt";
  d.class_names = fs::exists(meta, ec) ? read_cifar10_meta(meta.string()) : cifar10_class_names();
  return d;
}

// ---- image trees ----

Dataset load_image_folder(const std::string& root, const std::string& split, const LoadOptions& opt) {
  if (opt.resize && (opt.height <= 0 || opt.width <= 0))
    throw std::invalid_argument(root + ": LoadOptions.resize needs a target height and width");
  if (opt.channels != 0 && opt.channels != 1 && opt.channels != 3)
    throw std::invalid_argument(root + ": image trees decode to 1 or 3 channels, not " + std::to_string(opt.channels));
  const fs::path dir = fs::path(root) / split;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw std::runtime_error(dir.string() + ": missing folder (expected " + root + "/" + split +
                             "/<class>/*.jpg|*.jpeg|*.png)");

  Dataset d;
  // Decoded to the channels asked for or, when the files decide, to RGB
  // first: a tree whose files all turn out gray is reduced to one channel at
  // the end (stb_image replicates gray into R = G = B, so plane 0 is exact).
  d.channels = opt.channels ? opt.channels : 3;
  d.source = dir.string();
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory() && entry.path().filename().string()[0] != '.')
      d.class_names.push_back(entry.path().filename().string());
  std::sort(d.class_names.begin(), d.class_names.end());
  if (d.class_names.empty())
    throw std::runtime_error(dir.string() + ": no class folders (expected " + dir.string() + "/<class>/*.jpg)");
  if (d.class_names.size() > size_t(std::numeric_limits<int>::max()))
    throw std::runtime_error(dir.string() + ": too many class folders");

  std::vector<std::string> files;
  for (size_t c = 0; c < d.class_names.size(); ++c) {
    const fs::path cdir = dir / d.class_names[c];
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(cdir))
      if (entry.is_regular_file() && is_image_file(entry.path())) names.push_back(entry.path().filename().string());
    if (names.empty()) throw std::runtime_error(cdir.string() + ": empty class folder (no .jpg, .jpeg or .png files)");
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) {
      files.push_back((cdir / n).string());
      d.labels.push_back(int(c));
    }
  }

  // The size every image must have: asked for, or that of the first image.
  std::string size_from = opt.wanted_by.empty() ? "the size asked for" : opt.wanted_by;
  if (opt.height > 0 && opt.width > 0) {
    d.height = opt.height;
    d.width = opt.width;
  } else {
    Image first = load_image(files[0], d.channels);
    d.height = first.height;
    d.width = first.width;
    size_from = "the size of " + files[0];
  }
  d.images.resize(files.size() * size_t(d.image_numel()));

  // Decode in parallel; on failure report the first bad file in order, so the
  // message does not depend on thread scheduling.
  std::mutex mu;
  size_t bad = files.size();
  std::string bad_msg;
  std::vector<uint8_t> gray(files.size(), 0);  // the file itself is grayscale (gray, or gray + alpha)
  parallel_for(0, int64_t(files.size()), 32, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      try {
        const std::vector<uint8_t> bytes = read_file_bytes(files[size_t(i)]);
        int w = 0, h = 0, comp = 0;
        if (bytes.size() <= size_t(std::numeric_limits<int>::max()) &&
            stbi_info_from_memory(bytes.data(), int(bytes.size()), &w, &h, &comp))
          gray[size_t(i)] = comp == 1 || comp == 2;
        Image img = decode_image(bytes, files[size_t(i)], d.channels);
        if (img.width != d.width || img.height != d.height) {
          if (!opt.resize)
            throw std::runtime_error(files[size_t(i)] + ": image is " + size_str(img.width, img.height) +
                                     ", expected " + size_str(d.width, d.height) + " (" + size_from +
                                     "); all images must share one size");
          img = resize(img, d.width, d.height, ResizeFilter::area);
        }
        hwc_to_chw(img.pixels.data(), d.image(i), d.height, d.width, d.channels);
      } catch (const std::exception& ex) {
        std::lock_guard<std::mutex> lock(mu);
        if (size_t(i) < bad) {
          bad = size_t(i);
          bad_msg = ex.what();
        }
      }
    }
  });
  if (bad < files.size()) throw std::runtime_error(bad_msg);
  if (opt.channels == 0 && std::all_of(gray.begin(), gray.end(), [](uint8_t g) { return g != 0; })) {
    // Every file is gray: keep plane 0 of each image, in place (image i moves
    // from offset 3 i P to i P, never past data not yet moved).
    const size_t plane = size_t(d.height) * size_t(d.width);
    for (size_t i = 0; i < files.size(); ++i) std::memmove(d.images.data() + i * plane, d.images.data() + i * 3 * plane, plane);
    d.channels = 1;
    d.images.resize(files.size() * plane);
    d.images.shrink_to_fit();
  }
  return d;
}

ChannelStats compute_channel_stats(const Dataset& data) {
  const int C = data.channels;
  const int64_t plane = int64_t(data.height) * data.width;
  if (data.size() == 0 || plane == 0) throw std::invalid_argument(data.source + ": channel stats of an empty dataset");
  std::vector<uint64_t> sum(size_t(C), 0), sq(size_t(C), 0);
  std::mutex mu;
  parallel_for(0, data.size(), 256, [&](int64_t b, int64_t e) {
    std::vector<uint64_t> s(size_t(C), 0), q(size_t(C), 0);
    for (int64_t i = b; i < e; ++i) {
      const uint8_t* img = data.image(i);
      for (int c = 0; c < C; ++c)
        for (int64_t p = 0; p < plane; ++p) {
          uint64_t v = img[c * plane + p];
          s[size_t(c)] += v;
          q[size_t(c)] += v * v;
        }
    }
    std::lock_guard<std::mutex> lock(mu);  // integer sums: order does not matter
    for (int c = 0; c < C; ++c) {
      sum[size_t(c)] += s[size_t(c)];
      sq[size_t(c)] += q[size_t(c)];
    }
  });
  ChannelStats st;
  const double n = double(data.size()) * double(plane);
  for (int c = 0; c < C; ++c) {
    double mean = double(sum[size_t(c)]) / n;
    double var = double(sq[size_t(c)]) / n - mean * mean;
    st.mean.push_back(mean / 255.0);
    st.std.push_back(std::sqrt(std::max(var, 0.0)) / 255.0);
  }
  return st;
}

}  // namespace octet
