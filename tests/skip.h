// tests/skip.h: a suite that cannot run its subject here says so and exits
// with 77, which ctest reports as "Skipped" (SKIP_RETURN_CODE, set for every
// suite in cmake/Dependencies.cmake), never as "Passed". Call it before any
// check ran (at the top of the first test case): the whole suite is skipped.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace octet::testing {

[[noreturn]] inline void skip_suite(const std::string& why) {
  std::printf("SKIPPED: %s\n", why.c_str());
  std::fflush(stdout);
  std::_Exit(77);
}

// The CIFAR-10 image tree the real-data suites read: $OCTET_DATA when set (as
// octet's --data default), else <build>/data (scripts/data.sh unpacks it there).
// Skips the suite when there is none.
inline std::string cifar10_root_or_skip(const std::string& build_dir) {
  const char* env = std::getenv("OCTET_DATA");
  const std::string root = env && *env ? std::string(env) : build_dir + "/data";
  std::error_code ec;
  if (!std::filesystem::is_directory(root + "/train", ec) || !std::filesystem::is_directory(root + "/test", ec))
    skip_suite("no CIFAR-10 image tree at " + root + " (run scripts/data.sh " + build_dir +
               ", or point OCTET_DATA at a folder with train/ and test/)");
  return root;
}

}  // namespace octet::testing

namespace octet::testing {

// ---- one ISA at a time ------------------------------------------------------
//
// A kernel suite checks every ISA the CPU runs. ctest also runs it once per
// ISA the build ships, as <component>.isa.<name> with OCTET_TEST_ISA=<name>
// (octet_isa_tests in cmake/Dependencies.cmake): then only that ISA is
// checked, and when this CPU cannot run it the entry is "Skipped" with the
// reason, so a machine that never executes an ISA says so in the ctest result.

// The ISA named by OCTET_TEST_ISA, or "" for all.
inline std::string selected_isa() {
  const char* e = std::getenv("OCTET_TEST_ISA");
  return e && *e ? std::string(e) : std::string();
}

// Why an ISA the build ships may not run here (the skip message).
inline std::string isa_not_run_reason(const std::string& name) {
  std::string why = name + " kernels not executed: this CPU lacks " + name;
  if (name.rfind("avx512", 0) == 0 || name == "amx")
    why += " (qemu-x86_64 7.2 cannot emulate AVX-512 or AMX, and Intel SDE is in neither Debian nor npm: only a "
           "machine that has it executes these kernels)";
  else if (name == "neon_dot")
    why += " (the Arm dot product; scripts/ci_arm.sh runs qemu's 'max' CPU, which has it)";
  return why;
}

// Whether a suite checks `name` in this run: with no selection every ISA the
// CPU supports; with OCTET_TEST_ISA only that one, and the whole suite is
// skipped when the CPU cannot run it. Call it before the first check of a
// test case that loops over ISAs (a skip mid-suite is still a skip).
inline bool isa_selected(const std::string& name, bool supported) {
  const std::string want = selected_isa();
  if (want.empty()) return supported;
  if (name != want) return false;
  if (!supported) skip_suite(isa_not_run_reason(name));
  return true;
}

}  // namespace octet::testing
