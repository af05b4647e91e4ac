package devnet

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/modeltest"
	"github.com/fedtune/fedtune/model/safetensors"
)

// TestNetworkImportedBase: the devnet's base model, written as transformers
// writes a checkpoint (metadata {"format":"pt"}, BF16, two shards and an
// index), is imported with model.Import; a job whose base is the imported
// folder runs, and the ledger's ModelRegistered for it carries the
// canonical digest and the SHA-256 of every source file.
func TestNetworkImportedBase(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n := prepare(t, ctx, Options{JobName: "imported", Trainers: 1, Rounds: 1, LocalSteps: 3, MinTrainers: 1, PretrainSteps: 2})

	base, err := model.Load(n.BaseModel)
	if err != nil {
		t.Fatal(err)
	}
	hf := filepath.Join(t.TempDir(), "hf-base")
	modeltest.WriteHFCheckpoint(t, hf, base, modeltest.HFCheckpoint{DType: safetensors.BF16, Shards: 2})
	if tok := filepath.Join(n.BaseModel, "tokenizer.json"); fileExists(tok) {
		data, _ := os.ReadFile(tok)
		os.WriteFile(filepath.Join(hf, "tokenizer.json"), data, 0o644)
	}
	imported := filepath.Join(t.TempDir(), "imported")
	rec, err := model.Import(hf, imported, model.ImportOptions{Name: "tiny-hf", Licence: "Apache-2.0", Source: "transformers save_pretrained"})
	if err != nil {
		t.Fatal(err)
	}
	// The job's base model is the imported folder.
	data, err := os.ReadFile(n.JobFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	doc["model"] = map[string]any{"path": imported, "digest": rec.Digest}
	if err := writeYAML(n.JobFile, doc); err != nil {
		t.Fatal(err)
	}
	n.BaseModel, n.BaseDigest = imported, rec.Digest

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
	if st.State != coordinator.JobDone || len(st.Rounds) != 1 {
		t.Fatalf("job ended %s (%s) with %d rounds, want done with 1", st.State, st.Detail, len(st.Rounds))
	}
	if st.Rounds[0].BaseModel != rec.Digest {
		t.Errorf("round 1 started from %s, want the imported %s", st.Rounds[0].BaseModel, rec.Digest)
	}
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	var reg *ledger.ModelRegistered
	for _, tx := range txsOf(t, ctx, lc) {
		if b, ok := tx.Body.(ledger.ModelRegistered); ok && b.Digest == rec.Digest {
			reg = &b
		}
	}
	if reg == nil {
		t.Fatalf("no ModelRegistered for the imported digest %s", rec.Digest)
	}
	if reg.Name != "tiny-hf" || reg.Licence != "Apache-2.0" || len(reg.Sources) != len(rec.Sources) {
		t.Fatalf("registered %+v, want the import record %+v", reg, rec)
	}
	for i, s := range reg.Sources {
		want, err := digest.File(filepath.Join(hf, s.Path))
		if err != nil || s.SHA256 != want || s.Path != rec.Sources[i].Path {
			t.Errorf("source %+v: file sha256 %s (%v)", s, want, err)
		}
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
