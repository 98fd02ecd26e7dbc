// tests/core/test_data_util.h: helpers shared by the data pipeline tests:
// a temporary folder, file writers, and "the message of the exception".
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dataset.h"
#include "core/rng.h"

namespace octet::testing {

// A fresh folder under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "octet-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return (path_ / rel).string(); }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + path);
  if (!bytes.empty()) std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

inline void write_text(const std::string& path, const std::string& text) {
  write_bytes(path, std::vector<uint8_t>(text.begin(), text.end()));
}

// The what() of the exception f throws, or "" when it throws nothing.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// The pixel CIFAR test records carry: a function of (record, channel, y, x).
inline uint8_t cifar_pixel(int64_t record, int c, int y, int x) {
  return uint8_t((record * 7 + c * 50 + y * 3 + x) & 255);
}

// `records` CIFAR-10 binary records (label byte + R, G, B planes), labels
// (first_label + r) % 10.
inline std::vector<uint8_t> cifar_records(int64_t records, int first_label = 0, int64_t first_record = 0) {
  std::vector<uint8_t> bytes;
  for (int64_t r = 0; r < records; ++r) {
    bytes.push_back(uint8_t((first_label + r) % 10));
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) bytes.push_back(cifar_pixel(first_record + r, c, y, x));
  }
  return bytes;
}

// A synthetic in-memory dataset: n random C x H x W images, labels i % classes.
inline Dataset random_dataset(int64_t n, int classes = 10, int c = 3, int h = 32, int w = 32, uint64_t seed = 1) {
  Dataset d;
  d.channels = c;
  d.height = h;
  d.width = w;
  d.source = "random";
  Rng rng(seed);
  d.images.resize(size_t(n * c * h * w));
  for (auto& v : d.images) v = uint8_t(rng.next_u32() & 255);
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(int(i % classes));
  for (int k = 0; k < classes; ++k) d.class_names.push_back("class" + std::to_string(k));
  return d;
}

}  // namespace octet::testing
