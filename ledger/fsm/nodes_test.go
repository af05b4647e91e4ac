package fsm

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedtune/fedtune/ledger"
)

// proposeBy applies txs proposed by proposer at time tm, as raft entry
// appended at appended, and returns the result (refusals included).
func (c *chain) proposeBy(proposer string, tm int64, appended time.Time, txs ...[]byte) *ApplyResult {
	c.t.Helper()
	c.index++
	data := proposalEntry(proposer, tm, txs)
	out := c.fsm.Apply(&raft.Log{Index: c.index, Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: appended})
	res, ok := out.(*ApplyResult)
	if !ok {
		c.t.Fatalf("Apply returned %T", out)
	}
	return res
}

func (c *chain) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clock.Add(time.Second) // what Options.Now returns
}

func TestNodeMembershipTxs(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	n2 := newActor("node-2", "")
	n3 := newActor("node-3", "")
	add := func(a *actor, raftAddr string) ledger.NodeAdded {
		return ledger.NodeAdded{PublicKey: a.pubHex(), RaftAddress: raftAddr, GRPCAddress: strings.Replace(raftAddr, ":7", ":8", 1), Name: a.name}
	}
	if r, ok := ch.fsm.NodeMember(c.node.id); !ok || !r.IsVoter() || !r.Genesis {
		t.Fatalf("genesis node: %+v %v", r, ok)
	}
	if _, ok := ch.fsm.NodeMember(n2.id); ok {
		t.Fatal("unknown node found")
	}
	steps := []struct {
		name string
		tx   func() []byte
		code ledger.Code // "" = included
		msg  string
	}{
		{"coordinator may not add a node", func() []byte { return c.coord.sign(t, add(n2, "10.0.0.2:7000")) }, ledger.CodeForbidden, "needs role admin"},
		{"admin adds node-2", func() []byte { return c.admin.sign(t, add(n2, "10.0.0.2:7000")) }, "", ""},
		{"added twice", func() []byte { return c.admin.sign(t, add(n2, "10.0.0.9:7000")) }, ledger.CodeAlreadyExists, "already a ledger node"},
		{"genesis node added", func() []byte { return c.admin.sign(t, add(c.node, "10.0.0.1:7000")) }, ledger.CodeAlreadyExists, "already a ledger node"},
		{"raft address taken", func() []byte { return c.admin.sign(t, add(n3, "10.0.0.2:7000")) }, ledger.CodeAlreadyExists, "already uses raft address"},
		{"promote unknown", func() []byte { return c.admin.sign(t, ledger.NodePromoted{ID: n3.id}) }, ledger.CodeNotFound, "never added"},
		{"promote genesis node", func() []byte { return c.admin.sign(t, ledger.NodePromoted{ID: c.node.id}) }, ledger.CodeAlreadyExists, "already a voter"},
		{"remove unknown", func() []byte { return c.admin.sign(t, ledger.NodeRemoved{ID: n3.id}) }, ledger.CodeNotFound, "not a current ledger node"},
	}
	for _, s := range steps {
		res := ch.propose(s.tx())
		err := res.Results[0].Err
		if s.code == "" {
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			continue
		}
		var te *ledger.TxError
		if !errors.As(err, &te) || te.Code != s.code || !strings.Contains(te.Msg, s.msg) {
			t.Fatalf("%s: got %v, want %s containing %q", s.name, err, s.code, s.msg)
		}
	}
	r, ok := ch.fsm.NodeMember(n2.id)
	if !ok || r.Voter || r.Removed || r.RaftAddress != "10.0.0.2:7000" || r.GRPCAddress != "10.0.0.2:8000" {
		t.Fatalf("node-2 after NodeAdded: %+v", r)
	}

	// A non-voter's proposal is refused: no block, no state change.
	before, h0 := dump(t, ch.db.State(), prefixApp), ch.fsm.Height()
	res := ch.proposeBy(n2.id, ch.now().UnixNano(), time.Time{}, c.coord.sign(t, ledger.ModelRegistered{Digest: digest("m1"), Name: "m", Licence: "l", Source: "s"}))
	if !errors.Is(res.Err, ErrProposerNotVoter) || !errors.Is(res.Err, ErrProposalRefused) || res.Block != nil || !strings.Contains(res.Err.Error(), "non-voting") {
		t.Fatalf("non-voter proposal: %+v", res)
	}
	if got := dump(t, ch.db.State(), prefixApp); strings.Join(got, "\n") != strings.Join(before, "\n") || ch.fsm.Height() != h0 {
		t.Fatal("a refused proposal changed the state")
	}
	c.coord.nonce-- // that tx never applied
	// A stranger's proposal likewise.
	if res := ch.proposeBy(n3.id, ch.now().UnixNano(), time.Time{}, c.coord.sign(t, ledger.ModelRegistered{Digest: digest("m1"), Name: "m", Licence: "l", Source: "s"})); !errors.Is(res.Err, ErrProposerNotVoter) {
		t.Fatalf("stranger proposal: %v", res.Err)
	}
	c.coord.nonce--

	ch.mustApply(c.admin.sign(t, ledger.NodePromoted{ID: n2.id}))
	if r, _ := ch.fsm.NodeMember(n2.id); !r.IsVoter() || r.PromotedHeight == 0 {
		t.Fatalf("node-2 after NodePromoted: %+v", r)
	}
	if res := ch.proposeBy(n2.id, ch.now().UnixNano(), time.Time{}, c.coord.sign(t, ledger.ModelRegistered{Digest: digest("m1"), Name: "m", Licence: "l", Source: "s"})); res.Err != nil || res.Block == nil || res.Block.Header.Proposer != n2.id {
		t.Fatalf("promoted node's proposal: %+v", res)
	}

	// The genesis node is removed; then node-2 is the last voter.
	ch.mustApply(c.admin.sign(t, ledger.NodeRemoved{ID: c.node.id, Reason: "retired"}))
	if r, _ := ch.fsm.NodeMember(c.node.id); !r.Removed || r.RemovedReason != "retired" {
		t.Fatalf("removed genesis node: %+v", r)
	}
	if res := ch.proposeBy(c.node.id, ch.now().UnixNano(), time.Time{}, c.coord.sign(t, ledger.ModelRegistered{Digest: digest("m2"), Name: "m", Licence: "l", Source: "s"})); !errors.Is(res.Err, ErrProposerNotVoter) || !strings.Contains(res.Err.Error(), "was removed") {
		t.Fatalf("removed node's proposal: %v", res.Err)
	}
	c.coord.nonce--
	ch.node = n2.id // node-2 proposes from here on
	last := ch.propose(c.admin.sign(t, ledger.NodeRemoved{ID: n2.id}))
	if err := last.Results[0].Err; !errors.Is(err, ledger.ErrInvalid) || !strings.Contains(err.Error(), "last voting node") {
		t.Fatalf("removing the last voter: %v", err)
	}
	readd := ch.propose(c.admin.sign(t, add(c.node, "10.0.0.5:7000")))
	if err := readd.Results[0].Err; !errors.Is(err, ledger.ErrInvalid) || !strings.Contains(err.Error(), "cannot be added again") {
		t.Fatalf("re-adding a removed node: %v", err)
	}
	nodes, err := ch.fsm.Nodes()
	if err != nil || len(nodes) != 2 {
		t.Fatalf("Nodes: %v %+v", err, nodes)
	}
	// The chain re-verifies from genesis, proposer checks included.
	if err := VerifyChain(ch.db.State(), ch.fsm.Genesis()); err != nil {
		t.Fatal(err)
	}
}

