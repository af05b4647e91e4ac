package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/spdx"
	"github.com/fedtune/fedtune/internal/strictyaml"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
)

// Sentinel errors of job files.
var (
	// ErrJob wraps every error about a job file: decoding and validation.
	ErrJob = errors.New("coordinator: bad job")
)

// Update compressions (compression.kind).
const (
	CompressNone = "none"
	CompressInt8 = "int8"
	CompressF16  = "f16"
	CompressBF16 = "bf16"
)

// Learning-rate schedules (train.schedule), as the model package names them.
const (
	ScheduleCosine   = "cosine"
	ScheduleConstant = "constant"
)

const maxTrainers = ledger.MaxTrainers

// DefaultInt8Block is the int8 block size used when compression.block is 0.
const DefaultInt8Block = 64

// Bounds checked by Validate.
const (
	MinDeadline = time.Second
	MaxDeadline = 7 * 24 * time.Hour
	MaxRounds   = 1_000_000
	// MaxInnerSteps bounds train.inner_steps (DiLoCo ran H = 500).
	MaxInnerSteps = 1_000_000
	// MaxLR bounds train.lr: AdamW moves each weight by about lr a step.
	MaxLR = 1
)

// LoRATargets are the LLaMA projections a LoRA adapter may target.
var LoRATargets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// Job is a federated fine-tuning job as a YAML file in configs/jobs
// describes it. Build one with DefaultJob, decode YAML over it (ParseJob
// and LoadJob do both, then Validate). Field names in error messages are
// the YAML keys.
type Job struct {
	// Name is the job ID recorded on the ledger.
	Name string `yaml:"name" json:"name"`
	// Seed seeds trainer selection and adapter initialisation (never the
	// DP noise, which comes from crypto/rand).
	Seed uint64 `yaml:"seed" json:"seed"`
	// Model is the base model of round 1.
	Model ModelSpec `yaml:"model" json:"model"`
	// Datasets says which trainer datasets may be used.
	Datasets DatasetSpec `yaml:"datasets" json:"datasets"`
	// Rounds is how many rounds the job runs (failed rounds count).
	Rounds int `yaml:"rounds" json:"rounds"`
	// Trainers says how many trainers a round selects.
	Trainers TrainerSpec `yaml:"trainers" json:"trainers"`
	// Train holds each trainer's local optimisation settings.
	Train TrainSpec `yaml:"train" json:"train"`
	// FineTune chooses LoRA or full fine-tuning.
	FineTune FineTuneSpec `yaml:"finetune" json:"finetune"`
	// Strategy is the aggregation strategy and its parameters.
	Strategy StrategySpec `yaml:"strategy" json:"strategy"`
	// Privacy holds update clipping, Gaussian noise and the norm bound.
	Privacy PrivacySpec `yaml:"privacy" json:"privacy"`
	// Compression is how trainers encode their updates.
	Compression CompressionSpec `yaml:"compression" json:"compression"`
	// Deadline is how long a round collects updates after it opens.
	Deadline time.Duration `yaml:"deadline" json:"deadline"`
	// Eval is the held-out evaluation after aggregation.
	Eval EvalSpec `yaml:"eval" json:"eval"`
	// RequireAttestations lists the attestations every dataset behind an
	// update must have: a passing DatasetAttested of the kind by the
	// auditor (by: its member ID) or any auditor (by: auditor). The
	// ledger records the list in the job's recipe; the job's aggregator
	// rejects an update on a dataset without one (its UpdateRejected, or
	// the round's RoundFailed when no update is left, names what is
	// missing), and the ledger refuses a commit that counts such an update. Omitted from
	// the canonical encoding when empty, so older job files keep their
	// digests.
	RequireAttestations []ledger.AttestationRequirement `yaml:"require_attestations" json:"require_attestations,omitempty"`
	// Verify turns on spot checks: verifier members replay a random
	// fraction of the updates before each round commits (see VerifySpec);
	// every update is then trained on the job's published data alone. Omitted from the canonical encoding
	// when absent, so older job files keep their digests.
	Verify *VerifySpec `yaml:"verify" json:"verify,omitempty"`

	// Source names the file the job came from (not part of the digest).
	Source string `yaml:"-" json:"-"`
}

// ModelSpec names the base model by path, by digest, or both.
type ModelSpec struct {
	// Path is a model directory (config.json + model.safetensors),
	// relative to the job file's directory when not absolute.
	Path string `yaml:"path" json:"path"`
	// Digest is the weight digest (64 lowercase hex) of the base model, as
	// registered on the ledger.
	Digest string `yaml:"digest" json:"digest"`
	// Init, for finetune.mode pretrain (and only then), is a model config
	// (YAML, Hugging Face's LlamaConfig fields; relative to the job file's
	// directory when not absolute): round 1 starts from a model freshly
	// initialised from it with the job's seed (InitSeed). Digest, if
	// given, must be that model's digest; Path must be absent.
	Init string `yaml:"init" json:"init,omitempty"`
	// InitDigest pins the config at Init by content: the digest of its
	// canonical encoding (model.Config.EncodeJSON, the config.json of the
	// initialised model). ParseJob reads Init and sets it, so the job's
	// digest (the config digest every RoundOpened records) and the
	// recipe's init_config cover the config itself, not its path; written
	// in the job file, it must match what Init holds.
	InitDigest string `yaml:"init_digest" json:"init_digest,omitempty"`
}

