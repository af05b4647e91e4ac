package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/kernels"
)

// TestAggregateBackendFlag checks that --backend picks the kernels backend
// without changing a bit of the result, and that a backend this binary
// lacks is refused with the build tag that adds it.
func TestAggregateBackendFlag(t *testing.T) {
	_, in := aggInputs(t)
	backends := []string{"cpu", "reference"}
	if _, err := kernels.Open("cuda"); err == nil {
		backends = append(backends, "cuda")
	}
	var want string
	for _, strategy := range []string{"fedavg", "median", "trimmed-mean", "krum"} {
		for i, be := range backends {
			out := filepath.Join(t.TempDir(), "global.safetensors")
			if _, _, err := aggRun(t, "--strategy", strategy, "--backend", be, "-o", out, in[0]+"@30", in[1]+"@10", in[2], in[3], in[4]); err != nil {
				t.Fatalf("%s --backend %s: %v", strategy, be, err)
			}
			if d := fileDigest(t, out); i == 0 {
				want = d
			} else if d != want {
				t.Errorf("%s: --backend %s digest %s, cpu gave %s", strategy, be, d, want)
			}
		}
	}
	out := filepath.Join(t.TempDir(), "global.safetensors")
	_, _, err := aggRun(t, "--backend", "tpu", "-o", out, in[0])
	if err == nil || !strings.Contains(err.Error(), "--backend") || !strings.Contains(err.Error(), `"tpu"`) {
		t.Fatalf("--backend tpu: %v", err)
	}
	if _, err := kernels.Open("cuda"); err != nil && strings.Contains(err.Error(), "built without") {
		_, _, err := aggRun(t, "--backend", "cuda", "-o", out, in[0])
		if err == nil || !strings.Contains(err.Error(), "-tags fedcuda") {
			t.Fatalf("--backend cuda without the GPU build: %v", err)
		}
	}
}
