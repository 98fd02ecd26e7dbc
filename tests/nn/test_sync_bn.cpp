// Synchronized BatchNorm (batch_norm's group, BatchNorm2d::sync_group,
// set_sync_batchnorm): two ranks (ThreadGroup), each with half of a batch,
// must compute what one process computes on the whole batch: the outputs,
// each half's dx, dgamma and dbeta once the ranks' shares are added, and the
// running statistics. Without a group the halves' statistics differ (so the
// comparison can fail), and a group of one is the local path bit for bit.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <span>

#include "core/distributed.h"
#include "core/ops.h"
#include "core/rng.h"
#include "nn/module.h"
#include "tests/core/compare.h"

using namespace octet;
using namespace octet::nn;
using octet::test::same_bits;

using octet::test::rows;

namespace {

constexpr int kRanks = 2;


// max |a - b| relative to max |b|: the tensors' scale, not each element's.
double rel_err(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::fabs(double(a.data()[i]) - b.data()[i]));
    scale = std::max(scale, std::fabs(double(b.data()[i])));
  }
  return diff / std::max(scale, 1e-30);
}

// A batch whose channels have offset means and different scales, so that
// the statistics of its halves differ from the whole batch's.
Tensor test_batch(const Shape& s, Rng& rng) {
  Tensor x = Tensor::randn(s, rng, 2.0f);
  const int64_t C = s[1], hw = x.numel() / (s[0] * C);
  for (int64_t n = 0; n < s[0]; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < hw; ++i) {
        float& v = x.data()[(n * C + c) * hw + i];
        v = v * (1.0f + 0.5f * float(c)) + 3.0f * float(c) - 1.0f + (n < s[0] / 2 ? 0.5f : -0.5f);
      }
  return x;
}

// One training step of batch_norm: forward, then backward of sum(y * r).
struct BnRun {
  Tensor y, dx, dgamma, dbeta, running_mean, running_var;
};
struct BnInputs {
  Tensor x, gamma, beta, running_mean, running_var, r;
};
BnRun run_bn(const BnInputs& in, Communicator* group) {
  BnRun out;
  Tensor x = in.x.clone().requires_grad_(), g = in.gamma.clone().requires_grad_(),
         b = in.beta.clone().requires_grad_();
  out.running_mean = in.running_mean.clone();
  out.running_var = in.running_var.clone();
  out.y = batch_norm(x, g, b, out.running_mean, out.running_var, true, 0.1f, 1e-5f, group);
  out.y.backward(in.r);
  out.dx = x.grad();
  out.dgamma = g.grad();
  out.dbeta = b.grad();
  return out;
}

// The inputs of rank `rank`'s share (samples split evenly over kRanks).
BnInputs share(const BnInputs& whole, int rank) {
  const int64_t per = whole.x.dim(0) / kRanks, b = rank * per;
  return {rows(whole.x, b, b + per), whole.gamma, whole.beta, whole.running_mean, whole.running_var,
          rows(whole.r, b, b + per)};
}

BnInputs make_inputs(const Shape& s, uint64_t seed) {
  Rng rng(seed);
  const int64_t C = s[1];
  BnInputs in;
  in.x = test_batch(s, rng);
  in.gamma = Tensor::uniform({C}, rng, 0.5f, 1.5f);
  in.beta = Tensor::randn({C}, rng);
  in.running_mean = Tensor::randn({C}, rng);
  in.running_var = Tensor::uniform({C}, rng, 0.5f, 2.0f);
  in.r = Tensor::uniform(s, rng, -1.0f, 1.0f);
  return in;
}

}  // namespace

