// tests/nn/random_data.h: n random 3x8x8 images with random labels of 4
// classes, the trainer tests' data (learning them is pure memorization).
#pragma once

#include <cstdint>

#include "core/dataset.h"
#include "core/rng.h"

namespace octet::testing {

inline Dataset random_dataset(int64_t n, uint64_t seed) {
  Dataset d;
  d.channels = 3;
  d.height = d.width = 8;
  d.class_names = {"a", "b", "c", "d"};
  d.source = "generated";
  Rng rng(seed);
  d.images.resize(static_cast<size_t>(n * d.image_numel()));
  for (auto& p : d.images) p = static_cast<uint8_t>(rng.below(256));
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(static_cast<int>(rng.below(4)));
  return d;
}

}  // namespace octet::testing
