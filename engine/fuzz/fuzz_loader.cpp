// libFuzzer target: the model loader, and the executor on whatever it accepts
// (engine/fuzz/fuzz_target.h). A finding traps; scripts/ci_fuzz.sh runs it from
// the kept corpus (engine/fuzz/corpus) and the generated seeds.
#include <cstddef>
#include <cstdint>
#include <exception>

#include "engine/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  octet::engine::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    octet::engine::fuzz::try_input(data, size);
  } catch (const std::exception&) {
    __builtin_trap();  // anything but FormatError is a finding
  }
  return 0;
}