// VerifySpec is a job's spot-check rule (ledger.VerifyRule) and how long
// its coordinator waits for the verdicts.
type VerifySpec struct {
	// Fraction is the probability, in (0, 1], that an update is drawn
	// for a replay (every update of the job is on its published data).
	Fraction float64 `yaml:"fraction" json:"fraction"`
	// By are the member IDs of the verifiers whose verdicts count.
	By []string `yaml:"by" json:"by"`
	// SuspendRounds keeps a trainer a verifier rejected out of the job's
	// next SuspendRounds rounds; SuspendJob out of the rest of the job.
	SuspendRounds uint64 `yaml:"suspend_rounds" json:"suspend_rounds,omitempty"`
	SuspendJob    bool   `yaml:"suspend_job" json:"suspend_job,omitempty"`
	// Quorum is how many verifiers must agree on a verdict (0: 1).
	Quorum int `yaml:"quorum" json:"quorum,omitempty"`
	// Timeout is how long the coordinator waits for the verdicts after
	// it closes a round's submissions (0: the job's deadline); a drawn
	// update still without one is then rejected as unverified. The
	// recipe records it (ledger.VerifyRule.Timeout): the ledger admits
	// verdicts on a failed or committed round for as long.
	Timeout time.Duration `yaml:"timeout" json:"timeout,omitempty"`
}

// VerifyTimeout is how long the coordinator waits for verdicts.
func (j *Job) VerifyTimeout() time.Duration {
	if j.Verify != nil && j.Verify.Timeout > 0 {
		return j.Verify.Timeout
	}
	return j.Deadline
}

// DatasetSpec selects the datasets trainers may train on.
type DatasetSpec struct {
	// Manifests lists the admitted dataset manifest digests; a trainer is
	// eligible when it registered one of them. Empty: any dataset the
	// trainer registered on the ledger.
	Manifests []string `yaml:"manifests" json:"manifests"`
	// Licences are the SPDX licence IDs the job accepts for the data
	// trainers train on (empty: any). An update on a dataset under
	// another licence is rejected, the reason recorded on the ledger
	// (UpdateRejected); the recipe carries the list, so the ledger
	// refuses a commit that counts one.
	Licences []string `yaml:"licenses" json:"licenses,omitempty"`
	// Published lists the digests of published datasets (fedtune dataset
	// publish) the job trains on: every round gives each selected trainer
	// a disjoint range of RangeSamples samples of each (0: local_steps ×
	// batch), drawn from the job's seed and recorded in RoundOpened. A
	// trainer with no data of its own may then take part.
	Published    []string `yaml:"published" json:"published,omitempty"`
	RangeSamples uint64   `yaml:"range_samples" json:"range_samples,omitempty"`
}

// RangeSize is the samples per trainer, round and published dataset.
func (j *Job) RangeSize() uint64 {
	if j.Datasets.RangeSamples > 0 {
		return j.Datasets.RangeSamples
	}
	return uint64(j.Train.LocalSteps) * uint64(j.Train.Batch)
}

// TrainerSpec bounds a round's selection (as Flower's fraction_fit,
// min_fit_clients): n = max(⌊fraction·eligible⌋, min), at most max and at
// most the eligible count. A round opens only with at least min eligible
// trainers and commits only with at least min valid updates.
type TrainerSpec struct {
	Min      int     `yaml:"min" json:"min"`
	Max      int     `yaml:"max" json:"max"` // 0: no limit
	Fraction float64 `yaml:"fraction" json:"fraction"`
	// MaxSamples bounds the sample count a trainer may claim for one
	// update (UpdateSubmitted.samples, its FedAvg weight): 0 means
	// train.local_steps × train.batch, the examples one round trains on;
	// a smaller value caps every trainer's weight. The ledger refuses a
	// larger claim (RoundRecipe.MaxSamples). Omitted from the canonical
	// encoding when 0, so older job files keep their digests.
	MaxSamples uint64 `yaml:"max_samples" json:"max_samples,omitempty"`
}

// TrainSpec is a trainer's local training in one round.
type TrainSpec struct {
	LocalSteps int `yaml:"local_steps" json:"local_steps"`
	// InnerSteps is DiLoCo's H, for finetune.mode pretrain (and only
	// then): the AdamW steps every trainer runs per round. It replaces
	// local_steps, which a pre-training job must not write (ParseJob sets
	// it to InnerSteps).
	InnerSteps  int     `yaml:"inner_steps" json:"inner_steps,omitempty"`
	Batch       int     `yaml:"batch" json:"batch"`
	SeqLen      int     `yaml:"seq_len" json:"seq_len"`
	LR          float64 `yaml:"lr" json:"lr"`
	WeightDecay float64 `yaml:"weight_decay" json:"weight_decay"`
	ClipNorm    float64 `yaml:"clip_norm" json:"clip_norm"`
	Warmup      int     `yaml:"warmup" json:"warmup"`
	Schedule    string  `yaml:"schedule" json:"schedule"`
}

