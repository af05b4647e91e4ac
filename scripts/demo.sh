#!/usr/bin/env bash
# The fedtune demo: a federated fine-tuning job on localhost, end to end.
#
# Three ledger nodes (raft + pebble, separate processes) form the chain; three
# trainers, each holding its own shipped dataset shard, fine-tune a LoRA
# adapter of the shared base model in parallel processes; the aggregator
# combines their updates with FedAvg; every step is a signed transaction on the
# ledger. The demo prints eval loss before and after and the model's lineage.
# (The coordinator and trainer services of the network issue will replace the
# shell orchestration of rounds below with `fedtune devnet up`.)
#
# Usage: scripts/demo.sh [DIR]        default DIR: a fresh temporary folder
# Env:   ROUNDS=2 STEPS=40 FEDTUNE=bin/fedtune
set -euo pipefail
cd "$(dirname "$0")/.."

F=${FEDTUNE:-bin/fedtune}
ROUNDS=${ROUNDS:-2}
STEPS=${STEPS:-40}
DIR=${1:-$(mktemp -d "${TMPDIR:-/tmp}/fedtune-demo.XXXXXX")}
DATA=datasets/testdata
JOB=demo-$(date +%s)
mkdir -p "$DIR"/{keys,logs,models,updates}
[ -x "$F" ] || go build -o "$F" ./cmd/fedtune

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "interrupted: stopping the network"; exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }
q() { "$F" --log-level warn "$@"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

step "1/6 identities: ed25519 keys in $DIR/keys"
declare -A ID
for who in admin coordinator aggregator trainer-1 trainer-2 trainer-3 node-1 node-2 node-3; do
  out=$(q keygen -o "$DIR/keys/$who.key")
  ID[$who]=${out%%$'\n'*}
  printf '  %-12s %s\n' "$who" "${ID[$who]}"
done
pem() { sed 's/^/      /' "$DIR/keys/$1.pub"; }
{
  echo "chain_id: fedtune-demo"
  echo "members:"
  for m in admin:admin coordinator:coordinator aggregator:aggregator trainer-1:trainer trainer-2:trainer trainer-3:trainer; do
    printf '  - name: %s\n    role: %s\n    public_key: |\n' "${m%%:*}" "${m##*:}"
    pem "${m%%:*}"
  done
  echo "nodes:"
  for n in node-1 node-2 node-3; do
    printf '  - name: %s\n    public_key: |\n' "$n"
    pem "$n"
  done
  printf 'policy:\n  block_interval: 10ms\n'
} >"$DIR/genesis.yaml"

step "2/6 three ledger nodes on 127.0.0.1 (logs in $DIR/logs)"
port=$((20000 + RANDOM % 20000))
for i in 1 2 3; do
  RAFT[$i]=127.0.0.1:$((port + i)); GRPC[$i]=127.0.0.1:$((port + 10 + i)); MET[$i]=127.0.0.1:$((port + 20 + i))
done
for i in 1 2 3; do
  q ledger init --genesis "$DIR/genesis.yaml" --data "$DIR/ledger-$i" --key "$DIR/keys/node-$i.key" >/dev/null
  {
    printf 'node_id: %s\ndata_dir: ledger-%s\nkey_file: keys/node-%s.key\n' "${ID[node-$i]}" "$i" "$i"
    printf 'raft_address: %s\ngrpc_address: %s\nmetrics_address: %s\nbootstrap: true\npeers:\n' "${RAFT[$i]}" "${GRPC[$i]}" "${MET[$i]}"
    for j in 1 2 3; do
      printf '  - id: %s\n    raft_address: %s\n    grpc_address: %s\n' "${ID[node-$j]}" "${RAFT[$j]}" "${GRPC[$j]}"
    done
  } >"$DIR/node-$i.yaml"
  "$F" ledger start --config "$DIR/node-$i.yaml" >"$DIR/logs/node-$i.log" 2>&1 &
  pids+=($!)
done
ADDR=${GRPC[1]}
for _ in $(seq 100); do
  if q ledger status --addr "$ADDR" 2>/dev/null | grep -qi 'leader.*[0-9a-f]\{8\}'; then break; fi
  sleep 0.2
done
q ledger status --addr "$ADDR" | sed 's/^/  /'

tx() { # tx WHO TYPE JSON
  q tx submit "$2" --addr "$ADDR" --key "$DIR/keys/$1.key" --body "$3" | sed 's/^/  /'
}

step "3/6 base model: tiny LLaMA, pre-trained briefly on the shipped English text"
q model init --config configs/models/tiny.yaml --seed 1 -o "$DIR/models/init" >/dev/null
q train --full --model "$DIR/models/init" --data "$DATA/english/train.txt" --steps 100 --lr 3e-3 --seed 1 \
  -o "$DIR/models/base" 2>"$DIR/logs/pretrain.log" >/dev/null
BASE=$(q model digest "$DIR/models/base")
echo "  base model $BASE"
tx coordinator ModelRegistered "{\"digest\":\"$BASE\",\"name\":\"tiny-llama-demo\",\"licence\":\"CC0-1.0\",\"source\":\"fedtune model init configs/models/tiny.yaml, 100 steps on datasets/testdata/english\"}"
declare -A DS NS
for i in 1 2 3; do
  shard=$DATA/shards/trainer-$i.jsonl
  DS[$i]=$(sha "$shard"); NS[$i]=$(grep -c . "$shard")
  tx "trainer-$i" DatasetRegistered "{\"digest\":\"${DS[$i]}\",\"name\":\"shard-$i\",\"licence\":\"CC0-1.0\",\"source\":\"$shard\",\"samples\":${NS[$i]}}"
done

EVAL=$DATA/tasks/eval.jsonl
before=$(q eval --model "$DIR/models/base" --data "$EVAL" --json)
echo "  eval before: $before"

step "4/6 federated rounds: $ROUNDS × 3 trainers × $STEPS local LoRA steps, FedAvg"
current=$BASE; adapter=""
for r in $(seq "$ROUNDS"); do
  deadline=$(date -u -d '+10 minutes' +%Y-%m-%dT%H:%M:%SZ)
  cfg=$(printf 'job=%s strategy=fedavg steps=%s lora=q_proj,v_proj r=8' "$JOB" "$STEPS" | sha256sum | cut -d' ' -f1)
  tx coordinator RoundOpened "{\"job_id\":\"$JOB\",\"round\":$r,\"config_digest\":\"$cfg\",\"base_model\":\"$current\",\"strategy\":\"fedavg\",\"trainers\":[\"${ID[trainer-1]}\",\"${ID[trainer-2]}\",\"${ID[trainer-3]}\"],\"deadline\":\"$deadline\"}"
  tpids=()
  for i in 1 2 3; do
    out=$DIR/updates/r$r-trainer-$i
    # Each trainer is its own process and reads only its own shard.
    "$F" train --model "$DIR/models/base" ${adapter:+--adapter "$adapter"} --data "$DATA/shards/trainer-$i.jsonl" \
      --steps "$STEPS" --lr 1e-2 --lora-targets q_proj,v_proj --seed $((r * 10 + i)) -o "$out" \
      >"$out.digest" 2>"$DIR/logs/train-r$r-$i.log" &
    tpids+=($!)
  done
  for p in "${tpids[@]}"; do wait "$p"; done
  ins=()
  for i in 1 2 3; do
    out=$DIR/updates/r$r-trainer-$i
    U[$i]=$(cat "$out.digest")
    loss=$(grep -o 'final_loss=[0-9.]*' "$DIR/logs/train-r$r-$i.log" | cut -d= -f2 || true)
    echo "  round $r trainer-$i update ${U[$i]:0:16}… loss ${loss:-?}"
    tx "trainer-$i" UpdateSubmitted "{\"job_id\":\"$JOB\",\"round\":$r,\"update_digest\":\"${U[$i]}\",\"dataset_digest\":\"${DS[$i]}\",\"samples\":${NS[$i]},\"metrics\":{\"loss\":${loss:-0}}}"
    ins+=("$out/adapter_model.safetensors@${NS[$i]}")
  done
  g=$DIR/models/global-r$r
  mkdir -p "$g"
  cp "$DIR/updates/r$r-trainer-1/adapter_config.json" "$g/"
  current=$(q aggregate --strategy fedavg -o "$g/adapter_model.safetensors" "${ins[@]}" | awk '{print $1}')
  total=$((NS[1] + NS[2] + NS[3]))
  contrib=""
  for i in 1 2 3; do
    w=$(awk -v n="${NS[$i]}" -v t="$total" 'BEGIN{printf "%.6f", n/t}')
    contrib+="${contrib:+,}{\"trainer\":\"${ID[trainer-$i]}\",\"update_digest\":\"${U[$i]}\",\"weight\":$w}"
  done
  tx aggregator RoundCommitted "{\"job_id\":\"$JOB\",\"round\":$r,\"model_digest\":\"$current\",\"strategy\":\"fedavg\",\"contributors\":[$contrib]}"
  echo "  round $r committed: global adapter $current"
  adapter=$g
done

step "5/6 evaluation on held-out task data ($EVAL)"
after=$(q eval --model "$DIR/models/base" --adapter "$adapter" --data "$EVAL" --json)
echo "  before: $before"
echo "  after:  $after"

step "6/6 the ledger: lineage of the final model and the chain"
q ledger query lineage "$current" --addr "$ADDR" | sed 's/^/  /'
q ledger status --addr "${GRPC[3]}" | sed 's/^/  /'
echo
echo "The chain, keys, models and logs are in $DIR"
