// Distributed plumbing that needs no mpirun: the collectives of the
// in-process ThreadGroup (what the nn and quant tests run several ranks on)
// and of the group of one; a rank that fails does not leave the others
// waiting; the loader's shards together are the batch one process builds;
// and the backward hook that data-parallel training reduces gradients from.
// (MPI's world itself is run by apps.test_cli_mpi under mpirun.)
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <stdexcept>

#include "core/distributed.h"
#include "core/loader.h"
#include "core/ops.h"
#include "core/rng.h"
#include "tests/core/test_data_util.h"

using namespace octet;
using namespace octet::testing;

TEST_CASE("ThreadGroup: sum, min, max, broadcast, strings, barrier, in rank order") {
  for (int n : {1, 2, 3, 4}) {
    CAPTURE(n);
    ThreadGroup::run(n, [n](int r, Communicator& comm) {
      CHECK(comm.rank() == r);
      CHECK(comm.size() == n);
      std::vector<float> v = {float(r), float(-r), 1.5f};
      comm.allreduce(v.data(), v.size(), Reduce::sum);
      CHECK(v[0] == float(n * (n - 1) / 2));
      CHECK(v[1] == -float(n * (n - 1) / 2));
      CHECK(v[2] == 1.5f * n);
      double lo = r + 0.25, hi = r + 0.25;
      comm.allreduce(&lo, 1, Reduce::min);
      comm.allreduce(&hi, 1, Reduce::max);
      CHECK(lo == 0.25);
      CHECK(hi == n - 1 + 0.25);
      int64_t word = r == n - 1 ? 12345 : -1;
      comm.broadcast(&word, sizeof word, n - 1);
      CHECK(word == 12345);
      CHECK(comm.broadcast(r == 0 ? std::string("from rank 0") : std::string("x")) == "from rank 0");
      const std::vector<std::string> all = comm.allgather("rank " + std::to_string(r));
      REQUIRE(all.size() == size_t(n));
      for (int k = 0; k < n; ++k) CHECK(all[size_t(k)] == "rank " + std::to_string(k));
      std::vector<float> g = {float(r + 1)};
      const auto req = comm.start_allreduce_sum(g.data(), 1);
      comm.wait(req);
      CHECK(g[0] == float(n * (n + 1) / 2));
      comm.barrier();
      CHECK(comm.stats().collectives > 0);
    });
  }
}

TEST_CASE("the group of one: every collective is the identity") {
  Communicator& one = local_group();
  CHECK(one.rank() == 0);
  CHECK(one.size() == 1);
  float v[2] = {3.0f, -1.0f};
  one.allreduce(v, 2, Reduce::sum);
  CHECK(v[0] == 3.0f);
  CHECK(v[1] == -1.0f);
  CHECK(one.broadcast(std::string("same")) == "same");
  CHECK(one.allgather("me") == std::vector<std::string>{"me"});
  // Not started by mpirun here: join_world is the group of one.
  if (!launched_by_mpi()) CHECK(join_world()->size() == 1);
}

TEST_CASE("ThreadGroup: a rank that fails does not leave the others waiting") {
  std::atomic<int> waited{0};
  CHECK_THROWS_WITH_AS(ThreadGroup::run(3,
                                        [&](int r, Communicator& comm) {
                                          if (r == 1) throw std::runtime_error("rank 1 broke");
                                          float x = 1;
                                          ++waited;
                                          comm.allreduce(&x, 1, Reduce::sum);  // rank 1 never comes
                                        }),
                       "rank 1 broke", std::runtime_error);
  CHECK(waited == 2);
}

TEST_CASE("loader shards: together they are the batch one process builds, image for image") {
  const Dataset data = random_dataset(100, 10, 3, 8, 8, 3);
  LoaderOptions o;
  o.batch_size = 30;  // 3 batches; 30 images do not split evenly over 4 shards
  o.shuffle = true;
  o.drop_last = true;
  o.augment = true;
  o.pad = 2;
  o.seed = 9;
  Preprocess pre = Preprocess::standard();
  o.preprocess = pre;
  for (int shards : {1, 2, 3, 4}) {
    CAPTURE(shards);
    Loader whole(data, o);
    for (int64_t k = 0; k < whole.batches_per_epoch(); ++k) {
      const Batch ref = whole.make_batch(2, k);
      std::vector<float> images;
      std::vector<int> labels;
      int rows = 0;
      for (int s = 0; s < shards; ++s) {
        LoaderOptions so = o;
        so.shard = s;
        so.shards = shards;
        Loader part(data, so);
        part.start_epoch(2, k);
        Batch b;
        REQUIRE(part.next(b));
        CHECK(b.index == k);
        const auto [lo, hi] = Loader::shard_rows(o.batch_size, s, shards);
        CHECK(b.n == hi - lo);
        rows += b.n;
        images.insert(images.end(), b.images.begin(), b.images.end());
        labels.insert(labels.end(), b.labels.begin(), b.labels.end());
      }
      CHECK(rows == ref.n);
      CHECK(labels == ref.labels);
      CHECK(images == ref.images);  // same augmentation draws, bit for bit
    }
  }
  LoaderOptions bad = o;
  bad.shard = 2;
  bad.shards = 2;
  CHECK_THROWS_WITH_AS(Loader(data, bad), doctest::Contains("shard 2 of 2"), std::invalid_argument);
}

TEST_CASE("backward(on_leaf_ready): each leaf once, when its gradient is complete") {
  Rng rng(5);
  Tensor w1 = Tensor::randn({4, 3}, rng).requires_grad_(true);
  Tensor w2 = Tensor::randn({3, 2}, rng).requires_grad_(true);
  Tensor unused = Tensor::randn({2}, rng).requires_grad_(true);
  Tensor x = Tensor::randn({5, 4}, rng);
  // w1 is used twice (in h and again at the end), w2 once.
  auto loss_of = [&] {
    Tensor h = relu(matmul(x, w1));
    Tensor y = matmul(h, w2);
    return add(sum(y), mul(sum(w1), 0.5f));
  };
  Tensor ref = loss_of();
  ref.backward();
  const std::vector<float> g1(w1.grad().data(), w1.grad().data() + w1.numel());
  const std::vector<float> g2(w2.grad().data(), w2.grad().data() + w2.numel());
  w1.zero_grad();
  w2.zero_grad();

  std::map<const TensorImpl*, int> calls;
  std::map<const TensorImpl*, std::vector<float>> at_ready;
  loss_of().backward([&](const Tensor& leaf) {
    ++calls[leaf.impl().get()];
    at_ready[leaf.impl().get()].assign(leaf.grad().data(), leaf.grad().data() + leaf.numel());
  });
  CHECK(calls.size() == 2);  // `unused` is not in the graph
  CHECK(calls[w1.impl().get()] == 1);
  CHECK(calls[w2.impl().get()] == 1);
  CHECK(at_ready[w1.impl().get()] == g1);  // complete when announced: both uses summed
  CHECK(at_ready[w2.impl().get()] == g2);
  CHECK(!unused.grad().defined());
}