// FineTuneSpec chooses what is trained.
type FineTuneSpec struct {
	// Mode is "lora", "full" or "pretrain" (every weight of a freshly
	// initialised model, DiLoCo style: model.init, train.inner_steps).
	Mode string `yaml:"mode" json:"mode"`
	// LoRA configures the adapter; it must be absent with mode full.
	LoRA *LoRASpec `yaml:"lora" json:"lora,omitempty"`
}

// LoRASpec is a LoRA adapter's shape (PEFT's r, lora_alpha, lora_dropout,
// target_modules).
type LoRASpec struct {
	Rank    int      `yaml:"rank" json:"rank"`
	Alpha   float64  `yaml:"alpha" json:"alpha"`
	Dropout float64  `yaml:"dropout" json:"dropout"`
	Targets []string `yaml:"targets" json:"targets"`
}

// StrategySpec names an aggregator strategy (aggregator.Names) and its
// parameters under Flower's names (see aggregator.New).
type StrategySpec struct {
	Name   string             `yaml:"name" json:"name"`
	Params map[string]float64 `yaml:"params" json:"params"`
}

// PrivacySpec maps onto aggregator.Options.
type PrivacySpec struct {
	// Clip bounds each update's L2 norm (0: no clipping).
	Clip float64 `yaml:"clip" json:"clip"`
	// NoiseMultiplier z adds Gaussian noise of σ = z·clip/m; needs clip.
	NoiseMultiplier float64 `yaml:"noise_multiplier" json:"noise_multiplier"`
	// Seed is refused when set: DP noise comes from crypto/rand (kept
	// only so that an old job file gets a clear error).
	Seed uint64 `yaml:"seed" json:"seed"`
	// MaxNorm rejects updates with a larger norm (0: no bound).
	MaxNorm float64 `yaml:"max_norm" json:"max_norm"`
}

// CompressionSpec is the update encoding.
type CompressionSpec struct {
	// Kind is none (F32), int8, f16 or bf16.
	Kind string `yaml:"kind" json:"kind"`
	// Block is the int8 block size (0: DefaultInt8Block); only for int8.
	Block int `yaml:"block" json:"block"`
}

// EvalSpec is the held-out evaluation of each new model.
type EvalSpec struct {
	// Data is the digest of a text/JSONL blob in the coordinator's artifact
	// store, or a text/JSONL file path relative to the coordinator's
	// eval_data_root (never leaving it); empty disables evaluation.
	Data string `yaml:"data" json:"data"`
	// Every evaluates after every Every-th round (0 with data: 1).
	Every int `yaml:"every" json:"every"`
}

// DefaultJob returns a job with every default filled: one round of LoRA
// (r 8, alpha 16, q_proj and v_proj) with FedAvg, one to any number of
// trainers, 20 local steps, a 10-minute deadline, uncompressed updates.
func DefaultJob() *Job {
	return &Job{
		Rounds:   1,
		Trainers: TrainerSpec{Min: 1, Fraction: 1},
		Train: TrainSpec{LocalSteps: 20, Batch: 8, SeqLen: 64, LR: 1e-3, ClipNorm: 1,
			Schedule: ScheduleCosine},
		FineTune:    FineTuneSpec{Mode: model.ModeLoRA, LoRA: DefaultLoRA()},
		Strategy:    StrategySpec{Name: "fedavg"},
		Compression: CompressionSpec{Kind: CompressNone},
		Deadline:    10 * time.Minute,
	}
}

// DefaultLoRA returns the default adapter: r 8, alpha 16, no dropout,
// q_proj and v_proj.
func DefaultLoRA() *LoRASpec {
	return &LoRASpec{Rank: 8, Alpha: 16, Targets: []string{"q_proj", "v_proj"}}
}

// LoadJob reads, decodes and validates a job file.
func LoadJob(path string) (*Job, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJob, err)
	}
	return ParseJob(path, data)
}

// ParseJob decodes a job strictly over DefaultJob (an unknown key or a
// value of the wrong type is an error naming name and the line), then
// validates it. name labels the source in messages.
func ParseJob(name string, data []byte) (*Job, error) {
	j := DefaultJob()
	if err := strictyaml.Decode(name, data, j); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJob, err)
	}
	// The default adapter is decoded over; with mode full or pretrain it
	// must not have been written at all.
	if j.FineTune.Mode == model.ModeFull || j.FineTune.Mode == model.ModePretrain {
		if line := keyLine(data, "finetune", "lora"); line > 0 {
			return nil, fmt.Errorf("%w: %s:%d: finetune.lora: must be absent when finetune.mode is %s", ErrJob, name, line, j.FineTune.Mode)
		}
		j.FineTune.LoRA = nil
	}
	// A pre-training job counts its local steps as train.inner_steps
	// (local_steps may be written only as the same number, as a job
	// marshalled back to YAML has it).
	if j.FineTune.Mode == model.ModePretrain {
		if line := keyLine(data, "train", "local_steps"); line > 0 && j.Train.LocalSteps != j.Train.InnerSteps {
			return nil, fmt.Errorf("%w: %s:%d: train.local_steps: a pretrain job gives its local steps as train.inner_steps (DiLoCo's H); local_steps %d, if written, must equal it", ErrJob, name, line, j.Train.LocalSteps)
		}
		j.Train.LocalSteps = j.Train.InnerSteps
	}
	if j.FineTune.Mode == model.ModeLoRA && j.FineTune.LoRA == nil {
		j.FineTune.LoRA = DefaultLoRA() // "lora: null" or "lora:" keeps the default
	}
	j.Source = name
	if err := j.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if j.FineTune.Mode == model.ModePretrain {
		if err := j.pinInit(); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return j, nil
}

