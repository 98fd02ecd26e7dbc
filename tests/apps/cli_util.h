// tests/apps/cli_util.h: running the real `octet` binary (OCTET_EXE) from a
// test, and a tiny two-class image tree to train on. Shared by the suites of
// tests/apps.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "core/image.h"
#include "tests/shell.h"

namespace octet::testing {

namespace fs = std::filesystem;

struct Result {
  int code = -1;       // the exit status, or -1 when the process did not exit normally
  std::string output;  // stdout and stderr, interleaved
};

// `octet <args>`, run by /bin/sh; args are shell words (quote paths yourself).
inline Result octet_cli(const std::string& args) {
  const ShellResult r = run_shell(std::string("'") + OCTET_EXE + "' " + args + " 2>&1");
  return {r.code, r.out};
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

inline std::string quoted(const std::string& path) { return "'" + path + "'"; }

// A 32x32 RGB image whose class is visible to a tiny network: class 0 is
// bright on the left half, class 1 on the right half; `k` varies the noise.
inline std::vector<uint8_t> class_image(int cls, int k, int size = 32) {
  std::vector<uint8_t> hwc(static_cast<size_t>(size) * size * 3);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x)
      for (int c = 0; c < 3; ++c) {
        const bool bright = (x < size / 2) == (cls == 0);
        const int noise = (k * 37 + y * 11 + x * 5 + c * 3) % 41;
        hwc[(static_cast<size_t>(y) * size + x) * 3 + c] = static_cast<uint8_t>((bright ? 190 : 40) + noise);
      }
  return hwc;
}

// root/{train,test}/{left,right}/NNN.png: `per_class` training images per class, 8 test images per class.
inline void write_tree(const std::string& root, int per_class) {
  const char* classes[2] = {"left", "right"};
  for (int cls = 0; cls < 2; ++cls) {
    fs::create_directories(root + "/train/" + classes[cls]);
    fs::create_directories(root + "/test/" + classes[cls]);
    for (int i = 0; i < per_class; ++i)
      octet::write_png(root + "/train/" + classes[cls] + "/" + std::to_string(i) + ".png",
                       class_image(cls, i).data(), 32, 32, 3);
    for (int i = 0; i < 8; ++i)
      octet::write_png(root + "/test/" + classes[cls] + "/" + std::to_string(i) + ".png",
                       class_image(cls, 1000 + i).data(), 32, 32, 3);
  }
}

}  // namespace octet::testing
