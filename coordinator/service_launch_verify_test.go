package coordinator

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/ledger"
)

// A job with verify whose updates, each disclosing the digest of all
// its local steps, could not fit the chain's max_tx_bytes is refused at
// launch, the ledger's reason naming the sizes; the same job of fewer
// steps launches. Nothing of the refused job is on the ledger.
func TestLaunchVerifyJobMustFitMaxTxBytes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := newTestNet(t, t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer run(t, ctx, n.s)()
	vk, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ledger.tw.Submit(n.admin, ledger.MemberAdded{PublicKey: hex.EncodeToString(vk.Public().(ed25519.PublicKey)), Role: ledger.RoleVerifier, Name: "verifier-1"}); err != nil {
		t.Fatal(err)
	}
	owner := ledger.KeyID(n.trainers[0].Public().(ed25519.PublicKey))
	m := dspub.Manifest{Version: dspub.Version, Name: "spot-data", Format: dspub.FormatText, Licence: "CC0-1.0", Owner: owner,
		Samples: 30, Bytes: 300, Root: digest.Bytes([]byte("root")), Leaves: digest.Bytes([]byte("leaves")),
		Shards: []dspub.Shard{{Digest: digest.Bytes([]byte("shard")), First: 0, Samples: 30, Bytes: 300}}}
	sm, err := dspub.Sign(n.trainers[0], &m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ledger.tw.Submit(n.trainers[0], ledger.DatasetPublished{Manifest: string(sm.Envelope)}); err != nil {
		t.Fatal(err)
	}
	baseDir, _, _, _ := evalFixture(t)
	job := func(name string, steps int) []byte {
		return []byte(fmt.Sprintf("name: %s\nseed: 3\nmodel:\n  path: %s\nrounds: 1\ntrainers:\n  min: 1\n  max: 1\n"+
			"train:\n  local_steps: %d\n  batch: 1\n  seq_len: 8\nfinetune:\n  mode: full\nstrategy:\n  name: fedavg\ndeadline: 15m\n"+
			"datasets:\n  published: [%s]\nverify:\n  fraction: 1\n  by: [%s]\n", name, baseDir, steps, sm.Digest, ledger.KeyID(vk.Public().(ed25519.PublicKey))))
	}
	_, err = n.s.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: job("too-long", ledger.MaxDisclosedSteps)})
	for _, want := range []string{"recipe.verify.steps 4096", `job "too-long" spot-checks its updates`, "above the chain's policy max_tx_bytes 262144", "steps per update fit"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("launch of a 4096-step verify job on a 256 KiB chain: %v; want an error containing %q", err, want)
		}
	}
	t.Logf("refused: %v", err)
	if rec, err := n.ledger.Job(ctx, "too-long"); err == nil {
		t.Fatalf("the refused job is on the ledger: %+v", rec)
	}
	if _, err := n.s.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: job("fits", 64)}); err != nil {
		t.Fatalf("launch of a 64-step verify job: %v", err)
	}
	rec, err := n.ledger.Job(ctx, "fits")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Recipe.Verify == nil || rec.Recipe.Verify.Steps != 64 {
		t.Fatalf("registered verify rule %+v; want steps 64, the job's local steps", rec.Recipe.Verify)
	}
}
