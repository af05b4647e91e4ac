package spotcheck

import (
	"context"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/modeltest"
	"github.com/fedtune/fedtune/model/safetensors"
)

// The fetch from the artifact store runs end to end in internal/devnet's
// TestNetworkSpotCheck (the verifier there has no model folder); here,
// the --model override is held to the ledger's digest.
func TestFolderOverride(t *testing.T) {
	m, err := model.New(modeltest.TinyConfig(), 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := m.Save(dir, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	d, err := m.Digest()
	if err != nil {
		t.Fatal(err)
	}
	other := strings.Repeat("ab", 32)
	var s FoundationSource // no ledger: an override never reaches it
	for _, tc := range []struct {
		name, base, override, want string
	}{
		{"matching override", d, dir, ""},
		{"other weights", other, dir, `but job "j"'s recipe records base model ` + other},
		{"no recorded base, no override", "", "", "records no base_model digest; give the verifier --model"},
		{"no recorded base, override", "", dir, ""},
		{"override not a model", d, t.TempDir(), "--model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := &ledger.JobRecord{JobID: "j", Recipe: ledger.RoundRecipe{BaseModel: tc.base}}
			got, err := s.Folder(context.Background(), job, tc.override)
			if tc.want == "" {
				if err != nil || got != tc.override {
					t.Fatalf("got %q, %v; want %q", got, err, tc.override)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
