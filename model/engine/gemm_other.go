//go:build !amd64 || purego

package engine

// gemmKernel is never called off amd64 (haveAVX2 is false there).
var gemmKernel = gemmMicro{func(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool) {
	panic("engine: no sgemm kernel on this architecture")
}, 6}

// gemmKernels lists the micro-kernels this CPU can run: none.
func gemmKernels() []gemmMicro { return nil }

// sgemmRow16 and sgemmRow64 are never called off amd64.
func sgemmRow16(k int, a *float32, rp int, b, c *float32, alpha float32, add bool) {
	panic("engine: no sgemm kernel on this architecture")
}

func sgemmRow64(k int, a *float32, rp int, b *float32, ps int, c *float32, alpha float32, add bool) {
	panic("engine: no sgemm kernel on this architecture")
}