TEST_CASE("synchronized batch_norm on two ranks equals batch_norm on the whole batch") {
  for (Shape s : {Shape{8, 3, 4, 4}, Shape{6, 5}}) {
    CAPTURE(shape_str(s));
    const BnInputs whole = make_inputs(s, 31);
    const BnRun ref = run_bn(whole, nullptr);
    std::array<BnRun, kRanks> rank;
    std::array<CommStats, kRanks> stats;
    ThreadGroup::run(kRanks, [&](int r, Communicator& comm) {
      rank[r] = run_bn(share(whole, r), &comm);
      stats[r] = comm.stats();
    });
    const int64_t per = s[0] / kRanks;
    for (int r = 0; r < kRanks; ++r) {
      CAPTURE(r);
      CHECK(rel_err(rank[r].y, rows(ref.y, r * per, (r + 1) * per)) < 1e-5);
      CHECK(rel_err(rank[r].dx, rows(ref.dx, r * per, (r + 1) * per)) < 1e-5);
      CHECK(rel_err(rank[r].running_mean, ref.running_mean) < 1e-5);
      CHECK(rel_err(rank[r].running_var, ref.running_var) < 1e-5);
      // Every rank holds the same running statistics, to the bit.
      CHECK(same_bits(rank[r].running_mean, rank[0].running_mean));
      CHECK(same_bits(rank[r].running_var, rank[0].running_var));
      // One collective in the forward (statistics), one in the backward (dx).
      CHECK(stats[r].collectives == 2);
    }
    // dgamma and dbeta are each rank's share; the gradient allreduce adds them.
    CHECK(rel_err(add(rank[0].dgamma, rank[1].dgamma), ref.dgamma) < 1e-5);
    CHECK(rel_err(add(rank[0].dbeta, rank[1].dbeta), ref.dbeta) < 1e-5);
  }
}

TEST_CASE("without a group, each half normalizes with its own statistics") {
  const BnInputs whole = make_inputs({8, 3, 4, 4}, 31);
  const BnRun ref = run_bn(whole, nullptr);
  for (int r = 0; r < kRanks; ++r) {
    CAPTURE(r);
    const BnRun alone = run_bn(share(whole, r), nullptr);
    CHECK(rel_err(alone.running_mean, ref.running_mean) > 1e-2);
    CHECK(rel_err(alone.running_var, ref.running_var) > 1e-2);
    CHECK(rel_err(alone.y, rows(ref.y, r * 4, (r + 1) * 4)) > 1e-2);
    CHECK(rel_err(alone.dx, rows(ref.dx, r * 4, (r + 1) * 4)) > 1e-2);
  }
}

TEST_CASE("a group of one is the local path, bit for bit") {
  const BnInputs in = make_inputs({8, 3, 4, 4}, 32);
  const BnRun ref = run_bn(in, nullptr);
  auto same = [&](const BnRun& a) {
    CHECK(same_bits(a.y, ref.y));
    CHECK(same_bits(a.dx, ref.dx));
    CHECK(same_bits(a.dgamma, ref.dgamma));
    CHECK(same_bits(a.dbeta, ref.dbeta));
    CHECK(same_bits(a.running_mean, ref.running_mean));
    CHECK(same_bits(a.running_var, ref.running_var));
  };
  same(run_bn(in, &local_group()));
  BnRun one;
  int64_t collectives = -1;
  ThreadGroup::run(1, [&](int, Communicator& comm) {
    one = run_bn(in, &comm);
    collectives = comm.stats().collectives;
  });
  same(one);
  CHECK(collectives == 0);
}

TEST_CASE("synchronized batch_norm: collectives only where the global batch matters") {
  const BnInputs whole = make_inputs({8, 3, 4, 4}, 33);
  std::array<int64_t, kRanks> eval_calls{}, affine_only_calls{};
  ThreadGroup::run(kRanks, [&](int r, Communicator& comm) {
    const BnInputs in = share(whole, r);
    // Eval mode uses the running statistics: nothing to share.
    Tensor rm = in.running_mean.clone(), rv = in.running_var.clone();
    batch_norm(in.x, in.gamma, in.beta, rm, rv, false, 0.1f, 1e-5f, &comm);
    eval_calls[r] = comm.stats().collectives;
    // Without a gradient for x, the backward (dgamma, dbeta: this rank's
    // share) needs no global sums.
    comm.reset_stats();
    Tensor g = in.gamma.clone().requires_grad_();
    batch_norm(in.x, g, in.beta, rm, rv, true, 0.1f, 1e-5f, &comm).backward(in.r);
    affine_only_calls[r] = comm.stats().collectives;
  });
  for (int r = 0; r < kRanks; ++r) {
    CHECK(eval_calls[r] == 0);
    CHECK(affine_only_calls[r] == 1);
  }
}

