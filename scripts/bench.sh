#!/usr/bin/env bash
# Octet against the peer (PyTorch 1.13, ../shared/bench/torch_resnet20.py) in
# one run, at 1 and 2 threads: training, fp32 inference and int8 inference of
# ResNet-20, printed side by side with the ratios.
#
#   scripts/bench.sh                 # needs python3-torch for the peer
#
# For each thread count it runs, back to back: `octet bench train` with
# OPENBLAS_CORETYPE unset (OpenBLAS picks the core for this CPU) and with
# OPENBLAS_CORETYPE=Haswell (what some machines' environment sets: it roughly
# halves sgemm on AVX-512 CPUs), `octet bench engine`, and the peer script.
# Benchmarks on shared machines are noisy: compare the ratios of one run, and
# run on an idle machine. Environment: OCTET_BUILD (default build),
# OCTET_PEER (the peer script), OCTET_BENCH_OUT (raw outputs, default
# $OCTET_BUILD/bench), OCTET_BENCH_THREADS (default "1 2").
set -euo pipefail
cd "$(dirname "$0")/.."
build="${OCTET_BUILD:-build}"
peer="${OCTET_PEER:-../shared/bench/torch_resnet20.py}"
out="${OCTET_BENCH_OUT:-$build/bench}"
threads="${OCTET_BENCH_THREADS:-1 2}"
octet="$build/apps/octet"
[ -x "$octet" ] || { echo "scripts/bench.sh: no $octet (build first: cmake -S . -B $build && cmake --build $build -j)" >&2; exit 1; }
[ -f "$peer" ] || { echo "scripts/bench.sh: no peer script at $peer (set OCTET_PEER)" >&2; exit 1; }
mkdir -p "$out"

# key value lines -> the value of one key (empty when absent)
val() { awk -v k="$2" '$1 == k { print $2; exit }' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && b > 0) printf "%.2fx", a / b; else print "-" }'; }

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for t in $threads; do
  echo "threads $t: octet bench train (OpenBLAS default core) ..." >&2
  env -u OPENBLAS_CORETYPE "$octet" bench train --threads "$t" > "$out/octet_train_t$t.txt"
  echo "threads $t: octet bench train (OPENBLAS_CORETYPE=Haswell) ..." >&2
  OPENBLAS_CORETYPE=Haswell "$octet" bench train --threads "$t" > "$out/octet_train_haswell_t$t.txt"
  echo "threads $t: octet bench engine ..." >&2
  "$octet" bench engine --threads "$t" > "$out/octet_engine_t$t.txt"
  echo "threads $t: peer $peer ..." >&2
  env -u OPENBLAS_CORETYPE /usr/bin/python3 "$peer" --threads "$t" > "$out/peer_t$t.txt" 2> "$out/peer_t$t.err"

  o="$out/octet_train_t$t.txt" h="$out/octet_train_haswell_t$t.txt" e="$out/octet_engine_t$t.txt" p="$out/peer_t$t.txt"
  echo
  echo "threads $t (OpenBLAS core: $(val "$o" openblas_core); with OPENBLAS_CORETYPE=Haswell: $(val "$h" openblas_core); engine ISA: $(val "$e" isa))"
  printf "| %-24s | %10s | %10s | %12s | %7s |\n" "img/s" "Octet" "PyTorch" "Octet Haswell" "ratio"
  printf "|%s|%s|%s|%s|%s|\n" "--------------------------" "-----------:" "-----------:" "-------------:" "--------:"
  for k in train_fp32_img_s infer_fp32_b1_img_s infer_fp32_b100_img_s; do
    printf "| %-24s | %10s | %10s | %12s | %7s |\n" "$k" "$(val "$o" $k)" "$(val "$p" $k)" "$(val "$h" $k)" \
      "$(ratio "$(val "$o" $k)" "$(val "$p" $k)")"
  done
  for b in b1 b100; do
    k="infer_int8_${b}_img_s"
    printf "| %-24s | %10s | %10s | %12s | %7s |\n" "$k (onednn)" "$(val "$e" $k)" "$(val "$p" infer_int8_onednn_${b}_img_s)" "" \
      "$(ratio "$(val "$e" $k)" "$(val "$p" infer_int8_onednn_${b}_img_s)")"
  done
  printf "| %-24s | %10s | %10s | %12s | %7s |\n" "train_qat_img_s" "$(val "$o" train_qat_img_s)" "" "" \
    "qat/fp32 cpu $(val "$o" train_qat_over_fp32_cpu)"
done
echo
echo "raw outputs in $out/"
