package ledger

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/spdx"
)

// RoundRecipe is the rule set of a job's rounds, committed on the ledger
// once with the job (JobRegistered) and enforced by the FSM on every round
// of the job. The coordinator's state machine builds its commits from it,
// the standalone aggregator computes its own RoundCommitted from it, and an
// auditor re-runs every round from it; all of them use this one type and
// its one JSON encoding.
type RoundRecipe struct {
	// Strategy is the aggregation strategy (an aggregator.Names name).
	Strategy string `json:"strategy"`
	// Params are the strategy's effective parameters under the
	// aggregator's names (aggregator.Strategy.Params), each a float in
	// its shortest decimal form (FormatParam). A strategy without
	// parameters has none.
	Params map[string]string `json:"params,omitempty"`
	// Clip bounds each update's L2 norm (0: no clipping).
	Clip float64 `json:"clip,omitempty"`
	// NoiseMultiplier z adds Gaussian noise of standard deviation
	// z·Clip/m (m: the round's contributors) to the aggregate; the noise
	// is drawn from crypto/rand and recorded nowhere.
	NoiseMultiplier float64 `json:"noise_multiplier,omitempty"`
	// SampledTrainers and TotalTrainers are the DP accountant's sampling
	// rate q = sampled/total as the job states it (the trainers a round
	// selects at most, and the population); informational, not enforced.
	SampledTrainers int `json:"sampled_trainers,omitempty"`
	TotalTrainers   int `json:"total_trainers,omitempty"`
	// MaxNorm rejects updates with a larger L2 norm (0: no bound).
	MaxNorm float64 `json:"max_norm,omitempty"`
	// Compression is the update encoding trainers use ("none", "int8",
	// "f16", "bf16"), and Int8Block the int8 block size.
	Compression string `json:"compression"`
	Int8Block   int    `json:"int8_block,omitempty"`
	// MinTrainers and MaxTrainers bound the trainers a RoundOpened
	// selects (MaxTrainers 0: up to MaxTrainers of this package); a
	// commit needs at least MinTrainers contributors.
	MinTrainers int `json:"min_trainers"`
	MaxTrainers int `json:"max_trainers,omitempty"`
	// MaxSamples bounds UpdateSubmitted.samples (0: only the dataset's
	// registered sample count bounds it).
	MaxSamples uint64 `json:"max_samples,omitempty"`
	// Aggregators are the member IDs of the aggregators the job
	// designates: only they may reject updates, commit or fail its rounds.
	Aggregators []string `json:"aggregators"`
	// InitialAdapter is the digest of a LoRA job's initial adapter, the
	// reference of its first round's aggregation ("" for full
	// fine-tuning).
	InitialAdapter string `json:"initial_adapter,omitempty"`
	// BaseModel is the digest of the registered model the job's round 1
	// starts from (RoundOpened.base_model). Every later round starts from
	// the job's last committed model, or from round 1's base while none
	// committed. "" (a recipe that records none) leaves round 1's base to
	// the RoundOpened; later rounds are tied all the same.
	BaseModel string `json:"base_model,omitempty"`
	// Mode is RecipePretrain for a pre-training job (DiLoCo style: a
	// freshly initialised base model, InnerSteps AdamW steps per trainer
	// per round, the trainers' deltas combined by the strategy), "" for
	// fine-tuning.
	Mode string `json:"mode,omitempty"`
	// InnerSteps is DiLoCo's H in a pre-training job (0 otherwise).
	InnerSteps int `json:"inner_steps,omitempty"`
	// InitConfig is, in a pre-training job (and only there), the digest of
	// the canonical model config (config.json bytes) its initial model is
	// drawn from, and InitSeed the seed it is drawn with: BaseModel must
	// be model.New(config, InitSeed). The ledger holds no training code,
	// so it cannot check that; an auditor recomputes it from the config
	// artifact (fedtune audit verify).
	InitConfig string `json:"init_config,omitempty"`
	InitSeed   uint64 `json:"init_seed,omitempty"`
	// RequireAttestations lists the attestations every dataset behind an
	// update of the job must have (a passing DatasetAttested of the kind,
	// by the auditor or any auditor) before the update may contribute:
	// the job's aggregator rejects the update otherwise (aggregator/round),
	// and the FSM refuses a commit that counts it.
	RequireAttestations []AttestationRequirement `json:"require_attestations,omitempty"`
	// Licences are the SPDX licence IDs the job accepts for the data its
	// updates are trained on (none: any). The FSM refuses a commit that
	// counts an update on a dataset whose licence expression they do not
	// satisfy (spdx.Accepts); the update must be rejected, with the reason,
	// by an UpdateRejected.
	Licences []string `json:"licences,omitempty"`
	// Published are the published datasets the job trains on. Each round
	// gives every selected trainer a disjoint range of each
	// (AssignRanges with RangeSeed and RangeSamples), recorded in
	// RoundOpened.Ranges; an UpdateSubmitted must name exactly its
	// trainer's ranges.
	Published    []PublishedRef `json:"published,omitempty"`
	RangeSeed    uint64         `json:"range_seed,omitempty"`
	RangeSamples uint64         `json:"range_samples,omitempty"`
	// Verify, when set, has verifiers replay a random fraction of the
	// job's updates before a round commits (see VerifyRule and
	// SubmissionsClosed); nil: no spot checks.
	Verify *VerifyRule `json:"verify,omitempty"`
}

