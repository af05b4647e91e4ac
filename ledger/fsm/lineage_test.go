package fsm

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// buildDeepChain commits rounds rounds of one job, each on the previous
// round's model, 100 rounds (300 txs) per block. It returns the chain and
// the digest of the last model.
func buildDeepChain(tb testing.TB, rounds int) (*chain, *cast, string) {
	c := newCast()
	g := c.genesis(tb)
	g.Policy.MaxBlockTxs = 1000
	ch := newChain(tb, g, c.node.id)
	tr := c.trainers[0]
	base := digest("deep base")
	ds := digest("deep dataset")
	ch.mustApply(c.registerJob(tb, "deep"), c.coord.sign(tb, ledger.ModelRegistered{Digest: base, Name: "base", Licence: "apache-2.0", Source: "hf://base"}),
		tr.sign(tb, ledger.DatasetRegistered{Digest: ds, Name: "d", Licence: "cc0", Source: "local", Samples: 10, Root: testDatasetRoot}))
	prev := base
	var txs [][]byte
	start := time.Now()
	for r := 1; r <= rounds; r++ {
		u := digest(fmt.Sprint("deep update ", r))
		m := digest(fmt.Sprint("deep model ", r))
		txs = append(txs,
			c.coord.sign(tb, ledger.RoundOpened{JobID: "deep", Round: uint64(r), ConfigDigest: digest("cfg"), BaseModel: prev, Strategy: "fedavg",
				Trainers: []string{tr.id}, Deadline: t0.Add(1000 * time.Hour)}),
			tr.sign(tb, ledger.UpdateSubmitted{JobID: "deep", Round: uint64(r), UpdateDigest: u, DatasetDigest: ds, Samples: 10}),
			c.agg.sign(tb, ledger.RoundCommitted{JobID: "deep", Round: uint64(r), ModelDigest: m, Strategy: "fedavg",
				Contributors: []ledger.Contribution{{Trainer: tr.id, UpdateDigest: u, Weight: 1}}}))
		prev = m
		if len(txs) == 300 || r == rounds {
			ch.mustApply(txs...)
			txs = txs[:0]
		}
		if r%2000 == 0 {
			tb.Logf("built %d/%d rounds in %v", r, rounds, time.Since(start).Round(time.Millisecond))
		}
	}
	return ch, c, prev
}

func TestLineageDeep(t *testing.T) {
	const rounds = 250
	ch, _, last := buildDeepChain(t, rounds)
	lin, err := ch.fsm.Lineage(last)
	if err != nil {
		t.Fatal(err)
	}
	if len(lin.Rounds) != rounds || lin.Base.Digest != digest("deep base") || lin.Model.Digest != last || len(lin.Datasets) != 1 {
		t.Fatalf("lineage: %d rounds, base %s", len(lin.Rounds), lin.Base.Digest)
	}
	if d := lin.Datasets[0]; d.Root != testDatasetRoot || d.Samples != 10 {
		t.Errorf("lineage dataset root %q, %d samples; registered root %s, 10 samples", d.Root, d.Samples, testDatasetRoot)
	}
	for i, r := range lin.Rounds {
		if want := uint64(rounds - i); r.Round != want {
			t.Fatalf("rounds[%d] is round %d, want %d", i, r.Round, want)
		}
		if i+1 < len(lin.Rounds) && r.BaseModel != lin.Rounds[i+1].ModelDigest {
			t.Fatalf("rounds[%d] does not link to rounds[%d]", i, i+1)
		}
	}
	if err := VerifyChain(ch.db.State(), ch.fsm.Genesis()); err != nil {
		t.Fatal(err)
	}
}

var deep struct {
	once sync.Once
	ch   *chain
	last string
}

