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
# halves sgemm on AVX-512 CPUs), `octet bench engine`, `octet bench peak` (the
# cores' measured peak int8 MAC/s and fp32 flop/s, which the last table of
# each thread count divides by), and the peer script.
# ONNX Runtime (scripts/ort_setup.sh installs it) times the very network the
# engine runs: the random ResNet-20 of `octet bench engine --save-model`,
# converted by `octet export --onnx` to QDQ with uint8 activations (U8S8, what
# ORT runs in integer kernels on x86) and to its float twin (fp32).
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
# images/s x multiply-adds per image x factor -> G per second; a over b as a percentage
rate() { awk -v r="$1" -v m="$2" -v f="$3" 'BEGIN { if (r != "" && m != "") printf "%.1f", r * m * f / 1e9; }'; }
share() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && b > 0) printf "%.0f%%", 100 * a / b; else print "-" }'; }

# The engine's benchmark network as ONNX, for the ORT peer (skipped without ORT).
ort_dir="$build/ort"
have_ort=0
if [ -d "$ort_dir/node_modules/onnxruntime-node" ] && command -v node >/dev/null; then
  "$octet" bench engine --threads 1 --seconds 0.1 --save-model "$out/resnet20_random.oct" > /dev/null
  "$octet" export "$out/resnet20_random.oct" --onnx "$out/resnet20_u8s8.onnx" > /dev/null
  "$octet" export "$out/resnet20_random.oct" --onnx "$out/resnet20_fp32.onnx" --onnx-form float > /dev/null
  have_ort=1
else
  echo "scripts/bench.sh: no ONNX Runtime in $ort_dir (scripts/ort_setup.sh): its columns stay empty" >&2
