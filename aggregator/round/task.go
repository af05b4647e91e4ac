package round

import (
	"fmt"

	"github.com/fedtune/fedtune/aggregator"
	aggregatorv1 "github.com/fedtune/fedtune/api/aggregator/v1"
)

// Input is one update going into aggregation.
type Input struct {
	Trainer string
	Digest  string
	Dataset string
	Samples uint64
}

// Task asks the aggregator to combine a round's valid updates.
type Task struct {
	JobID    string
	Round    uint64
	Base     string // current global model digest
	State    string // server state digest from the last commit; "" first
	Strategy string
	Params   map[string]float64 // as given in the job (aggregator.New)
	Options  aggregator.Options
	// Inputs in canonical order: trainer ID ascending.
	Inputs []Input
	// Arrived are the trainers whose update reached the coordinator, valid
	// or not (informational: the aggregator itself tries to fetch every
	// update the ledger records for the round that is no input, and
	// rejects those it cannot fetch).
	Arrived []string
}

// Result is the outcome of a Task: every input is in exactly one of
// Weights (its share in the new model) and Rejected (the reason), both
// keyed by trainer. Rejected may also name trainers that are no input: an
// update the ledger records for the round that the aggregator could not
// fetch.
type Result struct {
	Round    uint64
	Model    string // new model digest
	State    string // new server state digest, "" for stateless strategies
	Weights  map[string]float64
	Rejected map[string]string
}

// Request builds the aggregator request the task runs: inputs from path
// (by update digest), the reference the job's global weights give
// (global: the digest Task.Base maps to), the server state. An auditor
// re-runs a committed round offline with it and compares digests.
func (t Task) Request(path func(digest string) (string, error), global string) (aggregator.Request, error) {
	st, err := aggregator.New(t.Strategy, t.Params)
	if err != nil {
		return aggregator.Request{}, err
	}
	req := aggregator.Request{Strategy: st, Options: t.Options}
	for _, in := range t.Inputs {
		p, err := path(in.Digest)
		if err != nil {
			return req, fmt.Errorf("update %s of %s: %w", in.Digest, abbrev(in.Trainer), err)
		}
		req.Inputs = append(req.Inputs, aggregator.Input{Path: p, Weight: float64(in.Samples), ContributorID: in.Trainer})
	}
	if global != "" {
		if req.Base, err = path(global); err != nil {
			return req, fmt.Errorf("global %s: %w", global, err)
		}
		req.BaseDigest = global
	}
	if t.State != "" {
		if req.State, err = path(t.State); err != nil {
			return req, fmt.Errorf("server state %s: %w", t.State, err)
		}
	}
	return req, nil
}

// inputDigest returns the update digest of trainer's input ("?" if none).
func (t Task) inputDigest(trainer string) string {
	for _, in := range t.Inputs {
		if in.Trainer == trainer {
			return in.Digest
		}
	}
	return "?"
}

// Proto is the wire form of the task with reference weights global.
func (t Task) Proto(global string) *aggregatorv1.AggregateRequest {
	o := t.Options
	req := &aggregatorv1.AggregateRequest{JobId: t.JobID, Round: t.Round, Base: t.Base, Global: global, State: t.State,
		Strategy: t.Strategy, Params: t.Params, Options: &aggregatorv1.Options{Clip: o.Clip, NoiseMultiplier: o.NoiseMultiplier,
			Seed: o.Seed, MaxNorm: o.MaxNorm, ChunkElems: int64(o.ChunkElems), Threads: int32(o.Threads), Strict: o.Strict}}
	for _, in := range t.Inputs {
		req.Inputs = append(req.Inputs, &aggregatorv1.Input{Trainer: in.Trainer, Digest: in.Digest, Dataset: in.Dataset, Samples: in.Samples})
	}
	return req
}

// FromProto is the inverse of Task.Proto; it returns the task and its
// reference weights' digest.
func FromProto(req *aggregatorv1.AggregateRequest) (Task, string) {
	t := Task{JobID: req.JobId, Round: req.Round, Base: req.Base, State: req.State, Strategy: req.Strategy, Params: req.Params}
	if o := req.Options; o != nil {
		t.Options = aggregator.Options{Clip: o.Clip, NoiseMultiplier: o.NoiseMultiplier, Seed: o.Seed, MaxNorm: o.MaxNorm,
			ChunkElems: int(o.ChunkElems), Threads: int(o.Threads), Strict: o.Strict}
	}
	for _, in := range req.Inputs {
		t.Inputs = append(t.Inputs, Input{Trainer: in.Trainer, Digest: in.Digest, Dataset: in.Dataset, Samples: in.Samples})
	}
	return t, req.Global
}

func abbrev(id string) string {
	if len(id) > 16 {
		return id[:16] + "…"
	}
	return id
}
