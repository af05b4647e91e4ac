//go:build !amd64 || purego

package engine

// gemmKernel is never called off amd64 (haveAVX2 is false there).
var gemmKernel = gemmMicro{func(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool) {
	panic("engine: no sgemm kernel on this architecture")
}, 6}

// gemmKernels lists the micro-kernels this CPU can run: none.
func gemmKernels() []gemmMicro { return nil }
