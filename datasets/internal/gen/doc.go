// Package gen generates the task data shipped in datasets/testdata: a
// regular, learnable prompt/response task set (tasks/train.jsonl,
// tasks/eval.jsonl) and three disjoint trainer shards
// (shards/trainer-{1,2,3}.jsonl), each holding one canary record.
//
// Everything is drawn from fixed-seed PCG generators, so the output is the
// same bytes on every run; datasets' tests compare the shipped files with it
// and rewrite them with -update.
package gen
