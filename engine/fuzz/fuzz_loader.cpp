// libFuzzer target: the model loader, and the executor on whatever it accepts.
// Every input is tried twice: as is, and with its size field and CRC made
// consistent so that mutations reach the deeper checks instead of stopping at
// the CRC. The only acceptable failure is FormatError; anything else (another
// exception, a crash, a sanitizer report) is a finding.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/engine.h"

namespace {

void try_model(const std::vector<uint8_t>& bytes) {
  using namespace octet::engine;
  try {
    const auto model = Model::from_bytes(bytes, "fuzz");
    // Valid models may still be too big to run quickly; the loader is what we fuzz.
    if (model->macs_per_image() > 2000000 || model->activation_bytes_per_image() > (4u << 20)) return;
    Session session(model, 2);
    std::vector<uint8_t> pixels(model->input_bytes() * 2);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 37);
    const auto logits = session.run(pixels.data(), 2);
    if (logits.size() != 2 * static_cast<size_t>(model->num_classes())) __builtin_trap();
  } catch (const FormatError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  octet::engine::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  try_model(bytes);
  if (size >= 24) {
    for (int i = 0; i < 8; ++i) bytes[16 + i] = static_cast<uint8_t>(static_cast<uint64_t>(size) >> (8 * i));
    octet::engine::fix_crc(bytes);
    try_model(bytes);
  }
  return 0;
}
