package audit

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model/safetensors"
)

// An aggregator that drops an update from its model while still listing
// it with the right share (the FSM cannot see inside a model): audit
// verify re-runs the round from the recipe over every submitted update and
// names the round.
func TestVerifyDroppedUpdate(t *testing.T) {
	c := newTestChainInputs(t, func(round uint64, digest, dir string, inputs []aggregator.Input, base string) string {
		if round != 2 {
			return digest
		}
		// Round 2 aggregated without its second input, both still listed.
		out := filepath.Join(t.TempDir(), "m.safetensors")
		_, err := aggregator.Aggregate(context.Background(), aggregator.Request{Strategy: &aggregator.FedAvg{},
			Inputs: inputs[:1], Base: base, Out: out, Options: aggregator.Options{Strict: true}})
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return put(t, dir, data, true)
	})
	_, err := Verify(context.Background(), c.export(t), VerifyOptions{Artifacts: c.artifacts})
	var m *Mismatch
	if !errors.As(err, &m) || m.Field != "model_digest" || !strings.Contains(m.Msg, `job "job-1" round 2`) || !strings.Contains(m.Msg, "2 submitted updates") {
		t.Fatalf("got %v, want a model_digest mismatch naming job-1 round 2", err)
	}
	t.Log(err)
}

// checkCommit catches, without the FSM, a commit that an export written
// under other rules could hold: a submitted, unrejected update left out,
// a rejected one listed, another strategy or parameters, an aggregator the
// recipe does not designate.
func TestCheckCommitIndependent(t *testing.T) {
	agg, other := newActor("agg", ledger.RoleAggregator), newActor("other", ledger.RoleAggregator)
	rc := ledger.RoundRecipe{Strategy: "krum", Params: map[string]string{"num_malicious": "0"}, Compression: "none", MinTrainers: 1, Aggregators: []string{agg.id}}
	r := &roundTrack{updates: map[string]ledger.UpdateSubmitted{
		"t1": {UpdateDigest: digestOf("u1"), Samples: 5},
		"t2": {UpdateDigest: digestOf("u2"), Samples: 5},
		"t3": {UpdateDigest: digestOf("u3"), Samples: 5},
	}, rejected: map[string]bool{digestOf("u3"): true}}
	full := []ledger.Contribution{{Trainer: "t1", UpdateDigest: digestOf("u1"), Weight: 1}, {Trainer: "t2", UpdateDigest: digestOf("u2")}}
	cases := []struct {
		name   string
		signer string
		b      ledger.RoundCommitted
		want   string // "" = passes
	}{
		{"honest", agg.id, ledger.RoundCommitted{Strategy: "krum", Params: map[string]string{"num_malicious": "0"}, Contributors: full}, ""},
		{"dropped update", agg.id, ledger.RoundCommitted{Strategy: "krum", Params: map[string]string{"num_malicious": "0"}, Contributors: full[:1]},
			"leaves out update " + digestOf("u2") + " of trainer t2"},
		{"rejected listed", agg.id, ledger.RoundCommitted{Strategy: "krum", Params: map[string]string{"num_malicious": "0"},
			Contributors: append(full, ledger.Contribution{Trainer: "t3", UpdateDigest: digestOf("u3")})}, "was rejected, yet it is a contributor"},
		{"other strategy", agg.id, ledger.RoundCommitted{Strategy: "fedavg", Contributors: full}, `strategy "fedavg", the job's recipe says "krum"`},
		{"other params", agg.id, ledger.RoundCommitted{Strategy: "krum", Params: map[string]string{"num_malicious": "1"}, Contributors: full}, `params["num_malicious"] is "1"`},
		{"not designated", other.id, ledger.RoundCommitted{Strategy: "krum", Params: map[string]string{"num_malicious": "0"}, Contributors: full}, "does not designate"},
	}
	v := &verifier{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.b.JobID, tc.b.Round = "j", 4
			err := v.checkCommit(9, 0, &ledger.Tx{Signer: tc.signer}, tc.b, r, &rc)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `job "j" round 4`) {
				t.Fatalf("got %v, want %q naming the round", err, tc.want)
			}
		})
	}
}

// The DP test: committed − un-noised must look like N(0, σ²) noise in
// size. Noise of the right σ passes; none at all (the aggregator kept the
// privacy budget for itself), a third of it or three times it fail.
func TestNoisePlausible(t *testing.T) {
	const n = 20000
	rng := rand.New(rand.NewPCG(1, 2))
	sq := func(scale float64) float64 {
		var ss float64
		for range n {
			z := rng.NormFloat64() * scale
			ss += z * z
		}
		return ss
	}
	const sigma = 0.01
	for _, tc := range []struct {
		scale float64
		ok    bool
	}{{sigma, true}, {0, false}, {sigma / 3, false}, {3 * sigma, false}, {1.02 * sigma, true}} {
		ratio, slack, ok := noisePlausible(sq(tc.scale), n, sigma)
		if ok != tc.ok {
			t.Errorf("noise of σ %v against %v: ratio %.4f slack %.4f ok %v, want %v", tc.scale, sigma, ratio, slack, ok, tc.ok)
		}
	}
	// sqDiff over two real files.
	dir := t.TempDir()
	a, b := make([]float32, 1000), make([]float32, 1000)
	var want float64
	for i := range a {
		a[i] = float32(i) / 100
		b[i] = a[i] + float32(rng.NormFloat64()*sigma)
		d := float64(b[i]) - float64(a[i])
		want += d * d
	}
	pa, pb := writeTensor(t, dir, "a", a), writeTensor(t, dir, "b", b)
	ss, cnt, err := sqDiff(pa, pb)
	if err != nil || cnt != 1000 || math.Abs(ss-want) > 1e-12 {
		t.Fatalf("sqDiff: %v %d %v, want %v 1000", ss, cnt, err, want)
	}
}

func writeTensor(t *testing.T, dir, name string, x []float32) string {
	t.Helper()
	tn, err := safetensors.FromFloat32("w", safetensors.F32, []int{len(x)}, x)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := safetensors.Encode(&sb, []safetensors.Tensor{tn}, nil); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+".safetensors")
	if err := os.WriteFile(p, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
