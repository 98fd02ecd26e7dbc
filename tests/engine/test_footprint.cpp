// ctest-labels: replaces-new
// The footprint of classifying with ResNet-20 through the C API
// (engine/octet_engine.h): the heap allocations of a run after the first.
//
// On one thread: none, in each of 10 runs after the first (checked). On two
// threads with oneTBB, the engine allocates nothing itself, but oneTBB's
// per-thread task pools keep growing for a few runs after the first (measured
// here: 1 to 8 allocations in all, in runs 2 to ~100, when exactly depends on
// how the tasks happen to be split and stolen; each a 256-byte task of
// parallel_for's start_for, from tbb::detail::r1::allocate(small_object_pool)
// on a worker thread), then stop. So on two threads
// the 10 runs after the first are reported (a doctest WARN if they allocated)
// and what is checked is that the allocations stop: within 1000 runs there
// are 100 runs in a row without any (a per-run allocation could not pass).
//
// What is counted: this file defines malloc, calloc, realloc, aligned_alloc,
// posix_memalign, memalign, valloc and pvalloc (glibc, no sanitizer): the
// definitions in the executable take the place of glibc's for the whole
// process, every shared library included (libstdc++'s operator new and
// operator new[], which call malloc / aligned_alloc, oneTBB, the engine), and
// forward to glibc's own __libc_* functions; free forwards to __libc_free, so
// every block still comes from and goes back to glibc. It also refuses to
// dlopen libtbbmalloc, so that oneTBB, which would otherwise allocate from
// that library's pools without calling malloc, falls back to malloc. Counted:
// every call of those functions from any thread. Not counted: mmap, and
// thread stacks. A sanitizer build (the sanitizer owns malloc) counts the global
// operator new instead (oneTBB's allocations are then not seen); ThreadSanitizer builds leave this file out (the
// "replaces-new" label, cmake/Dependencies.cmake).
//
// The model is the sample ResNet-20 of `octet-run --write-sample-model`
// (random_resnet of engine/samples.h with its defaults: 32x32x3, 10 classes,
// 8-bit weights, seed 1), written to a file and opened with
// octet_model_open_file as a program would. The test also prints the model
// file's size and the session's arena (the C++ Session's arena_bytes, which
// the C API does not expose) for batch 1.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/octet_engine.h"
#include "engine/samples.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer) || __has_feature(thread_sanitizer)
#define OCTET_FOOTPRINT_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define OCTET_FOOTPRINT_SANITIZER 1
#endif

#if defined(__GLIBC__) && !defined(OCTET_FOOTPRINT_SANITIZER)
#define OCTET_COUNT_MALLOC_ITSELF 1
#endif
#include "tests/engine/counting_new.h"

#if defined(__GLIBC__) && !defined(OCTET_FOOTPRINT_SANITIZER)
// ---- malloc and friends, counted, over glibc's own ----------------------------
#define OCTET_COUNTS \
  "malloc, calloc, realloc, aligned_alloc, posix_memalign, memalign, valloc, pvalloc (operator new and oneTBB's allocator included)"
#define OCTET_COUNTS_TBB 1
extern "C" {
// glibc's allocator under its own names (exported for exactly this use).
void* __libc_malloc(size_t) noexcept;
void* __libc_calloc(size_t, size_t) noexcept;
void* __libc_realloc(void*, size_t) noexcept;
void* __libc_memalign(size_t, size_t) noexcept;
void* __libc_valloc(size_t) noexcept;
void* __libc_pvalloc(size_t) noexcept;
void __libc_free(void*) noexcept;

void* malloc(size_t n) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t size) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(n, size);
}
void* realloc(void* p, size_t n) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(p, n);
}
void free(void* p) noexcept { __libc_free(p); }
void* memalign(size_t align, size_t n) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(align, n);
}
void* aligned_alloc(size_t align, size_t n) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(align, n);
}
// oneTBB allocates through libtbbmalloc when it can dlopen it, and then
// calls it directly (not through malloc). Refused here, oneTBB falls back to
// malloc (its documented fallback), so its allocations are counted too: the
// same calls of its allocator, on glibc's heap instead of tbbmalloc's pools.
void* dlopen(const char* file, int mode) noexcept {
  using Dlopen = void* (*)(const char*, int);
  static const Dlopen real = reinterpret_cast<Dlopen>(dlsym(RTLD_NEXT, "dlopen"));
  // A path that does not exist: dlopen fails and dlerror() says so.
  if (file && std::strstr(file, "libtbbmalloc")) return real("/nonexistent/libtbbmalloc (refused by test_footprint)", mode);
  return real(file, mode);
}

