package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/fsm"
	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/trainer"
)

const chainID = "audit-test"

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type actor struct {
	name  string
	role  ledger.Role
	key   ed25519.PrivateKey
	id    string
	nonce uint64
}

func newActor(name string, role ledger.Role) *actor {
	seed := sha256.Sum256([]byte("fedtune audit test key " + name))
	k := ed25519.NewKeyFromSeed(seed[:])
	return &actor{name: name, role: role, key: k, id: ledger.KeyID(k.Public().(ed25519.PublicKey))}
}

func (a *actor) pub() ed25519.PublicKey { return a.key.Public().(ed25519.PublicKey) }

func (a *actor) sign(t testing.TB, body ledger.TxBody) []byte {
	t.Helper()
	a.nonce++
	env, err := ledger.SignTx(a.key, chainID, a.nonce, body)
	if err != nil {
		t.Fatalf("%s: %v", a.name, err)
	}
	return env
}

// testChain is a two-round federated job recorded on a ledger FSM over an
// in-memory pebble store, with every artifact on disk.
type testChain struct {
	genesis   []byte
	fsm       *fsm.FSM
	db        *pebblestore.DB
	artifacts string // sharded for models, flat for updates and manifests
	admin     *actor
	coord     *actor
	agg       *actor
	node      *actor
	outsider  *actor
	trainers  []*actor
	base      string
	models    []string // committed models, round 1 then round 2
	updates   [][]string
	manifests []*datasets.SignedManifest
	trees     []*datasets.Tree
	data      []*datasets.Dataset
	clock     time.Time
}

func genesisYAML(members []*actor, node *actor) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "chain_id: %s\ngenesis_time: %s\nmembers:\n", chainID, t0.Add(-time.Hour).Format(time.RFC3339))
	for _, a := range members {
		fmt.Fprintf(&b, "  - name: %s\n    role: %s\n    public_key: %s\n", a.name, a.role, hex.EncodeToString(a.pub()))
	}
	fmt.Fprintf(&b, "nodes:\n  - name: %s\n    public_key: %s\n", node.name, hex.EncodeToString(node.pub()))
	return []byte(b.String())
}

func (c *testChain) apply(t testing.TB, txs ...[]byte) *ledger.Block {
	t.Helper()
	c.clock = c.clock.Add(time.Second)
	res := c.fsm.ApplyProposal(ledger.Proposal{Proposer: c.node.id, Time: c.clock.UnixNano(), Txs: txs})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	for i, r := range res.Results {
		if r.Err != nil {
			t.Fatalf("tx %d rejected: %v", i, r.Err)
		}
	}
	return res.Block
}

