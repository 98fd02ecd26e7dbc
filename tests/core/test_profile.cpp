// core/profile.h: scopes add their exclusive wall time under their name, only
// while profiling is on; a training step's table names the ops that ran.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "core/ops.h"
#include "core/profile.h"
#include "core/rng.h"
#include "core/tensor.h"

using namespace octet;

namespace {

std::map<std::string, profile::Row> by_name() {
  std::map<std::string, profile::Row> m;
  for (const profile::Row& r : profile::rows()) m[r.name] = r;
  return m;
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

}  // namespace

TEST_CASE("profile: nothing is recorded while off; switching on clears the table") {
  profile::enable(false);
  { const profile::Scope s("off"); }
  profile::enable(true);
  CHECK(profile::rows().empty());
  { const profile::Scope s("on"); }
  CHECK(by_name().count("on") == 1);
  profile::enable(true);
  CHECK(profile::rows().empty());
  profile::enable(false);
}

TEST_CASE("profile: nested scopes keep their own time; the outer one only the rest") {
  profile::enable(true);
  {
    const profile::Scope outer("outer");
    sleep_ms(20);
    for (int i = 0; i < 2; ++i) {
      const profile::Scope inner("inner");
      sleep_ms(30);
    }
  }
  profile::enable(false);
  const auto rows = by_name();
  REQUIRE(rows.count("outer"));
  REQUIRE(rows.count("inner"));
  CHECK(rows.at("inner").calls == 2);
  CHECK(rows.at("outer").calls == 1);
  // inner: 60 ms of sleep; outer: its own 20 ms, not the 80 ms it spanned.
  CHECK(rows.at("inner").seconds >= 0.060);
  CHECK(rows.at("outer").seconds >= 0.020);
  CHECK(rows.at("outer").seconds < 0.055);
  // Largest first.
  const std::vector<profile::Row> sorted = profile::rows();
  CHECK(sorted.front().name == "inner");
}

TEST_CASE("profile: a training step's forward and backward appear per op, the conv gradients apart") {
  Rng rng(0, 3);
  Tensor x = Tensor::randn({2, 3, 8, 8}, rng);
  Tensor w = Tensor::randn({4, 3, 3, 3}, rng).requires_grad_(true);
  Tensor gamma = Tensor::full({4}, 1.0f).requires_grad_(true), beta = Tensor::zeros({4}).requires_grad_(true);
  Tensor mean = Tensor::zeros({4}), var = Tensor::full({4}, 1.0f);
  profile::enable(true);
  Tensor y = relu(batch_norm(conv2d(x, w, Tensor(), {.stride = 1, .pad = 1}), gamma, beta, mean, var, true, 0.1f, 1e-5f));
  const std::vector<int> labels = {1, 2};
  Tensor loss = cross_entropy(linear(flatten(global_avg_pool(y)), Tensor::randn({3, 4}, rng), Tensor()), labels);
  loss.backward();
  profile::enable(false);
  const auto rows = by_name();
  for (const char* name : {"conv2d forward", "batch_norm forward", "relu forward", "global_avg_pool forward",
                           "linear forward", "cross_entropy forward", "batch_norm backward", "relu backward",
                           "conv2d backward"})
    CHECK_MESSAGE(rows.count(name), name);
  // x needs no gradient: only the weight gradient of the conv runs.
  const bool weight_grad = rows.count("conv2d weight gradient") || rows.count("conv2d weight gradient im2col");
  CHECK(weight_grad);
  CHECK_FALSE(rows.count("conv2d input gradient"));
  for (const auto& row : rows) {  // (no structured binding: clang 14 cannot capture one in CHECK_MESSAGE)
    CHECK_MESSAGE(row.second.calls >= 1, row.first);
    CHECK_MESSAGE(row.second.seconds >= 0, row.first);
  }
}