func TestProposalClockSkew(t *testing.T) {
	var c *cast
	var ch *chain
	tx := func(s string) []byte {
		return c.coord.sign(t, ledger.ModelRegistered{Digest: digest(s), Name: "m", Licence: "l", Source: "s"})
	}
	skew := ledger.DefaultMaxClockSkew
	y2262 := time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	cases := []struct {
		name     string
		time     func(now time.Time) int64
		appended func(now time.Time) time.Time
		refused  bool
	}{
		{"at the replica's clock", func(n time.Time) int64 { return n.UnixNano() }, func(n time.Time) time.Time { return n }, false},
		{"just within the skew", func(n time.Time) int64 { return n.Add(skew - time.Second).UnixNano() }, func(n time.Time) time.Time { return n }, false},
		{"beyond the skew", func(n time.Time) int64 { return n.Add(skew + time.Second).UnixNano() }, func(n time.Time) time.Time { return n }, true},
		{"year 2262, outside raft", func(time.Time) int64 { return y2262 }, func(time.Time) time.Time { return time.Time{} }, true},
		{"year 2262, appended in 2262 too", func(time.Time) int64 { return y2262 }, func(time.Time) time.Time { return time.Unix(0, y2262) }, true},
		// A leader cannot dodge the check by back-dating AppendedAt: the
		// reference is the earlier of the two.
		{"ahead of a back-dated append", func(n time.Time) int64 { return n.UnixNano() }, func(n time.Time) time.Time { return n.Add(-time.Hour) }, true},
	}
	for _, tc := range cases {
		c = newCast()
		ch = newChain(t, c.genesis(t), c.node.id)
		now := ch.now()
		before := dump(t, ch.db.State(), "")
		res := ch.proposeBy(c.node.id, tc.time(now), tc.appended(now), tx(tc.name))
		if !tc.refused {
			if res.Err != nil || res.Block == nil {
				t.Fatalf("%s: %+v", tc.name, res)
			}
			continue
		}
		c.coord.nonce--
		if !errors.Is(res.Err, ErrProposalTime) || res.Block != nil || !strings.Contains(res.Err.Error(), "max_clock_skew") {
			t.Fatalf("%s: %+v", tc.name, res)
		}
		after := dump(t, ch.db.State(), "")
		// Only the head (its applied raft index) may move.
		if len(after) != len(before) {
			t.Fatalf("%s: refused proposal changed the state", tc.name)
		}
	}
	if got := ProposalRefusalReason(ch.proposeBy(c.node.id, y2262, time.Time{}, tx("x")).Err); got != "clock_skew" {
		t.Fatalf("reason %q", got)
	}
}

