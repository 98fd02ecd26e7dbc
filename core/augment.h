// core/augment.h: per-image data augmentation and input preprocessing.
//
// Augmentation (training only) works on uint8 CHW images:
//   random crop: pad the image with `pad` zero pixels on every side, then cut
//     an H x W window at a uniformly drawn offset (oy, ox) in [0, 2*pad]^2;
//     equivalently out(y, x) = in(y + dy, x + dx), dy = oy - pad, dx = ox - pad,
//     and 0 where (y + dy, x + dx) falls outside the image;
//   horizontal flip with probability 1/2, applied after the crop:
//     final(y, x) = out(y, W - 1 - x);
//   cutout (optional, DeVries & Taylor 2017), applied last: a size x size
//     square centred on a uniformly drawn pixel (cy, cx), clipped at the
//     border, is set to the fill pixel. Cutout zeroes the *normalized* input,
//     so the fill is the pixel that preprocessing maps closest to 0 (the
//     channel mean under standard/vgg, 128 under inception): cutout_fill().
// The parameters of sample `index` in `epoch` come from sample_rng(seed,
// epoch, index) alone, so they do not depend on batch size, batch order or
// the number of threads.
//
// Preprocessing turns uint8 pixels x in 0..255 into floats with one affine
// map per channel, for images of any channel count C:
//
//     y = x * scale[c] + offset[c]
//
//   standard   (x/255 - mean_c) / std_c: scale = 1/(255 std_c), offset = -mean_c/std_c.
//              Training uses compute_channel_stats() of its train set, for any C
//              (nn/trainer.h, make_preprocess); the constants of make() are
//              CIFAR-10's (C = 3) and Fashion-MNIST's (C = 1)
//   vgg        x - mean_c in 0..255 units, no scaling: scale = 1, offset = -mean_c,
//              mean = (123.68, 116.78, 103.94) RGB (the VGG / ResNet-v1 means); for
//              gray images (C = 1) their luma, 0.299 R + 0.587 G + 0.114 B = 117.38
//              (ITU-R BT.601, the weights that turn RGB into gray); other C: refused
//   inception  x/127.5 - 1, range [-1, 1]: scale = 1/127.5, offset = -1, any C
//
// The affine form is the contract, not an approximation: the float pipeline
// computes exactly x * scale + offset in float, and the exporter folds the
// same (scale, offset) into the first convolution (w' = w * scale[c_in],
// b' = b + sum w * offset[c_in]) so the integer engine eats raw uint8 pixels.
// Note for the fold: the first conv's zero padding happens after
// preprocessing, i.e. it pads with the pixel value -offset[c]/scale[c] (the
// one that maps to 0), which is the channel mean, not pixel 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"

namespace octet {

// ---- augmentation ----

struct AugmentParams {
  int dy = 0;         // crop shift: out(y, x) = in(y + dy, x + dx), in [-pad, pad]
  int dx = 0;
  bool flip = false;  // mirror left-right after the crop
  int cut_size = 0;   // cutout square side (0: none)
  int cut_y = 0;      // cutout centre
  int cut_x = 0;
};

// A well-mixed 64-bit seed for (seed, epoch) (splitmix64 finalizer).
uint64_t derive_seed(uint64_t seed, int64_t epoch);

// The generator of one sample's augmentation: stream `index` of the epoch's seed.
Rng sample_rng(uint64_t seed, int64_t epoch, int64_t index);

// Draws crop offsets in [-pad, pad] (dy first, then dx) and, when flip is
// allowed, a fair coin for the mirror.
AugmentParams draw_augment(Rng& rng, int pad, bool flip);

// Alternating flip (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds"): rather
// than a fresh coin every epoch, sample `index` keeps its epoch-0 coin c and
// is mirrored in epoch e iff c XOR (e is odd). Epoch 0 is the random flip
// itself; from then on every image is seen once each way in every pair of
// epochs (epochs 2k, 2k + 1), so no image goes several epochs unmirrored or
// mirrored by chance. c is the coin draw_augment(sample_rng(seed, 0, index),
// pad, true) draws.
bool alternating_flip(uint64_t seed, int64_t epoch, int64_t index, int pad);

// Then, from the same generator, the cutout centre: cut_y in [0, height),
// cut_x in [0, width), and cut_size = size. size 0 draws nothing, so runs
// without cutout see the same numbers as before it existed.
void draw_cutout(Rng& rng, int size, int height, int width, AugmentParams& p);

// src, dst: one C x H x W uint8 image each (must not alias). Applies the
// shift with zero fill, then the mirror, then the cutout square with
// fill[c] (`fill` has one value per channel; it may be null when p.cut_size
// is 0).
void augment_image(const uint8_t* src, uint8_t* dst, int channels, int height, int width, const AugmentParams& p,
                   const uint8_t* fill = nullptr);

// ---- preprocessing ----

enum class PreprocessMode { standard, vgg, inception };

const char* preprocess_name(PreprocessMode m);      // "standard", "vgg", "inception"
PreprocessMode parse_preprocess(const std::string& name);  // throws std::invalid_argument listing the choices

// CIFAR-10 training-set statistics in [0, 1] units (RGB).
inline constexpr float kCifar10Mean[3] = {0.4914f, 0.4822f, 0.4465f};
inline constexpr float kCifar10Std[3] = {0.2470f, 0.2435f, 0.2616f};
// Fashion-MNIST training-set statistics in [0, 1] units (gray; the 60,000
// images of train-images-idx3-ubyte: 0.28604, 0.35302).
inline constexpr float kFashionMnistMean = 0.2860f;
inline constexpr float kFashionMnistStd = 0.3530f;
// VGG / ResNet-v1 (Caffe, TF-slim) channel means in 0..255 units, RGB order,
// and their BT.601 luma for gray images.
inline constexpr float kVggMean[3] = {123.68f, 116.78f, 103.94f};
inline constexpr float kVggGrayMean = float(0.299 * 123.68 + 0.587 * 116.78 + 0.114 * 103.94);  // 117.379

struct Preprocess {
  PreprocessMode mode = PreprocessMode::standard;
  std::vector<float> scale;   // per channel
  std::vector<float> offset;  // per channel

  // mean, std in [0, 1] units, one per channel (default: CIFAR-10's).
  static Preprocess standard(const std::vector<float>& mean = {kCifar10Mean[0], kCifar10Mean[1], kCifar10Mean[2]},
                             const std::vector<float>& std = {kCifar10Std[0], kCifar10Std[1], kCifar10Std[2]});
  // channels 3 (RGB) or 1 (gray); others throw std::invalid_argument.
  static Preprocess vgg(int channels = 3);
  // Any channels >= 1.
  static Preprocess inception(int channels = 3);
  // By mode with the default constants, for images of `channels` channels:
  // standard has constants for 3 (CIFAR-10) and 1 (Fashion-MNIST) only;
  // other counts need the data's statistics (standard(mean, std)).
  static Preprocess make(PreprocessMode mode, int channels = 3);

  int channels() const { return int(scale.size()); }
  float apply(int c, uint8_t x) const { return float(x) * scale[size_t(c)] + offset[size_t(c)]; }
};

// Per channel, the pixel in 0..255 whose preprocessed value is closest to 0:
// round(-offset[c] / scale[c]), clamped. The cutout fill.
std::vector<uint8_t> cutout_fill(const Preprocess& p);

// src: one C x H x W uint8 image; dst: C x H x W floats = p.apply(c, x).
// Throws std::invalid_argument when p has another channel count.
void preprocess_image(const uint8_t* src, float* dst, int channels, int height, int width, const Preprocess& p);

}  // namespace octet
