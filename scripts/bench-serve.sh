#!/usr/bin/env bash
# make bench-serve: greedy generation at the SmolLM2-135M shape (vocab 49152,
# hidden 576, 30 layers, 9 heads / 3 kv heads, intermediate 1536, tied
# embeddings, rope_theta 100000; random weights, FP32) on the CPU, fedtune
# beside PyTorch, 128-token prompts and 128 new tokens per stream:
#   - tokens/s of one stream,
#   - aggregate tokens/s of 16 concurrent streams,
#   - time to first token p50 / p99 at 16 streams.
# fedtune runs BenchmarkServe (./model/engine: the continuous-batching
# Batcher on the Host device, every stream added at once; then the same 16
# streams staggered: 16 clients, client c starting c·D/16 after the start,
# D the burst's time, each sending a second request when its first ends;
# the staggered TTFT is over those second requests, each arriving while the
# other streams decode: the server's steady state at 16 streams). PyTorch is
# Debian's python3-torch (installed with apt-get when missing) running
# scripts/bench_serve_torch.py: a plain LLaMA decoder with a KV cache, the
# batch's prompts prefilled together, then one token per step for the whole
# batch, torch.set_num_threads(nproc), inference_mode. Its time to first
# token is the end of the prefill (whose last position gives the first
# token). Prints both, the ratio fedtune/PyTorch (tokens/s: above 1 means
# fedtune is faster) and the goals of the issue with PASS / MISS, all
# measured in this run.
#
# The burst's p99 has a floor no scheduling goes under: the last stream's
# first token needs every prompt prefilled, 16x128 tokens through the
# model's matrix products (prefill-GFLOP, from the config), which run at
# best at the GEMM ceiling of this machine: BenchmarkDecodeStep's
# gemm=512x1536x576 (the MLP's product on 512 rows, packed weight, all
# cores), measured in this run, before and after BenchmarkServe (the best
# of its runs counts). The summary prints that floor beside the burst's
# p99 and the core count.
#
# Environment: BENCHTIME (go test -benchtime for BenchmarkServe, default 1x:
# one batch of streams; 3x for a steadier number), FEDTUNE_SERVE_ROUNDS
# (requests per client in staggered=16, default 2: its TTFT is over the
# 16·(rounds−1) requests after each client's first, so at 2 its p99 is
# the largest of 16; 4 gives 48 samples and a steadier p99 in about twice
# the time), TORCH_RUNS (timed
# generations per PyTorch batch size, default 1), TORCH_THREADS (default
# nproc), TORCH_BLAS_THREADS (OpenBLAS threads under PyTorch, default 1).
# On a loaded machine both sides are noisy: compare numbers from one run.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCHTIME=${BENCHTIME:-1x}
TORCH_RUNS=${TORCH_RUNS:-1}
TORCH_THREADS=${TORCH_THREADS:-$(nproc)}
TORCH_BLAS_THREADS=${TORCH_BLAS_THREADS:-1}
PY=/usr/bin/python3
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "bench-serve: installing python3-torch with apt-get" >&2
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-torch >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

load() { uptime | sed 's/.*load average/load average/'; }
load0=$(load)
echo "bench-serve: start, $(nproc) cores, $load0" >&2

# The GEMM ceiling (GFLOP/s on all cores), best of a few runs.
ceiling() {
  go test -run '^$' -bench '^BenchmarkDecodeStep$/^gemm=512x1536x576$' -benchtime 100x -count 3 -timeout 10m \
    ./model/engine/ | tee -a "$tmp/gemm.log" >&2
}
echo "bench-serve: GEMM ceiling (BenchmarkDecodeStep/gemm=512x1536x576)" >&2
ceiling

# fedtune: one line per sub-benchmark, "streams tok/s ttft-p50-ms ttft-p99-ms tok/cpu-s prefill-GFLOP".
echo "bench-serve: go test -bench 'BenchmarkServe' (-benchtime $BENCHTIME)" >&2
go test -run '^$' -bench '^BenchmarkServe$/^(streams=(1|16)|staggered=16)$' -benchtime "$BENCHTIME" -count 1 -timeout 60m \
  ./model/engine/ | tee "$tmp/go.log" >&2
