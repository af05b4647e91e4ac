package coordinator

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/modeltest"
	"github.com/fedtune/fedtune/model/safetensors"
)

// TestImportedFrom: a base model folder written by model.Import registers
// with its name, licence, source and source files; one without an import
// record registers as before; a record that names other weights is refused.
func TestImportedFrom(t *testing.T) {
	m, err := model.New(modeltest.TinyConfig(), 2)
	if err != nil {
		t.Fatal(err)
	}
	hf := filepath.Join(t.TempDir(), "hf")
	modeltest.WriteHFCheckpoint(t, hf, m, modeltest.HFCheckpoint{DType: safetensors.BF16, Shards: 2})
	dir := filepath.Join(t.TempDir(), "imported")
	rec, err := model.Import(hf, dir, model.ImportOptions{Name: "tiny-hf", Licence: "Apache-2.0", Source: "hf://x/tiny@abc"})
	if err != nil {
		t.Fatal(err)
	}
	plain := ledger.ModelRegistered{Digest: rec.Digest, Name: "imported", Licence: "CC0-1.0", Source: "fedtune coordinator: " + dir}

	body := plain
	if err := importedFrom(dir, rec.Digest, &body); err != nil {
		t.Fatal(err)
	}
	if body.Name != "tiny-hf" || body.Licence != "Apache-2.0" || body.Source != "hf://x/tiny@abc" || len(body.Sources) != len(rec.Sources) {
		t.Fatalf("body %+v", body)
	}
	for i, s := range body.Sources {
		if s.Path != rec.Sources[i].Path || s.SHA256 != rec.Sources[i].SHA256 || s.Size != uint64(rec.Sources[i].Size) {
			t.Errorf("source %d: %+v, record %+v", i, s, rec.Sources[i])
		}
	}
	if _, err := ledger.SignTx(mustKey(t), "c", 1, body); err != nil {
		t.Errorf("the body does not pass the ledger's checks: %v", err)
	}

	body = plain
	if err := importedFrom(t.TempDir(), rec.Digest, &body); err != nil || body.Sources != nil || body.Name != "imported" {
		t.Errorf("folder without a record: %+v, %v", body, err)
	}
	body = plain
	if err := importedFrom(dir, strings.Repeat("0", 64), &body); err == nil || !strings.Contains(err.Error(), model.ImportFile) {
		t.Errorf("record naming other weights: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, model.ImportFile), []byte(`{"format":"fedtune-import/1","digest":"x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := importedFrom(dir, rec.Digest, &body); err == nil {
		t.Error("malformed record accepted")
	}
}

func mustKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	k, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
