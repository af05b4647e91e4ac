//go:build openblas

package engine

import (
	"testing"

	"github.com/fedtune/fedtune/model/engine/internal/openblas"
)

// TestHostMakesOpenBLASSerial: a Host leaves OpenBLAS on one thread, its
// products split over the Host's pool instead.
func TestHostMakesOpenBLASSerial(t *testing.T) {
	if openblas.Parallel() == openblas.OpenMP {
		t.Skip("an OpenMP build of OpenBLAS: the Host does not use it (see host_openblas.go)")
	}
	NewHost()
	if n := openblas.Threads(); n != 1 {
		t.Errorf("OpenBLAS runs on %d threads after NewHost, want 1", n)
	}
	if _, serial := (&host{}).gemm(); !serial {
		t.Error("the Host does not split products under OpenBLAS")
	}
}