// BenchmarkLineage10000 answers the lineage of a model 10,000 rounds deep
// (one job, each round on the previous round's model), and, as the floor to
// compare with, 10,000 bare point reads of the same store.
func BenchmarkLineage10000(b *testing.B) {
	deep.once.Do(func() {
		start := time.Now()
		deep.ch, _, deep.last = buildDeepChain(b, 10000)
		b.Logf("built a 10,000-round chain (%d blocks) in %v", deep.ch.fsm.Height(), time.Since(start).Round(time.Millisecond))
	})
	f := deep.ch.fsm
	b.Run("lineage", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			lin, err := f.Lineage(deep.last)
			if err != nil {
				b.Fatal(err)
			}
			if len(lin.Rounds) != 10000 {
				b.Fatalf("%d rounds", len(lin.Rounds))
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/lineage")
	})
	b.Run("point-reads-baseline", func(b *testing.B) {
		st := deep.ch.db.State()
		key := lineageKey(deep.last)
		for i := 0; i < b.N; i++ {
			for j := 0; j < 10000; j++ {
				if _, _, err := st.Get(key); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/10000-gets")
	})
}

// BenchmarkApplyBlock applies blocks of 500 pre-signed transactions
// (ModelRegistered) on a pebble store in memory and reports tx/s.
func BenchmarkApplyBlock(b *testing.B) {
	b.Run("parallel-verify", func(b *testing.B) { benchApply(b, false) })
	b.Run("sequential-baseline", func(b *testing.B) { benchApply(b, true) })
}

func benchApply(b *testing.B, sequential bool) {
	c := newCast()
	ch := newChain(b, c.genesis(b), c.node.id)
	ch.fsm.noPrecheck = sequential
	const per = 500
	props := make([][][]byte, b.N)
	for i := range props {
		for j := 0; j < per; j++ {
			props[i] = append(props[i], c.coord.sign(b, ledger.ModelRegistered{Digest: digest(fmt.Sprint(i, "/", j)), Name: "m", Licence: "l", Source: "s"}))
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if blk := ch.mustApply(props[i]...); len(blk.Txs) != per {
			b.Fatal("short block")
		}
	}
	b.ReportMetric(float64(b.N*per)/b.Elapsed().Seconds(), "tx/s")
}

// TestLineageBranches: models committed on the same base each get their
// own history; the second child of a model starts a new lineage segment.
func TestLineageBranches(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	fx := c.setupRound(t, ch) // job-1 round 1 on fx.base
	tr := c.trainers[0]
	type step struct {
		job   string
		n     uint64
		base  string
		model string
	}
	steps := []step{
		{"job-1", 1, fx.base, "A1"},
		{"job-B", 1, "A1", "B1"}, // first child of A1: continues A1's segment
		{"job-C", 1, "A1", "C1"}, // second child of A1: new segment
		{"job-C", 2, "C1", "C2"},
		{"job-D", 1, fx.base, "D1"}, // a second branch from the base model
	}
	name := func(s string) string {
		if s == fx.base {
			return s
		}
		return digest("model " + s)
	}
	for _, s := range steps {
		if s.job != "job-1" && s.n == 1 {
			ch.mustApply(c.registerJob(t, s.job))
		}
		if !(s.job == "job-1" && s.n == 1) {
			ch.mustApply(c.coord.sign(t, ledger.RoundOpened{JobID: s.job, Round: s.n, ConfigDigest: digest("c"), BaseModel: name(s.base), Strategy: "fedavg",
				Trainers: []string{tr.id}, Deadline: t0.Add(time.Hour)}))
		}
		u := digest("update " + s.model)
		ch.mustApply(tr.sign(t, ledger.UpdateSubmitted{JobID: s.job, Round: s.n, UpdateDigest: u, DatasetDigest: fx.datasets[0], Samples: 1}))
		ch.mustApply(c.agg.sign(t, ledger.RoundCommitted{JobID: s.job, Round: s.n, ModelDigest: name(s.model), Strategy: "fedavg",
			Contributors: []ledger.Contribution{{Trainer: tr.id, UpdateDigest: u, Weight: 1}}}))
	}
	want := map[string][]string{
		"A1": {"A1"},
		"B1": {"B1", "A1"},
		"C1": {"C1", "A1"},
		"C2": {"C2", "C1", "A1"},
		"D1": {"D1"},
	}
	for m, path := range want {
		lin, err := ch.fsm.Lineage(name(m))
		if err != nil {
			t.Fatal(err)
		}
		if len(lin.Rounds) != len(path) || lin.Base.Digest != fx.base {
			t.Fatalf("%s: %d rounds, base %s", m, len(lin.Rounds), lin.Base.Digest)
		}
		if lin.Base.Parent != "" || lin.Base.JobID != "" || lin.Base.Round != 0 {
			t.Fatalf("%s: base model record carries round fields %+v", m, lin.Base)
		}
		for i, p := range path {
			if lin.Rounds[i].ModelDigest != name(p) {
				t.Fatalf("%s: rounds[%d] made %s, want %s", m, i, lin.Rounds[i].ModelDigest, p)
			}
		}
	}
	if err := VerifyChain(ch.db.State(), ch.fsm.Genesis()); err != nil {
		t.Fatal(err)
	}
}
