// core/augment.cpp: see core/augment.h.
#include "core/augment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace octet {

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Sets rows [top, top + size) x columns [left, left + size) of every channel,
// clipped to the image, to fill[c].
void fill_square(uint8_t* img, int C, int H, int W, int top, int left, int size, const uint8_t* fill) {
  const int y0 = std::max(0, top), y1 = std::min(H, top + size);
  const int x0 = std::max(0, left), x1 = std::min(W, left + size);
  if (x0 >= x1) return;
  for (int c = 0; c < C; ++c)
    for (int y = y0; y < y1; ++y) std::memset(img + (size_t(c) * H + y) * W + x0, fill[c], size_t(x1 - x0));
}
}  // namespace

uint64_t derive_seed(uint64_t seed, int64_t epoch) { return splitmix64(splitmix64(seed) ^ uint64_t(epoch)); }

Rng sample_rng(uint64_t seed, int64_t epoch, int64_t index) { return Rng(derive_seed(seed, epoch), uint64_t(index)); }

AugmentParams draw_augment(Rng& rng, int pad, bool flip) {
  if (pad < 0) throw std::invalid_argument("draw_augment: pad must be >= 0, got " + std::to_string(pad));
  AugmentParams p;
  const uint32_t span = uint32_t(2 * pad + 1);
  p.dy = int(rng.below(span)) - pad;
  p.dx = int(rng.below(span)) - pad;
  p.flip = flip && (rng.next_u32() >> 31);
  return p;
}

bool alternating_flip(uint64_t seed, int64_t epoch, int64_t index, int pad) {
  Rng first = sample_rng(seed, 0, index);
  const bool coin = draw_augment(first, pad, true).flip;
  return coin != (epoch % 2 != 0);
}

void draw_cutout(Rng& rng, int size, int height, int width, AugmentParams& p) {
  if (size < 0) throw std::invalid_argument("draw_cutout: size must be >= 0, got " + std::to_string(size));
  p.cut_size = size;
  if (size == 0) return;
  p.cut_y = int(rng.below(uint32_t(height)));
  p.cut_x = int(rng.below(uint32_t(width)));
}

// src, dst: C x H x W uint8. dst(c, y, x) = src(c, y + dy, sx) with
// sx = (flip ? W-1-x : x) + dx, zero outside; then the cutout square.
void augment_image(const uint8_t* src, uint8_t* dst, int C, int H, int W, const AugmentParams& p,
                   const uint8_t* fill) {
  // The valid output columns, before the mirror: x with 0 <= x + dx < W.
  const int x0 = std::max(0, -p.dx), x1 = std::min(W, W - p.dx);
  for (int c = 0; c < C; ++c) {
    const uint8_t* sp = src + size_t(c) * H * W;
    uint8_t* dp = dst + size_t(c) * H * W;
    for (int y = 0; y < H; ++y) {
      uint8_t* drow = dp + size_t(y) * W;
      const int sy = y + p.dy;
      if (sy < 0 || sy >= H || x0 >= x1) {
        std::memset(drow, 0, size_t(W));
        continue;
      }
      const uint8_t* srow = sp + size_t(sy) * W;
      if (!p.flip) {
        std::memset(drow, 0, size_t(x0));
        std::memcpy(drow + x0, srow + x0 + p.dx, size_t(x1 - x0));
        std::memset(drow + x1, 0, size_t(W - x1));
      } else {
        // Unflipped column x lands at W-1-x.
        std::memset(drow, 0, size_t(W));
        for (int x = x0; x < x1; ++x) drow[W - 1 - x] = srow[x + p.dx];
      }
    }
  }
  if (p.cut_size > 0) {
    if (!fill) throw std::invalid_argument("augment_image: cutout needs a fill value per channel");
    fill_square(dst, C, H, W, p.cut_y - p.cut_size / 2, p.cut_x - p.cut_size / 2, p.cut_size, fill);
  }
}

const char* preprocess_name(PreprocessMode m) {
  switch (m) {
    case PreprocessMode::standard: return "standard";
    case PreprocessMode::vgg: return "vgg";
    case PreprocessMode::inception: return "inception";
  }
  return "?";
}

