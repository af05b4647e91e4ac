//go:build amd64 && !purego

package engine

import "golang.org/x/sys/cpu"

// sgemmKernel6x16 is sgemmVec's micro-kernel (gemm_amd64.s): C[i][j] +=
// alpha·Σ_p A[i][p]·b[p·16+j] for i < 6, j < 16, A[i][p] being the float32
// i·ri + p·rp bytes after a, C at c with row stride ldc (or C[i][j] =
// alpha·Σ…, not reading C, unless add); k ≥ 0.
//
//go:noescape
func sgemmKernel6x16(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool)

// sgemmKernel12x16 is sgemmKernel6x16 for 12 rows, with AVX-512.
//
//go:noescape
func sgemmKernel12x16(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool)

// sgemmKernel8x16 is sgemmKernel12x16 for 8 rows (gemm_small_amd64.s).
//
//go:noescape
func sgemmKernel8x16(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool)

// sgemmKernel4x16 is sgemmKernel12x16 for 4 rows.
//
//go:noescape
func sgemmKernel4x16(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool)

// sgemmKernel4x16AVX2 is sgemmKernel6x16 for 4 rows.
//
//go:noescape
func sgemmKernel4x16AVX2(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool)

// sgemmRow16 is sgemmKernel6x16 for one row of A (element p at a + p·rp
// bytes) and one 16-wide panel b: C[j] (+)= alpha·Σ_p A[p]·b[p·16+j], each
// sum the same chain of fused multiply-adds, so the same result. AVX2.
//
//go:noescape
func sgemmRow16(k int, a *float32, rp int, b, c *float32, alpha float32, add bool)

// sgemmRow64 is sgemmRow16 on four panels, ps bytes apart, into C[0:64].
//
//go:noescape
func sgemmRow64(k int, a *float32, rp int, b *float32, ps int, c *float32, alpha float32, add bool)

// bestISA is the most this CPU offers.
func bestISA() string {
	switch {
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasAVX512F:
		return isaAVX512
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return isaAVX2
	}
	return isaGeneric
}

// kernelFor is the micro-kernel of an instruction set.
func kernelFor(isa string) gemmMicro {
	switch isa {
	case isaAVX512:
		return gemmMicro{fn: sgemmKernel12x16, mr: 12, fn8: sgemmKernel8x16, fn4: sgemmKernel4x16}
	case isaAVX2:
		return gemmMicro{fn: sgemmKernel6x16, mr: 6, fn4: sgemmKernel4x16AVX2}
	}
	return genericKernel()
}
