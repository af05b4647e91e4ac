package adversarial

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// roundsNet is a ledger-only devnet with a krum job registered by the
// devnet's coordinator (designating the devnet's aggregator) and its round
// 1 open with trainer-1 and trainer-2, who both submitted, and trainer-3
// selected but not yet submitted. A second coordinator and a second
// aggregator are members too. Each signer keeps its nonces.
type roundsNet struct {
	nw       *devnet.Network
	c        *client.Client
	signers  map[string]*client.Signer
	job      string
	base     string
	datasets map[string]string // trainer name → dataset digest
	updates  map[string]string // trainer name → submitted update digest
}

const roundsSamples = 50 // each trainer's registered dataset size

func roundsSetup(t *testing.T, ctx context.Context) *roundsNet {
	t.Helper()
	nw := startLedgers(t, ctx)
	c, err := nw.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &roundsNet{nw: nw, c: c, signers: map[string]*client.Signer{}, job: "adv-krum",
		datasets: map[string]string{}, updates: map[string]string{}}
	for name, key := range nw.Keys {
		r.signers[name] = client.NewSigner(c, key)
	}
	for name, role := range map[string]ledger.Role{"coordinator-2": ledger.RoleCoordinator, "aggregator-2": ledger.RoleAggregator} {
		key, err := ledger.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		r.signers[name] = client.NewSigner(c, key)
		r.must(t, ctx, "admin", ledger.MemberAdded{PublicKey: hex.EncodeToString(key.Public().(ed25519.PublicKey)), Role: role, Name: name})
	}
	r.base = digestOf("adversarial base model")
	r.must(t, ctx, "coordinator", ledger.ModelRegistered{Digest: r.base, Name: "base", Licence: "CC0-1.0", Source: "test"})
	for _, tr := range []string{"trainer-1", "trainer-2", "trainer-3"} {
		d := digestOf("dataset of " + tr)
		r.datasets[tr] = d
		r.must(t, ctx, tr, ledger.DatasetRegistered{Digest: d, Name: tr + "-data", Licence: "CC0-1.0", Source: "test",
			Samples: roundsSamples, Root: digestOf("root of " + tr), Bytes: 1000})
	}
	st, err := aggregator.New("krum", nil)
	if err != nil {
		t.Fatal(err)
	}
	rc := ledger.RoundRecipe{Strategy: "krum", Params: map[string]string{}, Compression: "none", MinTrainers: 2, MaxTrainers: 3,
		Aggregators: []string{nw.ID("aggregator")}}
	for k, v := range st.Params() {
		rc.Params[k] = ledger.FormatParam(v)
	}
	r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: r.job, Recipe: rc})
	r.must(t, ctx, "coordinator", ledger.RoundOpened{JobID: r.job, Round: 1, ConfigDigest: digestOf("config"), BaseModel: r.base,
		Strategy: "krum", Trainers: []string{nw.ID("trainer-1"), nw.ID("trainer-2"), nw.ID("trainer-3")}, Deadline: time.Now().Add(time.Hour)})
	for _, tr := range []string{"trainer-1", "trainer-2"} {
		u := digestOf("update of " + tr)
		r.updates[tr] = u
		r.must(t, ctx, tr, ledger.UpdateSubmitted{JobID: r.job, Round: 1, UpdateDigest: u, DatasetDigest: r.datasets[tr], Samples: roundsSamples})
	}
	return r
}

func (r *roundsNet) must(t *testing.T, ctx context.Context, signer string, body ledger.TxBody) {
	t.Helper()
	if _, err := r.signers[signer].Submit(ctx, body); err != nil {
		t.Fatalf("setup %s by %s: %v", body.TxType(), signer, err)
	}
}

