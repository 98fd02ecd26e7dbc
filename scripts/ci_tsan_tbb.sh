#!/usr/bin/env bash
# The oneTBB paths under ThreadSanitizer: the core's parallel_for
# (core/parallel.cpp), the loader's prefetch tasks (tbb::task_group,
# core/loader.cpp) and the engine's parallel_for in a task arena
# (engine/parallel.cpp), through every core and engine test suite.
#
# TSan sees synchronization only in code it instruments, and Debian's libtbb
# is not instrumented: against it every hand-off of a task to a worker is
# reported as a race inside oneTBB's own headers (its maintainers and
# google/sanitizers#1004: rebuild oneTBB with TSan). So this script
#   1. downloads oneTBB's source from the Debian mirror (the release of the
#      installed libtbb-dev, 2021.8.0-2+deb12u1; its sha256 is the one of
#      onetbb_2021.8.0-2+deb12u1.dsc), builds libtbb alone with clang-14 and
#      -fsanitize=thread (TBB_SANITIZE=thread) and installs it under
#      $build/onetbb/prefix, kept there so a re-run does not rebuild it;
#   2. builds a deliberately racy program (a oneTBB worker and the main
#      thread write one variable) and requires TSan to report it: the
#      detector is on and sees across oneTBB's threads;
#   3. builds Octet with clang-14 and OCTET_SANITIZE=thread against that
#      oneTBB (TBB_DIR), only the core and engine suites (and octet-run, which
#      engine.test_executor_runner starts), and checks that every one of them
#      loads the instrumented libtbb.so (ldd; the build tree's RUNPATH);
#   4. runs the core.* and engine.* ctest entries (the per-ISA ones included;
#      the engine suite that replaces operator new is left out of TSan builds)
#      with halt_on_error=1. TSan writes its reports to $build/tsan/, so one
#      from a child process (octet-run under a test) fails the run too.
# No suppressions: with the instrumented oneTBB there is nothing to suppress.
# Fails on any data race report.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${OCTET_TSAN_TBB_BUILD:-build-tsan-tbb}"
jobs="${OCTET_JOBS:-$(nproc)}"
mkdir -p "$build"
build="$(cd "$build" && pwd)"

tbb_version=2021.8.0
tbb_sha256=7e9111b8bb59c8800bf6d0b06afe7b0891937443d2dae1ee1101c8e2ede6a7ef
# OCTET_ONETBB_URL: another Debian mirror (the checksum still has to match).
tbb_url="${OCTET_ONETBB_URL:-http://deb.debian.org/debian/pool/main/o/onetbb/onetbb_${tbb_version}.orig.tar.xz}"
tbb_root="$build/onetbb"
tbb_prefix="$tbb_root/prefix"
# libtbb only: no tests, examples, tbbmalloc, hwloc binding; TBB_STRICT=OFF
# so a new warning of clang's in oneTBB's sources does not stop CI.
tbb_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTBB_SANITIZE=thread -DTBB_TEST=OFF -DTBB_EXAMPLES=OFF
  -DTBBMALLOC_BUILD=OFF -DTBB_STRICT=OFF -DTBB_DISABLE_HWLOC_AUTOMATIC_SEARCH=ON -DCMAKE_INSTALL_LIBDIR=lib)
tbb_stamp="$tbb_prefix/.octet-tsan-stamp"  # what the prefix was built from
tbb_id="$tbb_sha256 clang-14 ${tbb_args[*]}"

for tool in clang-14 clang++-14 cmake curl sha256sum xz setarch ldd; do
  command -v "$tool" >/dev/null || {
    echo "ci_tsan_tbb: $tool not found (apt-get install clang-14 libclang-rt-14-dev cmake curl xz-utils)"
    exit 1
  }
done

phase_start=$SECONDS
phase_end() {  # phase_end NAME: how long the phase took
  echo "ci_tsan_tbb: $1 took $(((SECONDS - phase_start) / 60))m$(((SECONDS - phase_start) % 60))s"
  phase_start=$SECONDS
}

# ---- 1. oneTBB with ThreadSanitizer -------------------------------------------
if [ -f "$tbb_stamp" ] && [ "$(cat "$tbb_stamp")" = "$tbb_id" ]; then
  echo "ci_tsan_tbb: oneTBB $tbb_version with TSan already in $tbb_prefix"
