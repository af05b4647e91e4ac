// Package trainer is the fedtune trainer node: it holds a key and a local
// dataset, registers the dataset's manifest on the ledger
// (DatasetRegistered), joins the coordinator by signing its challenge,
// and for each task it receives pulls the round's global weights by
// digest from the coordinator's artifact service, trains on its local data
// through a Backend, uploads the update (a canonical safetensors file, so
// its digest is its SHA-256), records UpdateSubmitted on the ledger with
// its own key and reports the update to the coordinator. The update's
// samples (its FedAvg weight) are the examples the round trained on, steps
// × batch windows, at most the dataset's registered count and the job
// recipe's MaxSamples (ClaimedSamples); the ledger refuses more. Raw data never
// leaves the node: only the manifest digest, the sample count, the update
// weights and the training loss do.
//
// Updates: uncompressed, a task sends the trained weights (the adapter for
// LoRA, the model for full fine-tuning). A compressed update (int8, f16,
// bf16) is the delta from the round's base — the global model, or the
// global adapter — marked __metadata__ fedtune.kind=delta
// (WriteDeltaUpdate): quantising the weights themselves costs more than a
// round moves them, quantising the delta a small part of it (an int8 round
// of the tiny model lands 0.3% of the update norm from the uncompressed
// round; quantising the weights instead, 8–9%). The aggregator adds the combined deltas to
// the base; model.Load, LoadAdapter and ReadAdapter refuse a delta, so it
// cannot be taken for weights.
//
// Config is the node's YAML file (LoadConfig decodes it strictly and
// validates it; Init writes a fresh key and config). Backend is the seam
// for the training step, chosen by Config.Device (NewBackend): by default
// ("cpu", or "host") an EngineBackend runs model/engine's step on its Host
// device; "cuda" runs the same step on GPU 0 in binaries built with the
// GPU tag; "gorgonia" is GorgoniaBackend, model/gorgoniaref's Gorgonia
// graph, the slower autodiff reference. Train runs one training outside a
// round (fedtune train, the devnet's pre-training) on the same devices.
//
// Instruction data: when the local data file is one instruct.ReadDataset
// reads (JSONL of {"messages"}, Alpaca or {"prompt", "completion"}
// records; ReadInstruct), its records are rendered with the chat template
// of the round's model folder (eval.InstructRenderer: tokenizer_config.json,
// which the coordinator hands out with the task; plain text without one),
// tokenized, packed into windows (InstructWindows) and trained with
// model/engine's StepBatch: the loss on the assistant tokens only, no
// attention across documents, positions restarting per document
// (TrainBatches outside a round). The Gorgonia device refuses such data.
//
// Pre-training (DiLoCo): a trainer keeps its inner AdamW moments for each
// pretrain job from one round to the next, as DiLoCo's workers do, in
// work_dir/optstate/<job>.safetensors (OptStatePath; SaveOptState writes
// it atomically after every round the trainer trains, LoadOptState reads
// it, refusing another job's or a malformed file). A restarted trainer
// resumes from the last round it trained; with no file, or one that cannot
// be used (corrupt, another job's, shapes or values that do not fit the
// model), the round trains from fresh moments and Update.OptNote says why.
// Bias correction goes on from the moments' step count; the learning-rate
// schedule counts each round's own steps. Only the engine devices keep the
// state; the Gorgonia reference starts every round fresh.
//
// Commitments: every Fit records, through a model/commitment Recorder, the
// digest of the trainable state after each step (keeping it as a
// checkpoint in Task.Checkpoints, WORK_DIR/checkpoints for a node, for
// Config.AuditWindowRounds rounds) and the sample IDs of each batch, and
// returns the UpdateSubmitted commitment, and discloses beside the
// checkpoints every step's digest and the task's inputs
// (Config.CheckpointEvery keeps only every k-th step's checkpoint, and the
// last). Replay re-runs a task on the Host engine and compares, naming the
// first step that differs from the proved digests (or bisecting proved
// checkpoints) and, within it, the first operation (OpFinding: the step's
// batch, or the first tensor whose update differs from the trainer's
// checkpoint, from a re-run of the step with the engine's operation trace
// on) (fedtune audit replay). RoundData builds a round's data, own samples
// then published ranges, for a trainer node and for a replay. A round that starts from kept inner
// optimizer state commits its digest (OptStateDigest, in the inputs) and
// keeps a copy beside the round's checkpoints
// (commitment.Store.StartOptStatePath, pruned with them); Replay starts
// from that copy and names one the inputs do not commit to a lie, and says
// the state is needed when it has none (Verdict.NeedsOptState).
//
// Published data: PublishDataset cuts a dataset into shards in the
// artifact store and signs its manifest (internal/dspub), which
// ledger.DatasetPublished records; FetchPublished and PublishedReader read
// it back, checking the leaves against the Merkle root and every shard's
// samples against their leaves, and name the shard and the sample that do
// not match. In a job on published data (ledger.RoundRecipe.Published),
// the node reads its round's ranges from RoundOpened on the ledger, reads
// and checks only the shards that hold them, trains on them (with its own
// data, if it has any: Config.Data may be empty) and names the ranges in
// its UpdateSubmitted.
package trainer
