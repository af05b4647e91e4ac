#!/usr/bin/env bash
# bench-aggregate.sh — FedAvg throughput beside the machine's streaming-read
# ceiling and beside numpy running Flower's `aggregate`, and the peak RSS of
# `fedtune aggregate` as the number of inputs grows. Every number is measured
# in this run, on this machine; each is the best of a few repetitions.
#
#   1. ceiling:     every core sums its share of a 1 GiB buffer (GB/s; the
#                   best of measurements spread over the run, some of them
#                   alternating with the FedAvg kernel's repetitions)
#   2. ours:        FedAvg over 16 inputs × 64 MiB: the kernel path alone
#                   (inputs in memory, chunks of 2^18 elements as the
#                   aggregator reads them; the fused kernels.WeightedMean and
#                   the unfused WeightedSum + Store), and `fedtune aggregate --strategy
#                   fedavg` on the same 16 safetensors files in the page cache
#   3. numpy:       Flower's FedAvg `aggregate` in numpy on the same files
#   4. RSS:         peak RSS of `fedtune aggregate` on 8, 16, 32 inputs × 256 MiB
#
# GB/s counts the input bytes (16 × 64 MiB) per second of aggregation.
# Needs about 9 GiB free under $TMPDIR (default /tmp); deletes it after.
# Env: BENCH_REPS (default 3), BENCH_SKIP_RSS=1 to skip step 4.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${BENCH_REPS:-3}
PY=/usr/bin/python3

log() { printf '%s\n' "$*" >&2; }

apt_install() {
  local run=()
  [[ $(id -u) -ne 0 ]] && run=(sudo)
  "${run[@]}" apt-get -o DPkg::Lock::Timeout=300 -y -q install "$@" >/dev/null
}

if ! "$PY" -c 'import numpy' 2>/dev/null; then
  log "installing python3-numpy"
  apt_install python3-numpy
fi
if [[ ! -x /usr/bin/time ]]; then
  log "installing time"
  apt_install time
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-aggregate.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

log "building"
go build -o "$WORK/aggbench" ./scripts/aggbench
HAVE_CLI=0
if go build -o bin/fedtune ./cmd/fedtune 2>"$WORK/build.log" &&
  bin/fedtune aggregate --help >/dev/null 2>&1; then
  HAVE_CLI=1
else
  log "note: bin/fedtune with an 'aggregate' command is not available; measuring the kernel path only"
  sed 's/^/  /' "$WORK/build.log" >&2 || true
fi

