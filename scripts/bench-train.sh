#!/usr/bin/env bash
# make bench-train: one LoRA training step (r=8 on q_proj, v_proj; AdamW on
# the LoRA parameters; gradient clipping at 1.0) of a LLaMA-family decoder on
# the CPU, fedtune beside PyTorch, at two sizes:
#   tiny        configs/models/tiny.yaml (d=64, 2 layers), batch 8 x 64 tokens
#   d256-4layer d=256, 4 layers, 8 heads / 4 kv heads,    batch 8 x 128 tokens
# fedtune runs its BenchmarkLoRAStep (./model/gorgoniaref, Gorgonia: the
# trainer's device gorgonia) with the default pure-Go BLAS build and -tags
# openblas, and the hand-written step of ./model/engine on the Host device
# (the trainer's default device cpu, also named host; BenchmarkStepHost, the
# same shapes) in both builds. PyTorch is Debian's python3-torch, with
# torch.set_num_threads(nproc). Prints tokens/s of each and the ratio
# fedtune/PyTorch (above 1 means fedtune is faster).
# Then the real-size shape, SmolLM2-135M (vocab 49,152, d=576, 30 layers,
# 9 / 3 heads, intermediate 1536), 4 x 256 tokens a step, LoRA r=8 on q_proj
# and v_proj: the engine's step on the Host device (scripts/trainbench; the
# frozen base held as bfloat16, and beside it as float32) and
# PyTorch's, each step's model GFLOP/s (the same FLOP count for both), and
# the engine's own GEMM rate on all cores measured in the same run.
#
# Environment: BENCHTIME (go test -benchtime, default 4s), TORCH_SECONDS
# (timed seconds per PyTorch config, default 4), SKIP_OPENBLAS=1,
# SMOLLM_STEPS (timed 135M steps of each, default 3), SKIP_SMOLLM=1 (leave
# out the 135M shape), SMOLLM_ONLY=1 (only the 135M shape), SKIP_ISA=1 (leave
# out the engine's per-instruction-set step rates), ISA_BENCHTIME (default 3x).
set -euo pipefail
cd "$(dirname "$0")/.."

BENCHTIME=${BENCHTIME:-4s}
TORCH_SECONDS=${TORCH_SECONDS:-4}
PY=/usr/bin/python3
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

apt_install() {
  echo "bench-train: installing $* with apt-get" >&2
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if ! "$PY" -c 'import torch' 2>/dev/null; then apt_install python3-torch; fi
if [ "${SKIP_OPENBLAS:-0}" != 1 ] && ! dpkg -s libopenblas-dev >/dev/null 2>&1; then apt_install libopenblas-dev; fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# go_bench BUILD [go test flags...]: writes "config tok/s" lines to $tmp/BUILD.
go_bench() {
  local build=$1; shift
  echo "bench-train: go test -bench BenchmarkLoRAStep ($build build, -benchtime $BENCHTIME)" >&2
  go test "$@" -run '^$' -bench '^BenchmarkLoRAStep$' -benchtime "$BENCHTIME" -count 1 ./model/gorgoniaref/ \
    | tee "$tmp/$build.log" >&2
  awk '/^BenchmarkLoRAStep\// {
         name = $1; sub(/^BenchmarkLoRAStep\//, "", name); sub(/-[0-9]+$/, "", name)
         for (i = 2; i < NF; i++) if ($(i+1) == "tok/s") print name, $i
       }' "$tmp/$build.log" >"$tmp/$build"
  if [ ! -s "$tmp/$build" ]; then echo "bench-train: no tok/s metric in the $build benchmark output" >&2; exit 1; fi
}

# engine_bench BUILD [go test flags...]: the same for BenchmarkStepHost's LoRA cases.
engine_bench() {
  local build=$1; shift
  echo "bench-train: go test -bench BenchmarkStepHost ($build build, -benchtime $BENCHTIME)" >&2
  go test "$@" -run '^$' -bench '^BenchmarkStepHost$' -benchtime "$BENCHTIME" -count 1 ./model/engine/ \
    | tee "$tmp/$build.log" >&2
  awk '/^BenchmarkStepHost\/.*-lora/ {
         name = $1; sub(/^BenchmarkStepHost\//, "", name); sub(/-[0-9]+$/, "", name); sub(/-lora$/, "", name)
         for (i = 2; i < NF; i++) if ($(i+1) == "tok/s") print name, $i
       }' "$tmp/$build.log" >"$tmp/$build"
  if [ ! -s "$tmp/$build" ]; then echo "bench-train: no tok/s metric in the $build benchmark output" >&2; exit 1; fi
}

builds=()
if [ "${SMOLLM_ONLY:-0}" != 1 ]; then
go_bench default
engine_bench engine
builds=(default engine)
fi
if [ "${SKIP_OPENBLAS:-0}" != 1 ] && [ "${SMOLLM_ONLY:-0}" != 1 ]; then
  CGO_LDFLAGS="${CGO_LDFLAGS:-} -lopenblas" go_bench openblas -tags openblas
  CGO_LDFLAGS="${CGO_LDFLAGS:-} -lopenblas" engine_bench engine+ob -tags openblas
  builds+=(openblas engine+ob)
fi

# torch_args CONFIG: the PyTorch shapes of a BenchmarkLoRAStep sub-benchmark.
torch_args() {
  case $1 in
    tiny) echo "--vocab 256 --hidden 64 --inter 172 --layers 2 --heads 4 --kv-heads 2 --batch 8 --seq 64" ;;
    d256*) echo "--vocab 256 --hidden 256 --inter 688 --layers 4 --heads 8 --kv-heads 4 --batch 8 --seq 128" ;;
    *) return 1 ;;
  esac
}

