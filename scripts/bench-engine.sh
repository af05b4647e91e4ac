#!/usr/bin/env bash
# Measures the engine's training step on the Host device against
# model.Trainer (Gorgonia) on the same shapes, in the same run, and prints
# tokens/s and the ratio for each case. Usage: scripts/bench-engine.sh [benchtime]
set -euo pipefail
cd "$(dirname "$0")/.."
benchtime="${1:-5x}"
out="$(go test -run '^$' -bench '^BenchmarkStep(Host|Gorgonia)$' -benchtime "$benchtime" ./model/engine/)"
echo "$out" | grep '^Benchmark' || true
echo "$out" | awk '
	/^BenchmarkStep(Host|Gorgonia)\// {
		split($1, parts, "/"); kind = parts[1]; sub(/^BenchmarkStep/, "", kind)
		name = parts[2]; sub(/-[0-9]+$/, "", name)
		for (i = 1; i <= NF; i++) if ($(i+1) == "tok/s") tok[kind, name] = $i
		names[name] = 1
	}
	END {
		printf "%-20s %12s %12s %8s\n", "case", "host tok/s", "gorgonia", "ratio"
		for (n in names) if ((("Host", n) in tok) && (("Gorgonia", n) in tok))
			printf "%-20s %12.0f %12.0f %7.2fx\n", n, tok["Host", n], tok["Gorgonia", n], tok["Host", n] / tok["Gorgonia", n]
	}'
