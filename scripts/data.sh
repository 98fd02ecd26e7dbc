#!/usr/bin/env bash
# Unpacks ../shared/data/cifar10-jpg.tar.gz into BUILD/data/ once (the data
# never goes into the repo). Prints the data folder. Exits 1 if the archive
# is not there.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
archive="${OCTET_CIFAR_ARCHIVE:-../shared/data/cifar10-jpg.tar.gz}"
dest="$build/data"
if [ ! -f "$dest/.unpacked" ]; then
  [ -f "$archive" ] || { echo "octet data: $archive not found" >&2; exit 1; }
  mkdir -p "$dest"
  tar -xzf "$archive" -C "$dest"
  touch "$dest/.unpacked"
fi
# The archive holds one top folder or train/ and test/ directly.
if [ -d "$dest/train" ]; then echo "$dest"; else dirname "$(find "$dest" -maxdepth 2 -type d -name train | head -1)"; fi
