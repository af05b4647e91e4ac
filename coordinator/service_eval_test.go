package coordinator

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// evalFixture saves a tiny base model (byte tokenizer) and an eval text.
func evalFixture(t *testing.T) (baseDir, data string, base *model.Model, tokens []int) {
	t.Helper()
	c := model.DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize = 260, 16, 24
	c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads = 2, 4, 2
	c.MaxPositionEmbeddings = 32
	base, err := model.New(c, 5)
	if err != nil {
		t.Fatal(err)
	}
	baseDir = filepath.Join(t.TempDir(), "base")
	if _, err := base.Save(baseDir, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	text := "the quick brown fox jumps over the lazy dog; held-out text for the evaluation of each round.\n"
	data = filepath.Join(t.TempDir(), "eval.txt")
	if err := os.WriteFile(data, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(baseDir, c.VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	return baseDir, data, base, tok.Encode(text)
}

func TestEvaluateGlobal(t *testing.T) {
	ctx := context.Background()
	baseDir, data, base, tokens := evalFixture(t)
	job := DefaultJob()
	job.Name = "eval-test"

	// LoRA: the adapter, with a non-zero B, merged into the base.
	lc := model.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj", "v_proj"}}
	job.FineTune = FineTuneSpec{Mode: model.ModeLoRA, LoRA: &LoRASpec{Rank: lc.Rank, Alpha: lc.Alpha, Targets: lc.Targets}}
	ad, err := model.NewAdapter(base.Config, lc, 9)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range ad.Tensors {
		for i := range tn.Data {
			if tn.Data[i] == 0 {
				tn.Data[i] = float32(i%7-3) / 10
			}
		}
	}
	adDir := t.TempDir()
	if _, err := ad.Save(adDir); err != nil {
		t.Fatal(err)
	}
	merged, err := base.Merge(ad)
	if err != nil {
		t.Fatal(err)
	}
	// Full: other weights of the same shape.
	full, err := model.New(base.Config, 77)
	if err != nil {
		t.Fatal(err)
	}
	fullDir := t.TempDir()
	if _, err := full.Save(fullDir, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	fullJob := *job
	fullJob.FineTune = FineTuneSpec{Mode: model.ModeFull}

	baseRes, err := engine.Evaluate(ctx, engine.NewHost(), base, tokens, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		job    *Job
		global string
		want   *model.Model
	}{
		{"lora", job, filepath.Join(adDir, model.AdapterWeightsFile), merged},
		{"full", &fullJob, filepath.Join(fullDir, model.WeightsFile), full},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := engine.Evaluate(ctx, engine.NewHost(), tc.want, tokens, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := evaluateGlobal(ctx, baseDir, tc.job, tc.global, data)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("evaluateGlobal = %+v, engine.Evaluate = %+v", got, want)
			}
			if got.Tokens != len(tokens)-int(math.Ceil(float64(len(tokens))/32)) || got.MeanNLL == baseRes.MeanNLL {
				t.Fatalf("result %+v: wrong token count or the global was not applied (base %+v)", got, baseRes)
			}
		})
	}

	for _, tc := range []struct {
		name   string
		job    *Job
		global string
		data   string
	}{
		{"missing data", job, filepath.Join(adDir, model.AdapterWeightsFile), filepath.Join(baseDir, "nope.txt")},
		{"missing adapter", job, filepath.Join(adDir, "nope.safetensors"), data},
		{"adapter of another shape", &fullJob, filepath.Join(adDir, model.AdapterWeightsFile), data},
		{"full weights as adapter", job, filepath.Join(fullDir, model.WeightsFile), data},
	} {
		if _, err := evaluateGlobal(ctx, baseDir, tc.job, tc.global, tc.data); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestEvalDue(t *testing.T) {
	for _, tc := range []struct {
		data   string
		every  int
		rounds int
		due    []uint64
	}{
		{"", 0, 3, nil},
		{"e.txt", 0, 3, []uint64{1, 2, 3}},
		{"e.txt", 2, 5, []uint64{2, 4, 5}},
		{"e.txt", 3, 3, []uint64{3}},
	} {
		job := &Job{Rounds: tc.rounds, Eval: EvalSpec{Data: tc.data, Every: tc.every}}
		var got []uint64
		for r := uint64(1); r <= uint64(tc.rounds); r++ {
			if evalDue(job, r) {
				got = append(got, r)
			}
		}
		if len(got) != len(tc.due) || (len(got) > 0 && !equalU64(got, tc.due)) {
			t.Errorf("data %q every %d of %d rounds: due %v, want %v", tc.data, tc.every, tc.rounds, got, tc.due)
		}
	}
}

func equalU64(a, b []uint64) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFillEval(t *testing.T) {
	ev := &evaluator{}
	ev.results = map[string]evalOutcome{
		"m1": {job: "j", round: 1, result: model.EvalResult{Tokens: 10, MeanNLL: 2, Perplexity: math.Exp(2)}},
		"m2": {job: "j", round: 2, err: "boom"},
		"m3": {job: "other", round: 3, result: model.EvalResult{MeanNLL: 1}},
	}
	resp := &coordinatorv1.StatusResponse{JobId: "j", Detail: "2 rounds committed", Rounds: []*coordinatorv1.Round{
		{Round: 1, ModelDigest: "m1"}, {Round: 2, ModelDigest: "m2"}, {Round: 3, ModelDigest: "m3"}, {Round: 4}}}
	ev.fill(resp)
	if r := resp.Rounds[0]; !r.Evaluated || r.EvalNll != 2 || r.EvalPerplexity != math.Exp(2) {
		t.Errorf("round 1 = %+v", r)
	}
	for _, r := range resp.Rounds[1:] {
		if r.Evaluated {
			t.Errorf("round %d evaluated", r.Round)
		}
	}
	if want := "2 rounds committed; round 2 eval: boom"; resp.Detail != want {
		t.Errorf("detail %q, want %q", resp.Detail, want)
	}
}
