// apps/octet.cpp: the `octet` command line. Dispatches to one subcommand;
// prints any error as "octet <cmd>: what" and exits non-zero.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "apps/args.h"
#include "apps/commands.h"

namespace {

using octet::app::Command;

const Command kCommands[] = {
    {"train", "train a ResNet (CIFAR-10, MNIST/Fashion-MNIST IDX, image folders; presets quick, full; resumable)", octet::app::cmd_train},
    {"eval", "top-1/top-5, per-class precision/recall, confusion of a checkpoint, a model file, or an ONNX model (ONNX Runtime)",
     octet::app::cmd_eval},
    {"calibrate", "post-training quantization: float checkpoint + N images -> quantized checkpoint",
     octet::app::cmd_calibrate},
    {"export", "checkpoint (QAT, PTQ, or float + calibration) -> integer model file (.oct) and/or ONNX (QDQ)", octet::app::cmd_export},
    {"run", "classify image files with a model file in the integer engine (top-5)", octet::app::cmd_run},
    {"inspect", "per layer: shapes, bits, scales, zero points, M0/shift, headroom; weight histograms", octet::app::cmd_inspect},
    {"compare", "per-layer error float vs fake-quant vs integer; engine == simulation count", octet::app::cmd_compare},
    {"study", "a parameter study: rows x seeds of QAT runs sharing trunks, engine accuracy, report + figures",
     octet::app::cmd_study},
    {"bench", "benchmarks: ops (conv fwd+bwd), train, engine", octet::app::cmd_bench},
};

void print_help() {
  std::printf(
      "octet: train CNNs with quantization in mind, run them as integer-only programs.\n\n"
      "usage: octet <command> [options]     (octet <command> --help for its options)\n\n"
      "commands:\n");
  for (const Command& c : kCommands) std::printf("  %-10s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help") ||
      !std::strcmp(argv[1], "help")) {
    print_help();
    return argc < 2 ? 2 : 0;
  }
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      return c.run(argc - 2, argv + 2);
    } catch (const octet::app::UsageError& e) {
      std::fprintf(stderr, "%s\n(see: octet %s --help)\n", e.what(), c.name);
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "octet %s: error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "octet: unknown command '%s'\n\n", argv[1]);
  print_help();
  return 2;
}
