#!/usr/bin/env bash
# The installed engine, used the way a program outside this repository uses
# it: builds the engine alone (OCTET_ENGINE_ONLY), installs it into a
# temporary prefix, and builds examples/classify against that install, with
# CMake's find_package(Octet) (the shared and the static library) and with
# pkg-config alone. All of them classify one image and must print the same.
# Then the same for aarch64: the engine cross-built (cmake/aarch64.cmake, as
# scripts/ci_arm.sh), installed into a second prefix, the example
# cross-compiled against it and run under qemu-aarch64: its output must equal
# x86's, the engine being bit exact. Also checks that liboctet_engine.so
# exports its API and nothing else (cmake/octet_engine.map), and prints the
# sizes of the libraries and of the example.
#
# The model is octet-run's --write-sample-model (a ResNet-20 with random
# weights), the image a 32x32 PNG drawn by a small C program with
# stb_image_write. OCTET_INSTALL_ARM=0 skips the aarch64 half.
set -euo pipefail
cd "$(dirname "$0")/.."
src="$PWD"
build="${OCTET_INSTALL_BUILD:-build-install}"
arm_build="${OCTET_INSTALL_ARM_BUILD:-build-install-arm}"
jobs="${OCTET_JOBS:-2}"
arm="${OCTET_INSTALL_ARM:-1}"
engine_targets=(--target octet_engine octet_engine_shared octet-run)  # what is installed, not the tests