# PyTorch: OpenMP threads = cores; OpenBLAS single-threaded under PyTorch's
# own threading, and a passive OpenMP wait policy (busy-waiting threads make
# PyTorch tens of times slower on a shared, oversubscribed machine).
threads=$(nproc)
: >"$tmp/torch"
touch "$tmp/default"
for cfg in $( [ -s "$tmp/default" ] && cut -d' ' -f1 "$tmp/default"); do
  if ! args=$(torch_args "$cfg"); then echo "bench-train: no PyTorch shapes for $cfg, skipped" >&2; continue; fi
  echo "bench-train: PyTorch $cfg ($threads threads)" >&2
  # shellcheck disable=SC2086
  out=$(OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE "$PY" scripts/bench_train_torch.py $args \
        --threads "$threads" --seconds "$TORCH_SECONDS")
  echo "$out" >&2
  echo "$cfg $(awk '{print $2}' <<<"$out")" >>"$tmp/torch"
done

if [ "${#builds[@]}" -gt 0 ]; then
echo
printf '%-13s %-9s %14s %14s %8s\n' config build "fedtune tok/s" "torch tok/s" ratio
fi
for build in "${builds[@]}"; do
  while read -r cfg ours; do
    torch=$(awk -v c="$cfg" '$1 == c {print $2}' "$tmp/torch")
    if [ -z "$torch" ]; then
      printf '%-13s %-9s %14.0f %14s %8s\n' "$cfg" "$build" "$ours" - -
    else
      printf '%-13s %-9s %14.0f %14.0f %8.2f\n' "$cfg" "$build" "$ours" "$torch" \
        "$(awk -v a="$ours" -v b="$torch" 'BEGIN {print a / b}')"
    fi
  done <"$tmp/$build"
done

# The engine's instruction sets (bit-exact training, issue 16): the Host
# step's LoRA tok/s on AVX-512, AVX2 (FEDTUNE_ENGINE_ISA) and the pure-Go
# twins (generic, which emulates every fused multiply-add exactly), each
# against the default in the same run. All give the same bits; this is
# what each costs. generic runs tiny only (d256 takes minutes a step).
if [ "${SKIP_ISA:-0}" != 1 ] && [ "${SMOLLM_ONLY:-0}" != 1 ]; then
  isa_bench() { # isa_bench NAME PATTERN: tok/s lines "config tok/s" into $tmp/isa-NAME
    echo "bench-train: BenchmarkStepHost with FEDTUNE_ENGINE_ISA=$1" >&2
    FEDTUNE_ENGINE_ISA=$1 go test -run '^$' -bench "^BenchmarkStepHost\$/($2)\$" -benchtime "${ISA_BENCHTIME:-3x}" -count 1 ./model/engine/ \
      | tee "$tmp/isa-$1.log" >&2
    awk '/^BenchmarkStepHost\// { name = $1; sub(/^BenchmarkStepHost\//, "", name); sub(/-[0-9]+$/, "", name)
           for (i = 2; i < NF; i++) if ($(i+1) == "tok/s") print name, $i }' "$tmp/isa-$1.log" >"$tmp/isa-$1"
  }
  isa_bench auto 'tiny-lora|d256-4layer-lora'
  isas=()
  for isa in avx512 avx2 generic; do
    pat='tiny-lora|d256-4layer-lora'
    [ "$isa" = generic ] && pat='tiny-lora'
    if [ "$isa" = avx512 ] && ! grep -qw avx512f /proc/cpuinfo; then echo "bench-train: no AVX-512 on this CPU, skipped" >&2; continue; fi
    if [ "$isa" = avx2 ] && ! grep -qw avx2 /proc/cpuinfo; then echo "bench-train: no AVX2 on this CPU, skipped" >&2; continue; fi
    isa_bench "$isa" "$pat"
    isas+=("$isa")
  done
  echo
  printf '%-18s %-8s %12s %12s %8s\n' config isa "tok/s" "auto tok/s" ratio
  for isa in "${isas[@]}"; do
    while read -r cfg ours; do
      base=$(awk -v c="$cfg" '$1 == c {print $2}' "$tmp/isa-auto")
      printf '%-18s %-8s %12.0f %12.0f %8.2f\n' "$cfg" "$isa" "$ours" "$base" "$(awk -v a="$ours" -v b="$base" 'BEGIN {print a / b}')"
    done <"$tmp/isa-$isa"
  done
  echo "(ratio = that instruction set / the default (the best this CPU has), same run; noisy on shared cores)"
