// The batch loader: epoch coverage, batch shapes, agreement with the
// synchronous reference (make_batch), determinism across thread counts and
// prefetch depths, resuming mid-epoch, clean shutdown, and its throughput.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <chrono>
#include <set>

#include "core/image.h"
#include "core/loader.h"
#include "core/parallel.h"
#include "tests/core/test_data_util.h"

using namespace octet;
using namespace octet::testing;

namespace {

LoaderOptions train_options(uint64_t seed = 42) {
  LoaderOptions o;
  o.batch_size = 64;
  o.shuffle = true;
  o.drop_last = true;
  o.augment = true;
  o.seed = seed;
  o.output = BatchOutput::both;
  return o;
}

void check_same(const Batch& a, const Batch& b) {
  CHECK(a.n == b.n);
  CHECK(a.epoch == b.epoch);
  CHECK(a.index == b.index);
  CHECK(a.labels == b.labels);
  CHECK(a.indices == b.indices);
  CHECK(a.pixels == b.pixels);
  CHECK(a.images == b.images);  // bit-identical floats
}

std::vector<Batch> run_epoch(Loader& loader, int64_t epoch, int64_t first = 0) {
  std::vector<Batch> out;
  loader.start_epoch(epoch, first);
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

}  // namespace

TEST_CASE("batches per epoch, shapes, the last partial batch, and full coverage") {
  Dataset d = random_dataset(1000);
  LoaderOptions o;
  o.batch_size = 128;
  o.shuffle = false;
  {
    Loader eval(d, o);
    CHECK(eval.batches_per_epoch() == 8);
    std::vector<Batch> bs = run_epoch(eval, 0);
    REQUIRE(bs.size() == 8);
    CHECK(bs[7].n == 1000 - 7 * 128);
    CHECK(bs[0].c == 3);
    CHECK(bs[0].h == 32);
    CHECK(bs[0].w == 32);
    CHECK(bs[0].images.size() == size_t(128 * 3 * 32 * 32));
    CHECK(bs[0].pixels.empty());  // float output only
    CHECK(bs[7].images.size() == size_t(104 * 3 * 32 * 32));
    for (int64_t k = 0; k < 8; ++k)
      for (int i = 0; i < bs[size_t(k)].n; ++i) {
        CHECK(bs[size_t(k)].indices[size_t(i)] == k * 128 + i);  // no shuffle: dataset order
        CHECK(bs[size_t(k)].labels[size_t(i)] == d.labels[size_t(k * 128 + i)]);
      }
    // Unaugmented float images are the preprocessed dataset images.
    std::vector<float> want(3 * 32 * 32);
    preprocess_image(d.image(300), want.data(), 3, 32, 32, o.preprocess);
    CHECK(std::equal(want.begin(), want.end(), bs[2].images.begin() + (300 - 256) * 3072));
    Batch b;
    CHECK_FALSE(eval.next(b));  // stays at the end
  }
  o.drop_last = true;
  o.shuffle = true;
  Loader train(d, o);
  CHECK(train.batches_per_epoch() == 7);
  std::vector<Batch> bs = run_epoch(train, 3);
  std::set<int64_t> seen;
  for (const Batch& b : bs) {
    CHECK(b.n == 128);
    seen.insert(b.indices.begin(), b.indices.end());
  }
  CHECK(seen.size() == 7 * 128);  // no repeats

  o.drop_last = false;
  Loader all(d, o);
  seen.clear();
  for (const Batch& b : run_epoch(all, 3)) seen.insert(b.indices.begin(), b.indices.end());
  CHECK(seen.size() == 1000);  // every sample exactly once
}

TEST_CASE("shuffling: a new order every epoch, the same order for the same seed") {
  Dataset d = random_dataset(500);
  Loader a(d, train_options(1)), b(d, train_options(1)), c(d, train_options(2));
  CHECK(a.epoch_order(0) == b.epoch_order(0));
  CHECK(a.epoch_order(0) != a.epoch_order(1));
  CHECK(a.epoch_order(0) != c.epoch_order(0));
  std::vector<int64_t> order = a.epoch_order(5);
  std::sort(order.begin(), order.end());
  for (int64_t i = 0; i < 500; ++i) CHECK(order[size_t(i)] == i);  // a permutation
}

TEST_CASE("augmented batches equal the per-sample reference, in both output layouts") {
  Dataset d = random_dataset(300);
  LoaderOptions o = train_options(9);
  Loader loader(d, o);
  std::vector<Batch> bs = run_epoch(loader, 2);
  const Batch& b = bs[1];
  std::vector<uint8_t> aug(3072), hwc(3072);
  std::vector<float> pre(3072);
  int shifted = 0;
  for (int i = 0; i < b.n; ++i) {
    const int64_t idx = b.indices[size_t(i)];
    Rng rng = sample_rng(o.seed, 2, idx);
    AugmentParams p = draw_augment(rng, o.pad, o.flip);
    shifted += p.dx != 0 || p.dy != 0 || p.flip;
    augment_image(d.image(idx), aug.data(), 3, 32, 32, p);
    chw_to_hwc(aug.data(), hwc.data(), 32, 32, 3);
    preprocess_image(aug.data(), pre.data(), 3, 32, 32, o.preprocess);
    CHECK(std::equal(hwc.begin(), hwc.end(), b.pixels.begin() + i * 3072));
    CHECK(std::equal(pre.begin(), pre.end(), b.images.begin() + i * 3072));
  }
  CHECK(shifted > b.n / 2);  // augmentation really happened
}

TEST_CASE("cutout in the loader: the per-sample reference with the mean fill; crop and flip draws unchanged") {
  Dataset d = random_dataset(200);
  LoaderOptions o = train_options(4);
  o.cutout = 8;
  Loader loader(d, o);
  const Batch b = run_epoch(loader, 1)[0];
  LoaderOptions plain = o;
  plain.cutout = 0;
  Loader plain_loader(d, plain);
  const Batch q = run_epoch(plain_loader, 1)[0];
  const std::vector<uint8_t> fill = cutout_fill(o.preprocess);
  std::vector<uint8_t> aug(3072), hwc(3072);
  int64_t differs = 0;
  for (int i = 0; i < b.n; ++i) {
    const int64_t idx = b.indices[size_t(i)];
    CHECK(idx == q.indices[size_t(i)]);  // the same order
    Rng rng = sample_rng(o.seed, 1, idx);
    AugmentParams p = draw_augment(rng, o.pad, o.flip);
    draw_cutout(rng, o.cutout, 32, 32, p);
    augment_image(d.image(idx), aug.data(), 3, 32, 32, p, fill.data());
    chw_to_hwc(aug.data(), hwc.data(), 32, 32, 3);
    CHECK(std::equal(hwc.begin(), hwc.end(), b.pixels.begin() + i * 3072));
    // Outside the square, the batch equals the batch without cutout.
    for (int64_t k = 0; k < 3072; ++k) differs += b.pixels[size_t(i * 3072 + k)] != q.pixels[size_t(i * 3072 + k)];
  }
  // Each square covers 16..64 pixels x 3 channels; random pixels rarely equal the fill.
  CHECK(differs > int64_t(b.n) * 16 * 3 / 2);
  CHECK(differs <= int64_t(b.n) * 64 * 3);
  o.cutout = 33;
  CHECK_THROWS_AS(Loader(d, o), std::invalid_argument);
  o.cutout = -1;
  CHECK_THROWS_AS(Loader(d, o), std::invalid_argument);
}

TEST_CASE("cutout_epochs: cutout in the epochs before it, then the plain batches with the same crops and flips") {
  Dataset d = random_dataset(200);
  LoaderOptions o = train_options(4);
  o.cutout = 8;
  o.cutout_epochs = 2;  // epochs 0 and 1
  LoaderOptions always = o, plain = o;
  always.cutout_epochs = 0;
  plain.cutout = 0;
  Loader loader(d, o), always_loader(d, always), plain_loader(d, plain);
  for (int64_t epoch = 0; epoch < 4; ++epoch) {
    const std::vector<Batch> got = run_epoch(loader, epoch);
    const std::vector<Batch> want = run_epoch(epoch < 2 ? always_loader : plain_loader, epoch);
    REQUIRE(got.size() == want.size());
    for (size_t k = 0; k < got.size(); ++k) {
      CHECK(got[k].indices == want[k].indices);
      CHECK(got[k].pixels == want[k].pixels);
      CHECK(got[k].images == want[k].images);
    }
    // ... and the two references really differ, so the check above can fail.
    CHECK(run_epoch(always_loader, epoch)[0].pixels != run_epoch(plain_loader, epoch)[0].pixels);
  }
  o.cutout_epochs = -1;
  CHECK_THROWS_AS(Loader(d, o), std::invalid_argument);
}

TEST_CASE("alternating flip in the loader: the crop draws unchanged, the mirror from alternating_flip") {
  Dataset d = random_dataset(200);
  LoaderOptions o = train_options(6);
  o.alternate_flip = true;
  Loader loader(d, o);
  LoaderOptions plain = o;
  plain.alternate_flip = false;
  Loader plain_loader(d, plain);
  std::vector<uint8_t> aug(3072), hwc(3072);
  for (int64_t epoch : {0, 1, 2}) {
    const Batch b = run_epoch(loader, epoch)[0];
    const Batch q = run_epoch(plain_loader, epoch)[0];
    int64_t differ = 0;
    for (int i = 0; i < b.n; ++i) {
      const int64_t idx = b.indices[size_t(i)];
      CHECK(idx == q.indices[size_t(i)]);  // the same order
      Rng rng = sample_rng(o.seed, epoch, idx);
      AugmentParams p = draw_augment(rng, o.pad, o.flip);
      const bool random_coin = p.flip;
      p.flip = alternating_flip(o.seed, epoch, idx, o.pad);
      differ += p.flip != random_coin;
      augment_image(d.image(idx), aug.data(), 3, 32, 32, p);
      chw_to_hwc(aug.data(), hwc.data(), 32, 32, 3);
      CHECK(std::equal(hwc.begin(), hwc.end(), b.pixels.begin() + i * 3072));
    }
    if (epoch == 0) CHECK(differ == 0);  // epoch 0 is the random flip itself
    else CHECK(differ > 0);              // later epochs are not fresh coins
  }
}

TEST_CASE("next() equals make_batch(); same batches on 1 and 2 threads and any prefetch depth") {
  Dataset d = random_dataset(700);
  std::vector<std::vector<Batch>> runs;
  for (int threads : {1, 2})
    for (int prefetch : {0, 1, 3}) {
      set_num_threads(threads);
      LoaderOptions o = train_options(5);
      o.prefetch = prefetch;
      Loader loader(d, o);
      runs.push_back(run_epoch(loader, 4));
      if (threads == 2 && prefetch == 3) {
        for (const Batch& b : runs.back()) check_same(b, loader.make_batch(4, b.index));
      }
    }
  set_num_threads(0);
  REQUIRE(runs[0].size() == size_t(700 / 64));
  for (size_t r = 1; r < runs.size(); ++r) {
    REQUIRE(runs[r].size() == runs[0].size());
    for (size_t k = 0; k < runs[0].size(); ++k) check_same(runs[r][k], runs[0][k]);
  }
}

TEST_CASE("resuming at (epoch, batch k) gives exactly the uninterrupted batches") {
  Dataset d = random_dataset(640);
  set_num_threads(2);
  std::vector<Batch> full;
  {
    Loader loader(d, train_options(11));
    run_epoch(loader, 0);
    full = run_epoch(loader, 1);
  }
  for (int64_t k : {int64_t(0), int64_t(3), int64_t(9), int64_t(10)}) {
    Loader fresh(d, train_options(11));  // a new process after a checkpoint
    std::vector<Batch> rest = run_epoch(fresh, 1, k);
    REQUIRE(rest.size() == full.size() - size_t(k));
    for (size_t i = 0; i < rest.size(); ++i) check_same(rest[i], full[size_t(k) + i]);
  }
  // Restarting an epoch mid-way on the same loader.
  Loader loader(d, train_options(11));
  loader.start_epoch(1);
  Batch b;
  REQUIRE(loader.next(b));
  REQUIRE(loader.next(b));
  std::vector<Batch> again = run_epoch(loader, 1, 5);
  for (size_t i = 0; i < again.size(); ++i) check_same(again[i], full[5 + i]);
  CHECK_THROWS_AS(loader.start_epoch(1, 11), std::out_of_range);
  set_num_threads(0);
}

TEST_CASE("destroying a loader mid-epoch neither hangs nor leaks") {
  Dataset d = random_dataset(2000);
  set_num_threads(2);
  for (int round = 0; round < 20; ++round) {
    LoaderOptions o = train_options(uint64_t(round));
    o.batch_size = 32;
    Loader loader(d, o);
    loader.start_epoch(0);
    Batch b;
    for (int i = 0; i < round % 4; ++i) REQUIRE(loader.next(b));
  }
  {
    Loader never_started(d, train_options());
  }
  set_num_threads(0);
}

TEST_CASE("options are validated") {
  Dataset d = random_dataset(10);
  LoaderOptions o;
  o.batch_size = 0;
  CHECK_THROWS_AS(Loader(d, o), std::invalid_argument);
  o = {};
  o.preprocess.scale = {1.0f};
  o.preprocess.offset = {0.0f};
  CHECK_THROWS_AS(Loader(d, o), std::invalid_argument);
  o.output = BatchOutput::uint8_nhwc;  // no preprocessing needed
  Loader raw(d, o);
  Batch b;
  CHECK_THROWS_AS(raw.next(b), std::logic_error);  // before start_epoch
  raw.start_epoch(0);
  REQUIRE(raw.next(b));
  CHECK(b.images.empty());
  CHECK(b.pixels.size() == size_t(10 * 3072));
  Dataset empty;
  CHECK_THROWS_AS(Loader(empty, LoaderOptions{}), std::invalid_argument);
}

TEST_CASE("throughput: batch 128, augmentation + standard preprocessing, 1 thread and all threads") {
  Dataset d = random_dataset(10000);
  for (int threads : {1, 0}) {
    set_num_threads(threads);
    LoaderOptions o = train_options(1);
    o.batch_size = 128;
    o.output = BatchOutput::float_nchw;
    Loader loader(d, o);
    loader.start_epoch(0);
    Batch b;
    const auto t0 = std::chrono::steady_clock::now();
    int64_t batches = 0;
    while (loader.next(b)) ++batches;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    MESSAGE("loader threads=" << num_threads() << ": " << batches / s << " batches/s, " << batches * 128 / s
                              << " images/s (batch 128, crop+flip, standard)");
    CHECK(batches == 78);
  }
  set_num_threads(0);
}
