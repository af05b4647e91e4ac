//go:build !amd64 || purego

package engine

// Without the assembly (another architecture, or build tag purego) the
// …Vec functions of vec.go run their pure-Go twins (lanes.go); these stubs
// are never called.

func maxAVX2(x *float32, n int) float32                                            { panic(noAsm) }
func scaleAVX2(x *float32, n int, s float32)                                       { panic(noAsm) }
func mulScaleAVX2(y, x, w *float32, n int, s float32)                              { panic(noAsm) }
func dotF64AVX2(a, b *float32, n int) float64                                      { panic(noAsm) }
func dot3F64AVX2(a, b, c *float32, n int) float64                                  { panic(noAsm) }
func rmsBackRowAVX2(dx, dy, w, x *float32, n int, s, k float64)                    { panic(noAsm) }
func softmaxBackRowAVX2(ds, p, dp *float32, n int, dot float64)                    { panic(noAsm) }
func dotAVX2(a, b *float32, n int) float32                                         { panic(noAsm) }
func axpyAVX2(y, x *float32, n int, a float32)                                     { panic(noAsm) }
func expSumAVX2(dst, src *float32, n int, m float32) float64                       { panic(noAsm) }
func swigluAVX2(act, gate, u *float32, n int)                                      { panic(noAsm) }
func swigluBackAVX2(dg, du, dact, gate, u *float32, n int)                         { panic(noAsm) }
func sgemmRow16(k int, a *float32, rp int, b, c *float32, alpha float32, add bool) { panic(noAsm) }
func sgemmRow64(k int, a *float32, rp int, b *float32, ps int, c *float32, alpha float32, add bool) {
	panic(noAsm)
}

// noAsm is the stubs' panic: reaching one is a bug (haveAVX2 is false).
const noAsm = "engine: no assembly in this build"
