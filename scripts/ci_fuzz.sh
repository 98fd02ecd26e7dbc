#!/usr/bin/env bash
# The model-loader fuzzer: a clang build of the engine alone with libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer, a seed corpus of valid
# models and one malformed file of each kind, then $OCTET_FUZZ_SECONDS
# (default 60) of fuzzing. Fails on any crash, sanitizer report or leak;
# the crashing input is left in $build/engine/fuzz/ as crash-*.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${OCTET_FUZZ_BUILD:-build-fuzz}"
seconds="${OCTET_FUZZ_SECONDS:-60}"

CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DOCTET_FUZZ=ON -DOCTET_ENGINE_ONLY=ON ${OCTET_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" --target fuzz_loader make_fuzz_corpus -j "$(nproc)"

out="$build/engine/fuzz"
rm -rf "$out/seeds" "$out/corpus"
mkdir -p "$out/seeds" "$out/corpus"
"$out/make_fuzz_corpus" "$out/seeds"

# New inputs go to corpus/ (first directory); the seeds stay as generated.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  "$out/fuzz_loader" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
  -print_final_stats=1 -artifact_prefix="$out/" "$out/corpus" "$out/seeds"
echo "ci_fuzz: ${seconds}s of fuzzing, no crash"
