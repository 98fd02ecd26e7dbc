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
#include "tests/engine/counting_new.h"


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
