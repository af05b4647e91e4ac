package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// An aggregator that rejects a good update (any reason it likes: here the
// norm, though the recipe sets no bound) to keep it out of the round: the
// FSM cannot see inside an update, audit re-runs the aggregator's input
// checks on it and names the job, round, trainer and update.
func TestVerifyRejectedGoodUpdate(t *testing.T) {
	const reason = "update norm 41.3 exceeds max_norm 10"
	c := newTestChainOpts(t, chainOpts{rejected: func(t testing.TB) []byte { return weights(t, 23) }, rejectReason: reason})
	_, err := Verify(context.Background(), c.export(t), VerifyOptions{Artifacts: c.artifacts})
	var m *Mismatch
	want := fmt.Sprintf(`job "job-1" round 2: update %s of trainer %s was rejected as %q but it passes every input check`, c.updates[1][2], c.trainers[2].id, reason)
	if !errors.As(err, &m) || m.Height != 7 || m.Tx != 0 || m.Field != "reason" || !strings.Contains(m.Msg, want) {
		t.Fatalf("got %v, want a reason mismatch at height 7 tx[0] containing %q", err, want)
	}
	t.Log(err)
	// Without artifacts nothing can be re-checked: the chain itself is fine.
	if _, err := Verify(context.Background(), c.export(t), VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Rejections the aggregator's checks confirm pass, each counted: a NaN
// (newTestChain's), a shape that is not the base's, a norm above the
// recipe's max_norm (checked directly: the test chain's recipe has none).
// A rejected update missing from the artifacts is listed as unverifiable,
// and fails with StrictRejections.
func TestVerifyRejectionsChecked(t *testing.T) {
	c := newTestChain(t)
	rep, err := Verify(context.Background(), c.export(t), VerifyOptions{Artifacts: c.artifacts})
	if err != nil || rep.RejectionsChecked != 1 || len(rep.Unverifiable) != 0 {
		t.Fatalf("NaN update rejected: %+v %v, want it confirmed", rep, err)
	}
	bad := newTestChainOpts(t, chainOpts{rejected: func(t testing.TB) []byte { return writeTensorBytes(t, make([]float32, 9)) }, rejectReason: "shape"})
	if rep, err := Verify(context.Background(), bad.export(t), VerifyOptions{Artifacts: bad.artifacts}); err != nil || rep.RejectionsChecked != 1 {
		t.Fatalf("mis-shaped update rejected: %+v %v, want it confirmed", rep, err)
	}

	dir := copyDir(t, c.artifacts)
	p, _ := ArtifactPath(dir, c.updates[1][2])
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	rep, err = Verify(context.Background(), c.export(t), VerifyOptions{Artifacts: dir})
	if err != nil || rep.RejectionsChecked != 0 || len(rep.Unverifiable) != 1 || !strings.Contains(rep.Unverifiable[0], "height 7 tx[0]") ||
		!strings.Contains(rep.Unverifiable[0], "is not in the artifacts, so the rejection cannot be checked") {
		t.Fatalf("missing rejected update: %+v %v, want one unverifiable line", rep, err)
	}
	t.Log(rep.Unverifiable[0])
	_, err = Verify(context.Background(), c.export(t), VerifyOptions{Artifacts: dir, StrictRejections: true})
	var m *Mismatch
	if !errors.As(err, &m) || m.Height != 7 || !strings.Contains(m.Msg, "--strict-rejections") {
		t.Fatalf("strict: got %v, want a mismatch at height 7", err)
	}

	// The norm bound, through rejection directly (the recipe is the
	// verifier's; the FSM is not involved).
	for _, tc := range []struct {
		maxNorm float64
		ok      bool
	}{{0.5, true}, {1e6, false}} {
		v, r, tx, b := rejectionFixture(t, c, tc.maxNorm)
		err := v.rejection(7, 0, tx, b)
		if tc.ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), "a norm within max_norm 1e+06")) {
			t.Errorf("max_norm %v: %v", tc.maxNorm, err)
		}
		if !r.rejected[b.UpdateDigest] {
			t.Error("the rejection was not recorded")
		}
	}
}

