package node

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoOtherRole checks, over transitive imports (go list -deps),
// that the aggregator process links no other role (the coordinator, the
// trainer, the ledger server), no pebble or raft, and no Gorgonia or
// tokenizer: what it shares with the coordinator lives in
// aggregator/round, what it needs of the ledger in ledger/client.
func TestLinksNoOtherRole(t *testing.T) {
	const module = "github.com/fedtune/fedtune/"
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{"gorgonia.org/", module + "model/tokenizer", module + "coordinator", module + "trainer", module + "ledger/node",
		"github.com/cockroachdb/pebble", "github.com/hashicorp/raft"}
	for _, p := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(p, f) {
				t.Errorf("aggregator/node links %s", p)
			}
		}
	}
}