else
  tarball="$tbb_root/onetbb_${tbb_version}.orig.tar.xz"
  mkdir -p "$tbb_root"
  if ! echo "$tbb_sha256  $tarball" | sha256sum --check --status 2>/dev/null; then
    echo "ci_tsan_tbb: downloading $tbb_url"
    rm -f "$tarball"
    curl -fsS --retry 3 -o "$tarball.part" "$tbb_url" || {
      echo "ci_tsan_tbb: could not download oneTBB's source from $tbb_url (is the Debian mirror reachable?)"
      exit 1
    }
    mv "$tarball.part" "$tarball"
    echo "$tbb_sha256  $tarball" | sha256sum --check --status || {
      echo "ci_tsan_tbb: $tarball has sha256 $(sha256sum "$tarball" | cut -d' ' -f1), expected $tbb_sha256"
      echo "ci_tsan_tbb: (the one of onetbb_2021.8.0-2+deb12u1.dsc); not building from it"
      rm -f "$tarball"
      exit 1
    }
  fi
  rm -rf "$tbb_root/src" "$tbb_root/build" "$tbb_prefix"
  mkdir -p "$tbb_root/src"
  tar -xJf "$tarball" -C "$tbb_root/src" --strip-components=1
  CC=clang-14 CXX=clang++-14 cmake -S "$tbb_root/src" -B "$tbb_root/build" "${tbb_args[@]}" \
    -DCMAKE_INSTALL_PREFIX="$tbb_prefix" >/dev/null
  cmake --build "$tbb_root/build" -j "$jobs"
  cmake --install "$tbb_root/build" >/dev/null
  echo "$tbb_id" >"$tbb_stamp"
  rm -rf "$tbb_root/src" "$tbb_root/build"
fi
phase_end "oneTBB (download, build)"

# ---- 2. the detector sees a race between a oneTBB worker and the main thread ---
canary="$tbb_root/canary"
mkdir -p "$canary"
cat >"$canary/canary.cpp" <<'EOF'
// A data race TSan must report: a task on a oneTBB worker (arena.enqueue
// always runs on a worker) and the main thread both increment `counter`;
// the atomics order the start and the end of the task, not the increments.
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <atomic>
#include <thread>
int main() {
  tbb::global_control two(tbb::global_control::max_allowed_parallelism, 2);  // a worker even on one core
  tbb::task_arena arena(2);
  std::atomic<bool> started{false}, done{false};
  long counter = 0;
  arena.enqueue([&] { started = true; ++counter; done = true; });
  while (!started) std::this_thread::yield();
  ++counter;
  while (!done) std::this_thread::yield();
  return counter == 2 ? 0 : 1;
}
EOF
clang++-14 -std=c++17 -O1 -g -fsanitize=thread -I"$tbb_prefix/include" "$canary/canary.cpp" -o "$canary/canary" \
  -L"$tbb_prefix/lib" -ltbb -Wl,-rpath,"$tbb_prefix/lib"
if TSAN_OPTIONS="halt_on_error=1" setarch "$(uname -m)" -R "$canary/canary" >"$canary/out.txt" 2>&1 ||
  ! grep -q "WARNING: ThreadSanitizer: data race" "$canary/out.txt"; then
  cat "$canary/out.txt"
  echo "ci_tsan_tbb: TSan did not report the deliberate race across oneTBB's threads: a pass would mean nothing"
  exit 1
fi
echo "ci_tsan_tbb: TSan reports a deliberate race across oneTBB's threads (the detector is live)"

# ---- 3. Octet (core and engine suites) against it ----------------------------------
CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOCTET_SANITIZE=thread \
  -DTBB_DIR="$tbb_prefix/lib/cmake/TBB" ${OCTET_CMAKE_ARGS:-} >/dev/null
mapfile -t suites < <(cd "$build" && ctest -N 2>/dev/null | sed -n 's/^ *Test *#[0-9]*: \(\(core\|engine\)\.test_[a-z0-9_]*\)$/\1/p')
[ "${#suites[@]}" -gt 0 ] || { echo "ci_tsan_tbb: no core.* or engine.* suites in $build"; exit 1; }
cmake --build "$build" -j "$jobs" --target "${suites[@]}" octet-run
for suite in "${suites[@]}" octet-run; do
  exe="$(find "$build/tests" "$build/engine" -name "$suite" -type f -perm -u+x -print -quit)"
  [ -n "$exe" ] || { echo "ci_tsan_tbb: $suite was not built"; exit 1; }
  ldd "$exe" | grep -q "libtbb\.so\.12 => $tbb_prefix/lib/" || {
    ldd "$exe" | grep tbb || true
    echo "ci_tsan_tbb: $exe does not load the instrumented libtbb from $tbb_prefix/lib"
    exit 1
  }
done
phase_end "Octet build (${#suites[@]} suites)"

# ---- 4. the suites under TSan --------------------------------------------------
# setarch -R: no address-space randomization, which clang-14's TSan runtime
# cannot map around on kernels with many random mmap bits (scripts/ci_tsan.sh).
reports="$build/tsan"
rm -rf "$reports"
mkdir -p "$reports"
status=0
(cd "$build" && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 log_path=$reports/report" \
  setarch "$(uname -m)" -R ctest --output-on-failure -R '^(core|engine)\.' -j "$jobs") || status=$?
if [ -n "$(ls -A "$reports")" ]; then
  for r in "$reports"/*; do
    echo "---- $r"
    cat "$r"
  done
  echo "ci_tsan_tbb: ThreadSanitizer reported the above"
  exit 1
fi
[ "$status" -eq 0 ] || exit "$status"
phase_end "tests under TSan"
echo "ci_tsan_tbb: the core and engine suites pass on oneTBB under ThreadSanitizer (oneTBB $tbb_version rebuilt with TSan)"
