# cmake/aarch64.cmake: toolchain file for the Arm (aarch64 Linux) cross build
# with Debian's g++-aarch64-linux-gnu. Test executables run through
# qemu-aarch64 (Debian qemu-user) with the cross sysroot:
#   cmake -S . -B build-arm -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64.cmake -DOCTET_ENGINE_ONLY=ON
#   cmake --build build-arm && ctest --test-dir build-arm
# (scripts/ci_arm.sh does this.)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Libraries and packages come from the Arm sysroot only, never from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# add_test() commands run under the emulator.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64;-L;/usr/aarch64-linux-gnu)

# No fused multiply-add contraction of floating-point expressions: GCC may
# contract a * b + c into one rounding on aarch64 (never on baseline x86-64), so the model
# writer's offline double math (scales, QuantizeMultiplier inputs) would give
# other bytes than on x86-64. With it off, both give the same model files.
set(CMAKE_C_FLAGS_INIT "-ffp-contract=off")
set(CMAKE_CXX_FLAGS_INIT "-ffp-contract=off")
