package devnet_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/audit/provenancetest"
	"github.com/fedtune/fedtune/internal/cli"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger"
)

// TestNoRaceNetworkProvenance runs a one-round job on a whole devnet and
// writes the model's provenance with the real commands, from a node (pinned
// to the genesis) and from an exported chain: each format gives the same
// bytes both ways, validates against its published schema, and names the
// three trainers' datasets; the in-toto envelope verifies under the
// auditor's key.
func TestNoRaceNetworkProvenance(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n, err := devnet.Prepare(ctx, devnet.Options{Dir: t.TempDir(), Repo: "../..", InProcess: true,
		JobName: "provenance", Rounds: 1, LocalSteps: 3, PretrainSteps: 2, EvalData: "datasets/testdata/tasks/eval.jsonl",
		Out: io.Discard, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != coordinator.JobDone || st.Model == "" {
		t.Fatalf("job ended %s (%s), model %q", st.State, st.Detail, st.Model)
	}

	work := t.TempDir()
	key, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(work, "auditor.key")
	if err := ledger.SaveKey(keyPath, key); err != nil {
		t.Fatal(err)
	}
	fedtune := func(args ...string) []byte {
		t.Helper()
		var out, errb bytes.Buffer
		if err := cli.RunWith(ctx, args, &out, &errb); err != nil {
			t.Fatalf("fedtune %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		return out.Bytes()
	}
	genesis, addr := filepath.Join(n.Dir, "genesis.yaml"), n.LedgerGRPC[0]
	export := filepath.Join(work, "chain.fedtune")
	fedtune("audit", "export", "-o", export, "--genesis", genesis, "--addr", addr)

	for _, format := range audit.ProvenanceFormats {
		file := filepath.Join(work, format+".json")
		fedtune("audit", "provenance", st.Model, "--format", format, "--export", export, "--key", keyPath, "-o", file)
		doc, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		live := fedtune("audit", "provenance", st.Model, "--format", format, "--ledger", addr, "--genesis", genesis, "--quorum", "2", "--key", keyPath)
		if !bytes.Equal(live, doc) {
			t.Errorf("%s: the provenance read from a node (quorum 2) differs from the export's", format)
		}
		if err := provenancetest.Validate(format, doc); err != nil {
			t.Errorf("%s provenance of the devnet model: %v", format, err)
		}
		text := doc
		if format == "in-toto" {
			env, err := dsse.Decode(bytes.TrimSpace(doc))
			if err != nil {
				t.Fatal(err)
			}
			if err := env.Verify(key.Public().(ed25519.PublicKey)); err != nil {
				t.Errorf("in-toto envelope: %v", err)
			}
			text = env.Payload
		}
		var any map[string]any
		if err := json.Unmarshal(text, &any); err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(text, []byte(st.Model)) || !bytes.Contains(text, []byte(n.BaseDigest)) {
			t.Errorf("%s provenance does not name the model %s and its base %s", format, st.Model, n.BaseDigest)
		}
		if c := bytes.Count(text, []byte(`"trainedOn"`)); format == "spdx" && c != 1 {
			t.Errorf("spdx: %d trainedOn relationships, want 1", c)
		}
		if c := bytes.Count(text, []byte(`"type": "data"`)); format == "cyclonedx" && c != 3 {
			t.Errorf("cyclonedx: %d data components, want the 3 trainers' datasets", c)
		}
		t.Logf("%s: %d bytes", format, len(doc))
	}
}
