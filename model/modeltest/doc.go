// Package modeltest holds what the tests of every forward pass share: an
// independent float64 reference of LlamaForCausalLM's forward (RefLogProbs,
// written from the transformers modelling code with plain loops), small
// model configs and their Variants (rope scaling included, with RefInvFreq),
// seeded token ids, and MaxDiff; and WriteHFCheckpoint, which lays a model
// out as transformers' save_pretrained does (metadata {"format":"pt"},
// shards and index) for the tests of model.Import and what follows it.
//
// model/engine, model/gorgoniaref and model's own external tests compare
// their outputs with RefLogProbs; it imports model and nothing that trains.
package modeltest