// InitPath is the file model.init names: relative to the job file's
// directory when not absolute.
func (j *Job) InitPath() string {
	p := j.Model.Init
	if !filepath.IsAbs(p) && j.Source != "" {
		p = filepath.Join(filepath.Dir(j.Source), p)
	}
	return p
}

// pinInit reads a pretrain job's model.init config and sets
// model.init_digest to the digest of its canonical encoding; a digest
// already written must match it.
func (j *Job) pinInit() error {
	_, d, err := loadInitConfig(j.InitPath())
	if err != nil {
		return err
	}
	if j.Model.InitDigest != "" && j.Model.InitDigest != d {
		return fmt.Errorf("%w: model.init %s is a model config of digest %s, but model.init_digest pins %s", ErrJob, j.InitPath(), d, j.Model.InitDigest)
	}
	j.Model.InitDigest = d
	return nil
}

// loadInitConfig reads a model config YAML file and returns it with the
// digest of its canonical encoding (model.Config.EncodeJSON).
func loadInitConfig(path string) (model.Config, string, error) {
	cfg, err := model.LoadConfigYAML(path)
	if err != nil {
		return model.Config{}, "", fmt.Errorf("%w: model.init: %w", ErrJob, err)
	}
	b, err := cfg.EncodeJSON()
	if err != nil {
		return model.Config{}, "", fmt.Errorf("%w: model.init %s: %w", ErrJob, path, err)
	}
	return cfg, digest.Bytes(b), nil
}

// keyLine returns the line of the key at path in a YAML mapping document,
// or 0 when it is absent or null.
func keyLine(data []byte, path ...string) int {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		return 0
	}
	n := doc.Content[0]
	line := 0
	for _, key := range path {
		if n.Kind != yaml.MappingNode {
			return 0
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				line, next = n.Content[i].Line, n.Content[i+1]
			}
		}
		if next == nil {
			return 0
		}
		n = next
	}
	if n.Tag == "!!null" {
		return 0 // "lora: null" (or empty) says absent
	}
	return line
}

// FieldError is one violation found by Validate.
type FieldError struct {
	Field string // YAML path, e.g. "strategy.params.beta_1"
	Msg   string
}

// Error returns "field: message".
func (e FieldError) Error() string { return e.Field + ": " + e.Msg }

// ValidationError lists every violation of a job; it wraps ErrJob.
type ValidationError struct {
	Errors []FieldError
}

// Error lists every violation, separated by "; ".
func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		parts[i] = fe.Error()
	}
	return "invalid job: " + strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrJob) hold.
func (e *ValidationError) Unwrap() error { return ErrJob }

var jobNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// isDigest reports whether s is a digest (digest.Valid).
func isDigest(s string) bool { return digest.Valid(s) }

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Validate checks the job and reports every violation at once as a
// *ValidationError, each naming its field. Strategy parameters are checked
// by aggregator.New, so a job validates exactly when the aggregator
// accepts its strategy.
func (j *Job) Validate() error {
	var errs []FieldError
	bad := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if !jobNamePattern.MatchString(j.Name) {
		if j.Name == "" {
			bad("name", "is required (the job ID on the ledger)")
		} else {
			bad("name", "%q must be 1 to 128 of A-Z a-z 0-9 . _ - and start with a letter or digit", j.Name)
		}
	}
	pretrain := j.FineTune.Mode == model.ModePretrain
	switch {
	case pretrain && j.Model.Init == "":
		bad("model.init", "is required with finetune.mode pretrain: the model config to initialise round 1's model from")
	case pretrain && j.Model.Path != "":
		bad("model.path", "must be absent with finetune.mode pretrain (the model is initialised from model.init)")
	case !pretrain && j.Model.Init != "":
		bad("model.init", "applies only to finetune.mode pretrain")
	case !pretrain && j.Model.InitDigest != "":
		bad("model.init_digest", "applies only to finetune.mode pretrain")
	case !pretrain && j.Model.Path == "" && j.Model.Digest == "":
		bad("model", "needs path or digest")
	}
	if j.Model.Digest != "" && !isDigest(j.Model.Digest) {
		bad("model.digest", "%q is not a SHA-256 digest (64 lowercase hex)", j.Model.Digest)
	}
	if j.Model.InitDigest != "" && !isDigest(j.Model.InitDigest) {
		bad("model.init_digest", "%q is not a SHA-256 digest (64 lowercase hex)", j.Model.InitDigest)
	}
	seenReq := map[ledger.AttestationRequirement]bool{}
	for i, r := range j.RequireAttestations {
		f := fmt.Sprintf("require_attestations[%d]", i)
		if err := r.Validate(); err != nil {
			bad(f, "%v", err)
		} else if seenReq[r] {
			bad(f, "%s is listed twice", r)
		}
		seenReq[r] = true
	}
	if len(j.RequireAttestations) > ledger.MaxRequiredAttestations {
		bad("require_attestations", "%d entries, limit %d", len(j.RequireAttestations), ledger.MaxRequiredAttestations)
	}
	seen := map[string]bool{}
	for i, m := range j.Datasets.Manifests {
		f := fmt.Sprintf("datasets.manifests[%d]", i)
		switch {
		case !isDigest(m):
			bad(f, "%q is not a SHA-256 digest (64 lowercase hex)", m)
		case seen[m]:
			bad(f, "%s is listed twice", m)
		}
		seen[m] = true
	}
	for i, l := range j.Datasets.Licences {
		f := fmt.Sprintf("datasets.licenses[%d]", i)
		switch {
		case !spdx.ValidID(l):
			bad(f, "%q is not a known SPDX licence ID (exact case, e.g. MIT, CC-BY-4.0) or LicenseRef-<name>", l)
		case slices.Contains(j.Datasets.Licences[:i], l):
			bad(f, "%s is listed twice", l)
		}
	}
	for i, p := range j.Datasets.Published {
		f := fmt.Sprintf("datasets.published[%d]", i)
		switch {
		case !isDigest(p):
			bad(f, "%q is not a dataset digest (64 lowercase hex; `fedtune dataset ls` lists them)", p)
		case slices.Contains(j.Datasets.Published[:i], p):
			bad(f, "%s is listed twice", p)
		}
	}
	if len(j.Datasets.Published) > ledger.MaxPublished {
		bad("datasets.published", "%d listed, limit %d", len(j.Datasets.Published), ledger.MaxPublished)
	}
	if len(j.Datasets.Licences) > ledger.MaxLicences {
		bad("datasets.licenses", "%d listed, limit %d", len(j.Datasets.Licences), ledger.MaxLicences)
	}
	if j.Rounds < 1 || j.Rounds > MaxRounds {
		bad("rounds", "must be ≥ 1 and ≤ %d, got %d", MaxRounds, j.Rounds)
	}
	t := j.Trainers
	if t.Min < 1 || t.Min > maxTrainers {
		bad("trainers.min", "must be ≥ 1 and ≤ %d, got %d", maxTrainers, t.Min)
	}
	if t.Max < 0 || t.Max > maxTrainers {
		bad("trainers.max", "must be 0 (no limit) or ≤ %d, got %d", maxTrainers, t.Max)
	} else if t.Max != 0 && t.Max < t.Min {
		bad("trainers.max", "%d is below trainers.min %d", t.Max, t.Min)
	}
	if !(t.Fraction > 0 && t.Fraction <= 1) {
		bad("trainers.fraction", "must be in (0, 1], got %v", t.Fraction)
	}
	tr := j.Train
	if budget := j.trainBudget(); t.MaxSamples > 0 && budget > 0 && t.MaxSamples > budget {
		bad("trainers.max_samples", "%d is above train.local_steps × train.batch = %d, the most examples a trainer trains on in a round (0: that budget)", t.MaxSamples, budget)
	}
	switch {
	case pretrain && (tr.InnerSteps < 1 || tr.InnerSteps > MaxInnerSteps):
		bad("train.inner_steps", "must be ≥ 1 and ≤ %d (DiLoCo's H: the AdamW steps each trainer runs per round), got %d", MaxInnerSteps, tr.InnerSteps)
	case pretrain && tr.LocalSteps != tr.InnerSteps:
		bad("train.local_steps", "%d must equal train.inner_steps %d in a pretrain job (ParseJob sets it so)", tr.LocalSteps, tr.InnerSteps)
	case !pretrain && tr.InnerSteps != 0:
		bad("train.inner_steps", "applies only to finetune.mode pretrain (use train.local_steps)")
	case tr.LocalSteps < 1:
		bad("train.local_steps", "must be ≥ 1, got %d", tr.LocalSteps)
	}
	if tr.Batch < 1 {
		bad("train.batch", "must be ≥ 1, got %d", tr.Batch)
	}
	if tr.SeqLen < 1 {
		bad("train.seq_len", "must be ≥ 1, got %d", tr.SeqLen)
	}
	if !(tr.LR > 0) || !finite(tr.LR) {
		bad("train.lr", "must be a positive number, got %v", tr.LR)
	} else if tr.LR > MaxLR {
		bad("train.lr", "%v is above %v: an AdamW step moves each weight by about lr, so the model would diverge", tr.LR, float64(MaxLR))
	}
	if !(tr.WeightDecay >= 0) || !finite(tr.WeightDecay) {
		bad("train.weight_decay", "must be ≥ 0, got %v", tr.WeightDecay)
	}
	if !(tr.ClipNorm >= 0) || !finite(tr.ClipNorm) {
		bad("train.clip_norm", "must be ≥ 0 (0 disables), got %v", tr.ClipNorm)
	}
	if tr.Warmup < 0 || (tr.LocalSteps >= 1 && tr.Warmup >= tr.LocalSteps) {
		bad("train.warmup", "must be ≥ 0 and below train.local_steps %d, got %d", tr.LocalSteps, tr.Warmup)
	}
	if tr.Schedule != ScheduleCosine && tr.Schedule != ScheduleConstant {
		bad("train.schedule", "%q is not %q or %q", tr.Schedule, ScheduleCosine, ScheduleConstant)
	}
	switch j.FineTune.Mode {
	case model.ModeLoRA:
		if l := j.FineTune.LoRA; l != nil {
			if l.Rank < 1 || l.Rank > 4096 {
				bad("finetune.lora.rank", "must be in [1, 4096], got %d", l.Rank)
			}
			if !(l.Alpha > 0) || !finite(l.Alpha) {
				bad("finetune.lora.alpha", "must be positive, got %v", l.Alpha)
			}
			if !(l.Dropout >= 0 && l.Dropout < 1) {
				bad("finetune.lora.dropout", "must be in [0, 1), got %v", l.Dropout)
			}
			if len(l.Targets) == 0 {
				bad("finetune.lora.targets", "is empty; name at least one of %s", strings.Join(LoRATargets, ", "))
			}
			tseen := map[string]bool{}
			for i, tg := range l.Targets {
				f := fmt.Sprintf("finetune.lora.targets[%d]", i)
				switch {
				case !slices.Contains(LoRATargets, tg):
					bad(f, "%q is not one of %s", tg, strings.Join(LoRATargets, ", "))
				case tseen[tg]:
					bad(f, "%q is listed twice", tg)
				}
				tseen[tg] = true
			}
		}
	case model.ModeFull, model.ModePretrain:
		if j.FineTune.LoRA != nil {
			bad("finetune.lora", "must be absent when finetune.mode is %s", j.FineTune.Mode)
		}
	default:
		bad("finetune.mode", "%q is not %q, %q or %q", j.FineTune.Mode, model.ModeLoRA, model.ModeFull, model.ModePretrain)
	}
	errs = append(errs, j.validateStrategy()...)
	p := j.Privacy
	if !(p.Clip >= 0) || !finite(p.Clip) {
		bad("privacy.clip", "must be ≥ 0 (0: no clipping), got %v", p.Clip)
	}
	if !(p.NoiseMultiplier >= 0) || !finite(p.NoiseMultiplier) {
		bad("privacy.noise_multiplier", "must be ≥ 0, got %v", p.NoiseMultiplier)
	} else if p.NoiseMultiplier > 0 && !(p.Clip > 0) {
		bad("privacy.noise_multiplier", "needs privacy.clip > 0 (the noise is scaled by the clip norm)")
	}
	if !(p.MaxNorm >= 0) || !finite(p.MaxNorm) {
		bad("privacy.max_norm", "must be ≥ 0 (0: no bound), got %v", p.MaxNorm)
	}
	if p.Seed != 0 {
		bad("privacy.seed", "is no longer accepted: DP noise is drawn from crypto/rand and recorded nowhere (a known seed lets anyone subtract the noise); remove it")
	}
	switch c := j.Compression; c.Kind {
	case CompressInt8:
		if c.Block < 0 || c.Block > aggregator.MaxQuantBlock {
			bad("compression.block", "must be in [1, %d] (0: %d), got %d", aggregator.MaxQuantBlock, DefaultInt8Block, c.Block)
		}
	case CompressNone, CompressF16, CompressBF16:
		if c.Block != 0 {
			bad("compression.block", "applies only to kind int8, not %q", c.Kind)
		}
	default:
		bad("compression.kind", "%q is not one of none, int8, f16, bf16", c.Kind)
	}
	if j.Deadline < MinDeadline || j.Deadline > MaxDeadline {
		bad("deadline", "must be between %v and %v, got %v", MinDeadline, MaxDeadline, j.Deadline)
	}
	if v := j.Verify; v != nil {
		if !(v.Fraction > 0 && v.Fraction <= 1) {
			bad("verify.fraction", "must be in (0, 1] (the share of updates replayed), got %v", v.Fraction)
		}
		if len(v.By) == 0 || len(v.By) > ledger.MaxVerifiers {
			bad("verify.by", "lists %d verifiers; want 1 to %d member IDs of verifier members", len(v.By), ledger.MaxVerifiers)
		}
		for i, id := range v.By {
			switch {
			case !isDigest(id):
				bad(fmt.Sprintf("verify.by[%d]", i), "%q is not a member ID (64 lowercase hex)", id)
			case slices.Contains(v.By[:i], id):
				bad(fmt.Sprintf("verify.by[%d]", i), "%s is listed twice", id)
			}
		}
		if v.Quorum < 0 {
			bad("verify.quorum", "must be ≥ 0 (0: 1), got %d", v.Quorum)
		} else if v.Quorum > len(v.By) {
			bad("verify.quorum", "%d is more than the %d verifiers verify.by lists (a quorum no verdicts could reach); want 1 to %d (0: 1)", v.Quorum, len(v.By), len(v.By))
		}
		if tr := j.Train; tr.LocalSteps > ledger.MaxDisclosedSteps {
			bad("train.local_steps", "%d: a job with verify discloses the digest of every step of each update, at most %d steps (ledger.MaxDisclosedSteps)", tr.LocalSteps, ledger.MaxDisclosedSteps)
		}
		if v.SuspendJob && v.SuspendRounds != 0 {
			bad("verify.suspend_rounds", "and verify.suspend_job are both set; give one suspension policy")
		}
		if len(j.Datasets.Published) == 0 {
			bad("verify", "needs datasets.published: a verifier can replay only updates trained on published data")
		}
		if v.Timeout < 0 || v.Timeout > MaxDeadline {
			bad("verify.timeout", "must be between 0 (the deadline) and %v, got %v", MaxDeadline, v.Timeout)
		}
	}
	if j.Eval.Every < 0 {
		bad("eval.every", "must be ≥ 0, got %d", j.Eval.Every)
	} else if j.Eval.Every > 0 && j.Eval.Data == "" {
		bad("eval.every", "needs eval.data")
	}
	if len(errs) > 0 {
		return &ValidationError{Errors: errs}
	}
	return nil
}