// attack submits body signed by signer and requires a rejection whose
// reason contains every want, and a chain that did not move.
func (r *roundsNet) attack(t *testing.T, ctx context.Context, signer string, body ledger.TxBody, want ...string) {
	t.Helper()
	before := waitSettled(t, ctx, r.nw.Net)
	h, err := r.signers[signer].Submit(ctx, body)
	if err == nil {
		t.Fatalf("%s by %s was committed at height %d", body.TxType(), signer, h)
	}
	if !errors.Is(err, client.ErrRejected) {
		t.Fatalf("%s by %s: %v, want a ledger rejection", body.TxType(), signer, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%s by %s: %v, want the reason to say %q", body.TxType(), signer, err, w)
		}
	}
	t.Logf("refused: %v", err)
	requireUnchanged(t, ctx, r.nw.Net, before)
}

func (r *roundsNet) contrib(names ...string) []ledger.Contribution {
	var cs []ledger.Contribution
	for _, n := range names {
		cs = append(cs, ledger.Contribution{Trainer: r.nw.ID(n), UpdateDigest: r.updates[n], Weight: 1 / float64(len(names))})
	}
	return cs
}

// The round rules the FSM now enforces, tried on a real three-node ledger
// with the devnet's own keys.
func TestAttackRoundRules(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	r := roundsSetup(t, ctx)
	krumParams := func() map[string]string {
		st, _ := aggregator.New("krum", nil)
		p := map[string]string{}
		for k, v := range st.Params() {
			p[k] = ledger.FormatParam(v)
		}
		return p
	}

	t.Run("krum round committed as fedavg with one contributor", func(t *testing.T) {
		// The model digest is the trainer's own update: the aggregator
		// passes one update off as the aggregate.
		r.attack(t, ctx, "aggregator", ledger.RoundCommitted{JobID: r.job, Round: 1, ModelDigest: r.updates["trainer-1"], Strategy: "fedavg",
			Contributors: r.contrib("trainer-1")}, `strategy "fedavg"`, `the recipe says "krum"`)
	})
	t.Run("commit that drops a submitted, unrejected update", func(t *testing.T) {
		r.attack(t, ctx, "aggregator", ledger.RoundCommitted{JobID: r.job, Round: 1, ModelDigest: digestOf("model"), Strategy: "krum",
			Params: krumParams(), Contributors: r.contrib("trainer-1")}, "leaves out 1 submitted update", r.updates["trainer-2"])
	})
	t.Run("commit with other parameters", func(t *testing.T) {
		p := krumParams()
		p["clip"] = "1000"
		r.attack(t, ctx, "aggregator", ledger.RoundCommitted{JobID: r.job, Round: 1, ModelDigest: digestOf("model"), Strategy: "krum",
			Params: p, Contributors: r.contrib("trainer-1", "trainer-2")}, `params["clip"] is not in the job's recipe`)
	})
	t.Run("commit by a non-designated aggregator", func(t *testing.T) {
		r.attack(t, ctx, "aggregator-2", ledger.RoundCommitted{JobID: r.job, Round: 1, ModelDigest: digestOf("model"), Strategy: "krum",
			Params: krumParams(), Contributors: r.contrib("trainer-1", "trainer-2")}, "is not designated by the job's recipe")
	})
	t.Run("fail by a non-designated aggregator", func(t *testing.T) {
		r.attack(t, ctx, "aggregator-2", ledger.RoundFailed{JobID: r.job, Round: 1, Reason: "sabotage"}, "is not designated by the job's recipe")
	})
	t.Run("reject by a non-designated aggregator", func(t *testing.T) {
		r.attack(t, ctx, "aggregator-2", ledger.UpdateRejected{JobID: r.job, Round: 1, UpdateDigest: r.updates["trainer-2"], Reason: "spite"},
			"is not designated by the job's recipe")
	})
	t.Run("another coordinator opens round 2^64-1", func(t *testing.T) {
		r.attack(t, ctx, "coordinator-2", ledger.RoundOpened{JobID: r.job, Round: math.MaxUint64, ConfigDigest: digestOf("config"),
			BaseModel: r.base, Strategy: "krum", Trainers: []string{r.nw.ID("trainer-1"), r.nw.ID("trainer-2")}, Deadline: time.Now().Add(time.Hour)},
			"is owned by coordinator "+r.nw.ID("coordinator"))
	})
	t.Run("owner skips round numbers", func(t *testing.T) {
		r.attack(t, ctx, "coordinator", ledger.RoundOpened{JobID: r.job, Round: math.MaxUint64, ConfigDigest: digestOf("config"),
			BaseModel: r.base, Strategy: "krum", Trainers: []string{r.nw.ID("trainer-1"), r.nw.ID("trainer-2")}, Deadline: time.Now().Add(time.Hour)},
			"the next must be 2")
	})
	t.Run("owner selects fewer trainers than the recipe's minimum", func(t *testing.T) {
		r.attack(t, ctx, "coordinator", ledger.RoundOpened{JobID: r.job, Round: 2, ConfigDigest: digestOf("config"),
			BaseModel: r.base, Strategy: "krum", Trainers: []string{r.nw.ID("trainer-1")}, Deadline: time.Now().Add(time.Hour)},
			"selects 1 trainers; the recipe allows 2 to 3")
	})
	t.Run("another coordinator re-registers the job", func(t *testing.T) {
		r.attack(t, ctx, "coordinator-2", ledger.JobRegistered{JobID: r.job, Recipe: ledger.RoundRecipe{Strategy: "fedavg", Compression: "none",
			MinTrainers: 1, Aggregators: []string{r.signers["aggregator-2"].ID()}}}, "is already registered by "+r.nw.ID("coordinator"))
	})
	t.Run("samples above the registered dataset's", func(t *testing.T) {
		r.attack(t, ctx, "trainer-3", ledger.UpdateSubmitted{JobID: r.job, Round: 1, UpdateDigest: digestOf("update of trainer-3"),
			DatasetDigest: r.datasets["trainer-3"], Samples: roundsSamples + 1}, "samples 51 is more than the 50 samples dataset")
	})
	// Training commitments (issue 16) that are not well formed: the
	// trainer cannot be held to them, so the ledger refuses them.
	for _, c := range []struct {
		name string
		com  ledger.TrainingCommitment
		want string
	}{
		{"commitment with a step root that is no digest", ledger.TrainingCommitment{InputsDigest: digestOf("inputs"), Steps: 4, StepRoot: "ab"},
			"commitment.step_root"},
		{"commitment with an upper-case inputs digest", ledger.TrainingCommitment{InputsDigest: strings.ToUpper(digestOf("inputs")), Steps: 4,
			StepRoot: digestOf("root")}, "commitment.inputs_digest"},
		{"commitment to zero steps", ledger.TrainingCommitment{InputsDigest: digestOf("inputs"), Steps: 0, StepRoot: digestOf("root")},
			"commitment.steps: 0"},
		{"commitment to 2^64-1 steps", ledger.TrainingCommitment{InputsDigest: digestOf("inputs"), Steps: math.MaxUint64, StepRoot: digestOf("root")},
			"commitment.steps: 18446744073709551615"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Signed raw (SignTx would refuse the body): the ledger must
			// refuse it itself.
			body, err := json.Marshal(ledger.UpdateSubmitted{JobID: r.job, Round: 1, UpdateDigest: digestOf("update of trainer-3"),
				DatasetDigest: r.datasets["trainer-3"], Samples: roundsSamples, Commitment: &c.com})
			if err != nil {
				t.Fatal(err)
			}
			id := r.nw.ID("trainer-3")
			payload := fmt.Sprintf(`{"chain_id":%q,"signer":%q,"nonce":%d,"type":%q,"body":%s}`, r.nw.ChainID, id,
				payloadNonce(t, ctx, r.c, id)+1, ledger.TypeUpdateSubmitted, body)
			before := waitSettled(t, ctx, r.nw.Net)
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			_, err = r.c.SubmitWait(sctx, payloadSignRaw(r.nw.Keys["trainer-3"], payload))
			if !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want a rejection containing %q", err, c.want)
			}
			t.Logf("refused: %v", err)
			requireUnchanged(t, ctx, r.nw.Net, before)
		})
	}

	// The honest commit still goes through: both updates, krum's
	// parameters, the designated aggregator.
	if _, err := r.signers["aggregator"].Submit(ctx, ledger.RoundCommitted{JobID: r.job, Round: 1, ModelDigest: digestOf("model"),
		Strategy: "krum", Params: krumParams(), Contributors: []ledger.Contribution{
			{Trainer: r.nw.ID("trainer-1"), UpdateDigest: r.updates["trainer-1"], Weight: 1},
			{Trainer: r.nw.ID("trainer-2"), UpdateDigest: r.updates["trainer-2"], Weight: 0}}}); err != nil {
		t.Fatalf("honest commit: %v", err)
	}
}

