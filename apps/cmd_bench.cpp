// apps/cmd_bench.cpp: `octet bench <what>`. Every benchmark prints
// "key value" lines; the keys that the peer script
// (../shared/bench/torch_resnet20.py) also prints are spelled as it spells
// them, so the two outputs can be laid side by side.
#include <cstdio>
#include <cstring>
#include <string>

#include "apps/args.h"
#include "apps/commands.h"

namespace octet::app {

namespace {
struct Sub {
  const char* name;
  const char* summary;
  int (*run)(int, char**);
};
const Sub kBenches[] = {
    {"ops", "forward+backward time of ResNet-20's conv shapes at batch 128", bench_ops},
    {"train", "ResNet-20 train/infer img/s as ../shared/bench/torch_resnet20.py", bench_train},
    {"data", "decode time of the data set and loader img/s (batch 128, augmented)", bench_data},
    {"engine", "int8 engine img/s at batch 1 and 100, arena and runner size", bench_engine},
    {"peak", "the cores' measured peak int8 MAC/s and fp32 flop/s, 1 and N threads", bench_peak},
};
}  // namespace

int cmd_bench(int argc, char** argv) {
  if (argc >= 1) {
    for (const Sub& s : kBenches)
      if (!std::strcmp(argv[0], s.name)) return s.run(argc - 1, argv + 1);
  }
  std::printf("usage: octet bench <what> [--threads N ...]\n\n");
  for (const Sub& s : kBenches) std::printf("  %-8s %s\n", s.name, s.summary);
  if (argc >= 1 && std::strcmp(argv[0], "--help") && std::strcmp(argv[0], "-h"))
    throw UsageError(std::string("octet bench: unknown benchmark '") + argv[0] + "'");
  return argc >= 1 ? 0 : 2;
}

}  // namespace octet::app
