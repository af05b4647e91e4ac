#!/usr/bin/env bash
# make realsize: fedtune at the sizes of real published models. For each of
# SmolLM2-135M and Llama-3.2-1B, scripts/realsize writes a Hugging Face
# folder with the model's real config.json and random BF16 weights, sharded
# as transformers publishes them; then the fedtune CLI runs, each under
# /usr/bin/time -v:
#   fedtune model import HF -o IMP
#   fedtune train --model IMP (LoRA r 8 on q_proj,v_proj; engine, Host device)
#   fedtune eval --model IMP --adapter AD
#   fedtune generate --model IMP --adapter AD (greedy)
# and prints a table of wall time, peak RSS and tokens/s of each, beside the
# BF16 checkpoint size. fedtune's byte tokenizer is used (no tokenizer.json).
#
# Environment: REALSIZE_MODELS (default "smollm2-135m llama3.2-1b");
# per model (NAME in upper case, "." and "-" as "_", e.g. SMOLLM2_135M_STEPS):
# _STEPS, _BATCH, _SEQ (train shape), _EVAL_BYTES, _GEN_TOKENS.
# Defaults: 135M 3 steps of 4 x 256 tokens (the bench-train shape); 1B 2
# steps of 1 x 256 tokens (a 2-core machine takes minutes a step at 4 x 256).
# KEEP=1 keeps the temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."

TIME=/usr/bin/time
if [ ! -x "$TIME" ]; then echo "realsize: needs GNU time at $TIME (apt-get install time)" >&2; exit 1; fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/realsize.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "realsize: keeping $tmp" >&2; else trap 'rm -rf "$tmp"' EXIT; fi

echo "realsize: building fedtune and scripts/realsize" >&2
go build -o "$tmp/fedtune" ./cmd/fedtune
go build -o "$tmp/realsize" ./scripts/realsize

# text BYTES: deterministic English-like text of about BYTES bytes.
text() {
  awk -v n="$1" 'BEGIN {
    split("the a network model trains adapter weights federated round coordinator ledger token layer attention gradient loss learning rate step batch window data person joins folder checkpoint of and to in", w, " ")
    s = 12345; out = 0
    while (out < n) {
      line = ""
      for (i = 0; i < 12; i++) { s = (s * 1103515245 + 12345) % 2147483648; line = line (i ? " " : "") w[1 + int(s / 65536) % 30] }
      line = toupper(substr(line, 1, 1)) substr(line, 2) "."
      print line; out += length(line) + 1
    }
  }'
}
text 40000 >"$tmp/train.txt"

# measure NAME LOG -- CMD...: runs CMD under time -v; appends "NAME wall_s rss_kb" to $tmp/m.
measure() {
  local name=$1 log=$2; shift 3
  if ! "$TIME" -v -o "$log.time" "$@" >"$log.out" 2>"$log"; then
    echo "realsize: $name failed:" >&2; tail -20 "$log" >&2; exit 1
  fi
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s}' "$log.time")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log.time")
  echo "$name $wall $rss" >>"$tmp/m"
  echo "realsize: $name ${wall}s, peak RSS $((rss / 1024)) MiB" >&2
}

: >"$tmp/m"
: >"$tmp/rows"
for m in ${REALSIZE_MODELS:-smollm2-135m llama3.2-1b}; do
  v=$(tr 'a-z.-' 'A-Z__' <<<"$m")
  case $m in
    smollm2-135m) steps=3 batch=4 seq=256 evalb=1024 gen=8 ;;
    *) steps=2 batch=1 seq=256 evalb=256 gen=4 ;;
  esac
  steps=$(eval echo "\${${v}_STEPS:-$steps}"); batch=$(eval echo "\${${v}_BATCH:-$batch}")
  seq=$(eval echo "\${${v}_SEQ:-$seq}"); evalb=$(eval echo "\${${v}_EVAL_BYTES:-$evalb}")
  gen=$(eval echo "\${${v}_GEN_TOKENS:-$gen}")
  d=$tmp/$m
  mkdir -p "$d"
  echo "realsize: $m: writing the Hugging Face folder" >&2
  "$tmp/realsize" -model "$m" -o "$d/hf"
  ckpt=$(cat "$d"/hf/*.safetensors | wc -c)
  head -c "$evalb" "$tmp/train.txt" >"$d/eval.txt"
  measure "$m/import" "$d/import.log" -- "$tmp/fedtune" model import "$d/hf" -o "$d/imp" --name "$m-random"
  rm -rf "$d/hf" # the canonical copy is enough from here on; halves the disk used
  measure "$m/train" "$d/train.log" -- "$tmp/fedtune" train --model "$d/imp" --data "$tmp/train.txt" -o "$d/ad" \
    --steps "$steps" --batch "$batch" --seq-len "$seq" --device host
  tsec=$(sed -n 's/.*msg=trained .*seconds=\([0-9.e+-]*\).*/\1/p' "$d/train.log")
  ttps=$(sed -n 's/.*msg=trained .*tok_per_s=\([0-9.e+-]*\).*/\1/p' "$d/train.log")
  measure "$m/eval" "$d/eval.log" -- "$tmp/fedtune" eval --model "$d/imp" --adapter "$d/ad" --data "$d/eval.txt" --json
  etok=$(sed -n 's/.*"tokens": \([0-9]*\).*/\1/p' "$d/eval.log.out")
  measure "$m/generate" "$d/gen.log" -- "$tmp/fedtune" generate --model "$d/imp" --adapter "$d/ad" \
    --prompt "The network" --max-tokens "$gen" --temperature 0
  echo "$m $ckpt $steps $batch $seq $tsec $ttps $etok $gen" >>"$tmp/rows"
  rm -rf "$d/imp"
done

get() { awk -v k="$1" -v f="$2" '$1 == k {print $f}' "$tmp/m"; }
mib() { awk -v x="$1" 'BEGIN {printf "%.0f", x / 1024}'; }
echo
printf '%-13s %-9s %9s %10s %12s %10s %10s\n' model step wall_s "peak MiB" "RSS/2xBF16" "s/step" "tok/s"
while read -r m ckpt steps batch seq tsec ttps etok gen; do
  for s in import train eval generate; do
    wall=$(get "$m/$s" 2); rss=$(get "$m/$s" 3)
    ratio=$(awk -v r="$rss" -v c="$ckpt" 'BEGIN {printf "%.2f", r * 1024 / (2 * c)}')
    sps=- tps=-
    case $s in
      train) sps=$(awk -v t="$tsec" -v n="$steps" 'BEGIN {printf "%.1f", t / n}'); tps=$(printf '%.1f' "$ttps") ;;
      eval) tps=$(awk -v n="$etok" -v t="$wall" 'BEGIN {printf "%.1f", n / t}') ;;
    esac
    printf '%-13s %-9s %9s %10s %12s %10s %10s\n' "$m" "$s" "$wall" "$(mib "$rss")" "$ratio" "$sps" "$tps"
  done
  echo "  $m: BF16 checkpoint $((ckpt / 1048576)) MiB; train $steps steps of $batch x $seq tokens (s/step and tok/s from fedtune's own log: model load excluded, engine upload and adapter save included); eval $etok tokens (tok/s over the whole command, load included); generate at most $gen tokens, greedy"
done <"$tmp/rows"
echo "($(nproc) cores; $(uptime | sed 's/.*load average/load average/'))"
