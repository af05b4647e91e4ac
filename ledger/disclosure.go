package ledger

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// A spot-checked job's every update discloses the digest of each of its
// training steps (TrainingCommitment.StepDigests), so its UpdateSubmitted
// grows by about 90 bytes a step (64 hex characters and JSON punctuation,
// base64 in the DSSE envelope): 4096 steps take about 370 KB, above the
// default policy max_tx_bytes (256 KiB). The policy default stays (it is
// part of every genesis hash); instead a job's VerifyRule records the
// steps of every update (VerifyRule.Steps) and the FSM refuses, at
// JobRegistered, a verify job whose updates could not fit the chain's
// max_tx_bytes (CheckDisclosureFits), naming the numbers. Every verify
// job the ledger accepts can therefore have its updates on the chain.

// disclosureKey signs the model UpdateSubmitted whose size
// DisclosedUpdateBytes measures; an ed25519 signature has a fixed size,
// so which key signs does not change it.
var disclosureKey = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))

// DisclosedUpdateBytes returns the size of the envelope of an
// UpdateSubmitted of job on chain chainID that discloses steps step
// digests, the largest an honest trainer's can be: the largest nonce,
// round and sample count, a range of each of the recipe's published
// datasets with the largest bounds, and the metrics a trainer reports
// (loss, with the longest float text, and steps). It builds and signs
// that update for one step and adds what each further step adds (the
// FSM calls it for every JobRegistered of a job with verify, so its cost
// does not grow with steps); TestDisclosedUpdateBytesExact checks the sum
// against updates built in full.
func DisclosedUpdateBytes(chainID, job string, r *RoundRecipe, steps int) (int, error) {
	if steps < 1 || steps > MaxDisclosedSteps {
		return 0, fmt.Errorf("%d steps: want 1 to %d", steps, MaxDisclosedSteps)
	}
	size, err := disclosedSizes(chainID, job, r)
	if err != nil {
		return 0, err
	}
	return size(steps), nil
}

// disclosedSizes measures the one-step update of DisclosedUpdateBytes and
// returns the size of one of n steps.
func disclosedSizes(chainID, job string, r *RoundRecipe) (func(n int) int, error) {
	env, err := disclosedUpdate(chainID, job, r, 1)
	if err != nil {
		return nil, err
	}
	e, err := DecodeEnvelope(env)
	if err != nil {
		return nil, err
	}
	// Each further digest adds `,"<64 hex>"` to the payload's JSON; the
	// step count is written twice (commitment.steps, metrics.steps).
	p1 := len(e.Payload)
	return func(n int) int {
		pn := p1 + (n-1)*(64+3) + 2*(len(strconv.Itoa(n))-1)
		return len(env) - base64.StdEncoding.EncodedLen(p1) + base64.StdEncoding.EncodedLen(pn)
	}, nil
}

// disclosedUpdate signs the update DisclosedUpdateBytes measures, in full.
func disclosedUpdate(chainID, job string, r *RoundRecipe, steps int) ([]byte, error) {
	ds := make([]string, steps)
	for i := range ds {
		ds[i] = strings.Repeat("f", 64)
	}
	root, err := StepDigestsRoot(ds)
	if err != nil {
		return nil, err
	}
	full := strings.Repeat("f", 64)
	b := UpdateSubmitted{JobID: job, Round: math.MaxUint64, UpdateDigest: full, DatasetDigest: full, Samples: math.MaxUint64,
		Metrics:    map[string]float64{"loss": -math.MaxFloat64, "steps": float64(steps)},
		Commitment: &TrainingCommitment{InputsDigest: full, Steps: uint64(steps), StepRoot: root, StepDigests: ds}}
	for _, p := range r.Published {
		b.Ranges = append(b.Ranges, SampleRange{Dataset: p.Digest, First: math.MaxUint64 - 1, End: math.MaxUint64})
	}
	env, err := SignTx(disclosureKey, chainID, math.MaxUint64, b)
	if err != nil {
		return nil, fmt.Errorf("a model update of job %q: %w", job, err)
	}
	return env, nil
}

// CheckDisclosureFits checks that every update of job, whose recipe r has
// a VerifyRule, fits the chain's maxTxBytes with its VerifyRule.Steps step
// digests disclosed (DisclosedUpdateBytes). Its error says how large such
// an update is and how many steps would fit. A recipe without a
// VerifyRule always fits.
func CheckDisclosureFits(chainID, job string, r *RoundRecipe, maxTxBytes int) error {
	v := r.Verify
	if v == nil {
		return nil
	}
	if v.Steps < 1 || v.Steps > MaxDisclosedSteps {
		return fmt.Errorf("recipe.verify.steps %d: want 1 to %d", v.Steps, MaxDisclosedSteps)
	}
	size, err := disclosedSizes(chainID, job, r)
	if err != nil {
		return err
	}
	n := size(v.Steps)
	if n <= maxTxBytes {
		return nil
	}
	// The largest step count that fits: sizes grow with steps.
	lo, hi := 0, v.Steps // fits(lo) (0: none), !fits(hi)
	for hi-lo > 1 {
		if mid := lo + (hi-lo)/2; size(mid) <= maxTxBytes {
			lo = mid
		} else {
			hi = mid
		}
	}
	fit := fmt.Sprintf("at most %d steps per update fit (lower train.local_steps", lo)
	if lo == 0 {
		fit = "no update of the job fits, even of one step (fewer published datasets"
	}
	return fmt.Errorf("recipe.verify.steps %d: job %q spot-checks its updates, so each discloses the digest of every one of its %d steps; such an update takes up to %d bytes, above the chain's policy max_tx_bytes %d: %s, or run the job on a chain with max_tx_bytes of at least %d)",
		v.Steps, job, v.Steps, n, maxTxBytes, fit, n)
}