value() { awk -v k="$1" '$1 == k { print $2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
gbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.2f", b / s / 1e9 }'; }

# best_seconds CMD...: the best wall time of $REPS runs, in seconds.
best_seconds() {
  local best="" t0 t1 s
  for ((i = 0; i < REPS; i++)); do
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    best=$(awk -v a="${best:-$s}" -v b="$s" 'BEGIN { print (b < a ? b : a) }')
  done
  echo "$best"
}

# aggregate OUT FILE...: fedtune aggregate --strategy fedavg over the files.
aggregate() {
  local out=$1
  shift
  bin/fedtune aggregate --strategy fedavg --out "$out" "$@"
}

nproc_=$(nproc)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
# The machine may be shared: the ceiling is measured before, between and
# after the other steps, and the best of those is the one reported.
CEIL=0
measure_ceiling() {
  log "== streaming-read ceiling ($nproc_ cores, 1 GiB)"
  local c
  c=$("$WORK/aggbench" ceiling -mib 1024 -reps 9 | value ceiling)
  CEIL=$(awk -v a="$CEIL" -v b="$c" 'BEGIN { print (b > a ? b : a) }')
}
measure_ceiling

log "== 2. FedAvg, 16 inputs × 64 MiB"
D16="$WORK/in16x64"
mkdir -p "$D16"
"$WORK/aggbench" gen -dir "$D16" -inputs 16 -mib 64 -tensors 4
FILES16=("$D16"/update-*.safetensors)
BYTES16=$((16 * 64 * 1024 * 1024))
# kernel: the FedAvg kernel path, best of two runs (before and after the
# CLI); each run also reads the ceiling buffer before every repetition, so
# that both see the same load.
# UNFUSED is the same with WeightedSum then Store (the accumulator in memory).
kernel() {
  local out k c
  out=$("$WORK/aggbench" fedavg -reps 9 -ceiling-mib 1024 "${FILES16[@]}")
  k=$(value fedavg_kernel <<<"$out")
  c=$(value ceiling <<<"$out")
  KERNEL=$(awk -v a="${KERNEL:-0}" -v b="$k" 'BEGIN { print (b > a ? b : a) }')
  CEIL=$(awk -v a="$CEIL" -v b="$c" 'BEGIN { print (b > a ? b : a) }')
  out=$("$WORK/aggbench" fedavg -unfused -reps 9 -ceiling-mib 1024 "${FILES16[@]}")
  k=$(value fedavg_kernel <<<"$out")
  c=$(value ceiling <<<"$out")
  UNFUSED=$(awk -v a="${UNFUSED:-0}" -v b="$k" 'BEGIN { print (b > a ? b : a) }')
  CEIL=$(awk -v a="$CEIL" -v b="$c" 'BEGIN { print (b > a ? b : a) }')
}
KERNEL=0
UNFUSED=0
kernel
measure_ceiling
CMD=""
if [[ $HAVE_CLI == 1 ]]; then
  cat "${FILES16[@]}" >/dev/null # into the page cache
  aggregate "$WORK/out16.safetensors" "${FILES16[@]}" >/dev/null # warm-up, and fail loudly here
  SECS=$(best_seconds aggregate "$WORK/out16.safetensors" "${FILES16[@]}")
  CMD=$(gbps "$BYTES16" "$SECS")
  rm -f "$WORK/out16.safetensors"
fi
kernel

log "== 3. numpy Flower aggregate, same files"
NUMPY=$("$PY" scripts/flower_aggregate.py --reps "$REPS" "${FILES16[@]}" | value numpy_flower)
rm -rf "$D16"
measure_ceiling

echo
echo "FedAvg, 16 inputs × 64 MiB F32 ($(nproc) cores, $(go env GOARCH); load average at start $LOAD0, now $(cut -d' ' -f1-3 /proc/loadavg)):"
printf '  %-44s %8s GB/s\n' "streaming-read ceiling (1 GiB, all cores)" "$CEIL"
printf '  %-44s %8s GB/s   %5s× ceiling  %5s× numpy\n' "kernels.WeightedMean (fused), in memory" "$KERNEL" "$(ratio "$KERNEL" "$CEIL")" "$(ratio "$KERNEL" "$NUMPY")"
printf '  %-44s %8s GB/s   %5s× ceiling  %5s× numpy\n' "WeightedSum + Store (unfused), in memory" "$UNFUSED" "$(ratio "$UNFUSED" "$CEIL")" "$(ratio "$UNFUSED" "$NUMPY")"
if [[ -n $CMD ]]; then
  printf '  %-44s %8s GB/s   %5s× ceiling  %5s× numpy\n' "fedtune aggregate --strategy fedavg (files)" "$CMD" "$(ratio "$CMD" "$CEIL")" "$(ratio "$CMD" "$NUMPY")"
else
  printf '  %-44s %8s\n' "fedtune aggregate --strategy fedavg" "(not built: kernel path only)"
fi
printf '  %-44s %8s GB/s   %5s× ceiling\n' "numpy Flower aggregate (in memory)" "$NUMPY" "$(ratio "$NUMPY" "$CEIL")"

if [[ $HAVE_CLI == 0 || ${BENCH_SKIP_RSS:-0} == 1 ]]; then
  echo
  echo "peak RSS: skipped"
  exit 0
fi

log "== 4. peak RSS, inputs × 256 MiB"
need=$((33 * 256 * 1024)) # KiB: 32 inputs and the output
free=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
if ((free < need + 1024 * 1024)); then
  echo
  echo "peak RSS: skipped, $((free / 1024)) MiB free under $WORK, need $((need / 1024 + 1024))"
  exit 0
fi
D256="$WORK/in32x256"
mkdir -p "$D256"
"$WORK/aggbench" gen -dir "$D256" -inputs 32 -mib 256 -tensors 8
FILES256=("$D256"/update-*.safetensors)
echo
echo "fedtune aggregate --strategy fedavg, inputs of 256 MiB: peak RSS"
printf '  %7s %10s %10s\n' inputs "RSS MiB" "seconds"
for n in 8 16 32; do
  /usr/bin/time -v -o "$WORK/time.txt" bin/fedtune aggregate --strategy fedavg --out "$WORK/out256.safetensors" "${FILES256[@]:0:n}" >/dev/null
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time.txt")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$WORK/time.txt")
  printf '  %7d %10d %10s\n' "$n" $((rss / 1024)) "$wall"
  rm -f "$WORK/out256.safetensors"
done