int posix_memalign(void** out, size_t align, size_t n) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (align < sizeof(void*) || (align & (align - 1)) != 0) return EINVAL;
  void* p = __libc_memalign(align, n);
  if (!p && n) return ENOMEM;
  *out = p;
  return 0;
}
void* valloc(size_t n) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_valloc(n);
}
void* pvalloc(size_t n) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_pvalloc(n);
}
}  // extern "C"

#else
// ---- the global operator new, counted (a sanitizer owns malloc) -------------------
#define OCTET_COUNTS "the global operator new / new[] (a sanitizer build: malloc is the sanitizer's)"
// (tests/engine/counting_new.h replaced it above.)
#endif

namespace fs = std::filesystem;
using namespace octet::engine;

namespace {

// Whether the process has libtbbmalloc mapped: oneTBB's own allocations then
// go there, which this file does not count (said in the output).
bool tbbmalloc_loaded() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find("libtbbmalloc") != std::string::npos) return true;
  return false;
}

struct SampleModel {
  fs::path dir = fs::temp_directory_path() / ("octet_footprint_test_" + std::to_string(::getpid()));
  fs::path path = dir / "resnet20.oct";
  SampleModel() {
    fs::create_directories(dir);
    random_resnet(ResNetSpec{}).write(path.string());  // what octet-run --write-sample-model writes
  }
  ~SampleModel() { fs::remove_all(dir); }
};

// Makes the optimizer assume `p` is read (so an allocation is not elided).
void escape(void* p) { asm volatile("" : : "r"(p) : "memory"); }

}  // namespace

TEST_CASE("the counters see the allocations they claim to count") {
  // Explicit calls, and pointers the compiler must assume are used: a
  // new-expression or a malloc / free pair may be elided by the optimizer.
  long before = g_allocations.load();
  void* a = ::operator new(100);
  escape(a);
  ::operator delete(a);
  void* b = ::operator new[](100, std::align_val_t{64});
  escape(b);
  ::operator delete[](b, std::align_val_t{64});
  CHECK(g_allocations.load() == before + 2);
#if defined(__GLIBC__) && !defined(OCTET_FOOTPRINT_SANITIZER)
  before = g_allocations.load();
  void* p = std::malloc(10);
  void* q = std::aligned_alloc(64, 128);
  void* r = nullptr;
  REQUIRE(posix_memalign(&r, 64, 256) == 0);
  void* c = std::calloc(4, 8);
  escape(p), escape(q), escape(r), escape(c);
  CHECK((reinterpret_cast<std::uintptr_t>(q) % 64 == 0 && reinterpret_cast<std::uintptr_t>(r) % 64 == 0));
  std::free(p);
  std::free(q);
  std::free(r);
  std::free(c);
  CHECK(g_allocations.load() == before + 4);
#endif
  MESSAGE("counted: " OCTET_COUNTS);
}

