//go:build !amd64 || purego

package kernels

// wsum4 is the pure-Go loop where there is no assembly.
func wsum4(acc []float64, x0, x1, x2, x3 []float32, w0, w1, w2, w3 float64) {
	wsum4Go(acc, x0, x1, x2, x3, w0, w1, w2, w3)
}

// weightedMeanAsm has no assembly to run here.
func weightedMeanAsm(dst []float32, w []float64, xs [][]float32, s float64, lo, hi int) int {
	return 0
}
