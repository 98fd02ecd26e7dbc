// ctest-labels: replaces-new
// Session::run() allocates nothing: this file replaces the global operator
// new/delete with counting versions and runs ResNet-shaped models.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "engine/engine.h"
#include "engine/samples.h"

// The replacements below pair malloc with free by design; GCC's heuristic
// sees operator new's pointer reach free() and would warn.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
std::atomic<long> g_allocations{0};

void* counted(std::size_t n, std::size_t align) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) n = 1;
  void* p = align <= alignof(std::max_align_t) ? std::malloc(n) : std::aligned_alloc(align, (n + align - 1) / align * align);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return counted(n, 0); }
void* operator new[](std::size_t n) { return counted(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return counted(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted(n, static_cast<std::size_t>(a)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted(n, 0);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted(n, 0);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

using namespace octet::engine;

TEST_CASE("the counting operator new sees allocations") {
  const long before = g_allocations.load();
  auto* v = new std::vector<int>(100);
  delete v;
  CHECK(g_allocations.load() >= before + 2);
}

TEST_CASE("Session::run allocates nothing, single- and multi-threaded") {
  ResNetSpec spec;
  spec.blocks_per_stage = 1;  // keep it quick under the sanitizers
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const auto model = Model::from_bytes(random_resnet(spec).serialize());
    Session s(model, 4);
    std::vector<uint8_t> px(model->input_bytes() * 4, 99);
    s.run(px.data(), 4);  // warm-up: a thread pool may start lazily on the first parallel call
    const long before = g_allocations.load();
    for (int batch : {4, 1, 3}) s.run(px.data(), batch);
    const long allocated = g_allocations.load() - before;
    INFO("threads " << threads);
    CHECK(allocated == 0);
  }
  set_num_threads(0);
}
