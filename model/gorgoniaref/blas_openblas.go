//go:build openblas

package gorgoniaref

import (
	"gonum.org/v1/netlib/blas/netlib"
	G "gorgonia.org/gorgonia"
)

// With the openblas build tag, Gorgonia's matrix products go through
// OpenBLAS (cgo, gonum.org/v1/netlib) instead of gonum's pure-Go BLAS
// (model/engine installs it for gonum's blas32 likewise). Build with
// Debian's libopenblas-dev installed and CGO_LDFLAGS=-lopenblas:
//
//	CGO_LDFLAGS=-lopenblas go build -tags openblas ./...
func init() {
	G.Use(netlib.Implementation{})
}
