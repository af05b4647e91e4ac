//go:build amd64 && !purego

package engine

// expSumAVX2 sets dst[i] = e^(src[i]−m) for i < n (a multiple of 8; dst
// may be src) and returns their sum in float64 (lanes summed in a fixed
// order).
//
//go:noescape
func expSumAVX2(dst, src *float32, n int, m float32) float64

// swigluAVX2 sets act[i] = g[i]·σ(g[i])·u[i] for i < n, a multiple of 8.
//
//go:noescape
func swigluAVX2(act, gate, u *float32, n int)

// swigluBackAVX2 is SwiGLUBackward's loop for i < n, a multiple of 8.
//
//go:noescape
func swigluBackAVX2(dg, du, dact, gate, u *float32, n int)