// validateStrategy checks the strategy through aggregator.New: each
// parameter alone (so every wrong one is reported under its own path),
// then all together, then whether trainers.min inputs suffice.
func (j *Job) validateStrategy() []FieldError {
	var errs []FieldError
	name := j.Strategy.Name
	if !slices.Contains(aggregator.Names(), name) {
		return []FieldError{{"strategy.name", fmt.Sprintf("%q is not a strategy (known: %s)", name, strings.Join(aggregator.Names(), ", "))}}
	}
	keys := make([]string, 0, len(j.Strategy.Params))
	for k := range j.Strategy.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, err := aggregator.New(name, map[string]float64{k: j.Strategy.Params[k]}); err != nil {
			errs = append(errs, FieldError{"strategy.params." + k, strategyMsg(name, k, err)})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	s, err := aggregator.New(name, j.Strategy.Params)
	if err != nil {
		return []FieldError{{"strategy.params", strategyMsg(name, "", err)}}
	}
	if j.Trainers.Min >= 1 {
		if err := s.Check(j.Trainers.Min); err != nil {
			errs = append(errs, FieldError{"trainers.min", fmt.Sprintf("%d updates are too few for %s: %s", j.Trainers.Min, name, strategyMsg(name, "", err))})
		}
	}
	return errs
}

// strategyMsg shortens an aggregator error for a field message.
func strategyMsg(name, key string, err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, aggregator.ErrBadParams.Error()+": ")
	if key != "" && strings.Contains(msg, "parameter "+strconv.Quote(key)) {
		if i := strings.Index(msg, "(it takes "); i >= 0 {
			return fmt.Sprintf("not a parameter of %s %s", name, msg[i:])
		}
		return fmt.Sprintf("not a parameter of %s (it takes none)", name)
	}
	return msg
}