// Ranges returns the ranges round n of the job gives trainers.
func (r *RoundRecipe) Ranges(n uint64, trainers []string) ([]TrainerRange, error) {
	return AssignRanges(r.RangeSeed, n, r.Published, r.RangeSamples, trainers)
}

// MaxLicences bounds RoundRecipe.Licences.
const MaxLicences = 64

// AcceptsLicence reports whether the job takes data under licence
// expression expr: any when the recipe lists no licences.
func (r *RoundRecipe) AcceptsLicence(expr string) bool {
	return len(r.Licences) == 0 || spdx.Accepts(r.Licences, expr)
}

// LicenceRefusal is the reason recorded when a job refuses dataset
// (named name) under licence expr.
func (r *RoundRecipe) LicenceRefusal(dataset, name, expr string) string {
	return fmt.Sprintf("dataset %s (%q) is under licence %q, which the job does not accept (it accepts %s)", dataset, name, expr, strings.Join(r.Licences, ", "))
}

// AttestationRefusal is the reason recorded when job jobID's aggregator
// rejects update (of trainer) because dataset lacks the attestations
// missing that the recipe requires. An auditor rebuilds it to tell a
// rejection with cause from one without.
func AttestationRefusal(update, trainer, dataset, jobID string, missing []AttestationRequirement) string {
	names := make([]string, len(missing))
	for i, m := range missing {
		names[i] = m.String()
	}
	return fmt.Sprintf("update %s of trainer %s was computed on dataset %s, which lacks the passing attestation(s) job %s requires: %s",
		update, trainer, dataset, jobID, strings.Join(names, ", "))
}

// RecipePretrain is RoundRecipe.Mode of a pre-training job.
const RecipePretrain = "pretrain"

// MaxInnerSteps bounds RoundRecipe.InnerSteps.
const MaxInnerSteps = 1_000_000

// Recipe parameter names as RoundCommitted.Params records them beside the
// strategy's own (see CommitParams).
const (
	ParamClip            = "clip"
	ParamNoiseMultiplier = "noise_multiplier"
	ParamMaxNorm         = "max_norm"
	// ParamServerState names the server state digest a stateful strategy
	// produced; the one commit parameter that is not in the recipe.
	ParamServerState = "server_state"
)

// SampleWeighted lists the strategies whose contributors' weights are
// their sample counts' shares: the FSM checks a commit's weights of these.
var SampleWeighted = map[string]bool{"fedavg": true, "fedavgm": true, "fedadam": true, "fedyogi": true, "fedadagrad": true, "diloco": true}

