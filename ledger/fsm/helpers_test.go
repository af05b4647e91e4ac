package fsm

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

const testChain = "fedtune-test"

// t0 is the time of the first test block.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// actor is a member with a deterministic key and its own nonce counter.
type actor struct {
	name  string
	role  ledger.Role
	key   ed25519.PrivateKey
	id    string
	nonce uint64
}

func newActor(name string, role ledger.Role) *actor {
	seed := sha256.Sum256([]byte("fedtune test key " + name))
	k := ed25519.NewKeyFromSeed(seed[:])
	a := &actor{name: name, role: role, key: k, id: ledger.KeyID(k.Public().(ed25519.PublicKey))}
	testKeys.Store(a.id, k)
	return a
}

// testKeys maps the ID of every actor made to its key, so that test
// proposals by a node ID can be signed (proposalEntry).
var testKeys sync.Map

// proposalEntry encodes a proposal by proposer as a raft entry's data,
// signed with proposer's key when it is an actor's, unsigned otherwise.
func proposalEntry(proposer string, tm int64, txs [][]byte) []byte {
	p := ledger.Proposal{Proposer: proposer, Time: tm, Txs: txs}
	if k, ok := testKeys.Load(proposer); ok {
		p = ledger.SignProposal(k.(ed25519.PrivateKey), testChain, p)
	}
	return ledger.EncodeProposal(p)
}

func (a *actor) pubHex() string { return hex.EncodeToString(a.key.Public().(ed25519.PublicKey)) }

// sign signs body with the actor's next nonce.
func (a *actor) sign(t testing.TB, body ledger.TxBody) []byte {
	t.Helper()
	a.nonce++
	env, err := ledger.SignTx(a.key, testChain, a.nonce, body)
	if err != nil {
		t.Fatalf("%s: SignTx %s: %v", a.name, body.TxType(), err)
	}
	return env
}

// signNonce signs with an explicit nonce, leaving the counter alone.
func (a *actor) signNonce(t testing.TB, nonce uint64, body ledger.TxBody) []byte {
	t.Helper()
	env, err := ledger.SignTx(a.key, testChain, nonce, body)
	if err != nil {
		t.Fatalf("%s: SignTx: %v", a.name, err)
	}
	return env
}

// testDatasetRoot is a well-formed Merkle root for DatasetRegistered.
var testDatasetRoot = digest("dataset root")

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// cast is the standard set of test members.
type cast struct {
	admin, coord, agg, auditor *actor
	trainers                   []*actor
	node                       *actor
	clip                       float64 // the clip of testRecipe
}

func newCast() *cast {
	return &cast{
		admin:    newActor("admin", ledger.RoleAdmin),
		coord:    newActor("coordinator", ledger.RoleCoordinator),
		agg:      newActor("aggregator", ledger.RoleAggregator),
		auditor:  newActor("auditor", ledger.RoleAuditor),
		trainers: []*actor{newActor("trainer-a", ledger.RoleTrainer), newActor("trainer-b", ledger.RoleTrainer), newActor("trainer-c", ledger.RoleTrainer)},
		node:     newActor("node-1", ""),
	}
}

func (c *cast) genesis(t testing.TB) *ledger.Genesis {
	t.Helper()
	g := &ledger.Genesis{ChainID: testChain, Time: t0.Add(-time.Hour), Policy: ledger.DefaultPolicy(), Source: "test"}
	for _, a := range append([]*actor{c.admin, c.coord, c.agg, c.auditor}, c.trainers...) {
		g.Members = append(g.Members, ledger.GenesisMember{Name: a.name, Role: a.role, PublicKey: a.pubHex()})
	}
	g.Nodes = []ledger.GenesisNode{{Name: c.node.name, PublicKey: c.node.pubHex()}}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	return g
}

// chain is an FSM on its own in-memory pebble store, fed through raft.Log
// entries with increasing indexes.
type chain struct {
	t     testing.TB
	db    *pebblestore.DB
	fsm   *FSM
	index uint64
	mu    sync.Mutex // guards clock against Options.Now
	clock time.Time
	node  string
}