// NewStrategy builds the job's aggregation strategy.
func (j *Job) NewStrategy() (aggregator.Strategy, error) {
	return aggregator.New(j.Strategy.Name, j.Strategy.Params)
}

// AggregatorOptions returns the clipping, noise and norm bound of the job
// as aggregator options. The noise seed is left zero: the aggregator draws
// its noise from crypto/rand.
func (j *Job) AggregatorOptions() aggregator.Options {
	return aggregator.Options{Clip: j.Privacy.Clip, NoiseMultiplier: j.Privacy.NoiseMultiplier, MaxNorm: j.Privacy.MaxNorm}
}

// Recipe returns the round recipe the job registers on the ledger
// (ledger.JobRegistered): its strategy with the effective parameters,
// privacy settings, compression and trainer bounds (MaxSamples from
// MaxSamples), the designated
// aggregators and, for a LoRA job, the initial adapter's digest.
func (j *Job) Recipe(aggregators []string, initialAdapter string) (ledger.RoundRecipe, error) {
	s, err := j.NewStrategy()
	if err != nil {
		return ledger.RoundRecipe{}, err
	}
	r := ledger.RoundRecipe{Strategy: s.Name(), Clip: j.Privacy.Clip, NoiseMultiplier: j.Privacy.NoiseMultiplier,
		SampledTrainers: j.Trainers.Max, MaxNorm: j.Privacy.MaxNorm, Compression: j.Compression.Kind, Int8Block: j.Int8Block(),
		MinTrainers: j.Trainers.Min, MaxTrainers: j.Trainers.Max, MaxSamples: j.MaxSamples(),
		Aggregators: slices.Clone(aggregators), InitialAdapter: initialAdapter, RequireAttestations: slices.Clone(j.RequireAttestations),
		Licences: slices.Clone(j.Datasets.Licences)}
	if p := s.Params(); len(p) > 0 {
		r.Params = make(map[string]string, len(p))
		for k, v := range p {
			r.Params[k] = ledger.FormatParam(v)
		}
	}
	if r.Compression == "" {
		r.Compression = CompressNone
	}
	// Published data: the sample counts come from the ledger (the
	// coordinator fills them in before registering the job).
	for _, p := range j.Datasets.Published {
		r.Published = append(r.Published, ledger.PublishedRef{Digest: p})
	}
	if len(r.Published) > 0 {
		r.RangeSeed, r.RangeSamples = j.Seed, j.RangeSize()
	}
	if v := j.Verify; v != nil {
		// The ledger admits verdicts on a closed round for as long as
		// the coordinator waits for them (VerifyTimeout).
		r.Verify = &ledger.VerifyRule{Fraction: v.Fraction, By: slices.Clone(v.By), SuspendRounds: v.SuspendRounds, SuspendJob: v.SuspendJob, Quorum: v.Quorum,
			Steps: j.Train.LocalSteps, Timeout: j.VerifyTimeout()}
	}
	// Round 1's base: model.digest (a job given model.path or model.init
	// has it set by the coordinator once the folder is imported, see
	// registerJob).
	r.BaseModel = j.Model.Digest
	if j.FineTune.Mode == model.ModePretrain {
		r.Mode, r.InnerSteps = ledger.RecipePretrain, j.Train.InnerSteps
		r.InitConfig, r.InitSeed = j.Model.InitDigest, InitSeed(j.Seed)
	}
	return r, nil
}

