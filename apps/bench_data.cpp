// apps/bench_data.cpp: `octet bench data`, the data pipeline's speed:
//   decode_train_s, decode_test_s  loading (decoding) each split into memory
//   decode_img_s                   images decoded per second over both splits
//   loader_b128_img_s              one training epoch through the Loader:
//                                  batch 128, crop+flip augmentation, standard
//                                  preprocessing, float NCHW, nothing consuming
//   loader_b128_batch_s            the same in batches per second
// Decoding uses all --threads; the loader epoch runs at --loader-threads.
#include <chrono>
#include <cstdio>

#include "apps/args.h"
#include "apps/commands.h"
#include "core/dataset.h"
#include "core/loader.h"
#include "core/parallel.h"

namespace octet::app {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int bench_data(int argc, char** argv) {
  Args a(argc, argv, "octet bench data",
         "usage: octet bench data [--data DIR] [--threads N] [--loader-threads 1] [--epochs 1]\n"
         "Times decoding the train and test splits and one augmented training epoch\n"
         "through the loader (batch 128). DIR defaults to $OCTET_DATA.\n");
  if (a.help()) {
    std::fputs(a.usage().c_str(), stdout);
    return 0;
  }
  const std::string data = a.get("--data", "");
  const int threads = a.get_int("--threads", 0);
  const int loader_threads = a.get_int("--loader-threads", 1);
  const int epochs = a.get_int("--epochs", 1);
  a.finish();
  if (threads < 0 || loader_threads < 0 || epochs < 1)
    throw UsageError("octet bench data: --threads and --loader-threads must be >= 0, --epochs >= 1");
  const std::string root = resolve_data_path(data);

  set_num_threads(threads);
  std::printf("data %s\nthreads %d\n", root.c_str(), num_threads());
  auto t0 = std::chrono::steady_clock::now();
  Dataset train = load_dataset(root, Split::train);
  const double train_s = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  Dataset test = load_dataset(root, Split::test);
  const double test_s = seconds_since(t0);
  std::printf("train_images %lld\ntest_images %lld\n", (long long)train.size(), (long long)test.size());
  std::printf("decode_train_s %.3f\ndecode_test_s %.3f\ndecode_img_s %.0f\n", train_s, test_s,
              double(train.size() + test.size()) / (train_s + test_s));

  set_num_threads(loader_threads);
  LoaderOptions o;
  o.batch_size = 128;
  o.shuffle = true;
  o.drop_last = true;
  o.augment = true;
  o.preprocess = Preprocess::standard();
  o.seed = 1;
  Loader loader(train, o);
  Batch b;
  int64_t batches = 0;
  t0 = std::chrono::steady_clock::now();
  for (int e = 0; e < epochs; ++e) {
    loader.start_epoch(e);
    while (loader.next(b)) ++batches;
  }
  const double s = seconds_since(t0);
  std::printf("loader_threads %d\nloader_b128_batch_s %.1f\nloader_b128_img_s %.0f\n", num_threads(), batches / s,
              batches * 128.0 / s);
  return 0;
}

}  // namespace octet::app