func openMemDB(t testing.TB) *pebblestore.DB {
	t.Helper()
	db, err := pebblestore.Open("db", pebblestore.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newChain(t testing.TB, g *ledger.Genesis, node string) *chain {
	t.Helper()
	db := openMemDB(t)
	ch := &chain{t: t, db: db, clock: t0, node: node}
	f, err := New(db.State(), g, Options{Now: func() time.Time {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		return ch.clock.Add(time.Second)
	}})
	if err != nil {
		t.Fatal(err)
	}
	ch.fsm = f
	return ch
}

// advance moves the chain's clock d forward: the next proposal's time is
// d and a second after the last.
func (c *chain) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock = c.clock.Add(d)
}

// propose applies one proposal of txs at the chain's clock (advanced by a
// second each call) as the next raft log entry.
func (c *chain) propose(txs ...[]byte) *ApplyResult {
	c.t.Helper()
	c.mu.Lock()
	c.clock = c.clock.Add(time.Second)
	tm := c.clock.UnixNano()
	c.mu.Unlock()
	return c.proposeAt(tm, txs...)
}

func (c *chain) proposeAt(tm int64, txs ...[]byte) *ApplyResult {
	c.t.Helper()
	c.index++
	data := proposalEntry(c.node, tm, txs)
	out := c.fsm.Apply(&raft.Log{Index: c.index, Term: 1, Type: raft.LogCommand, Data: data})
	res, ok := out.(*ApplyResult)
	if !ok {
		c.t.Fatalf("Apply returned %T", out)
	}
	if res.Err != nil {
		c.t.Fatalf("apply: %v", res.Err)
	}
	return res
}

// mustApply proposes txs and fails unless every one is included.
func (c *chain) mustApply(txs ...[]byte) *ledger.Block {
	c.t.Helper()
	res := c.propose(txs...)
	for i, r := range res.Results {
		if r.Err != nil {
			c.t.Fatalf("tx %d rejected: %v", i, r.Err)
		}
	}
	if res.Block == nil {
		c.t.Fatal("no block")
	}
	return res.Block
}

// dump returns every key and value of the state range as a sorted list.
func dump(t testing.TB, st *pebblestore.State, prefix string) []string {
	t.Helper()
	var out []string
	err := st.Iter([]byte(prefix), func(k, v []byte) error {
		out = append(out, fmt.Sprintf("%q=%x", k, v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// roundFixture registers a base model and datasets and opens round 1 of
// job "job-1" with every trainer selected.
type roundFixture struct {
	base     string
	datasets []string
	job      string
}

func (c *cast) setupRound(t testing.TB, ch *chain) roundFixture {
	t.Helper()
	fx := roundFixture{base: digest("base model"), job: "job-1"}
	txs := [][]byte{c.coord.sign(t, ledger.ModelRegistered{Digest: fx.base, Name: "tiny-llama", Licence: "apache-2.0", Source: "hf://tiny"})}
	var ids []string
	for i, tr := range c.trainers {
		d := digest(fmt.Sprintf("dataset %d", i))
		fx.datasets = append(fx.datasets, d)
		ids = append(ids, tr.id)
		txs = append(txs, tr.sign(t, ledger.DatasetRegistered{Digest: d, Name: tr.name + "-data", Licence: "cc-by-4.0", Source: "local", Samples: 100 + uint64(i), Root: testDatasetRoot}))
	}
	ch.mustApply(txs...)
	ch.mustApply(c.registerJob(t, fx.job), c.coord.sign(t, ledger.RoundOpened{JobID: fx.job, Round: 1, ConfigDigest: digest("job config"), BaseModel: fx.base,
		Strategy: "fedavg", Trainers: ids, Deadline: t0.Add(24 * time.Hour)}))
	return fx
}

func (fx roundFixture) submit(t testing.TB, tr *actor, i int, round uint64, update string) []byte {
	return tr.sign(t, ledger.UpdateSubmitted{JobID: fx.job, Round: round, UpdateDigest: update, DatasetDigest: fx.datasets[i],
		Samples: 100, Metrics: map[string]float64{"loss": 1.5}})
}

// testRecipe is a fedavg recipe designating the cast's aggregator.
func (c *cast) testRecipe() ledger.RoundRecipe {
	return ledger.RoundRecipe{Strategy: "fedavg", Clip: c.clip, Compression: "none", MinTrainers: 1, Aggregators: []string{c.agg.id}}
}

// registerJob signs the JobRegistered of job with the test recipe.
func (c *cast) registerJob(t testing.TB, job string) []byte {
	t.Helper()
	return c.coord.sign(t, ledger.JobRegistered{JobID: job, Recipe: c.testRecipe()})
}