// put stores a file in the artifact directory under its SHA-256, sharded
// or flat, and returns the digest.
func put(t testing.TB, dir string, data []byte, sharded bool) string {
	t.Helper()
	sum := sha256.Sum256(data)
	d := hex.EncodeToString(sum[:])
	p := filepath.Join(dir, d)
	if sharded {
		if err := os.MkdirAll(filepath.Join(dir, d[:2]), 0o755); err != nil {
			t.Fatal(err)
		}
		p = filepath.Join(dir, d[:2], d)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func weights(t testing.TB, seed int) []byte {
	t.Helper()
	w := make([]float32, 6)
	b := make([]float32, 3)
	for i := range w {
		w[i] = float32(seed*7+i) / 16
	}
	for i := range b {
		b[i] = float32(seed-i) / 8
	}
	tw, err := safetensors.FromFloat32("layer.weight", safetensors.F32, []int{2, 3}, w)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := safetensors.FromFloat32("layer.bias", safetensors.F32, []int{3}, b)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := safetensors.Encode(&sb, []safetensors.Tensor{tw, tb}, nil); err != nil {
		t.Fatal(err)
	}
	return []byte(sb.String())
}

// newTestChain builds the chain: genesis; base model and three datasets
// registered (manifests of the shipped shards); two FedAvg rounds with
// three trainers each, aggregated for real; in round 2 the third update is
// rejected.
func newTestChain(t testing.TB) *testChain {
	t.Helper()
	return newTestChainWith(t, nil)
}

// newTestChainWith is newTestChain where commit, if set, may replace the
// digest the aggregator commits in a round (a lying aggregator).
func newTestChainWith(t testing.TB, commit func(round uint64, digest, artifacts string) string) *testChain {
	t.Helper()
	if commit == nil {
		return newTestChainInputs(t, nil)
	}
	return newTestChainInputs(t, func(round uint64, digest, artifacts string, _ []aggregator.Input, _ string) string {
		return commit(round, digest, artifacts)
	})
}

// newTestChainInputs is newTestChainWith whose commit also sees the
// round's aggregation inputs and base model file.
func newTestChainInputs(t testing.TB, commit func(round uint64, digest, artifacts string, inputs []aggregator.Input, base string) string) *testChain {
	t.Helper()
	return newTestChainOpts(t, chainOpts{commit: commit})
}

// chainOpts vary newTestChainOpts's chain.
type chainOpts struct {
	// commit, if set, may replace the digest committed in a round.
	commit func(round uint64, digest, artifacts string, inputs []aggregator.Input, base string) string
	// rejected, if set, gives the bytes of round 2's third update, which
	// the aggregator rejects with reason rejectReason (default: an update
	// with a NaN, rejected as the aggregator words it).
	rejected     func(t testing.TB) []byte
	rejectReason string
}

// nanWeights is weights(seed) with a NaN in layer.bias.
func nanWeights(t testing.TB, seed int) []byte {
	t.Helper()
	w := weights(t, seed)
	f, err := safetensors.Parse("w", strings.NewReader(string(w)), int64(len(w)))
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, ti := range f.Tensors() {
		x, err := f.Float32s(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		if ti.Name == "layer.bias" {
			x[1] = float32(math.NaN())
		}
		tn, err := safetensors.FromFloat32(ti.Name, safetensors.F32, ti.Shape, x)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tn)
	}
	var sb strings.Builder
	if err := safetensors.Encode(&sb, ts, nil); err != nil {
		t.Fatal(err)
	}
	return []byte(sb.String())
}

// newTestChainOpts builds newTestChain's chain as o says.
func newTestChainOpts(t testing.TB, o chainOpts) *testChain {
	t.Helper()
	commit := o.commit
	if o.rejected == nil {
		o.rejected = func(t testing.TB) []byte { return nanWeights(t, 23) }
		if o.rejectReason == "" {
			o.rejectReason = `update: tensor "layer.bias": element 1 is NaN (every value must be finite)`
		}
	}
	c := &testChain{
		admin: newActor("admin", ledger.RoleAdmin), coord: newActor("coordinator", ledger.RoleCoordinator),
		agg: newActor("aggregator", ledger.RoleAggregator), node: newActor("node-1", ""), outsider: newActor("outsider", ledger.RoleTrainer),
		artifacts: t.TempDir(), clock: t0,
	}
	for i := range 3 {
		c.trainers = append(c.trainers, newActor(fmt.Sprintf("trainer-%d", i+1), ledger.RoleTrainer))
	}
	c.genesis = genesisYAML(append([]*actor{c.admin, c.coord, c.agg}, c.trainers...), c.node)
	g, err := ledger.ParseGenesis("test genesis", c.genesis)
	if err != nil {
		t.Fatal(err)
	}
	c.db, err = pebblestore.Open("db", pebblestore.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.db.Close() })
	if c.fsm, err = fsm.New(c.db.State(), g, fsm.Options{}); err != nil {
		t.Fatal(err)
	}

	c.base = put(t, c.artifacts, weights(t, 0), true)
	txs := [][]byte{c.coord.sign(t, ledger.ModelRegistered{Digest: c.base, Name: "tiny-base", Licence: "Apache-2.0", Source: "test"}),
		c.coord.sign(t, ledger.JobRegistered{JobID: "job-1", Recipe: ledger.RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1,
			Aggregators: []string{c.agg.id}}})}
	for i, tr := range c.trainers {
		path := filepath.Join("..", "..", "datasets", "testdata", "shards", fmt.Sprintf("trainer-%d.jsonl", i+1))
		d, err := datasets.Load(path, datasets.Options{})
		if err != nil {
			t.Fatal(err)
		}
		m, tree, err := datasets.BuildManifest(d, datasets.ManifestOptions{Format: datasets.FormatJSONL, Licence: "LicenseRef-fedtune-synthetic",
			Source: "datasets/testdata/shards", Owner: tr.id})
		if err != nil {
			t.Fatal(err)
		}
		sm, err := datasets.SignManifest(tr.key, m)
		if err != nil {
			t.Fatal(err)
		}
		if put(t, c.artifacts, sm.Envelope, false) != sm.Digest {
			t.Fatal("manifest digest")
		}
		c.manifests, c.trees, c.data = append(c.manifests, sm), append(c.trees, tree), append(c.data, d)
		txs = append(txs, tr.sign(t, trainer.RegisterTx(sm)))
	}
	c.apply(t, txs...)

	ids := []string{c.trainers[0].id, c.trainers[1].id, c.trainers[2].id}
	model := c.base
	for round := uint64(1); round <= 2; round++ {
		c.apply(t, c.coord.sign(t, ledger.RoundOpened{JobID: "job-1", Round: round, ConfigDigest: digestOf("job config"), BaseModel: model,
			Strategy: "fedavg", Trainers: ids, Deadline: t0.Add(24 * time.Hour)}))
		var subs [][]byte
		var ups []string
		var inputs []aggregator.Input
		for i, tr := range c.trainers {
			data := weights(t, int(round)*10+i+1)
			if round == 2 && i == 2 {
				data = o.rejected(t)
			}
			u := put(t, c.artifacts, data, false)
			ups = append(ups, u)
			samples := uint64(100 * (i + 1))
			subs = append(subs, tr.sign(t, ledger.UpdateSubmitted{JobID: "job-1", Round: round, UpdateDigest: u,
				DatasetDigest: c.manifests[i].Digest, Samples: samples, Metrics: map[string]float64{"loss": 2.5 - float64(round)/2}}))
			if round == 2 && i == 2 {
				continue // rejected below
			}
			p, _ := ArtifactPath(c.artifacts, u)
			inputs = append(inputs, aggregator.Input{Path: p, Weight: float64(samples), ContributorID: tr.id})
		}
		c.updates = append(c.updates, ups)
		c.apply(t, subs...)
		basePath, _ := ArtifactPath(c.artifacts, model)
		out := filepath.Join(t.TempDir(), "model.safetensors")
		res, err := aggregator.Aggregate(context.Background(), aggregator.Request{Strategy: &aggregator.FedAvg{}, Inputs: inputs, Base: basePath, Out: out,
			Options: aggregator.Options{Strict: true}})
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if put(t, c.artifacts, data, true) != res.Digest {
			t.Fatal("aggregate digest is not the file's SHA-256")
		}
		var closing [][]byte
		if round == 2 {
			closing = append(closing, c.agg.sign(t, ledger.UpdateRejected{JobID: "job-1", Round: round, UpdateDigest: ups[2], Reason: o.rejectReason}))
		}
		var contrib []ledger.Contribution
		for _, a := range res.Accepted {
			contrib = append(contrib, ledger.Contribution{Trainer: a.ContributorID, UpdateDigest: a.Digest, Weight: res.Weights[a.ContributorID]})
		}
		committed := res.Digest
		if commit != nil {
			committed = commit(round, committed, c.artifacts, inputs, basePath)
		}
		closing = append(closing, c.agg.sign(t, ledger.RoundCommitted{JobID: "job-1", Round: round, ModelDigest: committed, Strategy: "fedavg", Contributors: contrib}))
		c.apply(t, closing...)
		model = committed
		c.models = append(c.models, model)
	}
	return c
}

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// export returns the chain as an Export.
func (c *testChain) export(t testing.TB) *Export {
	t.Helper()
	e := &Export{Genesis: c.genesis}
	for h := uint64(0); h <= c.fsm.Height(); h++ {
		b, err := c.fsm.Block(h)
		if err != nil {
			t.Fatal(err)
		}
		e.Blocks = append(e.Blocks, ledger.EncodeBlock(b))
		e.HeadHash = b.Hash()
	}
	return e
}