awk '/^BenchmarkServe\/streams=/ {
       s = $1; sub(/^BenchmarkServe\/streams=/, "", s); sub(/-[0-9]+$/, "", s)
       tps = p50 = p99 = tpc = gf = ""
       for (i = 2; i < NF; i++) {
         if ($(i+1) == "tok/s") tps = $i
         if ($(i+1) == "ttft-p50-ms") p50 = $i
         if ($(i+1) == "ttft-p99-ms") p99 = $i
         if ($(i+1) == "tok/cpu-s") tpc = $i
         if ($(i+1) == "prefill-GFLOP") gf = $i
       }
       print s, tps, p50, p99, tpc, gf
     }
     /^BenchmarkServe\/staggered=/ {
       tps = p50 = p99 = gap = ""
       for (i = 2; i < NF; i++) {
         if ($(i+1) == "tok/s") tps = $i
         if ($(i+1) == "ttft-p50-ms") p50 = $i
         if ($(i+1) == "ttft-p99-ms") p99 = $i
         if ($(i+1) == "gap-ms") gap = $i
       }
       print tps, p50, p99, gap > "'"$tmp/stag"'"
     }' "$tmp/go.log" >"$tmp/go"
for s in 1 16; do
  if ! awk -v s=$s '$1 == s && $2 != "" && $4 != "" {f = 1} END {exit !f}' "$tmp/go"; then
    echo "bench-serve: no metrics for streams=$s in the benchmark output" >&2; exit 1
  fi
done