tools=(cmake cc pkg-config nm strip)
[ "$arm" = 1 ] && tools+=(aarch64-linux-gnu-g++ aarch64-linux-gnu-strip qemu-aarch64)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "ci_install: $tool not found (scripts/setup.sh; g++-aarch64-linux-gnu qemu-user for Arm)"; exit 1; }
done
[ -f /usr/include/stb/stb_image.h ] || { echo "ci_install: stb_image.h not found (apt-get install libstb-dev)"; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/octet-install.XXXXXX")"
trap 'rm -rf "$work"' EXIT

show_size() {  # show_size FILE STRIP|"" LABEL: bytes, and stripped bytes for a program or shared library
  local bytes
  bytes=$(stat -c %s "$1")
  if [ -n "$2" ]; then
    "$2" -o "$work/stripped" "$1"
    printf '  %-40s %9d bytes (stripped %d)\n' "$3" "$bytes" "$(stat -c %s "$work/stripped")"
  else
    printf '  %-40s %9d bytes\n' "$3" "$bytes"
  fi
}
same() {  # same EXPECTED ACTUAL: identical outputs, else the difference
  cmp -s "$1" "$2" || { echo "ci_install: $2 differs from $1:"; diff "$1" "$2"; exit 1; }
}

# ---- x86-64 -------------------------------------------------------------------
echo "ci_install: engine-only build in $build, installed into $work/x86"
cmake -S . -B "$build" -DOCTET_ENGINE_ONLY=ON ${OCTET_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$jobs" "${engine_targets[@]}" >/dev/null
cmake --install "$build" --prefix "$work/x86" >/dev/null
prefix="$work/x86"

# The shared library exports the C API and the C++ API of the installed
# headers only (demangled names without their parameters; the same list as
# cmake/octet_engine.map, whose globs must catch nothing more).
api='octet_[a-z0-9_]+|octet::engine::(Model|Session|ConvKernel)::[^I].*|(typeinfo|typeinfo name|vtable) for octet::engine::.*'
api+='|octet::engine::(profile_table|top_k|argmax|errc_name|dtype_name|op_name|TensorDesc::numel|ModelDesc::find_metadata'
api+='|decode|read_model_file|crc32|fix_crc|packed_size|unpack_bits|conv2d_ref|add_ref|max_pool_ref|avg_pool_ref'
api+='|global_avg_pool_ref|input_u8_ref|best_isa|isa_name|isa_supported|parallel_for|set_num_threads|num_threads|add_fast)'
exports="$(nm -D --defined-only -C "$prefix/lib/liboctet_engine.so" | cut -d' ' -f3- | sed -e 's/\[abi:[^]]*\]//g' -e 's/(.*//' | sort -u)"
extra="$(grep -v -x -E "$api" <<<"$exports" || true)"
[ -z "$extra" ] || { echo "ci_install: liboctet_engine.so exports more than its API:"; echo "$extra"; exit 1; }
for name in octet_session_run octet::engine::Session::run octet::engine::Model::load "typeinfo for octet::engine::FormatError"; do
  grep -q -x -F "$name" <<<"$exports" || { echo "ci_install: liboctet_engine.so does not export $name"; exit 1; }
done
echo "ci_install: liboctet_engine.so exports $(wc -l <<<"$exports") names, all of the API"

# A model and two images: one of the model's input size, one a pixel wider.
cd "$work"
"$prefix/bin/octet-run" --write-sample-model model.oct
cat >png.c <<'EOF'
/* png W H FILE: a W x H RGB PNG of gradients, the same bytes on every run. */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#include <stdlib.h>
int main(int argc, char** argv) {
  int w, h, x, y;
  unsigned char* p;
  if (argc != 4) return 2;
  w = atoi(argv[1]), h = atoi(argv[2]);
  p = malloc((size_t)w * h * 3);
  for (y = 0; y < h; ++y)
    for (x = 0; x < w; ++x) {
      p[(y * w + x) * 3 + 0] = (unsigned char)(x * 255 / (w - 1));
      p[(y * w + x) * 3 + 1] = (unsigned char)(y * 255 / (h - 1));
      p[(y * w + x) * 3 + 2] = (unsigned char)((x * 7 + y * 13) % 256);
    }
  return !stbi_write_png(argv[3], w, h, 3, p, w * 3);
}
EOF
cc -std=c99 -O1 -I/usr/include/stb png.c -o png
./png 32 32 image.png
./png 33 32 wide.png

echo "ci_install: examples/classify with find_package(Octet) (shared, then static) and with pkg-config"
cmake -S "$src/examples/classify" -B cmake-shared -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build cmake-shared >/dev/null
cmake -S "$src/examples/classify" -B cmake-static -DCMAKE_PREFIX_PATH="$prefix" -DOCTET_ENGINE_STATIC=ON >/dev/null
cmake --build cmake-static >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# shellcheck disable=SC2046  # the flags are words
cc -std=c99 -O2 "$src/examples/classify/classify.c" -o classify-pc $(pkg-config --cflags stb) $(pkg-config --cflags --libs octet-engine)

cmake-shared/classify model.oct image.png >x86-cmake-shared.txt
cmake-static/classify model.oct image.png >x86-cmake-static.txt
LD_LIBRARY_PATH="$prefix/lib" ./classify-pc model.oct image.png >x86-pkg-config.txt
echo "ci_install: x86-64 output:"
cat x86-cmake-shared.txt
same x86-cmake-shared.txt x86-cmake-static.txt
same x86-cmake-shared.txt x86-pkg-config.txt
if cmake-shared/classify model.oct wide.png 2>wide.err; then
  echo "ci_install: classify accepted a 33x32 image for a 32x32 model"; exit 1
fi
grep -q "wide.png is 33x32" wide.err || { echo "ci_install: unclear error for a wrong size:"; cat wide.err; exit 1; }
echo "ci_install: x86-64: the three builds print the same; a wrong size is refused: $(cat wide.err)"
for t in 1 2; do
  cmake-static/classify model.oct image.png "$t" >"x86-threads-$t.txt"
  same x86-cmake-shared.txt "x86-threads-$t.txt"
done
status=0
cmake-static/classify model.oct image.png 0 2>threads.err || status=$?
[ "$status" = 2 ] && grep -q "THREADS must be a whole number" threads.err ||
  { echo "ci_install: classify THREADS=0 gave status $status:"; cat threads.err; exit 1; }
echo "ci_install: x86-64: the same at THREADS 1 and 2; THREADS 0 is refused"

echo "ci_install: sizes (x86-64)"
show_size "$prefix/lib/liboctet_engine.a" "" liboctet_engine.a
show_size "$(readlink -f "$prefix/lib/liboctet_engine.so")" strip "$(basename "$(readlink -f "$prefix/lib/liboctet_engine.so")")"
show_size cmake-shared/classify strip "classify (liboctet_engine.so)"
show_size cmake-static/classify strip "classify (liboctet_engine.a)"

[ "$arm" = 1 ] || { echo "ci_install: the install works (x86-64; aarch64 skipped)"; exit 0; }

# ---- aarch64 ----------------------------------------------------------------------
cd "$src"
echo "ci_install: aarch64 engine-only cross build in $arm_build, installed into $work/arm"
mkdir -p "$arm_build/host-include"
ln -sfn /usr/include/doctest "$arm_build/host-include/doctest"  # as scripts/ci_arm.sh: the tests' header alone
cmake -S . -B "$arm_build" -DCMAKE_TOOLCHAIN_FILE="$src/cmake/aarch64.cmake" -DOCTET_ENGINE_ONLY=ON \
  -DOCTET_DOCTEST_INCLUDE="$(cd "$arm_build" && pwd)/host-include" ${OCTET_CMAKE_ARGS:-} >/dev/null
cmake --build "$arm_build" -j "$jobs" "${engine_targets[@]}" >/dev/null
cmake --install "$arm_build" --prefix "$work/arm" >/dev/null
arm_prefix="$work/arm"
qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)

cd "$work"
# The Arm writer gives the same model file (cmake/aarch64.cmake: no FMA contraction).
"${qemu[@]}" "$arm_prefix/bin/octet-run" --write-sample-model model-arm.oct
cmp model.oct model-arm.oct || { echo "ci_install: the Arm octet-run writes another model file"; exit 1; }

# The toolchain file searches the Arm sysroot only; Octet_DIR points
# find_package at the install. stb_image.h is the host's (a header alone).
for kind in shared static; do
  static=OFF
  [ "$kind" = static ] && static=ON
  cmake -S "$src/examples/classify" -B "arm-$kind" -DCMAKE_TOOLCHAIN_FILE="$src/cmake/aarch64.cmake" \
    -DOctet_DIR="$arm_prefix/lib/cmake/Octet" -DSTB_IMAGE_INCLUDE_DIR=/usr/include/stb -DOCTET_ENGINE_STATIC=$static >/dev/null
  cmake --build "arm-$kind" >/dev/null
  "${qemu[@]}" "arm-$kind/classify" model.oct image.png >"arm-$kind.txt"
  # A Cortex-A53 has no dot product: the other NEON kernels, the same output.
  QEMU_CPU=cortex-a53 "${qemu[@]}" "arm-$kind/classify" model.oct image.png >"arm-$kind-a53.txt"
  same x86-cmake-shared.txt "arm-$kind.txt"
  same x86-cmake-shared.txt "arm-$kind-a53.txt"
done
echo "ci_install: aarch64 under qemu (max and cortex-a53, shared and static) prints what x86-64 prints"

echo "ci_install: sizes (aarch64)"
show_size "$arm_prefix/lib/liboctet_engine.a" "" liboctet_engine.a
show_size "$(readlink -f "$arm_prefix/lib/liboctet_engine.so")" aarch64-linux-gnu-strip "$(basename "$(readlink -f "$arm_prefix/lib/liboctet_engine.so")")"
show_size arm-shared/classify aarch64-linux-gnu-strip "classify (liboctet_engine.so)"
show_size arm-static/classify aarch64-linux-gnu-strip "classify (liboctet_engine.a)"
echo "ci_install: the install works on x86-64 and aarch64"
