#!/usr/bin/env bash
# regen.sh: rewrite the expected outputs (NAME.REF.jsonl) from the pinned npm
# packages (make test-deps-npm) after a change to corpus.jsonl or
# variants.json. Run from anywhere; needs node.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
npm=${FEDTUNE_NPM_CACHE:-$here/../../../../.cache/npm}
js=$npm/huggingface-tokenizers-0.2.0/package
rs=$npm/tokenizers-0.23.2/package
model() { echo "$npm/lenml-tokenizer-$1-3.7.2/package/models"; }
cd "$here"
for m in llama2 llama3; do
  node ref.mjs js "$js" "$(model $m)" < corpus.jsonl > $m.js.jsonl
  node ref.mjs rs "$rs" "$(model $m)" < corpus.jsonl > $m.rs.jsonl
done
node -e 'for (const v of JSON.parse(require("fs").readFileSync("variants.json","utf8"))) console.log(v.name, v.base)' |
  while read -r name base; do
    node ref.mjs rs "$rs" "$(model "$base")" "$name" < corpus.jsonl > "$name.rs.jsonl"
  done
