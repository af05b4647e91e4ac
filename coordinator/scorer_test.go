package coordinator

import (
	"context"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
)

// TestScoreContributors scores the contributors of a full fine-tuning
// round: one sent full weights, one a delta from the round's start, one
// an update the store does not hold (left out). Each score is the
// starting model's eval loss minus that of the start with the update
// alone applied, as evaluateGlobal scores the models written here.
func TestScoreContributors(t *testing.T) {
	ctx := context.Background()
	baseDir, data, base, _ := evalFixture(t)
	store, err := artifact.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	put := func(path string) string {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		d, _, err := store.Put(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	job := DefaultJob()
	job.Name = "score-test"
	job.FineTune = FineTuneSpec{Mode: model.ModeFull}
	start := put(filepath.Join(baseDir, model.WeightsFile))

	// Trainer A: other full weights of the same shape.
	other, err := model.New(base.Config, 77)
	if err != nil {
		t.Fatal(err)
	}
	otherDir := t.TempDir()
	if _, err := other.Save(otherDir, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	full := put(filepath.Join(otherDir, model.WeightsFile))

	// Trainer B: a small delta from the start, marked as one.
	names := make([]string, 0, len(base.Tensors))
	for n := range base.Tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	var delta []safetensors.Tensor
	want := &model.Model{Config: base.Config, Tensors: map[string]*model.Tensor{}}
	for _, n := range names {
		bt := base.Tensors[n]
		d := make([]float32, len(bt.Data))
		w := bt.Clone()
		for i := range d {
			d[i] = float32(i%5-2) / 64
			w.Data[i] += d[i]
		}
		want.Tensors[n] = w
		st, err := safetensors.FromFloat32(n, safetensors.F32, bt.Shape, d)
		if err != nil {
			t.Fatal(err)
		}
		delta = append(delta, st)
	}
	deltaPath := filepath.Join(t.TempDir(), "delta.safetensors")
	if _, err := safetensors.WriteFile(deltaPath, delta, map[string]string{aggregator.MetaKind: aggregator.KindDelta}); err != nil {
		t.Fatal(err)
	}
	dlt := put(deltaPath)
	wantDir := t.TempDir()
	if _, err := want.Save(wantDir, safetensors.F32); err != nil {
		t.Fatal(err)
	}

	s := &scorer{store: store, log: slog.New(slog.DiscardHandler)}
	id := func(s string) string { return artifact.DigestOf([]byte(s)) }
	ta, tb, tc := id("trainer a"), id("trainer b"), id("trainer c")
	r := &ledger.Round{JobID: job.Name, Round: 1, BaseModel: start, Contributors: []ledger.Contribution{
		{Trainer: ta, UpdateDigest: full}, {Trainer: tb, UpdateDigest: dlt}, {Trainer: tc, UpdateDigest: id("an update never uploaded")}}}
	work := t.TempDir()
	for _, f := range []string{model.WeightsFile, model.ConfigFile} {
		if err := os.Symlink(filepath.Join(baseDir, f), filepath.Join(work, f)); err != nil {
			t.Fatal(err)
		}
	}
	scores, err := s.contributors(ctx, evalTask{job: job, round: 1, base: start}, work, data, r)
	if err != nil {
		t.Fatal(err)
	}
	nll := func(weights string) float64 {
		t.Helper()
		res, err := evaluateGlobal(ctx, baseDir, job, weights, data)
		if err != nil {
			t.Fatal(err)
		}
		return res.MeanNLL
	}
	s0 := nll(filepath.Join(baseDir, model.WeightsFile))
	wantA := s0 - nll(filepath.Join(otherDir, model.WeightsFile))
	wantB := s0 - nll(filepath.Join(wantDir, model.WeightsFile))
	if len(scores) != 2 || scores[0].Trainer != ta || scores[1].Trainer != tb {
		t.Fatalf("scores %+v, want trainers a and b (c's update is not in the store)", scores)
	}
	if scores[0].LossRemoved != wantA {
		t.Errorf("full-weights update: score %v, want %v", scores[0].LossRemoved, wantA)
	}
	if math.Abs(scores[1].LossRemoved-wantB) > 1e-6 || scores[1].LossRemoved == 0 {
		t.Errorf("delta update: score %v, want %v", scores[1].LossRemoved, wantB)
	}
	t.Logf("start NLL %.6f; scores %+v", s0, scores)
}

// roundsFunc reads rounds from a function: the ledger records a table
// test hands the scorer.
type roundsFunc func(job string, n uint64) (*ledger.Round, error)

func (f roundsFunc) Round(_ context.Context, job string, n, _ uint64) (*ledger.Round, error) {
	return f(job, n)
}

// TestScorerEvaluation checks which finished evaluations become a
// RoundEvaluated, against the round as the ledger records it.
func TestScorerEvaluation(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "eval.txt")
	if err := os.WriteFile(data, []byte("held-out text\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDigest := artifact.DigestOf([]byte("held-out text\n"))
	job := DefaultJob()
	job.Name = "score-table"
	job.FineTune = FineTuneSpec{Mode: model.ModeFull}
	job.Eval.Data = "eval.txt"
	m := artifact.DigestOf([]byte("the committed model"))
	store, err := artifact.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ok := model.EvalResult{MeanNLL: 2.5, Tokens: 40}
	committed := func(mod string, ev *ledger.Evaluation) roundsFunc {
		return func(string, uint64) (*ledger.Round, error) {
			return &ledger.Round{JobID: job.Name, Round: 2, Status: ledger.StatusCommitted, ModelDigest: mod, Evaluation: ev}, nil
		}
	}
	cases := []struct {
		name   string
		rounds roundsFunc
		res    model.EvalResult
		want   bool // a RoundEvaluated is made
	}{
		{"committed", committed(m, nil), ok, true},
		{"no tokens", committed(m, nil), model.EvalResult{MeanNLL: 2.5}, false},
		{"round unreadable", func(string, uint64) (*ledger.Round, error) { return nil, ledger.ErrRecordNotFound }, ok, false},
		{"another model", committed(artifact.DigestOf([]byte("another")), nil), ok, false},
		{"failed round", func(string, uint64) (*ledger.Round, error) {
			return &ledger.Round{JobID: job.Name, Round: 2, Status: ledger.StatusFailed}, nil
		}, ok, false},
		{"already evaluated", committed(m, &ledger.Evaluation{}), ok, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &scorer{store: store, rounds: tc.rounds, log: slog.New(slog.DiscardHandler)}
			got := c.evaluation(ctx, evalTask{job: job, round: 2, model: m}, t.TempDir(), data, tc.res)
			if (got != nil) != tc.want {
				t.Fatalf("evaluation %+v, want one: %v", got, tc.want)
			}
			if got == nil {
				return
			}
			want := ledger.RoundEvaluated{JobID: job.Name, Round: 2, ModelDigest: m, EvalDigest: dataDigest, MeanNLL: 2.5, Tokens: 40}
			if got.JobID != want.JobID || got.Round != want.Round || got.ModelDigest != want.ModelDigest ||
				got.EvalDigest != want.EvalDigest || got.MeanNLL != want.MeanNLL || got.Tokens != want.Tokens || len(got.Scores) != 0 {
				t.Fatalf("evaluation %+v, want %+v", *got, want)
			}
		})
	}
}
