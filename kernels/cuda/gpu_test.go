//go:build fedcuda

package cuda

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/kernels"
)

func TestRegisteredBackend(t *testing.T) {
	testContext(t) // skips without a GPU
	be, err := kernels.Open("cuda")
	if err != nil {
		t.Fatal(err)
	}
	if be.Name() != "cuda" {
		t.Fatalf("Name() = %q", be.Name())
	}
	x := []float32{3, 4}
	if got := be.SquaredNorm(x); got != 25 {
		t.Fatalf("SquaredNorm = %v", got)
	}
}

// TestBLASLibrary loads cuBLAS with dlopen (no GPU needed): either a
// library with every symbol, or an error that names what was tried.
func TestBLASLibrary(t *testing.T) {
	lib, err := BLASLibrary()
	if err != nil {
		if !errors.Is(err, ErrNoBLAS) || !strings.Contains(err.Error(), "libcublas.so.11") {
			t.Fatalf("BLASLibrary error %v should wrap ErrNoBLAS and name the libraries tried", err)
		}
		t.Logf("no cuBLAS: %v", err)
		return
	}
	if !slices.Contains(blasLibraries, lib) {
		t.Fatalf("BLASLibrary() = %q, not one of %v", lib, blasLibraries)
	}
	t.Logf("cuBLAS: %s", lib)
}