echo "bench-serve: GEMM ceiling again" >&2
ceiling
gemm=$(awk '/^BenchmarkDecodeStep\/gemm=/ { for (i = 2; i < NF; i++) if ($(i+1) == "GFLOP/s" && $i > best) best = $i }
            END { if (best > 0) print best }' "$tmp/gemm.log")
if [ -z "$gemm" ]; then
  echo "bench-serve: no GFLOP/s in the GEMM ceiling's output" >&2; exit 1
fi

# PyTorch: OpenMP threads = cores; OpenBLAS single-threaded under PyTorch's
# own threading, and a passive OpenMP wait policy (busy-waiting threads are
# many times slower on a shared, oversubscribed machine).
threads=$TORCH_THREADS
: >"$tmp/torch"
for b in 1 16; do
  echo "bench-serve: PyTorch batch $b ($threads threads, $TORCH_RUNS timed run(s))" >&2
  out=$(OPENBLAS_NUM_THREADS=$TORCH_BLAS_THREADS OMP_WAIT_POLICY=PASSIVE "$PY" scripts/bench_serve_torch.py \
        --batch "$b" --threads "$threads" --runs "$TORCH_RUNS")
  echo "$out" >&2
  awk -v b=$b '{print b, $2, $4, $6, $8}' <<<"$out" >>"$tmp/torch"
done

get() { awk -v s="$2" -v c="$3" '$1 == s {print $c}' "$tmp/$1"; }
ours1=$(get go 1 2) ours16=$(get go 16 2) p50=$(get go 16 3) p99=$(get go 16 4)
pt1=$(get torch 1 2) pt16=$(get torch 16 2) tp50=$(get torch 16 3) tp99=$(get torch 16 4)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
verdict() { awk -v x="$1" -v op="$2" -v g="$3" 'BEGIN {
  ok = (op == ">=") ? (x >= g) : (x < g); print ok ? "PASS" : "MISS" }'; }
r1=$(ratio "$ours1" "$pt1") r16=$(ratio "$ours16" "$pt16")
cpu1=$(get go 1 5) cpu16=$(get go 16 5) tcpu1=$(get torch 1 5) tcpu16=$(get torch 16 5)

echo
printf '%-28s %12s %12s %8s   %-16s %s\n' metric fedtune PyTorch ratio goal result
printf '%-28s %12.1f %12.1f %8s   %-16s %s\n' "tok/s, 1 stream" "$ours1" "$pt1" "$r1" "ratio >= 3" "$(verdict "$r1" '>=' 3)"
printf '%-28s %12.1f %12.1f %8s   %-16s %s\n' "tok/s, 16 streams (sum)" "$ours16" "$pt16" "$r16" "ratio >= 5" "$(verdict "$r16" '>=' 5)"
printf '%-28s %12.1f %12.1f %8s   %-16s %s\n' "tok/CPU-s, 1 stream" "$cpu1" "$tcpu1" "$(ratio "$cpu1" "$tcpu1")" "-" "-"
printf '%-28s %12.1f %12.1f %8s   %-16s %s\n' "tok/CPU-s, 16 streams" "$cpu16" "$tcpu16" "$(ratio "$cpu16" "$tcpu16")" "-" "-"
printf '%-28s %12.0f %12.0f %8s   %-16s %s\n' "TTFT p50 ms, 16 streams" "$p50" "$tp50" "$(ratio "$p50" "$tp50")" "-" "-"
printf '%-28s %12.0f %12.0f %8s   %-16s %s\n' "TTFT p99 ms, 16 streams" "$p99" "$tp99" "$(ratio "$p99" "$tp99")" "fedtune < 500" "$(verdict "$p99" '<' 500)"
if [ -s "$tmp/stag" ]; then
  read -r stps sp50 sp99 sgap <"$tmp/stag"
  printf '%-28s %12.1f %12s %8s   %-16s %s\n' "tok/s, 16 staggered" "$stps" - - - -
  printf '%-28s %12.0f %12s %8s   %-16s %s\n' "TTFT p50 ms, 16 staggered" "$sp50" - - - -
  printf '%-28s %12.0f %12s %8s   %-16s %s\n' "TTFT p99 ms, 16 staggered" "$sp99" - - "fedtune < 500" "$(verdict "$sp99" '<' 500)"
fi
# The burst's floor: its prefill products at the GEMM ceiling.
gflop=$(get go 16 6)
floor=$(awk -v f="$gflop" -v g="$gemm" 'BEGIN {printf "%.0f", f / g * 1e3}')
echo
printf 'p99 TTFT 16 streams (burst) %.0f ms — %s: floor on this %s-core machine ≈ %s ms\n' \
  "$p99" "$(verdict "$p99" '<' 500)" "$(nproc)" "$floor"
printf '  (the floor: %.1f GFLOP of prefill products, 16x128 prompt tokens, at the GEMM ceiling %.1f GFLOP/s\n' "$gflop" "$gemm"
printf '   measured in this run on %s cores; the goal, < 500 ms, needs %.0f GFLOP/s)\n' "$(nproc)" \
  "$(awk -v f="$gflop" 'BEGIN {print f / 0.5}')"
if [ -s "$tmp/stag" ]; then
  samples="?"
  if [[ $BENCHTIME =~ ^([0-9]+)x$ ]]; then samples=$((16 * (${FEDTUNE_SERVE_ROUNDS:-2} - 1) * BASH_REMATCH[1])); fi
  printf 'p99 TTFT 16 staggered %.0f ms — %s (goal < 500 ms; %s requests timed)\n' "$sp99" "$(verdict "$sp99" '<' 500)" "$samples"
fi
echo "(SmolLM2-135M shape, random FP32 weights; 128-token prompts, 128 new tokens, greedy;"
echo " 16 streams: all 16 requests added at once, TTFT over all 16 (its floor is the prefill of all"
echo " 16 prompts, 16x128 tokens); 16 staggered: arrivals one every ${sgap:-?} ms (the burst's time / 16),"
echo " 16 clients each sending ${FEDTUNE_SERVE_ROUNDS:-2} requests in turn (FEDTUNE_SERVE_ROUNDS), TTFT over all but each client's first;"
echo " tok/CPU-s: generated tokens per second of the process's CPU time (steadier than wall time on a"
echo " shared machine, where a descheduled thread stalls its peers; not a goal of the issue);"
echo " tok/s ratio = fedtune / PyTorch, TTFT ratio = fedtune ms / PyTorch ms; BENCHTIME=$BENCHTIME, TORCH_RUNS=$TORCH_RUNS;"
echo " PyTorch threads $threads (OpenBLAS $TORCH_BLAS_THREADS); $(nproc) cores;"
echo " at the start $load0; at the end $(load))"
