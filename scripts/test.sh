#!/usr/bin/env bash
# The test command: set up (packages, configure, build), unpack the CIFAR-10
# copy from ../shared/data into the build tree if present, run every suite,
# then list the suites that were skipped here and why.
set -euo pipefail
cd "$(dirname "$0")/.."
# What only the tests use: the ONNX checker, Fashion-MNIST (IDX files).
export OCTET_EXTRA_PACKAGES="${OCTET_EXTRA_PACKAGES:-} python3-onnx dataset-fashion-mnist pybind11-dev python3-pybind11 python3-numpy python3-dev"
scripts/setup.sh
build="${OCTET_BUILD:-build}"
scripts/data.sh "$build" || echo "octet test: CIFAR-10 not found; tests that need it are skipped"
scripts/ort_setup.sh "$build" || echo "octet test: ONNX Runtime not installed; tests that need it are skipped"
cd "$build"
status=0
ctest --output-on-failure -j "$(nproc)" "$@" || status=$?
# The skipped suites and why (each printed "SKIPPED: <reason>", tests/skip.h).
awk '/^[0-9]+\/[0-9]+ Test: / { name = $3 } /^SKIPPED: / { sub(/^SKIPPED: /, ""); print "  " name ": " $0 }' \
  Testing/Temporary/LastTest.log > Testing/Temporary/skipped.txt || true
if [ -s Testing/Temporary/skipped.txt ]; then
  echo "octet test: skipped (not run on this machine):"
  cat Testing/Temporary/skipped.txt
fi
exit "$status"