TEST_CASE("ResNet-20 through the C API: no allocation after the first run, on 1 and 2 threads") {
  SampleModel sample;
  const auto cxx = Model::load(sample.path.string());
  REQUIRE(cxx->desc().ops.size() == 33);  // ResNet-20: input, 21 conv, 9 add, pool, fc
  REQUIRE(cxx->num_classes() == 10);
  const size_t arena1 = Session(cxx, 1).arena_bytes();
  MESSAGE("model file " << fs::file_size(sample.path) << " bytes; arena for batch 1: " << arena1
                        << " bytes (unshared " << Session(cxx, 1).unshared_bytes() << "); "
                        << cxx->macs_per_image() << " multiply-adds per image; isa " << std::string(octet_isa_name()));

  std::vector<int8_t> reference;
  for (const int threads : {1, 2}) {
    CAPTURE(threads);
    REQUIRE(octet_set_num_threads(threads) == OCTET_OK);
    int got_threads = 0;
    REQUIRE(octet_get_num_threads(&got_threads) == OCTET_OK);
    CHECK(got_threads == threads);

    long mark = g_allocations.load();
    OctetModel* model = nullptr;
    REQUIRE_MESSAGE(octet_model_open_file(sample.path.string().c_str(), &model) == OCTET_OK, octet_last_error());
    OctetSession* session = nullptr;
    REQUIRE_MESSAGE(octet_session_create(model, 1, &session) == OCTET_OK, octet_last_error());
    const long at_open = g_allocations.load() - mark;

    size_t image_bytes = 0;
    REQUIRE(octet_model_input_bytes(model, &image_bytes) == OCTET_OK);
    REQUIRE(image_bytes == 32 * 32 * 3);
    std::mt19937_64 gen(5);
    std::vector<std::vector<uint8_t>> images(11, std::vector<uint8_t>(image_bytes));
    for (auto& im : images)
      for (auto& p : im) p = static_cast<uint8_t>(gen());
    std::vector<int8_t> logits(10 * images.size());
    std::vector<float> real(10);

    mark = g_allocations.load();
    REQUIRE_MESSAGE(octet_session_run(session, images[0].data(), image_bytes, 1, logits.data(), 10) == OCTET_OK,
                    octet_last_error());
    const long first_run = g_allocations.load() - mark;

    mark = g_allocations.load();
    int failures = 0;
    for (size_t i = 1; i < images.size(); ++i) {  // 10 runs, each a different image
      failures += octet_session_run(session, images[i].data(), image_bytes, 1, logits.data() + 10 * i, 10) != OCTET_OK;
    }
    failures += octet_session_run_float(session, images[1].data(), image_bytes, 1, real.data(), real.size()) != OCTET_OK;
    const long later = g_allocations.load() - mark;
    CHECK(failures == 0);

    MESSAGE(threads << " thread(s): " << at_open << " allocations to open the model and create the session, "
                    << first_run << " in the first run, " << later << " in the next 10 runs + 1 run_float"
                    << std::string(tbbmalloc_loaded() ? " (libtbbmalloc is loaded: oneTBB's allocations are NOT counted)"
                                                      : ""));
    if (threads == 1) {
      CHECK(later == 0);
    } else {
      WARN_MESSAGE(later == 0, "oneTBB's task pools were still growing after the first run");
      // Then they stop: 100 runs in a row without an allocation, within 1000.
      int clean = 0, runs = 0;
      long settling = 0;
      std::vector<int8_t> q(10);
      while (clean < 100 && runs < 1000) {
        const long before = g_allocations.load();
        failures += octet_session_run(session, images[runs % images.size()].data(), image_bytes, 1, q.data(), 10) !=
                    OCTET_OK;
        const long allocated = g_allocations.load() - before;
        settling += allocated;
        clean = allocated == 0 ? clean + 1 : 0;
        ++runs;
      }
      MESSAGE(threads << " thread(s): " << settling << " more allocations in " << runs
                      << " more runs, the last 100 of them without any");
      CHECK(failures == 0);
      CHECK(clean == 100);
    }
#ifdef OCTET_COUNTS_TBB
    CHECK_FALSE(tbbmalloc_loaded());  // oneTBB's allocations went through the counted malloc
#endif
    CHECK(at_open > 0);  // the counter works across the C API too

    // The same logits on every thread count, and not all images alike.
    if (reference.empty()) {
      reference = logits;
    } else {
      CHECK(logits == reference);
    }
    CHECK(std::vector<int8_t>(logits.begin(), logits.begin() + 10) !=
          std::vector<int8_t>(logits.begin() + 10, logits.begin() + 20));

    octet_session_free(session);
    octet_model_free(model);
  }
  octet_set_num_threads(0);
}
