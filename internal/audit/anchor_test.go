package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"reflect"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// chainSource serves a test chain's blocks, each cosigned by signers,
// and its member records, as a ledger node would.
type chainSource struct {
	c       *testChain
	signers []*actor
	chainID string                                  // the chain the checkpoints name (default chainID)
	block   func(h uint64, b *ledger.Block)         // tampers with a block before it is served
	member  func(id string, m *ledger.Member) error // tampers with a member record
	asked   map[uint64]int                          // blocks served, by height
}

func (s *chainSource) Block(_ context.Context, h uint64, _ int, _ string) (*client.VerifiedBlock, error) {
	b, err := s.c.fsm.Block(h)
	if err != nil {
		return nil, err
	}
	if s.block != nil {
		s.block(h, b)
	}
	if s.asked == nil {
		s.asked = map[uint64]int{}
	}
	s.asked[h]++
	id := s.chainID
	if id == "" {
		id = chainID
	}
	vb := &client.VerifiedBlock{Block: b, Hash: b.Hash()}
	for _, a := range s.signers {
		vb.Cosignatures = append(vb.Cosignatures, client.SignCheckpoint(a.key, id, h, vb.Hash))
	}
	return vb, nil
}

func (s *chainSource) Member(_ context.Context, key string) (*ledger.Member, error) {
	rec, err := s.c.fsm.Member(key)
	if err != nil {
		return nil, err
	}
	m := *rec // a copy: s.member may change it
	if s.member != nil {
		if err := s.member(key, &m); err != nil {
			return nil, err
		}
	}
	return &m, nil
}

// anchorFixture is the test chain, three cosigning nodes, and the lineage
// of its final model as a node's lineage query returns it.
type anchorFixture struct {
	c     *testChain
	nodes []*actor
	ids   []string
}

func newAnchorFixture(t *testing.T) *anchorFixture {
	t.Helper()
	f := &anchorFixture{c: newTestChain(t)}
	f.nodes = []*actor{f.c.node, newActor("node-2", ""), newActor("node-3", "")}
	for _, n := range f.nodes {
		f.ids = append(f.ids, n.id)
	}
	return f
}

// lineage returns a fresh copy of the ledger's answer for digest.
func (f *anchorFixture) lineage(t *testing.T, digest string) *ledger.Lineage {
	t.Helper()
	l, err := f.c.fsm.Lineage(digest)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := DecodeLineage(raw)
	if err != nil {
		t.Fatal(err)
	}
	return l2
}

func (f *anchorFixture) opts(quorum int) AnchorOptions {
	return AnchorOptions{Quorum: quorum, ChainID: chainID, Nodes: f.ids, Model: f.c.models[1]}
}

func TestAnchorHonest(t *testing.T) {
	f := newAnchorFixture(t)
	l := f.lineage(t, f.c.models[1])
	src := &chainSource{c: f.c, signers: f.nodes}
	rep, err := Anchor(context.Background(), src, l, f.opts(2))
	if err != nil {
		t.Fatal(err)
	}
	// Base model and 3 datasets; per round RoundOpened, RoundCommitted
	// and 3 UpdateSubmitted; one UpdateRejected. The model's tx is round
	// 2's commit.
	if rep.Records != 15 || len(rep.Blocks) != 7 || rep.MinCosignatures != 3 || rep.Nodes != 3 || len(rep.Cosigners) != 3 || rep.Quorum != 2 {
		t.Fatalf("report %+v", rep)
	}
	for h, n := range src.asked {
		if n != 1 {
			t.Errorf("block %d fetched %d times", h, n)
		}
	}
	if !reflect.DeepEqual(rep.Lineage, l) {
		t.Fatalf("rebuilt lineage differs:\n%+v\n%+v", rep.Lineage, l)
	}
	want := "anchored: 15 records in 7 blocks of chain \"audit-test\", each cosigned by >= 3 of 3 nodes (quorum 2)"
	if rep.String() != want {
		t.Fatalf("report line %q, want %q", rep.String(), want)
	}

	// The renderers say so; without a report they print what they did.
	g := NewGraph(rep.Lineage, nil)
	g.Anchored = rep
	for format, wantOut := range map[string]string{"table": "\n" + want + "\n", "json": `"anchored": {`, "dot": "  // " + want + "\n", "html": "<p>" + html.EscapeString(want) + "</p>"} {
		var b bytes.Buffer
		if err := Render(&b, g, format); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), wantOut) {
			t.Errorf("%s output lacks %q:\n%s", format, wantOut, b.String())
		}
	}
	var b bytes.Buffer
	if err := Render(&b, NewGraph(l, nil), "json"); err != nil || strings.Contains(b.String(), "anchored") {
		t.Fatalf("unanchored json mentions anchoring (%v):\n%s", err, b.String())
	}

	// A base model's lineage is its registration alone.
	bl := f.lineage(t, f.c.base)
	o := f.opts(3)
	o.Model = f.c.base
	rep, err = Anchor(context.Background(), &chainSource{c: f.c, signers: f.nodes}, bl, o)
	if err != nil || rep.Records != 1 || len(rep.Blocks) != 1 {
		t.Fatalf("base model: %+v, %v", rep, err)
	}

	// Without pinned nodes any valid cosignature counts, and the line says so.
	o = f.opts(2)
	o.Nodes = nil
	rep, err = Anchor(context.Background(), &chainSource{c: f.c, signers: []*actor{f.c.outsider, f.c.admin}}, l, o)
	if err != nil || rep.Nodes != 0 || !strings.Contains(rep.String(), "not pinned") {
		t.Fatalf("unpinned: %+v, %v", rep, err)
	}
}

