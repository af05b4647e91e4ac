#!/usr/bin/env bash
# GPU aggregation speed: the fused FedAvg kernel (16 inputs of 64 MiB, all
# on the GPU) beside a device-to-device copy of the same bytes, measured in
# the same run; prints both in GB/s of bytes read and their ratio (goal:
# >= 0.8). Needs a GPU. Builds the test binary unless KCUDA_TEST names a
# prebuilt one (go test -c -tags fedcuda -o kcuda.test ./kernels/cuda).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${KCUDA_TEST:-}
if [ -z "$bin" ]; then
	bin=$(mktemp -d)/kcuda.test
	go test -c -tags fedcuda -o "$bin" ./kernels/cuda
fi
out=$("$bin" -test.run '^$' -test.bench '^Benchmark(WeightedMeanGPU|CopyD2D)$' -test.benchtime 3s -test.count 3 -test.v 2>&1) || {
	echo "$out"
	exit 1
}
echo "$out"
if echo "$out" | grep -q -- '--- SKIP'; then
	echo "no GPU: nothing measured" >&2
	exit 1
fi
echo "$out" | awk '
	/^BenchmarkWeightedMeanGPU/ { for (i = 1; i <= NF; i++) if ($(i+1) == "MB/s" && $i > wm) wm = $i }
	/^BenchmarkCopyD2D/         { for (i = 1; i <= NF; i++) if ($(i+1) == "MB/s" && $i > cp) cp = $i }
	END {
		if (wm == 0 || cp == 0) { print "benchmarks missing from the output"; exit 1 }
		printf "fused weighted mean: %.1f GB/s read; device copy: %.1f GB/s; ratio %.2fx (goal >= 0.80x)\n", wm / 1000, cp / 1000, wm / cp
	}'
