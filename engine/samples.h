// engine/samples.h: synthetic int8 models built with ModelBuilder, for the
// tests, `octet bench engine` and the fuzzer's seed corpus. Weights are
// random; the requantization is plausible (every activation keeps roughly
// the same spread, so outputs do not saturate), not trained.
#pragma once

#include <cstdint>
#include <string>

#include "engine/builder.h"

namespace octet::engine {

// ResNet for CIFAR (He et al. 2016, option B): a 3x3 stem conv to `width`
// channels, 3 stages of `blocks_per_stage` BasicBlocks (width, 2*width,
// 4*width; the first block of stages 2 and 3 has stride 2 and a 1x1
// projection shortcut), global average pool, fully connected to `classes`.
// blocks_per_stage 3 gives ResNet-20.
struct ResNetSpec {
  int blocks_per_stage = 3;
  int width = 16;
  int classes = 10;
  int image = 32;  // input image is image x image x 3
  int bits = 8;    // weight bitwidth, 2..8
  uint64_t seed = 1;
};
ModelBuilder random_resnet(const ResNetSpec& spec);

// A small model that uses every op type and both activation dtypes: input,
// conv (relu, uint8 output), depthwise conv, max pool, avg pool, add of two
// differently scaled tensors, global average pool, fully connected (int8
// logits), class names. Input 8x8x3, 5 classes.
ModelBuilder tiny_model(uint64_t seed, int bits = 8);

// A model small enough to follow by hand: pixels [2,2,1] (zero point 128)
// -> conv 1x1 (w = 2, bias 10, M = 0.5) -> global average pool -> fc 1 -> 2
// (w = {3, -1}, bias {0, 100}, M = 0.25). No class names.
ModelBuilder hand_model(const std::string& name = "");

}  // namespace octet::engine