func TestAnchorTampered(t *testing.T) {
	f := newAnchorFixture(t)
	c := f.c
	ref := f.lineage(t, c.models[1])
	ds0, ds1 := ref.Datasets[0], ref.Datasets[1]
	r2, r1 := ref.Rounds[0], ref.Rounds[1] // newest first
	other := digestOf("another model")
	for _, tc := range []struct {
		name   string
		tamper func(l *ledger.Lineage)
		want   string
	}{
		{"licence", func(l *ledger.Lineage) { l.Datasets[0].Licence = "MIT" },
			fmt.Sprintf(`dataset %s: ledger says licence "MIT", its DatasetRegistered tx at height %d says "LicenseRef-fedtune-synthetic"`, ds0.Digest, ds0.Height)},
		{"root", func(l *ledger.Lineage) { l.Datasets[1].Root = other },
			fmt.Sprintf(`dataset %s: ledger says root %q, its DatasetRegistered tx at height %d says %q`, ds1.Digest, other, ds1.Height, ds1.Root)},
		{"dataset samples", func(l *ledger.Lineage) { l.Datasets[2].Samples++ }, "ledger says samples"},
		{"dataset owner", func(l *ledger.Lineage) { l.Datasets[0].Owner = c.outsider.id }, "ledger says owner"},
		{"dataset tx hash", func(l *ledger.Lineage) { l.Datasets[0].TxHash = l.Datasets[1].TxHash },
			fmt.Sprintf("dataset %s: ledger says digest %q", ds0.Digest, ds0.Digest)},
		{"dataset height", func(l *ledger.Lineage) { l.Datasets[0].Height = 3 },
			fmt.Sprintf("dataset %s: its tx %.16s is not in block 3", ds0.Digest, ds0.TxHash)},
		{"dataset dropped", func(l *ledger.Lineage) { l.Datasets = l.Datasets[1:] },
			fmt.Sprintf("dataset %s: cited in round job-1/2, but the ledger's lineage does not list it", ds0.Digest)},
		{"dataset added", func(l *ledger.Lineage) {
			l.Datasets = append(l.Datasets, ledger.Dataset{Digest: other, Name: "extra", Licence: "MIT", Height: 1, TxHash: ds0.TxHash})
		}, fmt.Sprintf("dataset %s: the ledger lists it, but no contributor's UpdateSubmitted tx cites it", other)},
		{"weight", func(l *ledger.Lineage) { l.Rounds[0].Contributors[0].Weight *= 2 },
			fmt.Sprintf("round job-1/2 contributor 1: ledger says weight %s, its RoundCommitted tx at height %d says %s",
				fmtValue(r2.Contributors[0].Weight*2), r2.CommittedHeight, fmtValue(r2.Contributors[0].Weight))},
		{"contributor samples", func(l *ledger.Lineage) { l.Rounds[1].Contributors[2].Samples = 1 }, "round job-1/1 contributor 3 (trainer "},
		{"contributor dataset", func(l *ledger.Lineage) { l.Rounds[1].Contributors[0].DatasetDigest = other }, "round job-1/1 contributor 1 (trainer "},
		{"contributor dropped", func(l *ledger.Lineage) { l.Rounds[0].Contributors = l.Rounds[0].Contributors[1:] },
			fmt.Sprintf("round job-1/2: ledger lists 1 contributors, its RoundCommitted tx at height %d lists 2 (the ledger drops trainer %s)",
				r2.CommittedHeight, r2.Contributors[0].Trainer)},
		{"model digest", func(l *ledger.Lineage) { l.Model.Digest = other },
			// Asked about the real model, the answer is about another.
			fmt.Sprintf("model %s: the ledger answered with the lineage of %s", c.models[1], other)},
		{"round model digest", func(l *ledger.Lineage) { l.Rounds[0].ModelDigest = other },
			fmt.Sprintf("round job-1/2: ledger says model %q, its RoundCommitted tx at height %d says %q", other, r2.CommittedHeight, c.models[1])},
		{"model registrar", func(l *ledger.Lineage) { l.Model.Registrar = c.coord.id }, fmt.Sprintf("model %s: ledger says registrar", c.models[1])},
		{"base licence", func(l *ledger.Lineage) { l.Base.Licence = "MIT" },
			fmt.Sprintf(`base model %s: ledger says licence "MIT", its ModelRegistered tx at height 1 says "Apache-2.0"`, c.base)},
		{"base is a committed model", func(l *ledger.Lineage) { l.Base = l.Model; l.Rounds = nil },
			fmt.Sprintf("base model %s: its tx %.16s at height %d is a RoundCommitted, not a ModelRegistered", c.models[1], ref.Model.TxHash, ref.Model.Height)},
		{"extra round", func(l *ledger.Lineage) {
			x := r1
			x.JobID, x.Contributors, x.Rejected = "job-9", nil, nil
			l.Rounds = append(l.Rounds, x)
		}, fmt.Sprintf("round job-9/1: block %d holds no RoundOpened tx of it", r1.OpenedHeight)},
		{"round repeated", func(l *ledger.Lineage) { l.Rounds = append(l.Rounds, l.Rounds[1]) },
			fmt.Sprintf("round job-1/1: it started from %s, but the lineage's next round, job-1/1, committed %s", c.base, c.models[0])},
		{"round dropped", func(l *ledger.Lineage) { l.Rounds = l.Rounds[:1] },
			fmt.Sprintf("round job-1/2: it started from %s, not from the base model %s", c.models[0], c.base)},
		{"round height", func(l *ledger.Lineage) { l.Rounds[1].CommittedHeight++ },
			fmt.Sprintf("round job-1/1: block %d holds no RoundCommitted tx of it", r1.CommittedHeight+1)},
		{"params", func(l *ledger.Lineage) { l.Rounds[0].Params = map[string]string{"server_lr": "1"} },
			`round job-1/2: ledger says params {server_lr=1}, its RoundCommitted tx`},
		{"strategy", func(l *ledger.Lineage) { l.Rounds[1].Strategy = "fedadam" }, `round job-1/1: ledger says strategy "fedadam"`},
		{"aggregator", func(l *ledger.Lineage) { l.Rounds[1].Aggregator = c.coord.id }, `round job-1/1: ledger says aggregator`},
		{"config digest", func(l *ledger.Lineage) { l.Rounds[1].ConfigDigest = other },
			fmt.Sprintf(`round job-1/1: ledger says config digest %q, its RoundOpened tx at height %d`, other, r1.OpenedHeight)},
		{"rejection reason", func(l *ledger.Lineage) { l.Rounds[0].Rejected[0].Reason = "late" },
			fmt.Sprintf(`round job-1/2 rejected update %s: ledger says reason "late"`, short(r2.Rejected[0].UpdateDigest))},
		{"rejection dropped", func(l *ledger.Lineage) { l.Rounds[0].Rejected = nil },
			fmt.Sprintf("round job-1/2: ledger omits the rejection of update %s", r2.Rejected[0].UpdateDigest)},
		{"rejection added", func(l *ledger.Lineage) {
			l.Rounds[1].Rejected = []ledger.RejectedUpdate{{Trainer: c.trainers[0].id, UpdateDigest: c.updates[0][0], Reason: "x"}}
		}, fmt.Sprintf("round job-1/1: ledger lists update %s as rejected, but no UpdateRejected tx of it is in blocks %d-%d", c.updates[0][0], r1.OpenedHeight, r1.CommittedHeight)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := f.lineage(t, c.models[1])
			tc.tamper(l)
			_, err := Anchor(context.Background(), &chainSource{c: c, signers: f.nodes}, l, f.opts(2))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrNotAnchored) {
				t.Fatalf("got %v\nwant an error containing %q", err, tc.want)
			}
		})
	}
}

