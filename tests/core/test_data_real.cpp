// The real CIFAR-10 copy (../shared/data/cifar10-jpg.tar.gz, unpacked into
// <build>/data by scripts/data.sh, or $OCTET_DATA). Reported as skipped by
// ctest when absent (tests/skip.h).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>

#include "core/dataset.h"
#include "core/loader.h"
#include "tests/skip.h"

using namespace octet;

namespace {
// $OCTET_DATA or <build>/data; without either, the suite is reported as
// skipped before any test case runs.
const std::string kData = octet::testing::cifar10_root_or_skip(OCTET_BINARY_DIR);
}  // namespace

TEST_CASE("real CIFAR-10 test split: 10,000 images of 32x32, 1,000 per class, official class order") {
  const auto t0 = std::chrono::steady_clock::now();
  Dataset test = load_dataset(kData, Split::test);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("decoded " << test.size() << " JPEGs in " << s << " s");
  CHECK(test.size() == 10000);
  CHECK(test.channels == 3);
  CHECK(test.height == 32);
  CHECK(test.width == 32);
  CHECK(test.class_names == cifar10_class_names());
  CHECK(test.class_counts() == std::vector<int64_t>(10, 1000));
  // RGB order and decoding sanity: the CIFAR-10 test-set channel means are
  // about 0.494, 0.485, 0.450 (R > G > B).
  ChannelStats st = compute_channel_stats(test);
  CHECK(st.mean[0] == doctest::Approx(0.494).epsilon(0.03));
  CHECK(st.mean[1] == doctest::Approx(0.485).epsilon(0.03));
  CHECK(st.mean[2] == doctest::Approx(0.450).epsilon(0.03));
  CHECK(st.mean[0] > st.mean[2]);
  CHECK(st.std[0] == doctest::Approx(0.247).epsilon(0.05));

  // An eval pass over it: every image once, the last batch partial.
  LoaderOptions o;
  o.batch_size = 128;
  o.shuffle = false;
  Loader loader(test, o);
  loader.start_epoch(0);
  Batch b;
  int64_t seen = 0, last = 0;
  while (loader.next(b)) {
    seen += b.n;
    last = b.n;
  }
  CHECK(seen == 10000);
  CHECK(last == 10000 % 128);
}
