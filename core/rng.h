// core/rng.h: a small, fast, seedable random generator (PCG32, O'Neill 2014).
// Everything random in Octet (weight init, shuffling, augmentation, stochastic
// rounding) draws from an Rng seeded from the run's seed, so a run is
// reproducible bit for bit. Streams for parallel work are derived with
// Rng(seed, stream): different streams never overlap.
#pragma once

#include <cmath>
#include <cstdint>

namespace octet {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0, uint64_t stream = 0) { reseed(seed, stream); }

  void reseed(uint64_t seed, uint64_t stream = 0) {
    state_ = 0;
    inc_ = (stream << 1u) | 1u;
    next_u32();
    state_ += seed;
    next_u32();
  }

  uint32_t next_u32() {
    uint64_t old = state_;
    state_ = old * 6364136223846793005ULL + inc_;
    uint32_t xorshifted = static_cast<uint32_t>(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = static_cast<uint32_t>(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
  }

  // Uniform in [0, n), unbiased (Lemire's method with rejection).
  uint32_t below(uint32_t n) {
    uint64_t m = uint64_t(next_u32()) * n;
    uint32_t low = static_cast<uint32_t>(m);
    if (low < n) {
      uint32_t threshold = (0u - n) % n;
      while (low < threshold) {
        m = uint64_t(next_u32()) * n;
        low = static_cast<uint32_t>(m);
      }
    }
    return static_cast<uint32_t>(m >> 32);
  }

  // Uniform in [0, 1) with 24 random bits (every value exactly a float).
  float uniform() { return static_cast<float>(next_u32() >> 8) * (1.0f / 16777216.0f); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }

  // Standard normal (Box-Muller; no cached second value, so the state is
  // exactly (state_, inc_) and checkpoints need nothing else).
  float normal() {
    float u1 = uniform();
    float u2 = uniform();
    if (u1 < 1e-12f) u1 = 1e-12f;
    return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.283185307179586f * u2);
  }

  // Raw state, for checkpoints.
  uint64_t state() const { return state_; }
  uint64_t increment() const { return inc_; }
  void set_state(uint64_t state, uint64_t inc) {
    state_ = state;
    inc_ = inc;
  }

 private:
  uint64_t state_ = 0;
  uint64_t inc_ = 1;
};

}  // namespace octet
