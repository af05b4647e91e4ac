package cli

import (
	"io/fs"
	"path/filepath"
	"testing"

	aggnode "github.com/fedtune/fedtune/aggregator/node"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/spdx"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/node"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/trainer"
)

// TestExampleConfigs walks configs/ and loads every file with the loader
// of its kind, which also validates it: an example that no longer parses,
// and a file of no known kind, fail.
func TestExampleConfigs(t *testing.T) {
	kinds := []struct {
		pattern string // filepath.Match against the path inside configs/
		kind    string
		load    func(path string) error
	}{
		{"coordinator.yaml", "coordinator", func(p string) error { _, err := coordinator.LoadServerConfig(p); return err }},
		{"aggregator.yaml", "aggregator", func(p string) error { _, err := aggnode.LoadConfig(p); return err }},
		{"trainer.yaml", "trainer", func(p string) error { _, err := trainer.LoadConfig(p); return err }},
		{"genesis.yaml", "genesis", func(p string) error { _, err := ledger.LoadGenesis(p); return err }},
		{"ledger/genesis-*.yaml", "genesis", func(p string) error { _, err := ledger.LoadGenesis(p); return err }},
		{"ledger/node*.yaml", "ledger node", func(p string) error { _, err := node.LoadConfig(p); return err }},
		{"jobs/*.yaml", "job", func(p string) error { _, err := coordinator.LoadJob(p); return err }},
		{"models/*.yaml", "model", func(p string) error { _, err := model.LoadConfigYAML(p); return err }},
	}
	const root = "../../configs"
	seen := map[string]int{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		t.Run(rel, func(t *testing.T) {
			for _, k := range kinds {
				if ok, _ := filepath.Match(k.pattern, filepath.ToSlash(rel)); ok {
					seen[k.kind]++
					if err := k.load(path); err != nil {
						t.Errorf("as a %s config: %v", k.kind, err)
					}
					return
				}
			}
			t.Errorf("no kind of config matches %s: add its loader to this test", rel)
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		if seen[k.kind] == 0 {
			t.Errorf("no %s config in %s", k.kind, root)
		}
	}
}

// The example coordinator, aggregator and trainer configs name the
// identities of the example genesis: the trainer and the aggregator expect
// its coordinator, and the trainer's name is one of its trainers.
func TestExampleConfigsAgree(t *testing.T) {
	g, err := ledger.LoadGenesis("../../configs/genesis.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, m := range g.Members {
		ids[m.Name] = ledger.KeyID(m.Key)
	}
	tc, err := trainer.LoadConfig("../../configs/trainer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ac, err := aggnode.LoadConfig("../../configs/aggregator.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if tc.CoordinatorID != ids["coordinator"] || ac.CoordinatorID != ids["coordinator"] {
		t.Errorf("coordinator_id: trainer %s, aggregator %s; genesis coordinator %s", tc.CoordinatorID, ac.CoordinatorID, ids["coordinator"])
	}
	if ids[tc.Name] == "" {
		t.Errorf("trainer name %q is no member of the example genesis", tc.Name)
	}
	if filepath.Base(tc.LedgerGenesis) != "genesis.yaml" || filepath.Base(ac.LedgerGenesis) != "genesis.yaml" {
		t.Errorf("ledger_genesis: trainer %s, aggregator %s", tc.LedgerGenesis, ac.LedgerGenesis)
	}
}

// TestExamplePublishedJob: the example job on published data loads with
// its published dataset, accepted licences (each in fedtune's SPDX table)
// and required attestation, as the README's datasets section runs it.
func TestExamplePublishedJob(t *testing.T) {
	j, err := coordinator.LoadJob("../../configs/jobs/published-attested.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Datasets.Published) != 1 || j.Datasets.RangeSamples == 0 || len(j.Datasets.Licences) == 0 {
		t.Fatalf("datasets %+v: want one published dataset, a range size and accepted licences", j.Datasets)
	}
	for _, l := range j.Datasets.Licences {
		if !spdx.Known(l) {
			t.Errorf("licenses: %q is not in fedtune's SPDX table", l)
		}
	}
	if len(j.RequireAttestations) != 1 || j.RequireAttestations[0] != (ledger.AttestationRequirement{Kind: ledger.KindPIIScan, By: "auditor"}) {
		t.Errorf("require_attestations %+v, want one pii-scan by any auditor", j.RequireAttestations)
	}
}
