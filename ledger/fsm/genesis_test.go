package fsm

import (
	"path/filepath"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

// TestShippedGenesisFiles loads every genesis example in configs/.
func TestShippedGenesisFiles(t *testing.T) {
	files := []string{filepath.Join("..", "..", "configs", "genesis.yaml")}
	more, err := filepath.Glob(filepath.Join("..", "..", "configs", "ledger", "genesis*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, more...)
	if len(files) < 2 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		g, err := ledger.LoadGenesis(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(g.Members) == 0 || g.Members[0].Key == nil {
			t.Errorf("%s: no parsed members", f)
		}
		// And a chain starts from it.
		db := openMemDB(t)
		fsm, err := New(db.State(), g, Options{})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := VerifyChain(db.State(), g); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		t.Logf("%s: chain %s, %d members, genesis hash %x, quorum %d, head %d", f, g.ChainID, len(g.Members), g.Hash(), g.Quorum(), fsm.Height())
	}
}
