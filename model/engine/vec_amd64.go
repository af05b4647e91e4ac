//go:build amd64 && !purego

package engine

// The assembly loops of vec_amd64.s; n is a positive multiple of 8.

//go:noescape
func maxAVX2(x *float32, n int) float32

//go:noescape
func scaleAVX2(x *float32, n int, s float32)

//go:noescape
func mulScaleAVX2(y, x, w *float32, n int, s float32)

//go:noescape
func dotF64AVX2(a, b *float32, n int) float64

//go:noescape
func dot3F64AVX2(a, b, c *float32, n int) float64

//go:noescape
func rmsBackRowAVX2(dx, dy, w, x *float32, n int, s, k float64)

//go:noescape
func softmaxBackRowAVX2(ds, p, dp *float32, n int, dot float64)

//go:noescape
func dotAVX2(a, b *float32, n int) float32

//go:noescape
func axpyAVX2(y, x *float32, n int, a float32)
