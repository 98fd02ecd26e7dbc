// Tensor handles and autograd semantics: factories, views, shared inputs,
// gradient accumulation, no_grad, single-use graphs, non-scalar backward,
// detach, error messages that name the op; plus the thread wrapper and the
// caching allocator the tensors rest on.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/alloc.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/tensor.h"

using namespace octet;

namespace {

Tensor vec(std::initializer_list<float> v) {
  return Tensor::from({static_cast<int64_t>(v.size())}, std::vector<float>(v));
}

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.data(), t.data() + t.numel()); }

// Runs fn, which must throw E, and returns the message.
template <class E, class F>
std::string message_of(F&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("expected an exception");
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("factories, shapes and element access") {
  Tensor z = Tensor::zeros({2, 3});
  CHECK(z.numel() == 6);
  CHECK(z.ndim() == 2);
  CHECK(z.dim(-1) == 3);
  CHECK(shape_str(z.shape()) == "[2, 3]");
  for (float v : values(z)) CHECK(v == 0.0f);
  CHECK(reinterpret_cast<uintptr_t>(z.data()) % 64 == 0);
  Tensor f = Tensor::full({4}, 2.5f);
  for (float v : values(f)) CHECK(v == 2.5f);
  CHECK(Tensor::scalar(3.0f).item() == 3.0f);
  CHECK(Tensor::scalar(3.0f).ndim() == 0);
  CHECK_THROWS_AS(z.item(), std::invalid_argument);
  CHECK_THROWS_AS(z.dim(2), std::out_of_range);
  CHECK_THROWS_AS(Tensor::from({2, 2}, std::vector<float>{1, 2, 3}), std::invalid_argument);
  CHECK_THROWS_AS(Tensor::zeros({2, -1}), std::invalid_argument);
  Tensor undefined;
  CHECK_FALSE(undefined.defined());
  CHECK_THROWS_AS(undefined.shape(), std::logic_error);
  Tensor e = Tensor::empty({0, 5});
  CHECK(e.numel() == 0);

  // The same seed gives the same random tensor.
  Rng r1(42), r2(42);
  CHECK(values(Tensor::randn({17}, r1)) == values(Tensor::randn({17}, r2)));
  Rng r3(1);
  for (float v : values(Tensor::uniform({1000}, r3, -2.0f, 3.0f))) {
    CHECK(v >= -2.0f);
    CHECK(v < 3.0f);
  }
}

TEST_CASE("handles share storage; clone and detach") {
  Tensor a = vec({1, 2, 3});
  Tensor b = a;  // same handle
  b.data()[0] = 10;
  CHECK(a.data()[0] == 10);
  Tensor c = a.clone();
  c.data()[1] = 20;
  CHECK(a.data()[1] == 2);
  Tensor r = reshape(a, {3, 1});  // a view
  r.data()[2] = 30;
  CHECK(a.data()[2] == 30);
  Tensor d = a.detach();
  d.data()[0] = 5;
  CHECK(a.data()[0] == 5);
  Tensor e = Tensor::zeros({3});
  e.copy_from(a);
  CHECK(values(e) == values(a));
  CHECK_THROWS_AS(e.copy_from(Tensor::zeros({4})), std::invalid_argument);
}

TEST_CASE("a leaf used twice gets the sum of both paths") {
  Tensor x = vec({1, -2, 3}).requires_grad_();
  // L = sum(x * x + 3 x) -> dL/dx = 2x + 3
  Tensor loss = sum(add(mul(x, x), mul(x, 3.0f)));
  loss.backward();
  CHECK(values(x.grad()) == std::vector<float>{5, -1, 9});

  // A non-leaf used twice: y = 2x, L = sum(y * y) -> dL/dx = 8x.
  Tensor w = vec({0.5f, 1, 2}).requires_grad_();
  Tensor y = mul(w, 2.0f);
  sum(mul(y, y)).backward();
  CHECK(values(w.grad()) == std::vector<float>{4, 8, 16});
}

TEST_CASE("gradients accumulate across backward calls until zero_grad") {
  Tensor x = vec({1, 2}).requires_grad_();
  sum(mul(x, 3.0f)).backward();
  CHECK(values(x.grad()) == std::vector<float>{3, 3});
  sum(mul(x, x)).backward();  // a new graph: adds 2x
  CHECK(values(x.grad()) == std::vector<float>{5, 7});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
  sum(x).backward();
  CHECK(values(x.grad()) == std::vector<float>{1, 1});
}

TEST_CASE("the gradient of a leaf never aliases the output gradient") {
  // reshape's backward returns a view of the gradient it receives, and
  // backward(seed) passes the seed's storage in: x.grad() must be a copy.
  Tensor x = vec({1, 2, 3, 4}).requires_grad_();
  Tensor seed = Tensor::from({2, 2}, std::vector<float>{1, 2, 3, 4});
  reshape(x, {2, 2}).backward(seed);
  seed.fill_(0.0f);
  CHECK(values(x.grad()) == std::vector<float>{1, 2, 3, 4});
}

TEST_CASE("no_grad records nothing and restores the previous mode") {
  Tensor x = vec({1, 2}).requires_grad_();
  CHECK(grad_enabled());
  {
    NoGradGuard ng;
    CHECK_FALSE(grad_enabled());
    Tensor y = mul(x, 2.0f);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.is_leaf());
    {
      NoGradGuard inner;
      CHECK_FALSE(grad_enabled());
    }
    CHECK_FALSE(grad_enabled());
    CHECK_THROWS_AS(sum(y).backward(), std::runtime_error);
  }
  CHECK(grad_enabled());
  Tensor y = mul(x, 2.0f);
  CHECK(y.requires_grad());
  CHECK_FALSE(y.is_leaf());
}

