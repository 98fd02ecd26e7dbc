#!/usr/bin/env bash
# The engine's own thread pool (engine/parallel.cpp without oneTBB: what the
# Arm build runs on) under ThreadSanitizer: an x86 clang build of the engine
# alone with OCTET_ENGINE_NO_TBB, then every engine test on it (the one that
# replaces operator new is left out: TSan's runtime defines it). Fails on any
# data race report.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${OCTET_TSAN_BUILD:-build-tsan}"

CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOCTET_ENGINE_ONLY=ON \
  -DOCTET_ENGINE_NO_TBB=ON -DOCTET_SANITIZE=thread ${OCTET_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$(nproc)"
# setarch -R: no address-space randomization, which clang-14's TSan runtime
# cannot map around on kernels with many random mmap bits.
(cd "$build" && TSAN_OPTIONS=halt_on_error=1 setarch "$(uname -m)" -R ctest --output-on-failure -R '^engine\.' -j "$(nproc)")
echo "ci_tsan: the engine tests pass on its own thread pool under ThreadSanitizer"
