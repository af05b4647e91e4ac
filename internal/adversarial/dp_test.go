package adversarial

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/coordinator"
)

// TestAttackDPNoiseSeed: DP noise that anyone can regenerate can be
// subtracted, undoing the privacy it was for. A job that names a noise
// seed is refused, and what a DP job puts on the ledger (its recipe and the
// parameters of every commit) names the mechanism — clip, noise multiplier
// — and no seed: the noise comes from crypto/rand and is recorded nowhere.
func TestAttackDPNoiseSeed(t *testing.T) {
	src, err := os.ReadFile("../../configs/jobs/dp-fedavg.yaml")
	if err != nil {
		t.Fatal(err)
	}
	seeded := bytes.Replace(src, []byte("privacy:\n"), []byte("privacy:\n  seed: 42\n"), 1)
	if bytes.Equal(seeded, src) {
		t.Fatal("dp-fedavg.yaml has no privacy block to edit")
	}
	if _, err := coordinator.ParseJob("seeded.yaml", seeded); err == nil || !strings.Contains(err.Error(), "privacy.seed") ||
		!strings.Contains(err.Error(), "crypto/rand") {
		t.Fatalf("a job with privacy.seed: %v; want a refusal naming privacy.seed and crypto/rand", err)
	}

	job, err := coordinator.ParseJob("dp-fedavg.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := job.Recipe([]string{strings.Repeat("a", 64)}, "")
	if err != nil {
		t.Fatal(err)
	}
	if rc.Clip != 1.0 || rc.NoiseMultiplier != 1.1 {
		t.Errorf("recipe records clip %v, noise multiplier %v; want the job's 1.0 and 1.1", rc.Clip, rc.NoiseMultiplier)
	}
	onChain, err := json.Marshal(rc)
	if err != nil {
		t.Fatal(err)
	}
	params, err := json.Marshal(rc.CommitParams())
	if err != nil {
		t.Fatal(err)
	}
	for what, b := range map[string][]byte{"the recipe": onChain, "a commit's parameters": params} {
		if bytes.Contains(bytes.ToLower(b), []byte("seed")) {
			t.Errorf("%s carries a seed, from which the noise could be regenerated: %s", what, b)
		}
	}
}