TEST_CASE("inputs that do not require grad get no gradient") {
  Tensor a = vec({1, 2}).requires_grad_();
  Tensor b = vec({3, 4});
  sum(mul(a, b)).backward();
  CHECK(values(a.grad()) == std::vector<float>{3, 4});
  CHECK_FALSE(b.grad().defined());
  Tensor c = mul(b, b);
  CHECK_FALSE(c.requires_grad());
}

TEST_CASE("backward twice through the same graph throws a clear error") {
  Tensor x = vec({1, 2}).requires_grad_();
  Tensor loss = sum(relu(x));
  loss.backward();
  const std::string msg = message_of<std::runtime_error>([&] { loss.backward(); });
  CHECK(contains(msg, "twice"));
  CHECK(contains(msg, "sum"));  // names the op whose saved tensors are gone
  // The first backward's gradient is intact.
  CHECK(values(x.grad()) == std::vector<float>{1, 1});
  // A shared subgraph already consumed by another loss also throws.
  Tensor h = relu(x);
  sum(h).backward();
  const std::string msg2 = message_of<std::runtime_error>([&] { mean(h).backward(); });
  CHECK(contains(msg2, "relu"));
}

TEST_CASE("backward from a non-scalar throws unless the output gradient is given") {
  Tensor x = vec({1, 2, 3}).requires_grad_();
  Tensor y = mul(x, 2.0f);
  const std::string msg = message_of<std::runtime_error>([&] { y.backward(); });
  CHECK(contains(msg, "[3]"));
  CHECK(contains(msg, "one-element"));
  CHECK_THROWS_AS(y.backward(Tensor::zeros({4})), std::invalid_argument);
  y.backward(vec({1, 10, 100}));
  CHECK(values(x.grad()) == std::vector<float>{2, 20, 200});
}

TEST_CASE("detach cuts the graph but shares the data") {
  Tensor x = vec({1, 2}).requires_grad_();
  Tensor y = mul(x, 3.0f);
  Tensor d = y.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.is_leaf());
  CHECK(d.data() == y.data());
  // L = sum(y * detach(y)): only the first factor carries the gradient.
  sum(mul(y, d)).backward();
  CHECK(values(x.grad()) == std::vector<float>{9, 18});  // 3 * d
  // A detached tensor can become a new leaf.
  Tensor leaf = y.detach().requires_grad_();
  sum(leaf).backward();
  CHECK(values(leaf.grad()) == std::vector<float>{1, 1});
  CHECK_THROWS_AS(mul(x, 2.0f).requires_grad_(false), std::logic_error);
}

TEST_CASE("backward on a leaf seeds its own gradient") {
  Tensor x = Tensor::scalar(2.0f).requires_grad_();
  x.backward();
  CHECK(x.grad().item() == 1.0f);
  Tensor n = Tensor::scalar(1.0f);
  CHECK_THROWS_AS(n.backward(), std::runtime_error);
}

