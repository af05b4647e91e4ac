//go:build !amd64 || purego

package engine

// haveAVX2 is false off amd64: the Host uses its pure-Go loops.
var haveAVX2 = false

func expSum(dst, src []float32, m float32) (int, float64) { return 0, 0 }

func swigluVec(act, g, u []float32) int { return 0 }

func swigluBackVec(dg, du, dact, g, u []float32) int { return 0 }