func TestAnchorCosignaturesAndSignatures(t *testing.T) {
	f := newAnchorFixture(t)
	c := f.c
	l := f.lineage(t, c.models[1])
	first := l.Rounds[0].OpenedHeight // the first block Anchor reads
	for _, tc := range []struct {
		name   string
		src    *chainSource
		opts   func(o *AnchorOptions)
		want   string
		quorum bool
	}{
		{name: "one cosignature", src: &chainSource{c: c, signers: f.nodes[:1]},
			want: fmt.Sprintf("round job-1/2: block %d has 1 valid cosignature from the chain's nodes, want 2", first)},
		{name: "the same node twice", src: &chainSource{c: c, signers: []*actor{f.nodes[0], f.nodes[0]}},
			want: fmt.Sprintf("block %d has 1 valid cosignature from the chain's nodes, want 2", first)},
		{name: "cosigned by keys not of the chain's nodes", src: &chainSource{c: c, signers: []*actor{c.outsider, c.admin, c.coord}},
			want: fmt.Sprintf("block %d has 0 valid cosignatures from the chain's nodes, want 2", first)},
		{name: "cosigned for another chain", src: &chainSource{c: c, signers: f.nodes, chainID: "other"},
			want: fmt.Sprintf("block %d has 0 valid cosignatures from the chain's nodes, want 2", first)},
		{name: "unpinned, one cosignature", src: &chainSource{c: c, signers: f.nodes[:1]}, opts: func(o *AnchorOptions) { o.Nodes = nil },
			want: fmt.Sprintf("block %d has 1 valid cosignature, want 2", first)},
		{name: "quorum above the nodes", src: &chainSource{c: c, signers: f.nodes}, opts: func(o *AnchorOptions) { o.Quorum = 4 },
			want: "quorum 4 exceeds the 3 nodes that may cosign"},
		{name: "another chain's txs", src: &chainSource{c: c, signers: f.nodes, chainID: "other"}, opts: func(o *AnchorOptions) { o.ChainID = "other" },
			want: `its RoundOpened tx at height ` + fmt.Sprint(first) + ` is for chain "audit-test", not "other"`},
		{name: "a tx swapped in a block", src: &chainSource{c: c, signers: f.nodes, block: func(h uint64, b *ledger.Block) {
			if h == first {
				b.Txs[0] = c.coord.sign(t, ledger.ModelRegistered{Digest: digestOf("x"), Name: "x", Licence: "MIT", Source: "x"})
			}
		}}, want: fmt.Sprintf("the 1 txs of block %d do not give its header's tx root", first)},
		{name: "a member's key replaced", src: &chainSource{c: c, signers: f.nodes, member: func(id string, m *ledger.Member) error {
			if id == c.coord.id {
				m.PublicKey = fmt.Sprintf("%x", c.outsider.pub())
			}
			return nil
		}}, want: fmt.Sprintf("signer %s: the ledger gives a key whose ID is %s", c.coord.id, c.outsider.id)},
		{name: "the source's quorum error", src: &chainSource{c: c, signers: f.nodes}, quorum: true,
			want: "not enough cosignatures"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := f.opts(2)
			if tc.opts != nil {
				tc.opts(&o)
			}
			var src BlockSource = tc.src
			if tc.quorum {
				src = quorumSource{tc.src}
			}
			_, err := Anchor(context.Background(), src, f.lineage(t, c.models[1]), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant an error containing %q", err, tc.want)
			}
			if tc.quorum && !errors.Is(err, client.ErrQuorum) {
				t.Fatalf("%v does not wrap ErrQuorum", err)
			}
		})
	}
	// A bad tx signature: the envelope's signature bytes flipped, in a
	// block rebuilt so that hashes and tx root still agree.
	bad := &chainSource{c: c, signers: f.nodes, block: func(h uint64, b *ledger.Block) {
		if h != first {
			return
		}
		e, err := ledger.DecodeEnvelope(b.Txs[0])
		if err != nil {
			t.Fatal(err)
		}
		e.Signatures[0].Sig[0] ^= 1
		b.Txs[0] = e.Encode()
		b.Header.TxRoot = ledger.TxRoot(b.Txs)
	}}
	if _, err := Anchor(context.Background(), bad, l, f.opts(2)); err == nil || !strings.Contains(err.Error(), "signature") || !errors.Is(err, ErrNotAnchored) {
		t.Fatalf("bad signature: %v", err)
	}
	if _, err := Anchor(context.Background(), &chainSource{c: c, signers: f.nodes}, l, AnchorOptions{ChainID: chainID}); err == nil {
		t.Fatal("quorum 0 accepted")
	}
}

// quorumSource fails every block as a node does when it gathers too few
// cosignatures.
type quorumSource struct{ *chainSource }

func (q quorumSource) Block(_ context.Context, h uint64, min int, _ string) (*client.VerifiedBlock, error) {
	return nil, fmt.Errorf("%w: block %d has %d of %d required", client.ErrQuorum, h, min-1, min)
}