// TestClockSkewReplayDeterministic: a replica that applies an entry long
// after it was appended (a restarted node replaying its log) decides as the
// replicas that applied it fresh: the reference time is min(own clock,
// AppendedAt), and AppendedAt is in the entry.
func TestClockSkewReplayDeterministic(t *testing.T) {
	c := newCast()
	fresh := newChain(t, c.genesis(t), c.node.id)
	late := newChain(t, c.genesis(t), c.node.id)
	late.clock = late.clock.Add(365 * 24 * time.Hour) // applies a year later
	appended := fresh.now()
	for _, ahead := range []time.Duration{0, time.Minute, 24 * time.Hour} {
		env := c.coord.sign(t, ledger.ModelRegistered{Digest: digest(ahead.String()), Name: "m", Licence: "l", Source: "s"})
		tm := appended.Add(ahead).UnixNano()
		a := fresh.proposeBy(c.node.id, tm, appended, env)
		b := late.proposeBy(c.node.id, tm, appended, env)
		if (a.Err == nil) != (b.Err == nil) || (a.Block == nil) != (b.Block == nil) {
			t.Fatalf("ahead %v: fresh replica %v, late replica %v", ahead, a.Err, b.Err)
		}
	}
	ha, hashA := fresh.fsm.Head()
	hb, hashB := late.fsm.Head()
	if ha != hb || hashA != hashB {
		t.Fatalf("replicas diverged: %d %x vs %d %x", ha, hashA, hb, hashB)
	}
}

func TestGenesisClockSkewPolicy(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	if strings.Contains(string(g.Canonical()), "max_clock_skew") {
		t.Fatal("the default max_clock_skew changes the canonical genesis (and so every existing genesis hash)")
	}
	g2 := c.genesis(t)
	g2.Policy.MaxClockSkew = 0 // left out: the default
	if g2.Hash() != g.Hash() {
		t.Fatal("an unset max_clock_skew hashes differently from the default")
	}
	g3 := c.genesis(t)
	g3.Policy.MaxClockSkew = 10 * time.Second
	if g3.Hash() == g.Hash() || g3.Policy.ClockSkew() != 10*time.Second {
		t.Fatal("a set max_clock_skew does not change the hash")
	}
	for _, bad := range []time.Duration{-time.Second, time.Millisecond, 48 * time.Hour} {
		g4 := c.genesis(t)
		g4.Policy.MaxClockSkew = bad
		if err := g4.Validate(); err == nil || !strings.Contains(err.Error(), "policy.max_clock_skew") {
			t.Fatalf("max_clock_skew %v: %v", bad, err)
		}
	}
}

