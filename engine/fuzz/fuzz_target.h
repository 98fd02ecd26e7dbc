// engine/fuzz/fuzz_target.h: what the loader fuzzer does with one input, shared
// by the libFuzzer target (fuzz_loader.cpp) and the regression test that
// replays the kept corpus and every crash ever found
// (tests/engine/test_fuzz_corpus.cpp). Every input is tried twice: as is, and
// with its size field and CRC made consistent so that mutations reach the
// deeper checks instead of stopping at the CRC. The only acceptable failure is
// FormatError; anything else (another exception, a crash, a sanitizer report)
// is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "engine/engine.h"

namespace octet::engine::fuzz {

// Loads the bytes as a model and, when they are one and small enough, runs two
// images through it. Throws std::logic_error for a finding the sanitizers
// would not see (logits of the wrong size); lets every exception other than
// FormatError through.
inline void try_model(const std::vector<uint8_t>& bytes) {
  try {
    const auto model = Model::from_bytes(bytes, "fuzz");
    // Valid models may still be too big to run quickly; the loader is what we fuzz.
    if (model->macs_per_image() > 2000000 || model->activation_bytes_per_image() > (4u << 20)) return;
    Session session(model, 2);
    std::vector<uint8_t> pixels(model->input_bytes() * 2);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 37);
    const auto logits = session.run(pixels.data(), 2);
    if (logits.size() != 2 * static_cast<size_t>(model->num_classes()))
      throw std::logic_error("fuzz: the logits have the wrong size");
  } catch (const FormatError&) {
  }
}

// One fuzzer input: as is, then with a consistent size field and CRC.
inline void try_input(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  try_model(bytes);
  if (size >= 24) {
    for (int i = 0; i < 8; ++i) bytes[16 + i] = static_cast<uint8_t>(static_cast<uint64_t>(size) >> (8 * i));
    fix_crc(bytes);
    try_model(bytes);
  }
}

}  // namespace octet::engine::fuzz
