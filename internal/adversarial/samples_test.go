package adversarial

// Attacks on FedAvg weights and on job names: a trainer that claims more
// samples than its task let it train on (issue item 7, "or above what the
// task allowed"), and a coordinator that registers another's job name
// first (review finding 19).

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/trainer"
)

// samplesDataset is the sample count the attacking trainer registers: far
// more than one round of the devnet job trains on (local_steps × batch).
const samplesDataset = 100_000

// A trainer of the devnet job, registered with a large dataset, claims its
// whole dataset as the samples of one update: its FedAvg weight. The job
// is registered with the recipe the coordinator itself builds from the
// devnet's job file (coordinator.Job.Recipe), which now bounds the claim
// by local_steps × batch; the ledger refuses more.
func TestAttackSamplesAboveTaskBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	r := roundsSetup(t, ctx) // the ledger, signers, a base model and datasets of 50 samples
	job, err := coordinator.LoadJob(r.nw.JobFile)
	if err != nil {
		t.Fatal(err)
	}
	budget := uint64(job.Train.LocalSteps) * uint64(job.Train.Batch)
	job.Name = "adv-samples"
	rc, err := job.Recipe([]string{r.nw.ID("aggregator")}, "")
	if err != nil {
		t.Fatal(err)
	}
	rc.BaseModel = r.base // the job file's model is the devnet's; this ledger registered its own
	if rc.MaxSamples != budget {
		t.Errorf("the coordinator's recipe bounds samples by %d, want local_steps × batch = %d", rc.MaxSamples, budget)
	}
	r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: job.Name, Recipe: rc})
	big := digestOf("big dataset of trainer-3")
	r.must(t, ctx, "trainer-3", ledger.DatasetRegistered{Digest: big, Name: "trainer-3-big", Licence: "CC0-1.0", Source: "test",
		Samples: samplesDataset, Root: digestOf("big root"), Bytes: 100_000})
	r.must(t, ctx, "coordinator", ledger.RoundOpened{JobID: job.Name, Round: 1, ConfigDigest: job.Digest(), BaseModel: r.base,
		Strategy: rc.Strategy, Trainers: []string{r.nw.ID("trainer-1"), r.nw.ID("trainer-3")}, Deadline: time.Now().Add(time.Hour)})

	update := digestOf("update of trainer-3 in adv-samples")
	t.Run("whole dataset claimed", func(t *testing.T) {
		r.attack(t, ctx, "trainer-3", ledger.UpdateSubmitted{JobID: job.Name, Round: 1, UpdateDigest: update, DatasetDigest: big,
			Samples: samplesDataset}, fmt.Sprintf("samples %d is more than the %d the recipe of job %q allows", samplesDataset, budget, job.Name))
	})
	t.Run("one more than the budget", func(t *testing.T) {
		r.attack(t, ctx, "trainer-3", ledger.UpdateSubmitted{JobID: job.Name, Round: 1, UpdateDigest: update, DatasetDigest: big,
			Samples: budget + 1}, fmt.Sprintf("samples %d is more than the %d", budget+1, budget))
	})
	// What an honest trainer claims (trainer.ClaimedSamples: the examples
	// it trained on, within its dataset and the recipe) is accepted.
	honest := trainer.ClaimedSamples(samplesDataset, job.Train.LocalSteps, job.Train.Batch, rc.MaxSamples)
	if honest != budget {
		t.Fatalf("an honest trainer claims %d, want %d", honest, budget)
	}
	if _, err := r.signers["trainer-3"].Submit(ctx, ledger.UpdateSubmitted{JobID: job.Name, Round: 1, UpdateDigest: update,
		DatasetDigest: big, Samples: honest}); err != nil {
		t.Fatalf("the honest claim of %d samples: %v", honest, err)
	}
}

// A rival coordinator registers the devnet job's name before the devnet
// coordinator launches it. Job IDs belong to the first JobRegistered, so
// the launch must fail, saying who holds the name and to rename the job,
// and write nothing to the ledger (before, the coordinator registered the
// base model first and only then found the name taken).
func TestAttackJobNameSquat(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a devnet")
	}
	ctx := testContext(t, 4*time.Minute)
	n := prepareNet(t, ctx, devnet.Options{Trainers: 1, MinTrainers: 1})
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Stop)
	c, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	key, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	rival := client.NewSigner(c, key)
	if _, err := client.NewSigner(c, n.Keys["admin"]).Submit(ctx, ledger.MemberAdded{
		PublicKey: hex.EncodeToString(key.Public().(ed25519.PublicKey)), Role: ledger.RoleCoordinator, Name: "rival"}); err != nil {
		t.Fatal(err)
	}
	if _, err := rival.Submit(ctx, ledger.JobRegistered{JobID: n.JobName, Recipe: ledger.RoundRecipe{Strategy: "fedavg",
		Compression: "none", MinTrainers: 1, Aggregators: []string{n.ID("aggregator")}}}); err != nil {
		t.Fatalf("the rival's JobRegistered: %v", err)
	}

	before := waitSettled(t, ctx, n)
	_, err = n.Launch(ctx)
	if err == nil {
		t.Fatalf("job %s launched under a name coordinator %s registered", n.JobName, rival.ID())
	}
	for _, w := range []string{"job " + n.JobName + " is registered on the ledger by coordinator " + rival.ID(), "rename the job"} {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("launch: %v, want the reason to say %q", err, w)
		}
	}
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("launch: code %s, want AlreadyExists", status.Code(err))
	}
	t.Logf("refused: %v", err)
	requireUnchanged(t, ctx, n, before)
}
