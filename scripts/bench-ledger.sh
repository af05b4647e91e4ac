#!/usr/bin/env bash
# bench-ledger.sh — signed txs committed per second, and p50/p99 commit
# latency, on a 3-node fedtune ledger cluster on loopback with synced pebble
# stores, at 1, 16 and 256 concurrent clients; in the same run the same
# figures for a 3-node etcd cluster (Debian's etcd-server, its defaults but
# with client and peer TLS and client certificates, as our nodes run raft and
# gRPC over mutual TLS; on loopback, values the size of our txs); then the
# ratios ours/etcd.
#
#   make bench-ledger            (or: bash scripts/bench-ledger.sh)
#
# Environment: DURATION (per level, default 10s), CONC (default 1,16,256),
# MODE (auto: the real ledger node over gRPC, then the storage+raft level
# beneath it, which also stands in if the node cannot run; grpc or raft: only
# that one), BLOCK_INTERVAL (the genesis policy's block_interval, default
# 50ms as in a default genesis), PROFILE=1 to print the top of CPU profiles
# (the three nodes then run inside the driver process, so that one profile
# covers them).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-10s}
CONC=${CONC:-1,16,256}
MODE=${MODE:-auto}
PROFILE=${PROFILE:-0}
BLOCK_INTERVAL=${BLOCK_INTERVAL:-50ms}
GO=${GO:-go}

WORK=$(mktemp -d /tmp/bench-ledger.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]:-}"; do
		[ -n "$p" ] && kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]:-}"; do
		[ -n "$p" ] && wait "$p" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "bench-ledger: $*" >&2; }

# --- tools -----------------------------------------------------------------
if ! command -v etcd >/dev/null 2>&1; then
	log "installing etcd-server with apt-get"
	if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get -y -qq install etcd-server >/dev/null
fi
log "etcd: $(etcd --version | head -1)"

log "building drivers"
$GO build -o "$WORK/fedtune" ./cmd/fedtune
$GO build -o "$WORK/ledgerbench" ./scripts/ledgerbench
(cd scripts/etcdbench && $GO build -o "$WORK/etcdbench" .)

RESULTS="$WORK/results.txt"
: >"$RESULTS"

# --- fedtune ---------------------------------------------------------------
# 1. The real ledger: 3 "fedtune ledger start" processes, txs submitted over
#    gRPC to all three nodes (followers forward to the leader).
# 2. The storage+raft level beneath it, in one process: 3 hashicorp/raft nodes
#    over TCP, synced pebblestore, every FSM verifying ed25519 signatures. It
#    says where the time goes (verify, fsync, batching) and is the fallback
#    when the node cannot run.
SYSTEMS=()
run_fedtune_grpc() {
	local prof=()
	[ "$PROFILE" = 1 ] && prof=(-cpuprofile "$WORK/node.pprof")
	"$WORK/ledgerbench" grpc -fedtune "$WORK/fedtune" -dir "$WORK/fedtune-cluster" \
		-block-interval "$BLOCK_INTERVAL" -conc "$CONC" -duration "$DURATION" "${prof[@]}" | tee -a "$RESULTS"
}
run_fedtune_raft() {
	local prof=()
	[ "$PROFILE" = 1 ] && prof=(-cpuprofile "$WORK/raft.pprof")
	"$WORK/ledgerbench" raft -dir "$WORK/raft-cluster" -size "$1" \
		-conc "$CONC" -duration "$DURATION" "${prof[@]}" | tee -a "$RESULTS"
}
tx_size() {
	awk '/^TXSIZE/ { for (i = 2; i <= NF; i++) if ($i ~ /^bytes=/) { sub("bytes=", "", $i); print $i } }' "$RESULTS" | tail -1
}

FALLBACK=0
if [ "$MODE" = auto ] || [ "$MODE" = grpc ]; then
	log "fedtune ledger: 3 nodes over gRPC"
	if run_fedtune_grpc; then
		SYSTEMS+=(fedtune)
	elif [ "$MODE" = grpc ]; then
		exit 1
	else
		FALLBACK=1
		log "the fedtune ledger node could not be driven over gRPC (see above);"
		log "FALLING BACK to the storage+raft level only"
	fi
fi
TX_SIZE=$(tx_size)
TX_SIZE=${TX_SIZE:-700}
if [ "$MODE" = auto ] || [ "$MODE" = raft ]; then
	log "storage+raft level: 3 raft nodes over TCP in one process, txs of $TX_SIZE bytes"
	run_fedtune_raft "$TX_SIZE"
	SYSTEMS+=(fedtune-raft)
fi