fi

# The SmolLM2-135M shape: engine step and GEMM rate in one process, then PyTorch.
if [ "${SKIP_SMOLLM:-0}" != 1 ]; then
  steps=${SMOLLM_STEPS:-3}
  echo "bench-train: engine SmolLM2-135M shape, 4 x 256 tokens, $steps steps (scripts/trainbench)" >&2
  go build -o "$tmp/trainbench" ./scripts/trainbench
  ours=$("$tmp/trainbench" -batch 4 -seq 256 -steps "$steps")
  echo "$ours" >&2
  echo "bench-train: PyTorch SmolLM2-135M shape ($threads threads)" >&2
  theirs=$(OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE "$PY" scripts/bench_train_torch.py --vocab 49152 --hidden 576 \
    --inter 1536 --layers 30 --heads 9 --kv-heads 3 --batch 4 --seq 256 --warmup 1 --min-steps "$steps" \
    --threads "$threads" --seconds "$TORCH_SECONDS")
  echo "$theirs" >&2
  field() { awk -v k="$1" '{for (i = 1; i < NF; i++) if ($i == k) print $(i+1)}'; }
  etps=$(field engine_tok_per_s <<<"$ours"); gflop=$(field step_gflop <<<"$ours")
  egf=$(field step_gflops <<<"$ours"); gemm=$(field gemm_gflops <<<"$ours")
  ttps=$(field torch_tok_per_s <<<"$theirs")
  tgf=$(awk -v t="$ttps" -v f="$gflop" 'BEGIN {printf "%.1f", t / 1024 * f}')
  echo
  echo "smollm2-135m shape, 4 x 256 tokens a step, LoRA r=8 q_proj,v_proj; $gflop model GFLOP a step"
  printf '%-8s %10s %14s %14s %12s\n' side "tok/s" "step GFLOP/s" "GEMM GFLOP/s" "step/GEMM"
  printf '%-8s %10.1f %14.1f %14.1f %12.2f\n' engine "$etps" "$egf" "$gemm" "$(awk -v a="$egf" -v b="$gemm" 'BEGIN {print a / b}')"
  printf '%-8s %10.1f %14.1f %14.1f %12.2f\n' pytorch "$ttps" "$tgf" "$gemm" "$(awk -v a="$tgf" -v b="$gemm" 'BEGIN {print a / b}')"
  echo "engine / PyTorch: $(awk -v a="$etps" -v b="$ttps" 'BEGIN {printf "%.2f", a / b}')x (goal >= 4); step / GEMM rate: $(awk -v a="$egf" -v b="$gemm" 'BEGIN {printf "%.2f", a / b}') (goal >= 0.7)"
  echo "engine with the frozen base held as bfloat16 (as a BF16 checkpoint loads): $etps tok/s; the same weights held as float32, steps interleaved: $(field f32_tok_per_s <<<"$ours") tok/s (bf16 / f32 speed $(field bf16_over_f32 <<<"$ours"))"
fi
echo "(ratio = fedtune / PyTorch; $(nproc) cores; $(uptime | sed 's/.*load average/load average/'))"
