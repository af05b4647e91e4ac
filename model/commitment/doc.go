// Package commitment computes what a trainer commits to about its local
// training for verifiable training, and keeps the evidence.
//
//   - Inputs is the task's inputs: base model digest, starting adapter
//     digest, hyperparameters (with the seed) and the ordered sample IDs of
//     each batch. Inputs.Digest is the SHA-256 of its canonical JSON, with
//     a domain prefix, and is what ledger.TrainingCommitment.InputsDigest
//     records.
//   - StepRoot is the RFC 6962 Merkle root (github.com/transparency-dev/merkle)
//     over the digests of the trainable state after each step, leaf i being
//     step i+1's digest as its 32 raw bytes: TrainingCommitment.StepRoot.
//     StepProof and VerifyStep let an auditor check one step's digest
//     against the root when bisecting.
//   - Recorder wraps a model.Stepper: after every step it digests the
//     trainable state (canonical F32 safetensors, the same digest as
//     model.Adapter.Digest or model.Model.Digest) and, with a Store, keeps
//     the state as a checkpoint file whose SHA-256 is that digest.
//   - Store keeps checkpoints in Dir/JOB/ROUND/step-NNNNNN.safetensors
//     (atomic writes), of every step or of every Every-th and the last,
//     and prunes a job to its newest Keep rounds: the audit window. Beside
//     them a trainer discloses every step's digest (DigestsFile, which
//     proves against the step root as a whole) and its training inputs
//     (InputsFile, which prove against the inputs digest), so an auditor
//     can name the first differing step and, when the inputs digests
//     differ, which input (Inputs.Differences).
//
// The training itself gives the same bits on every CPU path (model/engine:
// AVX-512, AVX2 and pure Go), so a replay of the same inputs must give the
// same step digests.
package commitment