TEST_CASE("record() attaches custom backward rules and validates them") {
  Tensor x = vec({1, 2}).requires_grad_();
  // A custom op y = 5x with its rule.
  auto five = [](const Tensor& in) {
    Tensor out = in.detach().clone();
    for (int64_t i = 0; i < out.numel(); ++i) out.data()[i] *= 5.0f;
    return record("times5", out, {in}, [](const Tensor& g) -> std::vector<Tensor> {
      Tensor d = g.clone();
      for (int64_t i = 0; i < d.numel(); ++i) d.data()[i] *= 5.0f;
      return {d};
    });
  };
  sum(five(x)).backward();
  CHECK(values(x.grad()) == std::vector<float>{5, 5});

  // A rule returning the wrong shape is reported with the op's name.
  Tensor bad = record("badshape", Tensor::zeros({2}), {x},
                      [](const Tensor&) -> std::vector<Tensor> { return {Tensor::zeros({3})}; });
  const std::string msg = message_of<std::runtime_error>([&] { sum(bad).backward(); });
  CHECK(contains(msg, "badshape"));
  // A rule returning the wrong number of gradients.
  Tensor bad2 = record("badcount", Tensor::zeros({2}), {x},
                       [](const Tensor&) -> std::vector<Tensor> { return {}; });
  CHECK(contains(message_of<std::runtime_error>([&] { sum(bad2).backward(); }), "badcount"));
  // The output must be fresh.
  Tensor y = mul(x, 2.0f);
  CHECK_THROWS_AS(record("again", y, {x}, [](const Tensor& g) -> std::vector<Tensor> { return {g}; }),
                  std::invalid_argument);
  // Under no_grad, record() returns the output untouched.
  NoGradGuard ng;
  Tensor out = record("noop", Tensor::zeros({2}), {x}, nullptr);
  CHECK_FALSE(out.requires_grad());
}

TEST_CASE("shape errors name the op and the shapes") {
  Rng rng(3);
  Tensor x = Tensor::randn({2, 3, 5, 5}, rng);
  auto msg = [](auto&& fn) { return message_of<std::invalid_argument>(fn); };
  std::string m = msg([&] { conv2d(x, Tensor::zeros({4, 2, 3, 3}), {}); });
  CHECK(contains(m, "conv2d"));
  CHECK(contains(m, "[2, 3, 5, 5]"));
  CHECK(contains(m, "[4, 2, 3, 3]"));
  CHECK(contains(msg([&] { conv2d(x, Tensor::zeros({4, 3, 3, 3}), Tensor::zeros({5})); }), "bias"));
  CHECK(contains(msg([&] { conv2d(x, Tensor::zeros({4, 3, 3, 3}), {}, {.stride = 0}); }), "stride"));
  CHECK(contains(msg([&] { conv2d(x, Tensor::zeros({4, 3, 3, 3}), {}, {.pad = -1}); }), "pad"));
  CHECK(contains(msg([&] { conv2d(x, Tensor::zeros({4, 1, 3, 3}), {}, {.groups = 2}); }), "groups"));
  CHECK(contains(msg([&] { conv2d(x, Tensor::zeros({4, 3, 7, 7}), {}); }), "taller than the padded input"));
  CHECK(contains(msg([&] { conv2d(Tensor::zeros({3, 5, 5}), Tensor::zeros({4, 3, 3, 3}), {}); }), "conv2d"));
  m = msg([&] { linear(Tensor::zeros({2, 4}), Tensor::zeros({3, 5}), {}); });
  CHECK(contains(m, "linear"));
  CHECK(contains(m, "[3, 5]"));
  CHECK(contains(msg([&] { matmul(Tensor::zeros({2, 4}), Tensor::zeros({3, 5})); }), "matmul"));
  m = msg([&] { add(Tensor::zeros({2, 3}), Tensor::zeros({4})); });
  CHECK(contains(m, "add"));
  CHECK(contains(m, "[2, 3]"));
  CHECK(contains(m, "[4]"));
  CHECK(contains(msg([&] { mul(Tensor::zeros({2, 3}), Tensor::zeros({2, 2})); }), "mul"));
  CHECK(contains(msg([&] { sub(Tensor::zeros({3}), Tensor::zeros({2, 3})); }), "sub"));
  Tensor rm = Tensor::zeros({3}), rv = Tensor::full({3}, 1.0f), rm4 = Tensor::zeros({4}), rv4 = Tensor::zeros({4});
  CHECK(contains(msg([&] { batch_norm(x, Tensor::zeros({4}), {}, rm, rv, true); }), "batch_norm"));
  CHECK(contains(msg([&] { batch_norm(x, {}, {}, rm4, rv4, false); }), "running_mean"));
  Tensor none;
  CHECK(contains(msg([&] { batch_norm(x, {}, {}, none, none, false); }), "eval"));
  CHECK(contains(msg([&] { max_pool2d(x, 7, 1); }), "max_pool2d"));
  CHECK(contains(msg([&] { avg_pool2d(x, 2, 0); }), "avg_pool2d"));
  CHECK(contains(msg([&] { global_avg_pool(Tensor::zeros({2, 3})); }), "global_avg_pool"));
  m = msg([&] { reshape(x, {7, -1}); });
  CHECK(contains(m, "reshape"));
  CHECK(contains(m, "[2, 3, 5, 5]"));
  CHECK(contains(msg([&] { reshape(x, {-1, -1}); }), "reshape"));
  std::vector<int> labels{0, 1};
  CHECK(contains(msg([&] { cross_entropy(Tensor::zeros({3, 4}), labels); }), "cross_entropy"));
  std::vector<int> bad_label{0, 4};
  m = msg([&] { cross_entropy(Tensor::zeros({2, 4}), bad_label); });
  CHECK(contains(m, "label 4"));
  CHECK(contains(msg([&] { cross_entropy(Tensor::zeros({2, 4}), labels, 1.5f); }), "label_smoothing"));
  m = msg([&] { cross_entropy(Tensor::zeros({2, 4}), Tensor::full({2, 3}, 1.0f / 3)); });
  CHECK(contains(m, "targets [2, 3]"));
  CHECK(contains(m, "logits [2, 4]"));
  Tensor soft = Tensor::full({2, 4}, 0.25f);
  soft.data()[5] = -0.25f;
  soft.data()[6] = 0.75f;
  CHECK(contains(msg([&] { cross_entropy(Tensor::zeros({2, 4}), soft); }), "target row 1 has entry -0.25"));
  soft.data()[5] = 0.5f;  // row 1 now sums to 1.75
  CHECK(contains(msg([&] { cross_entropy(Tensor::zeros({2, 4}), soft); }), "target row 1 sums to 1.75"));
  CHECK(contains(msg([&] { softmax(Tensor::zeros({2, 3, 4})); }), "softmax"));
  CHECK(contains(msg([&] { softmax(Tensor::zeros({0, 4})); }), "empty logits"));
  CHECK(contains(msg([&] { one_hot(bad_label, 4); }), "one_hot: label 4 at index 1"));
  CHECK(contains(msg([&] { one_hot(labels, 0); }), "classes must be > 0"));
  CHECK(contains(msg([&] { one_hot(labels, 4, -0.1f); }), "label_smoothing"));
  CHECK(contains(msg([&] { relu(Tensor()); }), "relu"));
  CHECK(contains(msg([&] { mean(Tensor::zeros({0})); }), "mean"));
}

