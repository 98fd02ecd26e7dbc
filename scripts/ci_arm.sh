#!/usr/bin/env bash
# The engine for Arm: cross-builds engine/ and its tests (OCTET_ENGINE_ONLY)
# with g++-aarch64-linux-gnu (cmake/aarch64.cmake; no oneTBB for aarch64, so
# the engine runs on its own std::thread pool) and runs the tests under
# qemu-aarch64 with the cross sysroot. The tests include the NEON kernels against the reference
# and the int8 logits of a fixed ResNet-20-shaped model against a golden
# hash computed on x86 (tests/engine/test_kernels_arch.cpp): outputs
# identical to x86, on a CPU with and one without the dot product.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${OCTET_ARM_BUILD:-build-arm}"

for tool in aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$tool" >/dev/null || { echo "ci_arm: $tool not found (apt-get install g++-aarch64-linux-gnu qemu-user)"; exit 1; }
done

# doctest is header-only: give the cross build the host's header alone (not
# all of /usr/include, whose x86 headers would shadow the sysroot's).
mkdir -p "$build/host-include"
ln -sfn /usr/include/doctest "$build/host-include/doctest"

cmake -S . -B "$build" -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64.cmake" -DOCTET_ENGINE_ONLY=ON \
  -DOCTET_DOCTEST_INCLUDE="$PWD/$build/host-include" ${OCTET_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "${OCTET_JOBS:-2}"

# Twice: on qemu's default CPU (max: NEON with the dot product, the
# kernels_neon_dot path) and on a Cortex-A53 (NEON without the dot product,
# the path of most older boards). OCTET_ARM_CPUS picks others.
for cpu in ${OCTET_ARM_CPUS:-max cortex-a53}; do
  echo "ci_arm: engine tests under qemu-aarch64 -cpu $cpu"
  (cd "$build" && QEMU_CPU="$cpu" ctest --output-on-failure -R '^engine\.' -j "${OCTET_JOBS:-2}")
done
echo "ci_arm: engine tests pass under qemu-aarch64 (${OCTET_ARM_CPUS:-max cortex-a53})"
