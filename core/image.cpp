// core/image.cpp: see core/image.h.
#include "core/image.h"

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>

namespace octet {

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof chunk, f.get())) > 0) bytes.insert(bytes.end(), chunk, chunk + got);
  if (std::ferror(f.get())) throw std::runtime_error(path + ": read error: " + std::strerror(errno));
  return bytes;
}

Image decode_image(std::span<const uint8_t> bytes, const std::string& name, int channels) {
  if (channels != 1 && channels != 3)
    throw std::invalid_argument(name + ": decode_image: channels must be 1 or 3, got " + std::to_string(channels));
  if (bytes.empty()) throw std::runtime_error(name + ": cannot decode image: the file is empty");
  if (bytes.size() > size_t(std::numeric_limits<int>::max()))
    throw std::runtime_error(name + ": cannot decode image: file larger than 2 GiB");
  int w = 0, h = 0, in_channels = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> data(
      stbi_load_from_memory(bytes.data(), int(bytes.size()), &w, &h, &in_channels, channels), &stbi_image_free);
  if (!data) {
    const char* why = stbi_failure_reason();
    throw std::runtime_error(name + ": cannot decode image: " + (why ? why : "unknown reason"));
  }
  Image img;
  img.width = w;
  img.height = h;
  img.channels = channels;
  img.pixels.assign(data.get(), data.get() + size_t(w) * h * channels);
  return img;
}

Image load_image(const std::string& path, int channels) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  return decode_image(bytes, path, channels);
}

namespace {

// One output sample along one axis = sum of weight * input[index].
struct Tap {
  int index;
  float weight;
};

// Per output position, the input taps for `filter`; the weights of each
// output position sum to 1.
std::vector<std::vector<Tap>> axis_taps(int in, int out, ResizeFilter filter) {
  std::vector<std::vector<Tap>> taps(out);
  const double scale = double(in) / out;  // input pixels per output pixel
  for (int o = 0; o < out; ++o) {
    if (filter == ResizeFilter::bilinear) {
      double s = (o + 0.5) * scale - 0.5;  // pixel centres line up
      s = std::clamp(s, 0.0, double(in - 1));
      int i0 = int(std::floor(s));
      int i1 = std::min(i0 + 1, in - 1);
      float t = float(s - i0);
      taps[o].push_back({i0, 1.0f - t});
      if (i1 != i0 && t > 0.0f) taps[o].push_back({i1, t});
    } else {
      // Output pixel o covers input interval [lo, hi); weight = overlap / scale.
      double lo = o * scale, hi = (o + 1) * scale;
      for (int i = int(std::floor(lo)); i < std::min(in, int(std::ceil(hi))); ++i) {
        double overlap = std::min(hi, double(i + 1)) - std::max(lo, double(i));
        if (overlap > 1e-12) taps[o].push_back({i, float(overlap / scale)});
      }
    }
  }
  return taps;
}

}  // namespace

// src: H x W x C uint8 (HWC) -> height x width x C uint8, separable (rows, then columns).
Image resize(const Image& src, int width, int height, ResizeFilter filter) {
  if (width <= 0 || height <= 0)
    throw std::invalid_argument("resize: target size must be positive, got " + std::to_string(width) + "x" +
                                std::to_string(height));
  if (src.width <= 0 || src.height <= 0 || src.channels <= 0 ||
      src.pixels.size() != size_t(src.width) * src.height * src.channels)
    throw std::invalid_argument("resize: source image is empty or its pixel buffer does not match its size");
  const int C = src.channels;
  auto tx = axis_taps(src.width, width, filter);
  auto ty = axis_taps(src.height, height, filter);
  // Horizontal pass: src.height x width x C floats.
  std::vector<float> tmp(size_t(src.height) * width * C, 0.0f);
  for (int y = 0; y < src.height; ++y)
    for (int x = 0; x < width; ++x)
      for (const Tap& t : tx[x])
        for (int c = 0; c < C; ++c) tmp[(size_t(y) * width + x) * C + c] += t.weight * src.at(y, t.index, c);
  Image out;
  out.width = width;
  out.height = height;
  out.channels = C;
  out.pixels.resize(size_t(height) * width * C);
  std::vector<float> acc(size_t(width) * C);
  for (int y = 0; y < height; ++y) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (const Tap& t : ty[y]) {
      const float* row = &tmp[size_t(t.index) * width * C];
      for (size_t i = 0; i < acc.size(); ++i) acc[i] += t.weight * row[i];
    }
    for (size_t i = 0; i < acc.size(); ++i)
      out.pixels[size_t(y) * width * C + i] = uint8_t(std::clamp(std::lround(acc[i]), 0L, 255L));
  }
  return out;
}

Image resize_to(const Image& src, int width, int height, bool& resized, ResizeFilter filter) {
  resized = !(src.width == width && src.height == height);
  return resized ? resize(src, width, height, filter) : src;
}

void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw std::runtime_error(path + ": cannot create " + tmp + ": " + std::strerror(errno));
  bool ok = bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  int err = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    if (!err) err = errno;
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": write failed: " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot rename " + tmp + " into place: " + std::strerror(err));
  }
}

void write_png(const std::string& path, const uint8_t* hwc, int width, int height, int channels) {
  if (width <= 0 || height <= 0 || channels < 1 || channels > 4)
    throw std::invalid_argument(path + ": write_png: bad image " + std::to_string(width) + "x" +
                                std::to_string(height) + "x" + std::to_string(channels));
  std::vector<uint8_t> png;
  auto sink = [](void* ctx, void* data, int size) {
    auto* out = static_cast<std::vector<uint8_t>*>(ctx);
    auto* p = static_cast<const uint8_t*>(data);
    out->insert(out->end(), p, p + size);
  };
  if (!stbi_write_png_to_func(sink, &png, width, height, channels, hwc, width * channels))
    throw std::runtime_error(path + ": PNG encoding failed");
  write_file_atomic(path, png);
}

void write_png(const std::string& path, const Image& img) {
  if (img.pixels.size() != size_t(img.width) * img.height * img.channels)
    throw std::invalid_argument(path + ": write_png: pixel buffer does not match the image size");
  write_png(path, img.pixels.data(), img.width, img.height, img.channels);
}

void hwc_to_chw(const uint8_t* hwc, uint8_t* chw, int height, int width, int channels) {
  const size_t plane = size_t(height) * width;
  for (size_t p = 0; p < plane; ++p)
    for (int c = 0; c < channels; ++c) chw[c * plane + p] = hwc[p * channels + c];
}

void chw_to_hwc(const uint8_t* chw, uint8_t* hwc, int height, int width, int channels) {
  const size_t plane = size_t(height) * width;
  for (size_t p = 0; p < plane; ++p)
    for (int c = 0; c < channels; ++c) hwc[p * channels + c] = chw[c * plane + p];
}

}  // namespace octet
