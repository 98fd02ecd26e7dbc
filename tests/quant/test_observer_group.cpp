// tests/quant/test_observer_group.cpp: observers across ranks
// (Observer::set_group). Two ranks (ThreadGroup) each observe their shard of
// a few batches, split evenly, unevenly and with one rank's shard empty;
// every rank's state must equal that of one observer that observed the whole
// batches (exactly, except meanstd's mean and M2, which are combined in
// another order). A non-finite value on one rank makes every rank throw
// instead of leaving one waiting in a collective; frozen observers and groups
// of one do no collectives.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/distributed.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "quant/observer.h"
#include "tests/core/compare.h"

using namespace octet;
using namespace octet::quant;

using octet::test::rows;

namespace {

constexpr int kRanks = 2;


// A batch [8, 3, 5, 5] and where rank 0's shard ends (rank 1 has the rest).
struct Batch {
  Tensor x;
  int64_t split;
};

// Batches whose range widens (so the histograms grow, also below zero) and
// whose extremes lie now in one shard, now in the other; one split unevenly,
// one with rank 1's shard empty, one with rank 0's.
std::vector<Batch> batches() {
  Rng rng(41);
  const Shape s{8, 3, 5, 5};
  std::vector<Batch> out;
  const float scale[] = {1.0f, 0.5f, 3.0f, 2.0f, 6.0f, 4.0f};
  const int64_t split[] = {4, 4, 3, 8, 0, 4};
  for (int b = 0; b < 6; ++b) {
    Tensor x = Tensor::randn(s, rng, scale[b]);
    for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] += 0.3f * float(b);
    // A far value on the shard opposite to the previous batch's.
    const int64_t n = b % 2 == 0 ? 7 : 1;
    x.data()[n * 75 + 13] = (b % 3 == 0 ? -1.0f : 1.0f) * 5.0f * scale[b];
    out.push_back({x, split[b]});
  }
  return out;
}

std::vector<ObserverConfig> configs() {
  return {
      {.kind = "minmax"},
      {.kind = "ema", .decay = 0.9},
      {.kind = "ema", .decay = 0.9, .include_zero = false},
      {.kind = "percentile", .percentile = 99.0, .bins = 64},
      {.kind = "entropy", .bits = 4, .bins = 64},
      {.kind = "mse", .bits = 4, .bins = 64},
      {.kind = "minmax_per_channel", .axis = 1},
      {.kind = "meanstd", .k = 2.0},
  };
}

std::string name_of(const ObserverConfig& c) {
  return c.kind + (c.kind == "ema" && !c.include_zero ? " (no zero)" : "");
}

// What every rank ends with, and the collectives it made.
struct RankResult {
  ObserverState state;
  int64_t collectives = 0;
};

std::array<RankResult, kRanks> observe_on_ranks(const ObserverConfig& config, const std::vector<Batch>& data) {
  std::array<RankResult, kRanks> out;
  ThreadGroup::run(kRanks, [&](int r, Communicator& comm) {
    std::unique_ptr<Observer> obs = make_observer(config);
    obs->set_group(&comm);
    for (const Batch& b : data)
      obs->observe(r == 0 ? rows(b.x, 0, b.split) : rows(b.x, b.split, b.x.dim(0)));
    out[r] = {obs->state(), comm.stats().collectives};
  });
  return out;
}

ObserverState observe_alone(const ObserverConfig& config, const std::vector<Batch>& data) {
  std::unique_ptr<Observer> obs = make_observer(config);
  for (const Batch& b : data) obs->observe(b.x);
  return obs->state();
}

}  // namespace