func TestAdmit(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	g.Policy.MaxTxBytes = 1024
	ch := newChain(t, g, c.node.id)
	stranger := newActor("stranger", ledger.RoleTrainer)
	ch.mustApply(c.coord.sign(t, ledger.ModelRegistered{Digest: digest("m0"), Name: "m", Licence: "l", Source: "s"}),
		c.admin.sign(t, ledger.MemberRemoved{ID: c.trainers[2].id}))
	ok := c.coord.sign(t, ledger.ModelRegistered{Digest: digest("m1"), Name: "m", Licence: "l", Source: "s"})
	if tx, err := ch.fsm.Admit(ok); err != nil || tx == nil {
		t.Fatalf("valid tx: %v", err)
	}
	forged := c.coord.sign(t, ledger.ModelRegistered{Digest: digest("m2"), Name: "m", Licence: "l", Source: "s"})
	if i := len(forged) - 30; forged[i] == 'A' { // inside the base64 signature
		forged[i] = 'B'
	} else {
		forged[i] = 'A'
	}
	cases := []struct {
		name  string
		env   []byte
		code  ledger.Code
		cause ledger.Cause
		lag   bool // MayBeLag
	}{
		{"stranger", stranger.sign(t, ledger.DatasetRegistered{Digest: digest("d"), Name: "d", Licence: "l", Source: "s", Samples: 1, Root: testDatasetRoot}), ledger.CodeUnknownSigner, ledger.CauseNotMember, true},
		{"wrong role", c.trainers[0].sign(t, ledger.ModelRegistered{Digest: digest("m3"), Name: "m", Licence: "l", Source: "s"}), ledger.CodeForbidden, "", false},
		{"stale nonce", c.coord.signNonce(t, 1, ledger.ModelRegistered{Digest: digest("m4"), Name: "m", Licence: "l", Source: "s"}), ledger.CodeBadNonce, ledger.CauseNonceStale, false},
		{"nonce beyond the window", c.coord.signNonce(t, 2+NonceWindow, ledger.ModelRegistered{Digest: digest("m5"), Name: "m", Licence: "l", Source: "s"}), ledger.CodeBadNonce, ledger.CauseNonceAhead, true},
		{"too large", c.coord.sign(t, ledger.ModelRegistered{Digest: digest("m6"), Name: "m", Licence: strings.Repeat("l", 1000), Source: "s"}), ledger.CodeTooLarge, "", false},
		{"forged signature", forged, ledger.CodeBadSignature, "", false},
		{"malformed", []byte("not a tx"), ledger.CodeMalformed, "", false},
		{"removed member", c.trainers[2].sign(t, ledger.DatasetRegistered{Digest: digest("d3"), Name: "d", Licence: "l", Source: "s", Samples: 1, Root: testDatasetRoot}), ledger.CodeUnknownSigner, ledger.CauseSignerRemoved, false},
	}
	for _, tc := range cases {
		_, err := ch.fsm.Admit(tc.env)
		var te *ledger.TxError
		if !errors.As(err, &te) || (tc.code != "" && te.Code != tc.code) || te.Cause != tc.cause || te.MayBeLag() != tc.lag {
			t.Errorf("%s: %v (cause %q), want code %q cause %q, lag %v", tc.name, err, te.Cause, tc.code, tc.cause, tc.lag)
		}
	}
}

// TestClockSkewFutureGenesis: a genesis_time ahead of the clocks forces
// block times above the proposals' times; such blocks are not "ahead" of
// anything a proposer chose, are accepted, and the chain re-verifies.
func TestClockSkewFutureGenesis(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	g.Time = t0.Add(48 * time.Hour)
	ch := newChain(t, g, c.node.id)
	b := ch.mustApply(c.coord.sign(t, ledger.ModelRegistered{Digest: digest("m"), Name: "m", Licence: "l", Source: "s"}))
	if b.Header.Time != g.UnixNano()+1 {
		t.Fatalf("block time %d, want genesis time + 1", b.Header.Time)
	}
	if err := VerifyChain(ch.db.State(), g); err != nil {
		t.Fatal(err)
	}
}