// A selected trainer records an update on the ledger and never delivers
// it, hoping that the ledger's rule (a commit accounts for every submitted
// update) fails the round. The aggregator, which tries itself to fetch
// every update the ledger records from the artifact store, rejects the
// undelivered one on its own observation, and the round commits without it.
//
// A whole network that trains: it runs in the pass without -race
// (TestNoRace…), where its round deadline leaves training ample time.
func TestNoRaceAttackWithheldUpdate(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx := testContext(t, 4*time.Minute)
	n := prepareNet(t, ctx, devnet.Options{JobName: "withheld", Rounds: 1, LocalSteps: 20, MinTrainers: 2})
	// The real trainer-3 may find the rogue update on the ledger before it
	// trains, report it and be refused: then the round waits for it until
	// the deadline.
	aggSetDeadline(t, n, 30*time.Second)
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Stop)
	c, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	// As soon as round 1 opens, trainer-3's key records a bogus update.
	bogus := digestOf("withheld update")
	rogue := n.ID("trainer-3")
	var dataset string
	wctx, stop := context.WithCancel(ctx)
	err = c.Blocks(wctx, 0, true, func(vb *client.VerifiedBlock) error {
		for _, raw := range vb.Block.Txs {
			tx, err := ledger.DecodeTx(raw)
			if err != nil {
				return err
			}
			switch b := tx.Body.(type) {
			case ledger.DatasetRegistered:
				if tx.Signer == rogue {
					dataset = b.Digest
				}
			case ledger.RoundOpened:
				if b.JobID == "withheld" && b.Round == 1 {
					if _, err := client.NewSigner(c, n.Keys["trainer-3"]).Submit(ctx, ledger.UpdateSubmitted{JobID: "withheld", Round: 1,
						UpdateDigest: bogus, DatasetDigest: dataset, Samples: 1}); err != nil {
						return err
					}
					stop()
				}
			}
		}
		return nil
	})
	stop()
	if err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "context canceled") {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Rounds) != 1 || st.Rounds[0].Status != string(ledger.StatusCommitted) {
		t.Fatalf("round 1: %v, want committed despite the withheld update", st.Rounds)
	}
	r, err := c.Round(ctx, "withheld", 1)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, u := range r.Updates {
		if u.UpdateDigest == bogus {
			found = true
			if !u.Rejected || !strings.Contains(u.RejectReason, "not in the artifact store after 3 attempts") || u.RejectedBy != n.ID("aggregator") {
				t.Fatalf("withheld update: %+v, want rejected by the aggregator as not in the artifact store after 3 attempts", u)
			}
		}
	}
	if !found {
		t.Fatalf("the withheld update is not on the ledger: %+v", r.Updates)
	}
	for _, ct := range r.Contributors {
		if ct.UpdateDigest == bogus {
			t.Fatal("the withheld update is a contributor")
		}
	}
	t.Logf("round 1 committed %d contributors; withheld update rejected", len(r.Contributors))
}
