package coordinator

import (
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// A job on published data selects trainers with no data of their own and
// opens each round with the ranges its recipe gives them.
func TestMachinePublishedRanges(t *testing.T) {
	pub, base := strings.Repeat("a", 64), strings.Repeat("b", 64)
	j, err := ParseJob("job.yaml", []byte(`name: pub
seed: 3
model:
  digest: `+base+`
datasets:
  published: [`+pub+`]
  range_samples: 4
  licenses: [CC-BY-4.0]
rounds: 1
trainers:
  min: 2
deadline: 10m
`))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := j.Recipe([]string{strings.Repeat("c", 64)}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.Published) != 1 || rc.RangeSeed != 3 || rc.RangeSamples != 4 || len(rc.Licences) != 1 {
		t.Fatalf("recipe %+v", rc)
	}
	rc.Published[0].Samples = 30 // as the coordinator reads it from the ledger
	m, err := New(Config{Job: j, Recipe: rc})
	if err != nil {
		t.Fatal(err)
	}
	t1, t2 := strings.Repeat("1", 64), strings.Repeat("2", 64)
	for _, ev := range []Event{MembersChanged{Trainers: []string{t1, t2}}, TrainerJoined{Trainer: t1}, TrainerJoined{Trainer: t2}} {
		if _, err := m.Step(ev); err != nil {
			t.Fatal(err)
		}
	}
	rd, err := m.Step(JobStarted{Now: time.Unix(1000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rd.Txs) != 1 {
		t.Fatalf("txs %+v", rd.Txs)
	}
	open, ok := rd.Txs[0].(ledger.RoundOpened)
	if !ok {
		t.Fatalf("tx %T", rd.Txs[0])
	}
	want, err := rc.Ranges(1, open.Trainers)
	if err != nil {
		t.Fatal(err)
	}
	if len(open.Trainers) != 2 || len(open.Ranges) != 2 || open.Ranges[0] != want[0] || open.Ranges[1] != want[1] {
		t.Fatalf("RoundOpened trainers %v ranges %+v; want %+v", open.Trainers, open.Ranges, want)
	}
	for _, r := range open.Ranges {
		if r.End-r.First != 4 || r.Dataset != pub {
			t.Fatalf("range %+v", r)
		}
	}
}
