// core/loader.h: the batch loader. Shuffles a decoded Dataset each epoch,
// augments and preprocesses samples, and prefetches batches in background
// tasks while the trainer works on the current one.
//
//     Loader loader(train, {.batch_size = 128, .shuffle = true, .drop_last = true,
//                           .augment = true, .preprocess = Preprocess::standard(),
//                           .seed = 42});
//     Batch b;
//     for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//       loader.start_epoch(epoch);             // or start_epoch(epoch, k) to resume at batch k
//       while (loader.next(b)) train_step(b);  // b.images: N x C x H x W floats (NCHW), the dataset's shape
//     }
//
// Determinism: batch k of epoch e is a pure function of (dataset, options,
// seed, e, k): the epoch order is a Fisher-Yates shuffle drawn from
// Rng(derive_seed(seed, e), kShuffleStream), and each sample's augmentation
// from sample_rng(seed, e, dataset_index) (core/augment.h; an alternating
// flip from alternating_flip(seed, e, dataset_index)). So results do not
// depend on the thread count or the prefetch depth, and a run resumed with
// start_epoch(e, k) yields exactly the batches an uninterrupted run would.
//
// Threads: batch k is produced by whichever comes first, a background task
// (tbb::task_group) or the consumer itself in next(); in either case the
// samples of the batch are processed with octet::parallel_for. With one
// thread nothing runs in the background and next() builds each batch inline.
//
// Lifetime: the Dataset must outlive the Loader. Destroying a Loader
// mid-epoch cancels the pending tasks and waits for the running ones.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "core/augment.h"
#include "core/dataset.h"

namespace octet {

// One batch. Which buffers are filled depends on LoaderOptions::output.
struct Batch {
  int n = 0, c = 0, h = 0, w = 0;
  std::vector<float> images;     // n x c x h x w floats, NCHW, augmented + preprocessed
  std::vector<uint8_t> pixels;   // n x h x w x c uint8, NHWC, augmented, not preprocessed
  std::vector<int> labels;       // n
  std::vector<int64_t> indices;  // n dataset indices
  int64_t epoch = -1;
  int64_t index = -1;  // batch index within the epoch
};

enum class BatchOutput {
  float_nchw,  // Batch::images (the trainer)
  uint8_nhwc,  // Batch::pixels (the int8 engine, which folds preprocessing)
  both,
};

struct LoaderOptions {
  int batch_size = 128;
  bool shuffle = true;
  bool drop_last = false;  // true for training: every batch has batch_size samples
  bool augment = false;    // random crop (zero padding) + horizontal flip
  int pad = 4;             // crop padding, pixels per side
  bool flip = true;        // horizontal flip with p = 1/2 (when augment)
  bool alternate_flip = false;  // ... drawn once, then alternating by epoch (core/augment.h, alternating_flip)
  int cutout = 0;          // cutout square side in pixels, 0 = off (when augment; core/augment.h)
  int cutout_epochs = 0;   // > 0: cutout only in epochs 0..cutout_epochs-1, clean images after (0 = every epoch)
  Preprocess preprocess = Preprocess::standard();  // one map per channel of the images (CIFAR-10's by default)
  BatchOutput output = BatchOutput::float_nchw;
  uint64_t seed = 0;
  int prefetch = 3;  // batches built ahead of the consumer (0 = none)
  // Data-parallel training: this process builds only its shard of every
  // batch, rows [n * shard / shards, n * (shard + 1) / shards) of the batch
  // of n images that one process would build (same order, same
  // augmentation), so the shards of all ranks together are that batch.
  int shard = 0;
  int shards = 1;

  // Every image once, in order, preprocessed and not augmented: what an
  // evaluation or a calibration pass reads.
  static LoaderOptions in_order(int batch_size, const Preprocess& preprocess) {
    LoaderOptions o;
    o.batch_size = batch_size;
    o.shuffle = false;
    o.drop_last = false;
    o.augment = false;
    o.preprocess = preprocess;
    return o;
  }
};

class Loader {
 public:
  // The stream of Rng(derive_seed(seed, epoch), stream) used for the epoch order.
  static constexpr uint64_t kShuffleStream = ~uint64_t(0) >> 1;

  Loader(const Dataset& data, LoaderOptions opt);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t batches_per_epoch() const;
  // The rows [begin, end) of a whole batch of n images that this loader's
  // shard builds.
  static std::pair<int64_t, int64_t> shard_rows(int64_t n, int shard, int shards) {
    return {n * shard / shards, n * (shard + 1) / shards};
  }
  const LoaderOptions& options() const { return opt_; }
  const Dataset& dataset() const { return data_; }

  // Starts (or restarts) epoch `epoch` at batch `first_batch` and begins
  // prefetching. Throws std::out_of_range if first_batch > batches_per_epoch().
  void start_epoch(int64_t epoch, int64_t first_batch = 0);

  // The next batch of the current epoch into `out` (whose buffers are
  // recycled); false at the end of the epoch. Rethrows a failure of the task
  // that built the batch.
  bool next(Batch& out);

  // The dataset indices of epoch `epoch`, in visiting order.
  std::vector<int64_t> epoch_order(int64_t epoch) const;

  // Reference: builds batch `index` of `epoch` synchronously, without the
  // prefetch machinery (the oracle for next()).
  Batch make_batch(int64_t epoch, int64_t index) const;

 private:
  struct Slot;
  struct Tasks;

  void build(const std::vector<int64_t>& order, int64_t epoch, int64_t index, Batch& out) const;
  void schedule(size_t slot_index, int64_t batch, uint64_t generation);  // mu_ held
  void run_task(size_t slot_index, int64_t batch, uint64_t generation);
  void wait_idle(std::unique_lock<std::mutex>& lock);  // until no slot is being built

  const Dataset& data_;
  LoaderOptions opt_;
  std::vector<int64_t> order_;  // current epoch; replaced only while no task runs
  int64_t epoch_ = -1;
  int64_t next_batch_ = 0;
  int64_t end_batch_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t generation_ = 0;  // bumped by start_epoch and the destructor: stale tasks exit
  std::vector<std::unique_ptr<Slot>> slots_;
  std::unique_ptr<Tasks> tasks_;
};

}  // namespace octet