// trainBudget is train.local_steps × train.batch, the examples a trainer
// trains on in one round (0 when either is not positive; saturated at
// the largest uint64).
func (j *Job) trainBudget() uint64 {
	if j.Train.LocalSteps < 1 || j.Train.Batch < 1 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(j.Train.LocalSteps), uint64(j.Train.Batch))
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}

// MaxSamples returns the most samples a trainer may claim for one update:
// trainers.max_samples, or train.local_steps × train.batch when that is 0.
func (j *Job) MaxSamples() uint64 {
	if j.Trainers.MaxSamples > 0 {
		return j.Trainers.MaxSamples
	}
	return j.trainBudget()
}

// Int8Block returns the effective int8 block size (0 unless kind is int8).
func (j *Job) Int8Block() int {
	if j.Compression.Kind != CompressInt8 {
		return 0
	}
	if j.Compression.Block == 0 {
		return DefaultInt8Block
	}
	return j.Compression.Block
}

// Canonical returns the job's canonical encoding: compact JSON of every
// field (Source excluded) in declaration order, map keys sorted, floats in
// their shortest form, durations in nanoseconds, absent lists as []. Two
// job files that mean the same job (whatever their formatting, comments,
// key order or spelled-out defaults) encode the same. It is nil when a
// number is not finite (Validate rejects those).
func (j *Job) Canonical() []byte {
	c := *j
	if c.Datasets.Manifests == nil {
		c.Datasets.Manifests = []string{}
	}
	if c.Strategy.Params == nil {
		c.Strategy.Params = map[string]float64{}
	}
	if c.FineTune.LoRA != nil {
		l := *c.FineTune.LoRA
		if l.Targets == nil {
			l.Targets = []string{}
		}
		c.FineTune.LoRA = &l
	}
	b, err := json.Marshal(&c)
	if err != nil {
		// Only non-finite floats fail, and Validate rejects those.
		return nil
	}
	return b
}

// DecodeCanonical decodes a job's canonical encoding (Canonical), as a
// coordinator stores it in its artifact store under the job's config
// digest for anyone following the job (an inference node reads a LoRA
// job's adapter settings from it). It is strict: JSON with no unknown
// key, that encodes back to exactly data (so a duplicate key, another key
// case, whitespace or a trailing value is refused: the bytes have one
// reading), and that validates. Errors wrap ErrJob.
func DecodeCanonical(data []byte) (*Job, error) {
	var j Job
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w: canonical job: %w", ErrJob, err)
	}
	if c := j.Canonical(); !bytes.Equal(c, data) {
		return nil, fmt.Errorf("%w: canonical job: not in canonical form (%d bytes encode back to %d other bytes)", ErrJob, len(data), len(c))
	}
	if j.FineTune.Mode == model.ModeFull && j.FineTune.LoRA != nil {
		return nil, fmt.Errorf("%w: canonical job: finetune.lora is set but finetune.mode is full", ErrJob)
	}
	if err := j.Validate(); err != nil {
		return nil, fmt.Errorf("canonical job: %w", err)
	}
	return &j, nil
}

// Digest is the job's config digest recorded in RoundOpened: the
// lowercase hex SHA-256 of Canonical. Call it on a validated job; a job
// holding a non-finite number has no canonical form and no digest ("").
func (j *Job) Digest() string {
	c := j.Canonical()
	if c == nil {
		return ""
	}
	return digest.Bytes(c)
}