PreprocessMode parse_preprocess(const std::string& name) {
  for (PreprocessMode m : {PreprocessMode::standard, PreprocessMode::vgg, PreprocessMode::inception})
    if (name == preprocess_name(m)) return m;
  throw std::invalid_argument("unknown preprocessing '" + name + "' (choices: standard, vgg, inception)");
}

Preprocess Preprocess::standard(const std::vector<float>& mean, const std::vector<float>& std) {
  if (mean.size() != std.size() || mean.empty())
    throw std::invalid_argument("Preprocess::standard: mean and std need the same, non-zero, channel count (got " +
                                std::to_string(mean.size()) + " and " + std::to_string(std.size()) + ")");
  Preprocess p;
  p.mode = PreprocessMode::standard;
  for (size_t c = 0; c < mean.size(); ++c) {
    if (!(std[c] > 0.0f))
      throw std::invalid_argument("Preprocess::standard: std of channel " + std::to_string(c) + " must be > 0");
    p.scale.push_back(float(1.0 / (255.0 * double(std[c]))));
    p.offset.push_back(float(-double(mean[c]) / double(std[c])));
  }
  return p;
}

Preprocess Preprocess::vgg(int channels) {
  Preprocess p;
  p.mode = PreprocessMode::vgg;
  if (channels == 3) {
    p.scale = {1.0f, 1.0f, 1.0f};
    p.offset = {-kVggMean[0], -kVggMean[1], -kVggMean[2]};
  } else if (channels == 1) {  // the gray an RGB image of the mean colour turns into
    p.scale = {1.0f};
    p.offset = {-kVggGrayMean};
  } else {
    throw std::invalid_argument("vgg preprocessing: its means are for RGB (3 channels) or gray (1) images, not " +
                                std::to_string(channels) + " channels");
  }
  return p;
}

Preprocess Preprocess::inception(int channels) {
  if (channels < 1)
    throw std::invalid_argument("inception preprocessing: channels must be >= 1, got " + std::to_string(channels));
  Preprocess p;
  p.mode = PreprocessMode::inception;
  p.scale.assign(size_t(channels), float(1.0 / 127.5));
  p.offset.assign(size_t(channels), -1.0f);
  return p;
}

Preprocess Preprocess::make(PreprocessMode mode, int channels) {
  switch (mode) {
    case PreprocessMode::standard:
      if (channels == 3) return standard();
      if (channels == 1) return standard({kFashionMnistMean}, {kFashionMnistStd});
      throw std::invalid_argument("standard preprocessing: default statistics exist for 3 channels (CIFAR-10) and "
                                  "1 (Fashion-MNIST), not " +
                                  std::to_string(channels) + "; compute them from the data (compute_channel_stats)");
    case PreprocessMode::vgg: return vgg(channels);
    case PreprocessMode::inception: return inception(channels);
  }
  throw std::invalid_argument("Preprocess::make: bad mode");
}

// src: C x H x W uint8 -> dst: C x H x W float, dst = src * scale[c] + offset[c].
void preprocess_image(const uint8_t* src, float* dst, int C, int H, int W, const Preprocess& p) {
  if (p.channels() != C || p.offset.size() != p.scale.size())
    throw std::invalid_argument(std::string("preprocess_image: '") + preprocess_name(p.mode) + "' preprocessing has " +
                                std::to_string(p.channels()) + " channels, the image " + std::to_string(C));
  const size_t plane = size_t(H) * W;
  for (int c = 0; c < C; ++c) {
    // A 256-entry table per channel: the same floats as apply(), cheaper.
    float lut[256];
    for (int v = 0; v < 256; ++v) lut[v] = p.apply(c, uint8_t(v));
    const uint8_t* s = src + c * plane;
    float* d = dst + c * plane;
    for (size_t i = 0; i < plane; ++i) d[i] = lut[s[i]];
  }
}

std::vector<uint8_t> cutout_fill(const Preprocess& p) {
  std::vector<uint8_t> fill(size_t(p.channels()));
  for (int c = 0; c < p.channels(); ++c) {
    const float zero = -p.offset[size_t(c)] / p.scale[size_t(c)];  // the pixel that maps to 0
    fill[size_t(c)] = uint8_t(std::clamp(std::lround(zero), 0L, 255L));
  }
  return fill;
}

}  // namespace octet