// TestProposalSignature: a raft entry must be signed, for this chain, by
// the node key of the proposer it names; anything else is refused before
// the proposer's role is even looked at, with no block and no state change.
func TestProposalSignature(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	n2 := newActor("node-2", "") // a key that is no ledger node
	tx := func(s string) []byte {
		return c.coord.signNonce(t, 1, ledger.ModelRegistered{Digest: digest(s), Name: "m", Licence: "l", Source: "s"})
	}
	sign := func(k ed25519.PrivateKey, chain string, p ledger.Proposal) ledger.Proposal {
		return ledger.SignProposal(k, chain, p)
	}
	cases := []struct {
		name  string
		entry func(tm int64) []byte
		want  string // "" = a block
	}{
		{"unsigned", func(tm int64) []byte {
			return ledger.EncodeProposal(ledger.Proposal{Proposer: c.node.id, Time: tm, Txs: [][]byte{tx("a")}})
		}, "not signed"},
		{"signed by a stranger naming the genesis node", func(tm int64) []byte {
			p := sign(n2.key, testChain, ledger.Proposal{Time: tm, Txs: [][]byte{tx("a")}})
			p.Proposer = c.node.id
			return ledger.EncodeProposal(p)
		}, "not by its proposer"},
		{"stranger's key and ID swapped in", func(tm int64) []byte {
			p := sign(n2.key, testChain, ledger.Proposal{Time: tm, Txs: [][]byte{tx("a")}})
			p.Proposer, p.Key = c.node.id, c.node.key.Public().(ed25519.PublicKey)
			return ledger.EncodeProposal(p)
		}, "does not verify"},
		{"signed for another chain", func(tm int64) []byte {
			return ledger.EncodeProposal(sign(c.node.key, "other-chain", ledger.Proposal{Time: tm, Txs: [][]byte{tx("a")}}))
		}, "does not verify"},
		{"tx swapped after signing", func(tm int64) []byte {
			p := sign(c.node.key, testChain, ledger.Proposal{Time: tm, Txs: [][]byte{tx("a")}})
			p.Txs = [][]byte{tx("b")}
			return ledger.EncodeProposal(p)
		}, "does not verify"},
		{"time moved after signing", func(tm int64) []byte {
			p := sign(c.node.key, testChain, ledger.Proposal{Time: tm, Txs: [][]byte{tx("a")}})
			p.Time++
			return ledger.EncodeProposal(p)
		}, "does not verify"},
		{"genuine", func(tm int64) []byte {
			return ledger.EncodeProposal(sign(c.node.key, testChain, ledger.Proposal{Time: tm, Txs: [][]byte{tx("a")}}))
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := newChain(t, g, c.node.id)
			before := dump(t, ch.db.State(), prefixApp)
			ch.index++
			out := ch.fsm.Apply(&raft.Log{Index: ch.index, Term: 1, Type: raft.LogCommand, Data: tc.entry(ch.now().UnixNano())})
			res := out.(*ApplyResult)
			if tc.want == "" {
				if res.Err != nil || res.Block == nil || res.Block.Header.Proposer != c.node.id {
					t.Fatalf("genuine proposal: %+v", res)
				}
				return
			}
			if !errors.Is(res.Err, ErrProposalSignature) || !errors.Is(res.Err, ErrProposalRefused) || res.Block != nil ||
				!strings.Contains(res.Err.Error(), tc.want) || ProposalRefusalReason(res.Err) != "bad_signature" {
				t.Fatalf("got %+v, want a bad_signature refusal containing %q", res, tc.want)
			}
			if got := dump(t, ch.db.State(), prefixApp); strings.Join(got, "\n") != strings.Join(before, "\n") || ch.fsm.Height() != 0 {
				t.Fatal("a refused proposal changed the state")
			}
		})
	}
}
