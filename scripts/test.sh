#!/usr/bin/env bash
# The test command: set up (packages, configure, build), unpack the CIFAR-10
# copy from ../shared/data into the build tree if present, run every suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build="${OCTET_BUILD:-build}"
scripts/data.sh "$build" || echo "octet test: CIFAR-10 not found; tests that need it are skipped"
cd "$build"
ctest --output-on-failure -j "$(nproc)" "$@"
