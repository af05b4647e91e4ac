//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// wsumPath selects the inner loop of WeightedSum: AVX-512 or AVX2 assembly,
// or the pure-Go loop (wsum4Go). All three give the same bits: each rounds
// every product and every sum separately (VMULPD then VADDPD, never FMA)
// and adds the inputs in k order. Tests switch it to cover every path.
var wsumPath = func() int {
	switch {
	case cpu.X86.HasAVX512F:
		return wsumAVX512
	case cpu.X86.HasAVX2:
		return wsumAVX2
	}
	return wsumGo
}()

const (
	wsumGo = iota
	wsumAVX2
	wsumAVX512
)

// wsum4AVX2 adds w[j]·xj[i] for j = 0..3 in turn to acc[i] for i < n; n is a
// multiple of 16 and every pointer addresses at least n elements.
//
//go:noescape
func wsum4AVX2(acc *float64, x0, x1, x2, x3 *float32, w *[4]float64, n int)

// wsum4AVX512 is wsum4AVX2 sixteen elements at a time; n is a multiple of 16.
//
//go:noescape
func wsum4AVX512(acc *float64, x0, x1, x2, x3 *float32, w *[4]float64, n int)

// wsumGroup is the most inputs wmeanAVX512 takes.
const wsumGroup = 16

// wmeanAVX512 is the fused FedAvg kernel: dst[i] = float32(Σ_j w[j]·xj[i] · s)
// with the operations and roundings of WeightedMean, for i < n; n is a
// multiple of 32 and 1 <= k <= wsumGroup.
//
//go:noescape
func wmeanAVX512(dst *float32, xs *[wsumGroup]*float32, w *float64, k int, n int, s float64)

// wmeanAVX2 is wmeanAVX512 for AVX2; n is a multiple of 16.
//
//go:noescape
func wmeanAVX2(dst *float32, xs *[wsumGroup]*float32, w *float64, k int, n int, s float64)

// weightedMeanAsm does as much of WeightedMean over dst[lo:hi] as the
// assembly can (a multiple of 32 or 16 elements from lo, for at most
// wsumGroup inputs) and returns how many.
func weightedMeanAsm(dst []float32, w []float64, xs [][]float32, s float64, lo, hi int) int {
	if wsumPath == wsumGo || len(xs) == 0 || len(xs) > wsumGroup {
		return 0
	}
	v := (hi - lo) &^ 15
	if wsumPath == wsumAVX512 {
		v = (hi - lo) &^ 31
	}
	if v == 0 {
		return 0
	}
	var ptrs [wsumGroup]*float32
	for j, x := range xs {
		ptrs[j] = &x[lo:hi][0]
	}
	if wsumPath == wsumAVX512 {
		wmeanAVX512(&dst[lo:hi][0], &ptrs, &w[0], len(xs), v, s)
	} else {
		wmeanAVX2(&dst[lo:hi][0], &ptrs, &w[0], len(xs), v, s)
	}
	return v
}

func wsum4(acc []float64, x0, x1, x2, x3 []float32, w0, w1, w2, w3 float64) {
	n := len(acc)
	x0, x1, x2, x3 = x0[:n], x1[:n], x2[:n], x3[:n]
	w := [4]float64{w0, w1, w2, w3}
	v := 0
	switch wsumPath {
	case wsumAVX512:
		if v = n &^ 15; v > 0 {
			wsum4AVX512(&acc[0], &x0[0], &x1[0], &x2[0], &x3[0], &w, v)
		}
	case wsumAVX2:
		if v = n &^ 15; v > 0 {
			wsum4AVX2(&acc[0], &x0[0], &x1[0], &x2[0], &x3[0], &w, v)
		}
	}
	if v < n {
		wsum4Go(acc[v:], x0[v:], x1[v:], x2[v:], x3[v:], w0, w1, w2, w3)
	}
}