// Independently of the FSM: a rejection signed by an aggregator the
// recipe does not designate, or of an update the round never had.
func TestRejectionSignerAndUpdate(t *testing.T) {
	c := newTestChain(t)
	v, _, tx, b := rejectionFixture(t, c, 0)
	tx.Signer = c.coord.id
	if err := v.rejection(7, 0, tx, b); err == nil || !strings.Contains(err.Error(), "signer: ") || !strings.Contains(err.Error(), "does not designate") {
		t.Fatalf("got %v", err)
	}
	tx.Signer = c.agg.id
	b.UpdateDigest = digestOf("never submitted")
	if err := v.rejection(7, 0, tx, b); err == nil || !strings.Contains(err.Error(), "no update "+b.UpdateDigest+" was submitted") {
		t.Fatalf("got %v", err)
	}
}

// rejectionFixture is a verifier in the state it has at round 2's
// UpdateRejected of c (whose recipe gets maxNorm), the round, and that tx.
func rejectionFixture(t *testing.T, c *testChain, maxNorm float64) (*verifier, *roundTrack, *ledger.Tx, ledger.UpdateRejected) {
	t.Helper()
	v := &verifier{ctx: context.Background(), opts: VerifyOptions{Artifacts: c.artifacts}, log: slog.New(slog.DiscardHandler),
		rounds: map[string]*roundTrack{}, models: map[string]ledger.ModelRegistered{c.base: {Digest: c.base}},
		recipes: map[string]ledger.RoundRecipe{"job-1": {Strategy: "fedavg", MaxNorm: maxNorm, Compression: "none", MinTrainers: 1, Aggregators: []string{c.agg.id}}}}
	r := &roundTrack{base: c.models[0], updates: map[string]ledger.UpdateSubmitted{}, rejected: map[string]bool{}, missing: map[string]txLoc{}}
	for i, tr := range c.trainers {
		r.updates[tr.id] = ledger.UpdateSubmitted{JobID: "job-1", Round: 2, UpdateDigest: c.updates[1][i], Samples: 100}
	}
	v.rounds[roundKey("job-1", 2)] = r
	// A good update of round 2 stands in for the rejected one.
	b := ledger.UpdateRejected{JobID: "job-1", Round: 2, UpdateDigest: c.updates[1][0], Reason: "norm"}
	return v, r, &ledger.Tx{Signer: c.agg.id}, b
}

// A round that does not start where its job left off: round 1 not on the
// recipe's base, a later round not on the last committed model (round 1's
// base while none committed).
func TestCheckBaseIndependent(t *testing.T) {
	base, m1, other := digestOf("base"), digestOf("m1"), digestOf("other")
	cases := []struct {
		name       string
		recipeBase string
		head       *jobHead
		round      uint64
		opened     string
		want       string // "" = passes
	}{
		{"round 1 on the recipe's base", base, nil, 1, base, ""},
		{"round 1 on another model", base, nil, 1, other, "it must start from " + base + ", the base model of the job's recipe"},
		{"round 1, recipe without a base", "", nil, 1, other, ""},
		{"round 2 on round 1's model", base, &jobHead{m1, 1}, 2, m1, ""},
		{"round 2 back on the base", base, &jobHead{m1, 1}, 2, base, "it must start from " + m1 + ", the model round 1 committed"},
		{"round 3 after a failed round 2", "", &jobHead{m1, 1}, 3, other, "it must start from " + m1},
		{"round 2 after a failed round 1", "", &jobHead{other, 0}, 2, base, "it must start from " + other + ", round 1's base"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := &verifier{heads: map[string]jobHead{}, recipes: map[string]ledger.RoundRecipe{"j": {BaseModel: tc.recipeBase}}}
			if tc.head != nil {
				v.heads["j"] = *tc.head
			}
			err := v.checkBase(5, 0, &ledger.Tx{}, ledger.RoundOpened{JobID: "j", Round: tc.round, BaseModel: tc.opened})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "base_model: ") || !strings.Contains(err.Error(), fmt.Sprintf(`job "j" round %d starts from %s`, tc.round, tc.opened)) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func writeTensorBytes(t testing.TB, x []float32) []byte {
	t.Helper()
	tn, err := safetensors.FromFloat32("w", safetensors.F32, []int{len(x)}, x)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := safetensors.Encode(&sb, []safetensors.Tensor{tn}, nil); err != nil {
		t.Fatal(err)
	}
	return []byte(sb.String())
}
