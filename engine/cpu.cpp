// engine/cpu.cpp: which fast kernels this CPU can run, detected once at run
// time (x86: cpuid through __builtin_cpu_supports; aarch64: the kernel's
// HWCAP bits). The fast kernels of an ISA live in their own translation unit
// compiled with that ISA's flags and are only entered after this check.
#include <cstdlib>
#include <cstring>

#include "engine/kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace octet::engine {

namespace {

#if defined(__x86_64__)
// AMX needs the CPU's tiles and the kernel's permission to use their state
// (Linux >= 5.16: arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA,
// granted once for the whole process).
bool amx_usable() {
  // cpuid leaf 7, subleaf 0: EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  if (!(edx & (1u << 24)) || !(edx & (1u << 25))) return false;
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  static const bool granted = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  return granted;
#else
  return false;
#endif
}
#endif

}  // namespace

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::reference: return true;
#if defined(__x86_64__)
    case Isa::avx2: return __builtin_cpu_supports("avx2");
    case Isa::avx512_vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    case Isa::amx: return isa_supported(Isa::avx512_vnni) && amx_usable();
#elif defined(__aarch64__)
    case Isa::neon: return true;  // Advanced SIMD is part of every ARMv8-A core
    case Isa::neon_dot:
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
      return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
      return false;
#endif
#endif
    default: return false;
  }
}

namespace {

Isa detect() {
  // OCTET_ISA=<name> caps the choice (e.g. to compare kernels); an unknown or
  // unsupported name is ignored.
  if (const char* want = std::getenv("OCTET_ISA")) {
    for (Isa isa : {Isa::reference, Isa::avx2, Isa::avx512_vnni, Isa::amx, Isa::neon, Isa::neon_dot})
      if (!std::strcmp(want, isa_name(isa)) && isa_supported(isa)) return isa;
  }
  for (Isa isa : {Isa::amx, Isa::avx512_vnni, Isa::avx2, Isa::neon_dot, Isa::neon})
    if (isa_supported(isa)) return isa;
  return Isa::reference;
}

}  // namespace

Isa best_isa() {
  static const Isa isa = detect();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::reference: return "reference";
    case Isa::avx2: return "avx2";
    case Isa::avx512_vnni: return "avx512_vnni";
    case Isa::neon: return "neon";
    case Isa::neon_dot: return "neon_dot";
    case Isa::amx: return "amx";
  }
  return "unknown";
}

}  // namespace octet::engine
