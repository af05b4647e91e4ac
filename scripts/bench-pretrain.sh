#!/usr/bin/env bash
# make bench-pretrain: federated pre-training, DiLoCo style, beside
# centralised training on the same tokens (scripts/pretrainbench).
#
# The job is configs/jobs/pretrain-diloco.yaml: the tiny LLaMA-family model
# of configs/models/tiny.yaml (d 64, 2 layers, 4 / 2 heads, byte vocabulary
# of 256; 123,712 parameters), freshly initialised from the job's seed,
# trained by 4 trainers on contiguous quarters of the shipped English text
# (datasets/testdata/english/train.txt), H = 50 AdamW steps of 8 × 64 tokens
# a round, 8 rounds, outer step diloco. Centralised: the same initial model
# and AdamW settings, 400 steps of 32 × 64 tokens (the same tokens per
# round). Eval: mean NLL per token on datasets/testdata/english/eval.txt
# after every round. A second federated run with DiLoCo's published outer
# optimizer (learning rate 0.7, momentum 0.9) is plotted beside them.
#
# Prints both curves and the ratio of final eval losses (goal ≤ 1.05) and
# writes $OUT/curves.tsv and $OUT/curves.png (OUT default bench-pretrain/).
# Each trainer keeps its inner AdamW state from round to round, as DiLoCo
# and a trainer node do (INNER=reset: fresh moments every round).
# About 2–4 minutes on 2 busy cores. Environment: OUT, ROUNDS, ALSO (the
# -also setting; empty: no second federated run), INNER (keep or reset).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-pretrain}
go build -o bin/pretrainbench ./scripts/pretrainbench
exec bin/pretrainbench -out "$OUT" ${ROUNDS:+-rounds "$ROUNDS"} -also "${ALSO-learning_rate=0.7,momentum=0.9}" -inner-state "${INNER:-keep}"