# --- etcd ------------------------------------------------------------------
# Client and peer traffic over TLS with client certificates required on
# both, as the fedtune nodes run gRPC and raft over mutual TLS.
CERTS="$WORK/etcd-certs"
"$WORK/ledgerbench" certs "$CERTS"
read -r -a P <<<"$("$WORK/ledgerbench" freeports 6)"
CLUSTER="e0=https://127.0.0.1:${P[3]},e1=https://127.0.0.1:${P[4]},e2=https://127.0.0.1:${P[5]}"
ENDPOINTS="https://127.0.0.1:${P[0]},https://127.0.0.1:${P[1]},https://127.0.0.1:${P[2]}"
for i in 0 1 2; do
	etcd --name "e$i" --data-dir "$WORK/etcd$i" \
		--listen-client-urls "https://127.0.0.1:${P[$i]}" \
		--advertise-client-urls "https://127.0.0.1:${P[$i]}" \
		--listen-peer-urls "https://127.0.0.1:${P[$((i + 3))]}" \
		--initial-advertise-peer-urls "https://127.0.0.1:${P[$((i + 3))]}" \
		--cert-file "$CERTS/member.pem" --key-file "$CERTS/member-key.pem" \
		--client-cert-auth --trusted-ca-file "$CERTS/ca.pem" \
		--peer-cert-file "$CERTS/member.pem" --peer-key-file "$CERTS/member-key.pem" \
		--peer-client-cert-auth --peer-trusted-ca-file "$CERTS/ca.pem" \
		--initial-cluster "$CLUSTER" --initial-cluster-state new \
		--initial-cluster-token "bench-$$" \
		--logger zap --log-outputs "$WORK/etcd$i.log" >/dev/null 2>&1 &
	PIDS+=($!)
done
log "etcd cluster (client and peer TLS) on $ENDPOINTS; values of $TX_SIZE bytes"
"$WORK/etcdbench" -endpoints "$ENDPOINTS" -conc "$CONC" -duration "$DURATION" \
	-cacert "$CERTS/ca.pem" -cert "$CERTS/client.pem" -key "$CERTS/client-key.pem" \
	-value-size "$TX_SIZE" | tee -a "$RESULTS"

# --- report ----------------------------------------------------------------
echo
echo "fedtune      = the ledger: 3 'fedtune ledger start' processes on loopback (raft and gRPC"
echo "               over mutual TLS 1.3), signed"
echo "               DatasetRegistered txs ($TX_SIZE-byte DSSE envelopes) submitted over gRPC"
echo "               to all nodes and awaited until committed (block_interval $BLOCK_INTERVAL);"
echo "               each level's txs are signed before it starts (outside the measured window)"
echo "fedtune-raft = storage+raft level: 3 hashicorp/raft nodes over TCP in one process,"
echo "               synced pebblestore, $TX_SIZE-byte ed25519-signed txs verified by every FSM"
echo "etcd         = Debian etcd-server $(etcd --version | awk '/etcd Version/ {print $3}'), 3 members on loopback, defaults"
echo "               but client and peer TLS with client certificates required,"
echo "               Puts of $TX_SIZE-byte values awaited until committed"
if [ "$FALLBACK" = 1 ]; then
	echo "NOTE: the full ledger node could not be driven over gRPC in this run; only the"
	echo "      storage+raft level was measured for fedtune."
fi
for ours in "${SYSTEMS[@]}"; do
	echo
	awk -v ours="$ours" '
	/^RESULT/ {
		delete f
		for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
		key = f["system"] SUBSEP f["conc"]
		tps[key] = f["tps"]; p50[key] = f["p50_ms"]; p99[key] = f["p99_ms"]
		if (!(f["conc"] in seen)) { seen[f["conc"]] = 1; order[n++] = f["conc"] }
	}
	END {
		printf "%-6s | %-28s | %-28s | %s\n", "", ours, "etcd", "ratio " ours "/etcd"
		printf "%-6s | %9s %8s %9s | %9s %8s %9s | %6s %6s %6s\n", "conc", "tx/s", "p50 ms", "p99 ms", "tx/s", "p50 ms", "p99 ms", "tx/s", "p50", "p99"
		for (j = 0; j < n; j++) {
			c = order[j]; a = ours SUBSEP c; b = "etcd" SUBSEP c
			printf "%-6s | %9.0f %8.2f %9.2f | %9.0f %8.2f %9.2f | %6.2f %6.2f %6.2f\n", c,
				tps[a], p50[a], p99[a], tps[b], p50[b], p99[b],
				(tps[b] > 0 ? tps[a] / tps[b] : 0), (p50[b] > 0 ? p50[a] / p50[b] : 0), (p99[b] > 0 ? p99[a] / p99[b] : 0)
		}
	}' "$RESULTS"
done
echo
grep '^BREAKDOWN' "$RESULTS" | sed 's/^BREAKDOWN /where the time goes: /' || true
if [ "$PROFILE" = 1 ]; then
	for p in node raft; do
		[ -f "$WORK/$p.pprof" ] || continue
		echo
		echo "CPU profile of the $p run (top 30 by cumulative time):"
		$GO tool pprof -top -cum -nodecount 30 "$WORK/ledgerbench" "$WORK/$p.pprof" 2>/dev/null | sed -n '6,$p' || true
	done
fi
