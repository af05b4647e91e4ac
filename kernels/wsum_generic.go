//go:build !amd64 || purego

package kernels

const wsumGo = 0

// wsumPath has only the pure-Go loop to choose from here.
var wsumPath = wsumGo

func wsum4(acc []float64, x0, x1, x2, x3 []float32, w0, w1, w2, w3 float64) {
	wsum4Go(acc, x0, x1, x2, x3, w0, w1, w2, w3)
}