// FormatParam is the canonical text of a recipe parameter.
func FormatParam(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// StrategyParams returns Params as numbers.
func (r *RoundRecipe) StrategyParams() (map[string]float64, error) {
	out := make(map[string]float64, len(r.Params))
	for _, k := range sortedKeys(r.Params) {
		f, err := strconv.ParseFloat(r.Params[k], 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("params[%q] %q is not a finite number", k, abbrev(r.Params[k]))
		}
		out[k] = f
	}
	return out, nil
}

// CommitParams is the parameter map every RoundCommitted of the job
// carries (plus ParamServerState for a stateful strategy): the strategy's
// parameters and the privacy settings that are set. There is no noise
// seed: noise is secret.
func (r *RoundRecipe) CommitParams() map[string]string {
	p := maps.Clone(r.Params)
	if p == nil {
		p = map[string]string{}
	}
	if r.Clip > 0 {
		p[ParamClip] = FormatParam(r.Clip)
	}
	if r.NoiseMultiplier > 0 {
		p[ParamNoiseMultiplier] = FormatParam(r.NoiseMultiplier)
	}
	if r.MaxNorm > 0 {
		p[ParamMaxNorm] = FormatParam(r.MaxNorm)
	}
	return p
}

// CheckCommitParams says how got (a RoundCommitted's parameters) differs
// from CommitParams; a server_state digest is allowed beside them.
func (r *RoundRecipe) CheckCommitParams(got map[string]string) error {
	want := r.CommitParams()
	for _, k := range sortedKeys(got) {
		if k == ParamServerState {
			if err := checkDigest("params[server_state]", got[k]); err != nil {
				return err
			}
			continue
		}
		w, ok := want[k]
		if !ok {
			return fmt.Errorf("params[%q] is not in the job's recipe", k)
		}
		if got[k] != w {
			return fmt.Errorf("params[%q] is %q, the job's recipe says %q", k, got[k], w)
		}
	}
	for _, k := range sortedKeys(want) {
		if _, ok := got[k]; !ok {
			return fmt.Errorf("params[%q] is missing; the job's recipe says %q", k, want[k])
		}
	}
	return nil
}

// Designates reports whether id is one of the job's aggregators.
func (r *RoundRecipe) Designates(id string) bool { return slices.Contains(r.Aggregators, id) }

// Validate checks the recipe's fields without state.
func (r *RoundRecipe) Validate() error {
	if err := validateRequirements(r.RequireAttestations); err != nil {
		return err
	}
	if err := checkText("recipe.strategy", r.Strategy, MaxTextLen, true); err != nil {
		return err
	}
	if len(r.Params) > MaxMapEntries {
		return fmt.Errorf("recipe.params: %d entries, limit %d", len(r.Params), MaxMapEntries)
	}
	for _, k := range sortedKeys(r.Params) {
		if err := checkText("recipe.params key", k, maxMapKeyLength, true); err != nil {
			return err
		}
		switch k {
		case ParamClip, ParamNoiseMultiplier, ParamMaxNorm, ParamServerState:
			return fmt.Errorf("recipe.params[%q] is reserved; use the recipe's own field", k)
		}
		f, err := strconv.ParseFloat(r.Params[k], 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || FormatParam(f) != r.Params[k] {
			return fmt.Errorf("recipe.params[%q] %q is not a finite number in canonical form", k, abbrev(r.Params[k]))
		}
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"clip", r.Clip}, {"noise_multiplier", r.NoiseMultiplier}, {"max_norm", r.MaxNorm}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 {
			return fmt.Errorf("recipe.%s %v must be a finite non-negative number", f.name, f.v)
		}
	}
	if r.NoiseMultiplier > 0 && r.Clip == 0 {
		return fmt.Errorf("recipe.noise_multiplier needs recipe.clip")
	}
	if r.SampledTrainers < 0 || r.TotalTrainers < 0 || (r.TotalTrainers > 0 && r.SampledTrainers > r.TotalTrainers) {
		return fmt.Errorf("recipe.sampled_trainers %d and total_trainers %d must satisfy 0 ≤ sampled ≤ total", r.SampledTrainers, r.TotalTrainers)
	}
	if err := checkText("recipe.compression", r.Compression, 32, true); err != nil {
		return err
	}
	if r.Int8Block < 0 {
		return fmt.Errorf("recipe.int8_block %d is negative", r.Int8Block)
	}
	if r.MinTrainers < 1 || r.MinTrainers > MaxTrainers {
		return fmt.Errorf("recipe.min_trainers %d: want 1 to %d", r.MinTrainers, MaxTrainers)
	}
	if r.MaxTrainers < 0 || r.MaxTrainers > MaxTrainers || (r.MaxTrainers != 0 && r.MaxTrainers < r.MinTrainers) {
		return fmt.Errorf("recipe.max_trainers %d: want 0 (no limit) or min_trainers to %d", r.MaxTrainers, MaxTrainers)
	}
	if len(r.Aggregators) == 0 || len(r.Aggregators) > 16 {
		return fmt.Errorf("recipe.aggregators: %d listed, want 1 to 16", len(r.Aggregators))
	}
	for i, a := range r.Aggregators {
		if !digest.Valid(a) {
			return fmt.Errorf("recipe.aggregators[%d] %q is not a member ID", i, abbrev(a))
		}
		if slices.Contains(r.Aggregators[:i], a) {
			return fmt.Errorf("recipe.aggregators[%d] %s is listed twice", i, a)
		}
	}
	if r.InitialAdapter != "" {
		if err := checkDigest("recipe.initial_adapter", r.InitialAdapter); err != nil {
			return err
		}
	}
	if r.BaseModel != "" {
		if err := checkDigest("recipe.base_model", r.BaseModel); err != nil {
			return err
		}
	}
	if err := checkPublishedRefs(r.Published, r.RangeSamples); err != nil {
		return err
	}
	if len(r.Licences) > MaxLicences {
		return fmt.Errorf("recipe.licences: %d listed, limit %d", len(r.Licences), MaxLicences)
	}
	for i, l := range r.Licences {
		if !spdx.ValidID(l) || len(l) > 128 {
			return fmt.Errorf("recipe.licences[%d] %q is not a known SPDX licence ID or LicenseRef-<name>", i, abbrev(l))
		}
		if slices.Contains(r.Licences[:i], l) {
			return fmt.Errorf("recipe.licences[%d] %s is listed twice", i, l)
		}
	}
	if r.Verify != nil {
		if err := r.Verify.Validate(); err != nil {
			return err
		}
		if len(r.Published) == 0 {
			return fmt.Errorf("recipe.verify: a job's updates can be replayed by a verifier only on published data; the recipe names no published datasets")
		}
		if r.Mode == RecipePretrain && r.Verify.Steps != r.InnerSteps {
			return fmt.Errorf("recipe.verify.steps %d: a pretrain job's updates take its %d inner steps", r.Verify.Steps, r.InnerSteps)
		}
	}
	switch r.Mode {
	case "":
		if r.InnerSteps != 0 {
			return fmt.Errorf("recipe.inner_steps %d: only a %q recipe has inner steps", r.InnerSteps, RecipePretrain)
		}
		if r.InitConfig != "" || r.InitSeed != 0 {
			return fmt.Errorf("recipe.init_config %q, init_seed %d: only a %q recipe initialises its model", abbrev(r.InitConfig), r.InitSeed, RecipePretrain)
		}
	case RecipePretrain:
		if r.InnerSteps < 1 || r.InnerSteps > MaxInnerSteps {
			return fmt.Errorf("recipe.inner_steps %d: a %s recipe needs 1 to %d", r.InnerSteps, RecipePretrain, MaxInnerSteps)
		}
		if r.InitialAdapter != "" {
			return fmt.Errorf("recipe.initial_adapter: a %s recipe trains every weight, it has no adapter", RecipePretrain)
		}
		if r.InitConfig == "" {
			return fmt.Errorf("recipe.init_config: a %s recipe names the model config its initial model is drawn from, by digest", RecipePretrain)
		}
		if err := checkDigest("recipe.init_config", r.InitConfig); err != nil {
			return err
		}
	default:
		return fmt.Errorf("recipe.mode %q: want %q or none", abbrev(r.Mode), RecipePretrain)
	}
	return nil
}

// Equal reports whether two recipes are the same rule set.
func (r *RoundRecipe) Equal(o *RoundRecipe) bool {
	return string(mustJSON(r)) == string(mustJSON(o))
}

// JobRegistered (coordinator) registers a job and its round recipe. The
// signer becomes the job's owner: only it opens the job's rounds. A job
// is registered once; its recipe never changes.
type JobRegistered struct {
	JobID  string      `json:"job_id"`
	Recipe RoundRecipe `json:"recipe"`
}

// TxType implements TxBody.
func (JobRegistered) TxType() string { return TypeJobRegistered }

// JobRecord is a registered job as the ledger records it.
type JobRecord struct {
	JobID  string      `json:"job_id"`
	Owner  string      `json:"owner"` // the coordinator that registered it
	Recipe RoundRecipe `json:"recipe"`
	Height uint64      `json:"height"`
	TxHash string      `json:"tx_hash"`
	// Cancelled is set once a JobCancelled ended the job.
	Cancelled *Cancellation `json:"cancelled,omitempty"`
}
