// Package kernels owns the numeric primitives that fedtune's aggregator and
// trainer share: weighted accumulation, scaling, norms and clipping,
// pairwise distances, coordinate-wise median and trimmed mean, int8
// quantization with per-block scales, and finite checks, all over []float32.
//
// Backend is the seam: the CPU backend (the default, pure Go, parallel over
// GOMAXPROCS) and, behind the build tag "cuda", a GPU backend implement it
// with bit-identical results. Results never depend on the thread count.
//
// kernels imports nothing else of fedtune's.
package kernels