fi
# img/s of one ORT run: model, batch, threads
ort_img_s() {
  node scripts/ort_run.mjs bench "$1" --batch "$2" --threads "$3" --seconds 3 --ort-dir "$ort_dir" |
    sed -n 's/.*"img_per_s":\([0-9.]*\).*/\1/p'
}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for t in $threads; do
  echo "threads $t: octet bench train (OpenBLAS default core) ..." >&2
  env -u OPENBLAS_CORETYPE "$octet" bench train --threads "$t" > "$out/octet_train_t$t.txt"
  echo "threads $t: octet bench train (OPENBLAS_CORETYPE=Haswell) ..." >&2
  OPENBLAS_CORETYPE=Haswell "$octet" bench train --threads "$t" > "$out/octet_train_haswell_t$t.txt"
  echo "threads $t: octet bench engine ..." >&2
  "$octet" bench engine --threads "$t" > "$out/octet_engine_t$t.txt"
  echo "threads $t: octet bench peak ..." >&2
  "$octet" bench peak --threads "$t" > "$out/octet_peak_t$t.txt"
  : > "$out/ort_t$t.txt"
  if [ "$have_ort" = 1 ]; then
    echo "threads $t: ONNX Runtime (U8S8 and fp32) ..." >&2
    for b in 1 100; do
      echo "ort_u8s8_b${b}_img_s $(ort_img_s "$out/resnet20_u8s8.onnx" "$b" "$t")" >> "$out/ort_t$t.txt"
      echo "ort_fp32_b${b}_img_s $(ort_img_s "$out/resnet20_fp32.onnx" "$b" "$t")" >> "$out/ort_t$t.txt"
    done
  fi
  echo "threads $t: peer $peer ..." >&2
  env -u OPENBLAS_CORETYPE /usr/bin/python3 "$peer" --threads "$t" > "$out/peer_t$t.txt" 2> "$out/peer_t$t.err"

  o="$out/octet_train_t$t.txt" h="$out/octet_train_haswell_t$t.txt" e="$out/octet_engine_t$t.txt" p="$out/peer_t$t.txt"
  echo
  echo "threads $t (OpenBLAS core: $(val "$o" openblas_core); with OPENBLAS_CORETYPE=Haswell: $(val "$h" openblas_core); engine ISA: $(val "$e" isa))"
  printf "| %-34s | %10s | %10s | %12s | %7s |\n" "img/s" "Octet" "peer" "Octet Haswell" "ratio"
  printf "|%s|%s|%s|%s|%s|\n" "------------------------------------" "-----------:" "-----------:" "-------------:" "--------:"
  for k in train_fp32_img_s infer_fp32_b1_img_s infer_fp32_b100_img_s; do
    printf "| %-34s | %10s | %10s | %12s | %7s |\n" "$k (PyTorch)" "$(val "$o" $k)" "$(val "$p" $k)" "$(val "$h" $k)" \
      "$(ratio "$(val "$o" $k)" "$(val "$p" $k)")"
  done
  for b in b1 b100; do
    k="infer_int8_${b}_img_s"
    printf "| %-34s | %10s | %10s | %12s | %7s |\n" "$k (PyTorch oneDNN)" "$(val "$e" $k)" "$(val "$p" infer_int8_onednn_${b}_img_s)" "" \
      "$(ratio "$(val "$e" $k)" "$(val "$p" infer_int8_onednn_${b}_img_s)")"
  done
  r="$out/ort_t$t.txt"
  for b in b1 b100; do
    k="infer_int8_${b}_img_s"
    printf "| %-34s | %10s | %10s | %12s | %7s |\n" "$k (ORT U8S8)" "$(val "$e" $k)" "$(val "$r" ort_u8s8_${b}_img_s)" "" \
      "$(ratio "$(val "$e" $k)" "$(val "$r" ort_u8s8_${b}_img_s)")"
    printf "| %-34s | %10s | %10s | %12s | %7s |\n" "$k (ORT fp32)" "$(val "$e" $k)" "$(val "$r" ort_fp32_${b}_img_s)" "" \
      "$(ratio "$(val "$e" $k)" "$(val "$r" ort_fp32_${b}_img_s)")"
  done
  printf "| %-34s | %10s | %10s | %12s | %7s |\n" "train_qat_img_s" "$(val "$o" train_qat_img_s)" "" "" \
    "qat/fp32 cpu $(val "$o" train_qat_over_fp32_cpu)"

  # Against the machine: rates as a share of `octet bench peak` at this thread count.
  # int8: the engine's exact kernels against the instruction they are built on
  # (vpdpbusd with VNNI, else vpmaddwd); oneDNN's against its own (vpdpbusd, else
  # the saturating vpmaddubsw). Training: 6 flops per multiply-add (forward, and
  # the two gradients), against fp32 FMA.
  k=$([ "$t" = 1 ] && echo t1 || echo tN)
  pk="$out/octet_peak_t$t.txt"
  macs=$(val "$e" macs_per_image)
  if [ "$(val "$e" isa)" = avx512_vnni ]; then eng_peak=peak_int8_vnni_gmacs; dnn_peak=peak_int8_vnni_gmacs
  else eng_peak=peak_int8_pmaddwd_gmacs; dnn_peak=peak_int8_maddubs_gmacs; fi
  echo
  printf "| %-40s | %12s | %-30s | %7s |\n" "threads $t: against the measured peak" "G/s" "peak (octet bench peak)" "share"
  printf "|%s|%s|%s|%s|\n" "------------------------------------------" "-------------:" "--------------------------------" "--------:"
  g=$(rate "$(val "$e" infer_int8_b100_img_s)" "$macs" 1)
  printf "| %-40s | %12s | %-30s | %7s |\n" "engine int8 b100 (GMAC/s)" "$g" "${eng_peak#peak_int8_} $(val "$pk" ${eng_peak}_$k)" \
    "$(share "$g" "$(val "$pk" ${eng_peak}_$k)")"
  g=$(rate "$(val "$p" infer_int8_onednn_b100_img_s)" "$macs" 1)
  printf "| %-40s | %12s | %-30s | %7s |\n" "PyTorch oneDNN int8 b100 (GMAC/s)" "$g" "${dnn_peak#peak_int8_} $(val "$pk" ${dnn_peak}_$k)" \
    "$(share "$g" "$(val "$pk" ${dnn_peak}_$k)")"
  g=$(rate "$(val "$o" train_fp32_img_s)" "$macs" 6)
  printf "| %-40s | %12s | %-30s | %7s |\n" "Octet training fp32 (GFLOP/s)" "$g" "fp32 FMA $(val "$pk" peak_fp32_fma_gflops_$k)" \
    "$(share "$g" "$(val "$pk" peak_fp32_fma_gflops_$k)")"
done
echo
echo "raw outputs in $out/"
