#!/usr/bin/env bash
# Installs ONNX Runtime for Node.js (the npm package onnxruntime-node, which
# ships the CPU runtime for x64 and arm64) into <build>/ort, where
# `octet eval MODEL.onnx` and scripts/ort_run.mjs look for it. Needs node and
# npm (the registry is the only network access). Safe to run again.
#   scripts/ort_setup.sh [BUILD_DIR]      (default build, or $OCTET_BUILD)
set -euo pipefail
cd "$(dirname "$0")/.."
version="1.31.1"
dir="${1:-${OCTET_BUILD:-build}}/ort"

if [ -f "$dir/node_modules/onnxruntime-node/package.json" ] &&
   grep -q "\"version\": \"$version\"" "$dir/node_modules/onnxruntime-node/package.json"; then
  exit 0
fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "ort_setup: $tool not found: install Node.js to run ONNX Runtime"; exit 1; }
done
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
# ONNXRUNTIME_NODE_INSTALL=skip: the package's install script would fetch GPU
# libraries from another host; the CPU runtime is inside the package itself.
echo "ort_setup: npm install onnxruntime-node@$version into $dir"
ONNXRUNTIME_NODE_INSTALL=skip npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
  "onnxruntime-node@$version" >/dev/null
node -e "require('$dir/node_modules/onnxruntime-node')" ||
  { echo "ort_setup: onnxruntime-node installed but does not load"; exit 1; }
echo "ort_setup: ONNX Runtime $version ready in $dir"
