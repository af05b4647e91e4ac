package ledger

import (
	"errors"
	"testing"
	"time"
)

func TestUpdatesByDigest(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	fx := c.setupRound(t, ch)
	a, b := c.trainers[0], c.trainers[1]
	u, v := digest("update u"), digest("update v")
	ch.mustApply(fx.submit(t, a, 0, 1, u))
	ch.mustApply(fx.submit(t, b, 1, 1, v))
	ch.mustApply(c.agg.sign(t, RoundCommitted{JobID: fx.job, Round: 1, ModelDigest: digest("model 1"), Strategy: "fedavg",
		Contributors: []Contribution{{Trainer: a.id, UpdateDigest: u, Weight: 0.5}, {Trainer: b.id, UpdateDigest: v, Weight: 0.5}}}))
	ch.mustApply(c.coord.sign(t, RoundOpened{JobID: fx.job, Round: 2, ConfigDigest: digest("job config"), BaseModel: digest("model 1"),
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
	if _, err := ch.fsm.UpdatesByDigest(digest("never submitted")); !errors.Is(err, ErrRecordNotFound) {
		t.Fatalf("unknown digest: %v, want ErrRecordNotFound", err)
	}
}
