#!/usr/bin/env bash
# The model-loader fuzzer: a clang build of the engine alone with libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer, started from the kept
# corpus (engine/fuzz/corpus, in the repository) and a generated seed corpus
# of valid models and one malformed file of each kind, then
# $OCTET_FUZZ_SECONDS (default 60) of fuzzing. Fails on any crash, sanitizer
# report or leak; the crashing input is left in $build/engine/fuzz/ as
# crash-*: once fixed, copy it to engine/fuzz/crashes/ (replayed by
# tests/engine/test_fuzz_corpus.cpp in every build).
#
#   scripts/ci_fuzz.sh            fuzz (CI)
#   scripts/ci_fuzz.sh --update   fuzz, then minimize everything found into
#                                 engine/fuzz/corpus (inputs up to 4 KiB) to commit
set -euo pipefail
cd "$(dirname "$0")/.."
build="${OCTET_FUZZ_BUILD:-build-fuzz}"
seconds="${OCTET_FUZZ_SECONDS:-60}"
update=0
[ "${1:-}" = "--update" ] && update=1

CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DOCTET_FUZZ=ON -DOCTET_ENGINE_ONLY=ON ${OCTET_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" --target fuzz_loader make_fuzz_corpus -j "$(nproc)"

out="$build/engine/fuzz"
rm -rf "$out/seeds" "$out/corpus"
mkdir -p "$out/seeds" "$out/corpus"
"$out/make_fuzz_corpus" "$out/seeds"
cp engine/fuzz/corpus/* "$out/corpus/" 2>/dev/null || true

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
"$out/fuzz_loader" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
  -print_final_stats=1 -artifact_prefix="$out/" "$out/corpus" "$out/seeds"
echo "ci_fuzz: ${seconds}s of fuzzing, no crash"

if [ "$update" = 1 ]; then
  rm -rf "$out/minimized" && mkdir -p "$out/minimized"
  "$out/fuzz_loader" -merge=1 -max_len=4096 "$out/minimized" "$out/corpus" "$out/seeds" 2>/dev/null
  rm -rf engine/fuzz/corpus && mkdir -p engine/fuzz/corpus
  cp "$out/minimized"/* engine/fuzz/corpus/
  echo "ci_fuzz: engine/fuzz/corpus now holds $(ls engine/fuzz/corpus | wc -l) inputs ($(du -sh engine/fuzz/corpus | cut -f1))"
fi
