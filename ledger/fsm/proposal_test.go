package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// TestUndecodableProposal: an undecodable entry changes nothing and says
// why.
func TestUndecodableProposal(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	before := dump(t, ch.db.State(), prefixApp)
	res := ch.fsm.ApplyProposal(ledger.Proposal{Proposer: "bad"})
	if !errors.Is(res.Err, ledger.ErrBadEncoding) || res.Block != nil {
		t.Fatalf("%+v", res)
	}
	if strings.Join(dump(t, ch.db.State(), prefixApp), ",") != strings.Join(before, ",") {
		t.Fatal("state changed")
	}
}

// FuzzDecodeProposal decodes arbitrary log entries and applies the ones that
// decode to a chain: no panic, and a proposal either makes a block that
// re-verifies or changes no application state.
func FuzzDecodeProposal(f *testing.F) {
	c := newCast()
	txs := seedTxs(f)
	f.Add(ledger.EncodeProposal(ledger.Proposal{Proposer: c.node.id, Time: t0.UnixNano(), Txs: txs}))
	f.Add(ledger.EncodeProposal(ledger.Proposal{Proposer: c.node.id, Time: -1, Txs: [][]byte{txs[0], txs[0]}}))
	f.Add(ledger.EncodeProposal(ledger.Proposal{Proposer: c.node.id}))
	f.Add(ledger.EncodeProposal(ledger.SignProposal(c.node.key, testChain, ledger.Proposal{Time: t0.UnixNano(), Txs: txs})))
	g := c.genesis(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ledger.DecodeProposal(data)
		if err != nil {
			return
		}
		if !bytes.Equal(ledger.EncodeProposal(*p), data) {
			t.Fatal("proposal decode/encode is not the identity")
		}
		ch := newChain(t, g, c.node.id)
		before := dump(t, ch.db.State(), prefixApp)
		res := ch.fsm.ApplyProposal(*p)
		if res.Block == nil {
			if fmtList(dump(t, ch.db.State(), prefixApp)) != fmtList(before) {
				t.Fatal("a proposal without a block changed the state")
			}
			return
		}
		if err := VerifyChain(ch.db.State(), g); err != nil {
			t.Fatal(err)
		}
	})
}

func seedTxs(f *testing.F) [][]byte {
	c := newCast()
	return [][]byte{
		c.coord.sign(f, ledger.ModelRegistered{Digest: digest("m"), Name: "m", Licence: "l", Source: "s"}),
		c.coord.sign(f, ledger.RoundOpened{JobID: "j", Round: 1, ConfigDigest: digest("c"), BaseModel: digest("m"), Strategy: "fedavg",
			Trainers: []string{c.trainers[0].id}, Deadline: t0.Add(time.Hour)}),
		c.trainers[0].sign(f, ledger.UpdateSubmitted{JobID: "j", Round: 1, UpdateDigest: digest("u"), DatasetDigest: digest("d"), Samples: 3,
			Metrics: map[string]float64{"loss": 0.5}}),
		c.agg.sign(f, ledger.RoundCommitted{JobID: "j", Round: 1, ModelDigest: digest("n"), Strategy: "fedavg", Params: map[string]string{"k": "v"},
			Contributors: []ledger.Contribution{{Trainer: c.trainers[0].id, UpdateDigest: digest("u"), Weight: 1}}}),
		c.admin.sign(f, ledger.MemberAdded{PublicKey: newActor("z", "").pubHex(), Role: ledger.RoleTrainer}),
		c.trainers[0].sign(f, ledger.DatasetRegistered{Digest: digest("d"), Name: "d", Licence: "CC0-1.0", Source: "s", Samples: 3,
			Root: digest("root"), Bytes: 42}),
		c.admin.sign(f, ledger.NodeAdded{PublicKey: newActor("n", "").pubHex(), RaftAddress: "10.0.0.4:7000", GRPCAddress: "[::1]:7100", Name: "n4"}),
		c.admin.sign(f, ledger.NodePromoted{ID: newActor("n", "").id}),
		c.admin.sign(f, ledger.NodeRemoved{ID: newActor("n", "").id, Reason: "retired"}),
		c.coord.sign(f, ledger.JobRegistered{JobID: "j", Recipe: ledger.RoundRecipe{Strategy: "fedavgm", Params: map[string]string{"server_momentum": "0.9"},
			Clip: 1, NoiseMultiplier: 1.1, Compression: "int8", Int8Block: 64, MinTrainers: 1, MaxTrainers: 3, MaxSamples: 100,
			Aggregators: []string{c.agg.id}, InitialAdapter: digest("a"), BaseModel: digest("base")}}),
	}
}

func fmtList(xs []string) string { return string(bytes.Join(toBytes(xs), []byte{'\n'})) }

func toBytes(xs []string) [][]byte {
	out := make([][]byte, len(xs))
	for i, x := range xs {
		out[i] = []byte(x)
	}
	return out
}
