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
