#!/usr/bin/env bash
# The main job: set up, then run Octet's pipeline on CIFAR-10.
# (Grows into: train with QAT -> export -> integer inference in the engine.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build="${OCTET_BUILD:-build}"
data=$(scripts/data.sh "$build")
echo "CIFAR-10 at $data"
"$build/apps/octet" bench ops --threads "$(nproc)"
