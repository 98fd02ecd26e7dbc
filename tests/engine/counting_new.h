// tests/engine/counting_new.h: the heap-allocation counter of the engine's
// "run() allocates nothing" tests, and the global operator new / delete
// replaced by versions that count every call into it. A file that counts
// glibc's malloc family itself (test_footprint.cpp) defines
// OCTET_COUNT_MALLOC_ITSELF first and gets the counter alone. Include it in
// one file of a test executable; its suite is labelled "replaces-new".
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

inline std::atomic<long> g_allocations{0};

#ifndef OCTET_COUNT_MALLOC_ITSELF
// The replacements pair malloc with free by design; GCC's heuristic sees
// operator new's pointer reach free() and would warn.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace octet::testing {
inline void* counted_new(std::size_t n, std::size_t align) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) n = 1;
  void* p = align <= alignof(std::max_align_t) ? std::malloc(n)
                                               : std::aligned_alloc(align, (n + align - 1) / align * align);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace octet::testing

void* operator new(std::size_t n) { return octet::testing::counted_new(n, 0); }
void* operator new[](std::size_t n) { return octet::testing::counted_new(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return octet::testing::counted_new(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return octet::testing::counted_new(n, static_cast<std::size_t>(a)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return octet::testing::counted_new(n, 0);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return octet::testing::counted_new(n, 0);
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
#endif
