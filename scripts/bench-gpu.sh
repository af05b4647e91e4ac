#!/usr/bin/env bash
# make bench-gpu: fedtune on the GPU beside its baselines, in the same run on
# the same GPU.
#
# 1. Training: BenchmarkLoRAStepGPU (model/engine/cudadev) beside a PyTorch
#    eager step (scripts/bench_train_gpu_torch.py) of the same LLaMA shapes:
#      d1024-8layer  vocab 32000, d=1024, 8 layers, 16 heads / 4 kv heads,
#                    SwiGLU 2816, batch 8 × 256 tokens, LoRA r=8 on q_proj
#                    and v_proj, AdamW, gradient clipping at 1
#      tiny          configs/models/tiny.yaml, batch 8 × 64
#    float32 on both sides (PyTorch's TF32 off), attention as separate
#    matmul / softmax / matmul kernels on both sides. Prints tokens/s of
#    each and fedtune/PyTorch (goal: ≥ 0.5), and PyTorch with its fused
#    scaled_dot_product_attention for reference when torch has it.
# 2. Aggregation: BenchmarkWeightedMeanGPU beside BenchmarkCopyD2D
#    (kernels/cuda): GB/s of the weighted mean over the device-to-device
#    copy of the same bytes (goal: ≥ 0.8).
# 3. Serving: BenchmarkServeGPU (model/engine/cudadev): the continuous-
#    batching Batcher (KV cache, greedy, 128-token prompts, 128 new tokens)
#    at the SmolLM2-135M shape (random FP32 weights) on the CUDA device and
#    on the Host device in the same run: tokens/s at 1 and 16 streams, time
#    to first token p50 / p99 at 16 streams, and CUDA/Host ratios.
#
# The Go side runs prebuilt test binaries (scripts/gpu-check.sh build, done
# here when Go is installed and they are missing), so the GPU machine needs
# no Go; PyTorch with CUDA must be importable by python3 there.
#
# Environment: GPU_CHECK_DIR (binaries, default bin/gpu-check), BENCHTIME
# (Go -test.benchtime for training, default 20x), AGG_BENCHTIME (default
# 2s), TORCH_SECONDS (default 5), PYTHON, BENCH_CONFIGS (default
# "d1024-8layer tiny"), SERVE_BENCHTIME (default 1x: one batch of streams
# per sub-benchmark after a warm-up one), SERVE_SHAPES (default
# "smollm2-135m"; "tiny" is a quick check), SKIP_SERVE=1 (no part 3).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${GPU_CHECK_DIR:-bin/gpu-check}
case $out in /*) ;; *) out="$root/$out" ;; esac
BENCHTIME=${BENCHTIME:-20x}
AGG_BENCHTIME=${AGG_BENCHTIME:-2s}
TORCH_SECONDS=${TORCH_SECONDS:-5}
BENCH_CONFIGS=${BENCH_CONFIGS:-d1024-8layer tiny}
SERVE_BENCHTIME=${SERVE_BENCHTIME:-1x}
SERVE_SHAPES=${SERVE_SHAPES:-smollm2-135m}

# shellcheck source=scripts/gpu-lib.sh
. scripts/gpu-lib.sh

if [ ! -x "$out/cudadev.test" ] || [ ! -x "$out/cuda.test" ]; then
  GPU_CHECK_DIR=$out bash scripts/gpu-check.sh build
fi
if ! have_gpu; then
  echo "bench-gpu: no NVIDIA GPU here; run it on the GPU machine (binaries in $out)" >&2
  exit 1
fi
nvidia-smi -L 2>/dev/null || true

find_cublas # for the Go binaries

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- 1. LoRA training step ------------------------------------------------
echo "bench-gpu: BenchmarkLoRAStepGPU (-test.benchtime $BENCHTIME)" >&2
(cd model/engine/cudadev && "$out/cudadev.test" -test.run '^$' -test.bench '^BenchmarkLoRAStepGPU$' \
   -test.benchtime "$BENCHTIME" -test.count 1) | tee "$tmp/go.log" >&2
awk '/^BenchmarkLoRAStepGPU\// {
       name = $1; sub(/^BenchmarkLoRAStepGPU\//, "", name); sub(/-[0-9]+$/, "", name)
       for (i = 2; i < NF; i++) if ($(i+1) == "tok/s") print name, $i
     }' "$tmp/go.log" >"$tmp/go"
if [ ! -s "$tmp/go" ]; then echo "bench-gpu: no tok/s in the Go benchmark output" >&2; exit 1; fi

# torch_args CONFIG: the PyTorch flags of a BenchmarkLoRAStepGPU sub-benchmark.
torch_args() {
  case $1 in
    d1024-8layer) echo "--vocab 32000 --hidden 1024 --inter 2816 --layers 8 --heads 16 --kv-heads 4 --batch 8 --seq 256 --rank 8 --alpha 16" ;;
    tiny) echo "--vocab 256 --hidden 64 --inter 172 --layers 2 --heads 4 --kv-heads 2 --batch 8 --seq 64 --rank 8 --alpha 16" ;;
    *) return 1 ;;
  esac
}

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3 /usr/bin/python3 python; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
      PY=$cand
      break
    fi
  done
fi
: >"$tmp/torch"
: >"$tmp/sdpa"
if [ -z "$PY" ]; then
  echo "bench-gpu: no python with a CUDA-enabled torch found: PyTorch side skipped (set PYTHON=...)" >&2
else
  for cfg in $BENCH_CONFIGS; do
    grep -q "^$cfg " "$tmp/go" || continue
    args=$(torch_args "$cfg") || { echo "bench-gpu: no PyTorch shapes for $cfg" >&2; continue; }
    for att in matmul sdpa; do
      echo "bench-gpu: PyTorch $cfg (attention $att)" >&2
      # shellcheck disable=SC2086
      if o=$("$PY" scripts/bench_train_gpu_torch.py $args --attention $att --seconds "$TORCH_SECONDS"); then
        echo "$o" >&2
        if [ $att = matmul ]; then f="$tmp/torch"; else f="$tmp/sdpa"; fi
        echo "$cfg $(awk '{print $2}' <<<"$o")" >>"$f"
      fi
    done
  done
fi

# --- 2. Aggregation -------------------------------------------------------
echo "bench-gpu: BenchmarkWeightedMeanGPU and BenchmarkCopyD2D (-test.benchtime $AGG_BENCHTIME)" >&2
(cd kernels/cuda && "$out/cuda.test" -test.run '^$' -test.bench '^(BenchmarkWeightedMeanGPU|BenchmarkCopyD2D)$' \
   -test.benchtime "$AGG_BENCHTIME" -test.count 1) | tee "$tmp/agg.log" >&2
mbs() { awk -v b="$1" '$1 ~ "^"b"(-[0-9]+)?$" { for (i = 2; i < NF; i++) if ($(i+1) == "MB/s") print $i }' "$tmp/agg.log" | head -1; }
wmean=$(mbs BenchmarkWeightedMeanGPU)
copy=$(mbs BenchmarkCopyD2D)

# --- 3. Serving -----------------------------------------------------------
: >"$tmp/serve"
if [ "${SKIP_SERVE:-0}" != 1 ]; then
  for shape in $SERVE_SHAPES; do
    echo "bench-gpu: BenchmarkServeGPU/$shape (CUDA and Host, -test.benchtime $SERVE_BENCHTIME)" >&2
    (cd model/engine/cudadev && "$out/cudadev.test" -test.run '^$' -test.bench "^BenchmarkServeGPU\$/^$shape\$" \
       -test.benchtime "$SERVE_BENCHTIME" -test.count 1 -test.timeout 60m) | tee -a "$tmp/serve.log" >&2
  done
  # One line per sub-benchmark: "shape device streams tok/s p50 p99".
  awk '/^BenchmarkServeGPU\// {
         split($1, p, "/"); st = p[4]; sub(/^streams=/, "", st); sub(/-[0-9]+$/, "", st)
         tps = p50 = p99 = ""
         for (i = 2; i < NF; i++) {
           if ($(i+1) == "tok/s") tps = $i
           if ($(i+1) == "ttft-p50-ms") p50 = $i
           if ($(i+1) == "ttft-p99-ms") p99 = $i
         }
         print p[2], p[3], st, tps, p50, p99
       }' "$tmp/serve.log" 2>/dev/null >"$tmp/serve" || true
  if [ ! -s "$tmp/serve" ]; then echo "bench-gpu: no metrics in the BenchmarkServeGPU output" >&2; fi
fi

# --- report ---------------------------------------------------------------
echo
printf '%-13s %14s %14s %8s %14s %8s\n' config "fedtune tok/s" "torch tok/s" ratio "torch+sdpa" ratio
while read -r cfg ours; do
  t=$(awk -v c="$cfg" '$1 == c {print $2}' "$tmp/torch")
  s=$(awk -v c="$cfg" '$1 == c {print $2}' "$tmp/sdpa")
  r1=-; r2=-
  [ -n "$t" ] && r1=$(awk -v a="$ours" -v b="$t" 'BEGIN {printf "%.2f", a / b}')
  [ -n "$s" ] && r2=$(awk -v a="$ours" -v b="$s" 'BEGIN {printf "%.2f", a / b}')
  printf '%-13s %14.0f %14s %8s %14s %8s\n' "$cfg" "$ours" "${t:--}" "$r1" "${s:--}" "$r2"
done <"$tmp/go"
echo "(training ratio = fedtune / PyTorch eager, goal >= 0.5 on d1024-8layer against the matmul attention)"
if [ -n "$wmean" ] && [ -n "$copy" ]; then
  printf '\naggregation: weighted mean %.1f GB/s, device copy %.1f GB/s, ratio %.2f (goal >= 0.8)\n' \
    "$(awk -v x="$wmean" 'BEGIN {print x / 1000}')" "$(awk -v x="$copy" 'BEGIN {print x / 1000}')" \
    "$(awk -v a="$wmean" -v b="$copy" 'BEGIN {print a / b}')"
else
  echo "bench-gpu: no MB/s for BenchmarkWeightedMeanGPU / BenchmarkCopyD2D in the output" >&2
fi
if [ -s "$tmp/serve" ]; then
  echo
  echo "serving (Batcher, greedy; smollm2-135m: 128-token prompts + 128 new tokens; CUDA and Host measured in this run):"
  printf '%-13s %-5s %8s %12s %12s %12s\n' shape device streams "tok/s" "ttft p50 ms" "ttft p99 ms"
  while read -r shape dev st tps p50 p99; do
    printf '%-13s %-5s %8s %12.1f %12.1f %12.1f\n' "$shape" "$dev" "$st" "$tps" "$p50" "$p99"
  done <"$tmp/serve"
  for shape in $(awk '{print $1}' "$tmp/serve" | sort -u); do
    for st in 1 16; do
      c=$(awk -v s="$shape" -v n="$st" '$1 == s && $2 == "cuda" && $3 == n {print $4}' "$tmp/serve")
      h=$(awk -v s="$shape" -v n="$st" '$1 == s && $2 == "host" && $3 == n {print $4}' "$tmp/serve")
      if [ -n "$c" ] && [ -n "$h" ]; then
        printf '%s: %d stream(s): CUDA %.1f tok/s, Host %.1f tok/s, ratio CUDA/Host %.2f\n' "$shape" "$st" "$c" "$h" \
          "$(awk -v a="$c" -v b="$h" 'BEGIN {print a / b}')"
      fi
    done
    p99=$(awk -v s="$shape" '$1 == s && $2 == "cuda" && $3 == 16 {print $6}' "$tmp/serve")
    if [ -n "$p99" ]; then
      printf '%s: CUDA time to first token p99 at 16 streams %.1f ms (goal < 500 ms)\n' "$shape" "$p99"
    fi
  done
fi
