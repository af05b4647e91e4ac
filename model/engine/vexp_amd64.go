//go:build amd64 && !purego

package engine

import "golang.org/x/sys/cpu"

// haveAVX2 selects the assembly loops of vexp_amd64.s. Tests switch it off
// to cover the pure-Go loops.
var haveAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

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

// expSum sets dst[i] = e^(src[i]−m) for a prefix of src whose length is a
// multiple of 8 and returns that length and the prefix's sum (float64);
// the caller does the rest. dst may be src.
func expSum(dst, src []float32, m float32) (int, float64) {
	n := len(src) &^ 7
	if !haveAVX2 || n == 0 {
		return 0, 0
	}
	_ = dst[n-1] // index checks: the assembly reads n elements of each
	return n, expSumAVX2(&dst[0], &src[0], n, m)
}

// swigluVec does SwiGLU for a prefix of g (a multiple of 8 elements) and
// returns its length.
func swigluVec(act, g, u []float32) int {
	n := len(g) &^ 7
	if !haveAVX2 || n == 0 {
		return 0
	}
	_, _ = act[n-1], u[n-1] // index checks: the assembly reads n elements of each
	swigluAVX2(&act[0], &g[0], &u[0], n)
	return n
}

// swigluBackVec does SwiGLUBackward for a prefix of g (a multiple of 8
// elements) and returns its length.
func swigluBackVec(dg, du, dact, g, u []float32) int {
	n := len(g) &^ 7
	if !haveAVX2 || n == 0 {
		return 0
	}
	_, _, _, _ = dg[n-1], du[n-1], dact[n-1], u[n-1] // index checks: the assembly reads n elements of each
	swigluBackAVX2(&dg[0], &du[0], &dact[0], &g[0], &u[0], n)
	return n
}
