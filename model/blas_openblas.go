//go:build openblas

package model

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/netlib/blas/netlib"
	G "gorgonia.org/gorgonia"
)

// With the openblas build tag, Gorgonia's matrix products go through
// OpenBLAS (cgo, gonum.org/v1/netlib) instead of gonum's pure-Go BLAS.
// The same goes for gonum's blas32 (which model/engine's Host device uses).
// Build with Debian's libopenblas-dev installed and
// CGO_LDFLAGS=-lopenblas:
//
//	CGO_LDFLAGS=-lopenblas go build -tags openblas ./...
func init() {
	G.Use(netlib.Implementation{})
	blas32.Use(netlib.Implementation{})
}
