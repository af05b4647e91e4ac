package coordinator_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/ledger"
)

// A driver feeds events to the machine and carries out each Ready: here
// one round with two trainers, the ledger confirming every transaction.
func ExampleMachine() {
	id := func(c string) string { return strings.Repeat(c, 64) }
	job, err := coordinator.ParseJob("job.yaml", []byte(`
name: example
model: {digest: `+id("0")+`}
trainers: {min: 2}
deadline: 5m
`))
	if err != nil {
		panic(err)
	}
	m, err := coordinator.New(coordinator.Config{Job: job})
	if err != nil {
		panic(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	show := func(ev coordinator.Event) {
		rd, err := m.Step(ev)
		if err != nil {
			panic(err)
		}
		for _, tx := range rd.Txs {
			fmt.Printf("submit %s\n", tx.TxType())
		}
		for _, t := range rd.Tasks {
			fmt.Printf("task for %s… on %s…\n", t.Trainer[:4], t.BaseModel[:4])
		}
		if a := rd.Aggregation; a != nil {
			fmt.Printf("aggregate %d inputs with %s\n", len(a.Inputs), a.Strategy)
		}
		if d := rd.Done; d != nil {
			fmt.Printf("done: %d committed, model %s…\n", d.Committed, d.Model[:4])
		}
	}
	show(coordinator.MembersChanged{Trainers: []string{id("a"), id("b")}})
	show(coordinator.TrainerJoined{Trainer: id("a"), Datasets: []string{id("d")}})
	show(coordinator.TrainerJoined{Trainer: id("b"), Datasets: []string{id("e")}})
	show(coordinator.JobStarted{Now: now})
	show(coordinator.TxCommitted{Type: ledger.TypeRoundOpened, Round: 1})
	show(coordinator.UpdateArrived{Round: 1, Trainer: id("a"), Digest: id("1"), Dataset: id("d"), Samples: 10})
	show(coordinator.UpdateArrived{Round: 1, Trainer: id("b"), Digest: id("2"), Dataset: id("e"), Samples: 30})
	show(coordinator.AggregationDone{Round: 1, Model: id("f"), Weights: map[string]float64{id("a"): 0.25, id("b"): 0.75}})
	show(coordinator.TxCommitted{Type: ledger.TypeRoundCommitted, Round: 1})
	// Output:
	// submit RoundOpened
	// task for aaaa… on 0000…
	// task for bbbb… on 0000…
	// aggregate 2 inputs with fedavg
	// submit RoundCommitted
	// done: 1 committed, model ffff…
}
