#!/usr/bin/env bash
# Installs what Octet needs (Debian 12 packages; MPI for `mpirun ... octet study`) when it is missing, then
# configures and builds into build/ (or $OCTET_BUILD). Extra packages can be
# asked for in $OCTET_EXTRA_PACKAGES. Safe to run again: it only does what is
# left to do.
set -euo pipefail
cd "$(dirname "$0")/.."

packages="g++ cmake make libopenblas-dev libtbb-dev doctest-dev libstb-dev nlohmann-json3-dev zlib1g-dev openmpi-bin libopenmpi-dev ${OCTET_EXTRA_PACKAGES:-}"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "octet setup: installing$missing"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
fi

build="${OCTET_BUILD:-build}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release ${OCTET_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$(nproc)"
