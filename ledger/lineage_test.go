package ledger

import (
	"fmt"
	"sync"
	"testing"
	"time"
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
	ch.mustApply(c.coord.sign(tb, ModelRegistered{Digest: base, Name: "base", Licence: "apache-2.0", Source: "hf://base"}),
		tr.sign(tb, DatasetRegistered{Digest: ds, Name: "d", Licence: "cc0", Source: "local", Samples: 10}))
	prev := base
	var txs [][]byte
	start := time.Now()
	for r := 1; r <= rounds; r++ {
		u := digest(fmt.Sprint("deep update ", r))
		m := digest(fmt.Sprint("deep model ", r))
		txs = append(txs,
			c.coord.sign(tb, RoundOpened{JobID: "deep", Round: uint64(r), ConfigDigest: digest("cfg"), BaseModel: prev, Strategy: "fedavg",
				Trainers: []string{tr.id}, Deadline: t0.Add(1000 * time.Hour)}),
			tr.sign(tb, UpdateSubmitted{JobID: "deep", Round: uint64(r), UpdateDigest: u, DatasetDigest: ds, Samples: 10}),
			c.agg.sign(tb, RoundCommitted{JobID: "deep", Round: uint64(r), ModelDigest: m, Strategy: "fedavg",
				Contributors: []Contribution{{Trainer: tr.id, UpdateDigest: u, Weight: 1}}}))
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
	c := newCast()
	ch := newChain(b, c.genesis(b), c.node.id)
	const per = 500
	props := make([][][]byte, b.N)
	for i := range props {
		for j := 0; j < per; j++ {
			props[i] = append(props[i], c.coord.sign(b, ModelRegistered{Digest: digest(fmt.Sprint(i, "/", j)), Name: "m", Licence: "l", Source: "s"}))
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