TEST_CASE("observers across ranks hold the state of one observer of the whole batches") {
  const std::vector<Batch> data = batches();
  for (const ObserverConfig& config : configs()) {
    CAPTURE(name_of(config));
    const ObserverState whole = observe_alone(config, data);
    const std::array<RankResult, kRanks> ranks = observe_on_ranks(config, data);
    // Every rank: the same state, to the bit.
    CHECK(ranks[1].state.encode() == ranks[0].state.encode());
    if (config.kind == "meanstd") {
      // [frozen, observations, k, count, mean, m2, min, max]: mean and M2
      // combined in another order.
      const std::vector<double>& a = ranks[0].state.values;
      const std::vector<double>& b = whole.values;
      REQUIRE(a.size() == 8);
      REQUIRE(b.size() == 8);
      for (size_t i : {0, 1, 2, 3, 6, 7}) CHECK(a[i] == b[i]);
      CHECK(a[4] == doctest::Approx(b[4]).epsilon(1e-12));
      CHECK(a[5] == doctest::Approx(b[5]).epsilon(1e-12));
    } else {
      CHECK(ranks[0].state.encode() == whole.encode());
    }
    // One collective per observation for minmax and ema, two for the rest.
    const bool one = config.kind == "minmax" || config.kind == "ema";
    for (const RankResult& r : ranks) CHECK(r.collectives == int64_t(data.size()) * (one ? 1 : 2));
  }
}

TEST_CASE("observers across ranks: the ranks' own halves alone give other states") {
  // The same data without the group: the comparison above can fail.
  const std::vector<Batch> data = batches();
  for (const ObserverConfig& config : configs()) {
    CAPTURE(name_of(config));
    std::unique_ptr<Observer> obs = make_observer(config);
    for (const Batch& b : data)
      if (b.split > 0) obs->observe(rows(b.x, 0, b.split));
    CHECK(obs->state().encode() != observe_alone(config, data).encode());
  }
}

TEST_CASE("observers across ranks: a non-finite value on one rank makes every rank throw") {
  Rng rng(42);
  const Tensor first = Tensor::randn({4, 3, 5, 5}, rng);
  for (const ObserverConfig& config : configs()) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      CAPTURE(name_of(config));
      CAPTURE(bad);
      std::array<std::string, kRanks> error, before, after;
      ThreadGroup::run(kRanks, [&](int r, Communicator& comm) {
        std::unique_ptr<Observer> obs = make_observer(config);
        obs->set_group(&comm);
        obs->observe(first);
        before[r] = obs->state().encode();
        Rng own(100 + uint64_t(r));
        Tensor x = Tensor::randn({4, 3, 5, 5}, own);
        if (r == 1) x.data()[17] = bad;
        try {
          obs->observe(x);
        } catch (const std::invalid_argument& e) {
          error[r] = e.what();
        }
        after[r] = obs->state().encode();
        // The ranks are still in step: a next observation works everywhere.
        obs->observe(first);
      });
      CHECK(error[1].find("offset 17") != std::string::npos);
      CHECK(error[0].find("another rank saw a non-finite value") != std::string::npos);
      // Nothing of the refused batch was taken in.
      for (int r = 0; r < kRanks; ++r) CHECK(after[r] == before[r]);
    }
  }
}

TEST_CASE("observers across ranks: frozen observers and groups of one make no collectives") {
  Rng rng(43);
  const Tensor x = Tensor::randn({4, 3, 5, 5}, rng);
  for (const ObserverConfig& config : configs()) {
    CAPTURE(name_of(config));
    // A group of one is the observer alone.
    std::unique_ptr<Observer> plain = make_observer(config), one = make_observer(config);
    one->set_group(&local_group());
    CHECK(one->group() == &local_group());
    plain->observe(x);
    one->observe(x);
    CHECK(one->state().encode() == plain->state().encode());

    int64_t single = -1;
    ThreadGroup::run(1, [&](int, Communicator& comm) {
      std::unique_ptr<Observer> obs = make_observer(config);
      obs->set_group(&comm);
      obs->observe(x);
      single = comm.stats().collectives;
    });
    CHECK(single == 0);
    std::array<int64_t, kRanks> frozen{};
    ThreadGroup::run(kRanks, [&](int r, Communicator& comm) {
      std::unique_ptr<Observer> obs = make_observer(config);
      obs->set_group(&comm);
      obs->freeze();
      obs->observe(x);
      frozen[r] = comm.stats().collectives;
    });
    for (int64_t n : frozen) CHECK(n == 0);
  }
}
