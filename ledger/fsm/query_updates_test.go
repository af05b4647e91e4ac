package fsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

func TestUpdatesByDigest(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	fx := c.setupRound(t, ch)
	a, b := c.trainers[0], c.trainers[1]
	u, v := digest("update u"), digest("update v")
	ch.mustApply(fx.submit(t, a, 0, 1, u))
	ch.mustApply(fx.submit(t, b, 1, 1, v))
	ch.mustApply(c.agg.sign(t, ledger.RoundCommitted{JobID: fx.job, Round: 1, ModelDigest: digest("model 1"), Strategy: "fedavg",
		Contributors: []ledger.Contribution{{Trainer: a.id, UpdateDigest: u, Weight: 0.5}, {Trainer: b.id, UpdateDigest: v, Weight: 0.5}}}))
	ch.mustApply(c.coord.sign(t, ledger.RoundOpened{JobID: fx.job, Round: 2, ConfigDigest: digest("job config"), BaseModel: digest("model 1"),
		Strategy: "fedavg", Trainers: []string{a.id, b.id}, Deadline: t0.Add(24 * time.Hour)}))
	// b names a's update as its own in round 2: a copy of a digest it read
	// on the chain.
	ch.mustApply(fx.submit(t, b, 1, 2, u))

	got, err := ch.fsm.UpdatesByDigest(u)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Trainer != a.id || got[0].Round != 1 || got[0].JobID != fx.job || got[1].Trainer != b.id || got[1].Round != 2 {
		t.Fatalf("UpdatesByDigest(u) = %+v; want a's round-1 submission first, then b's copy", got)
	}
	if got[0].Height == 0 || got[0].Height >= got[1].Height {
		t.Fatalf("heights %d, %d: want the author's first", got[0].Height, got[1].Height)
	}
	if got, err := ch.fsm.UpdatesByDigest(v); err != nil || len(got) != 1 || got[0].Trainer != b.id {
		t.Fatalf("UpdatesByDigest(v) = %+v, %v", got, err)
	}
	if _, err := ch.fsm.UpdatesByDigest(digest("never submitted")); !errors.Is(err, ledger.ErrRecordNotFound) {
		t.Fatalf("unknown digest: %v, want ErrRecordNotFound", err)
	}
}

// TestUpdateIndex: the digest-first index is written beside every
// submitted update, outside the state hash; a state without it (a chain
// from before the index) gets it rebuilt when an FSM opens it; VerifyChain
// catches an index that differs from the re-derived one.
func TestUpdateIndex(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	ch := newChain(t, g, c.node.id)
	fx := c.setupRound(t, ch)
	a, b := c.trainers[0], c.trainers[1]
	u, v := digest("update u"), digest("update v")
	ch.mustApply(fx.submit(t, a, 0, 1, u))
	ch.mustApply(fx.submit(t, b, 1, 1, v))
	st := ch.db.State()
	idx := dump(t, st, prefixUpdateIdx)
	if len(idx) != 2 {
		t.Fatalf("index holds %d keys, want 2: %v", len(idx), idx)
	}
	if _, ok, err := st.Get(updateIndexKey(u, fx.job, 1)); err != nil || !ok {
		t.Fatalf("no index key of u in round 1: %v", err)
	}
	// The index is no part of the state hash: the head's state hash is
	// what the a/ writes alone give, and the verifier agrees.
	if err := VerifyChain(st, g); err != nil {
		t.Fatalf("VerifyChain: %v", err)
	}
	for _, k := range idx {
		if !strings.HasPrefix(k, `"c/ux/`) {
			t.Fatalf("index key %s is not under c/", k)
		}
	}

	// Malformed digests name no update.
	for _, d := range []string{"", u[:10], strings.ToUpper(u), u + "00"} {
		if _, err := ch.fsm.UpdatesByDigest(d); !errors.Is(err, ledger.ErrRecordNotFound) {
			t.Errorf("UpdatesByDigest(%q): %v, want ErrRecordNotFound", d, err)
		}
	}

	// A state from before the index: no c/ux/ keys and no marker.
	wb := st.NewBatch()
	if err := errors.Join(wb.DeletePrefix([]byte(prefixUpdateIdx)), wb.Delete([]byte(keyUpdateIdxVer)), wb.Commit()); err != nil {
		t.Fatal(err)
	}
	wb.Close()
	if err := VerifyChain(st, g); err != nil {
		t.Fatalf("VerifyChain of a chain without the index: %v", err)
	}
	f2, err := New(st, g, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := dump(t, st, prefixUpdateIdx); strings.Join(got, ",") != strings.Join(idx, ",") {
		t.Fatalf("rebuilt index %v, want %v", got, idx)
	}
	if got, err := f2.UpdatesByDigest(v); err != nil || len(got) != 1 || got[0].Trainer != b.id || got[0].Height == 0 {
		t.Fatalf("UpdatesByDigest(v) after the rebuild = %+v, %v", got, err)
	}

	// A forged index entry (say, a snapshot that names another author)
	// fails verification, naming the index.
	wb = st.NewBatch()
	if err := errors.Join(wb.Set(updateIndexKey(u, fx.job, 1), []byte(b.id)), wb.Commit()); err != nil {
		t.Fatal(err)
	}
	wb.Close()
	var ve *ledger.VerifyError
	if err := VerifyChain(st, g); !errors.As(err, &ve) || ve.Field != "update_index" {
		t.Fatalf("VerifyChain of a forged index: %v, want an update_index error", err)
	}
}

// BenchmarkUpdatesByDigest: the cost of one lookup among many updates
// (a prefix scan of the index, not a scan of every update).
func BenchmarkUpdatesByDigest(b *testing.B) {
	c := newCast()
	ch := newChain(b, c.genesis(b), c.node.id)
	fx := c.setupRound(b, ch)
	st := ch.db.State()
	// Many submitted updates, written as the FSM writes them.
	wb := st.NewBatch()
	for i := range 20000 {
		k := updateDigestKey(fx.job, uint64(i+2), digest(fmt.Sprint("bulk ", i)))
		if err := errors.Join(wb.Set(k, []byte(c.trainers[0].id)), wb.Set(updateIndexKeyOf(k), []byte(c.trainers[0].id))); err != nil {
			b.Fatal(err)
		}
	}
	if err := wb.Commit(); err != nil {
		b.Fatal(err)
	}
	wb.Close()
	want := digest("bulk 12345")
	b.ResetTimer()
	for range b.N {
		if got, err := ch.fsm.UpdatesByDigest(want); err != nil || len(got) != 1 {
			b.Fatalf("%+v %v", got, err)
		}
	}
}