namespace {

// conv -> BN -> ReLU -> conv -> BN, the same weights for the same seed.
std::shared_ptr<Sequential> small_net() {
  Rng rng(7);
  auto net = std::make_shared<Sequential>();
  net->append(std::make_shared<Conv2d>(3, 4, 3, 1, 1, /*bias=*/false, rng));
  net->append(std::make_shared<BatchNorm2d>(4));
  net->append(std::make_shared<ReLU>());
  net->append(std::make_shared<Conv2d>(4, 4, 3, 1, 1, /*bias=*/false, rng));
  net->append(std::make_shared<BatchNorm2d>(4));
  return net;
}

// One training step of the net: forward, backward of sum(y * r), and then
// named_state() and the gradients of its parameters.
struct NetRun {
  Tensor y;
  NamedTensors state, grads;
};
NetRun run_net(Sequential& net, const Tensor& x, const Tensor& r) {
  NetRun out;
  out.y = net.forward(x);
  out.y.backward(r);
  out.state = net.named_state();
  for (auto& [name, p] : net.named_parameters()) out.grads.emplace_back(name, p.grad());
  return out;
}

}  // namespace

TEST_CASE("set_sync_batchnorm: a model's BNs see the whole batch across ranks") {
  Rng rng(34);
  const Tensor x = test_batch({8, 3, 5, 5}, rng);
  const Tensor r = Tensor::uniform({8, 4, 5, 5}, rng, -1.0f, 1.0f);
  auto alone = small_net();
  const NetRun ref = run_net(*alone, x, r);

  std::array<NetRun, kRanks> rank;
  std::array<int, kRanks> set{};
  ThreadGroup::run(kRanks, [&](int k, Communicator& comm) {
    auto net = small_net();
    set[k] = set_sync_batchnorm(*net, &comm);
    rank[k] = run_net(*net, rows(x, 4 * k, 4 * k + 4), rows(r, 4 * k, 4 * k + 4));
  });
  for (int k = 0; k < kRanks; ++k) {
    CAPTURE(k);
    CHECK(set[k] == 2);
    CHECK(rel_err(rank[k].y, rows(ref.y, 4 * k, 4 * k + 4)) < 1e-5);
    REQUIRE(rank[k].state.size() == ref.state.size());
    for (size_t i = 0; i < ref.state.size(); ++i) {
      CAPTURE(ref.state[i].first);
      CHECK(rel_err(rank[k].state[i].second, ref.state[i].second) < 1e-5);
    }
  }
  // The parameters' gradients, once the ranks' shares are added (as the
  // gradient allreduce does), are the whole batch's.
  REQUIRE(rank[0].grads.size() == ref.grads.size());
  for (size_t i = 0; i < ref.grads.size(); ++i) {
    CAPTURE(ref.grads[i].first);
    CHECK(rel_err(add(rank[0].grads[i].second, rank[1].grads[i].second), ref.grads[i].second) < 1e-5);
  }

  // nullptr turns it off again.
  auto net = small_net();
  set_sync_batchnorm(*net, &local_group());
  CHECK(set_sync_batchnorm(*net, nullptr) == 2);
  for (auto& [name, m] : net->named_modules())
    if (auto* bn = dynamic_cast<BatchNorm2d*>(m)) CHECK(bn->sync_group == nullptr);
}