TEST_CASE("parallel_for visits every index once, at any thread count") {
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    CHECK(num_threads() == std::min(threads, hardware_threads()));
    for (int64_t grain : {1, 7, 1000}) {
      std::vector<std::atomic<int>> hits(5000);
      std::atomic<int64_t> longest{0};
      parallel_for(3, 5000, grain, [&](int64_t b, int64_t e) {
        int64_t cur = longest.load();
        while (e - b > cur && !longest.compare_exchange_weak(cur, e - b)) {
        }
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
      });
      int bad = 0;
      for (int64_t i = 0; i < 5000; ++i) bad += hits[static_cast<size_t>(i)] != (i >= 3 ? 1 : 0);
      CHECK(bad == 0);
      CHECK(longest.load() <= grain);
    }
    // Exceptions propagate to the caller.
    CHECK_THROWS_AS(parallel_for(0, 100, 1,
                                 [](int64_t b, int64_t) {
                                   if (b == 57) throw std::runtime_error("task 57");
                                 }),
                    std::runtime_error);
    // An empty range calls nothing.
    bool called = false;
    parallel_for(5, 5, 1, [&](int64_t, int64_t) { called = true; });
    CHECK_FALSE(called);
  }
  CHECK_THROWS_AS(set_num_threads(-1), std::invalid_argument);
  set_num_threads(0);
  CHECK(num_threads() == hardware_threads());
}

TEST_CASE("the allocator reuses freed buffers of the same size") {
  alloc_release_cache();
  const AllocStats before = alloc_stats();
  CHECK(before.cached_bytes == 0);
  float* first = nullptr;
  {
    Tensor t = Tensor::empty({1000, 37});
    first = t.data();
    CHECK(reinterpret_cast<uintptr_t>(first) % 64 == 0);
  }
  Tensor u = Tensor::empty({37, 1000});  // same size, different shape
  const AllocStats after = alloc_stats();
#if defined(__SANITIZE_ADDRESS__)
  (void)after;
  MESSAGE("AddressSanitizer build: the cache is bypassed");
#else
  CHECK(u.data() == first);
  CHECK(after.hits == before.hits + 1);
#endif
  alloc_release_cache();
  CHECK(alloc_stats().cached_bytes == 0);
}
