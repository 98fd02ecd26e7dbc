#!/usr/bin/env bash
# The main job: train a ResNet-20 on CIFAR-10 with quantization-aware
# training, export it to an integer model file, run the 10,000 test images in
# the integer engine, and print float, fake-quant and engine int8 accuracy
# plus the model sizes.
#
#   scripts/main.sh                     # quick preset (2 epochs)
#   OCTET_PRESET=full scripts/main.sh   # the 40-epoch recipe
#
# Environment: OCTET_BUILD (build folder, default build), OCTET_PRESET
# (quick|full), OCTET_RUN (run folder, default $OCTET_BUILD/runs/main-<preset>),
# OCTET_TRAIN_ARGS (extra flags for octet train, e.g. "--subset 5000" for a
# smoke test), OCTET_INTSIM=0 to skip checking the engine against the integer simulation
# on every test image (it takes a few minutes), OCTET_THREADS (default: all).
# Re-running continues an unfinished run and skips a finished one.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build="${OCTET_BUILD:-build}"
preset="${OCTET_PRESET:-quick}"
run="${OCTET_RUN:-$build/runs/main-$preset}"
threads="${OCTET_THREADS:-0}"
octet="$build/apps/octet"
data=$(scripts/data.sh "$build")
echo "CIFAR-10 at $data"
mkdir -p "$run"

# 1. Train with QAT (the study's defaults: QDQv2, half to even, 8-bit weights
#    and activations, EMA ranges, fake quant for the last 20% of the steps).
resume=""
[ -f "$run/last.ckpt" ] && resume="--resume"
"$octet" train --preset "$preset" --qat --data "$data" --out "$run" --threads "$threads" $resume ${OCTET_TRAIN_ARGS:-}

# 2. Export: BN and preprocessing folded, int8 weights, int32 biases, (M0, shift).
"$octet" export "$run/last.ckpt" -o "$run/resnet20.oct" | tee "$run/export.txt"

# 3. Evaluate on the 10,000 test images: float, fake-quant, engine int8.
"$octet" eval "$run/last.ckpt" --data "$data" --mode float --threads "$threads" | tee "$run/eval_float.txt"
"$octet" eval "$run/last.ckpt" --data "$data" --mode fakequant --threads "$threads" | tee "$run/eval_fakequant.txt"
intsim=""
[ "${OCTET_INTSIM:-1}" = "0" ] || intsim="--intsim"
"$octet" eval "$run/resnet20.oct" --data "$data" --threads "$threads" $intsim | tee "$run/eval_engine.txt"

top1() { awk '/^images/ { for (i = 1; i <= NF; i++) if ($i == "top1") print $(i + 1) }' "$1"; }
top5() { awk '/^images/ { for (i = 1; i <= NF; i++) if ($i == "top5") print $(i + 1) }' "$1"; }
model_bytes=$(stat -c %s "$run/resnet20.oct")
float_bytes=$(awk '/^model file/ { gsub(/[()]/, ""); for (i = 1; i <= NF; i++) if ($i == "weights") print $(i + 1) }' "$run/export.txt")

echo
echo "== main job: ResNet-20, CIFAR-10 test set (10,000 images), preset $preset =="
printf "%-34s top-1 %-8s top-5 %s\n" "float (QAT checkpoint, quant off)" "$(top1 "$run/eval_float.txt")" "$(top5 "$run/eval_float.txt")"
printf "%-34s top-1 %-8s top-5 %s\n" "fake-quant (QAT forward)" "$(top1 "$run/eval_fakequant.txt")" "$(top5 "$run/eval_fakequant.txt")"
printf "%-34s top-1 %-8s top-5 %s\n" "engine int8 (integer only)" "$(top1 "$run/eval_engine.txt")" "$(top5 "$run/eval_engine.txt")"
grep -h "engine == integer simulation" "$run/eval_engine.txt" || true
printf "model file %s: %s bytes; float weights %s bytes; ratio %s\n" "$run/resnet20.oct" "$model_bytes" "$float_bytes" \
  "$(awk -v a="$model_bytes" -v b="$float_bytes" 'BEGIN { if (b > 0) printf "%.4fx", a / b }')"
