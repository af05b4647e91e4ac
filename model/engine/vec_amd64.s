//go:build amd64 && !purego

#include "textflag.h"

// AVX2 loops of the Host's row operations (softmax, cross-entropy,
// RMSNorm), eight float32 elements per iteration; n is a positive multiple
// of 8 (maxAVX2: at least 8). Sums in float64 keep four lanes in each of two
// accumulators and add them in a fixed order at the end.

// func maxAVX2(x *float32, n int) float32
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	VMOVUPS      (SI), Y0
	VCMPPS       $3, Y0, Y0, Y2
	MOVQ         $8, AX

max_loop:
	CMPQ         AX, CX
	JGE          max_done
	VMOVUPS      (SI)(AX*4), Y1
	VMAXPS       Y1, Y0, Y0
	VCMPPS       $3, Y1, Y1, Y3
	VORPS        Y3, Y2, Y2
	ADDQ         $8, AX
	JMP          max_loop

max_done:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS       X1, X0, X0
	VPERMILPS    $0x4e, X0, X1
	VMAXPS       X1, X0, X0
	VPERMILPS    $0xb1, X0, X1
	VMAXPS       X1, X0, X0
	VMOVMSKPS    Y2, AX
	TESTL        AX, AX
	JZ           max_ret
	MOVL         $0x7fc00000, AX
	MOVL         AX, ret+16(FP)
	VZEROUPPER
	RET

max_ret:
	VMOVSS       X0, ret+16(FP)
	VZEROUPPER
	RET

// func scaleAVX2(x *float32, n int, s float32)
TEXT ·scaleAVX2(SB), NOSPLIT, $0-20
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	VBROADCASTSS s+16(FP), Y0
	XORQ         AX, AX

scale_loop:
	CMPQ         AX, CX
	JGE          scale_done
	VMULPS       (SI)(AX*4), Y0, Y1
	VMOVUPS      Y1, (SI)(AX*4)
	ADDQ         $8, AX
	JMP          scale_loop

scale_done:
	VZEROUPPER
	RET

// func mulScaleAVX2(y, x, w *float32, n int, s float32)
TEXT ·mulScaleAVX2(SB), NOSPLIT, $0-36
	MOVQ         y+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         w+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSS s+32(FP), Y0
	XORQ         AX, AX

mulscale_loop:
	CMPQ         AX, CX
	JGE          mulscale_done
	VMULPS       (SI)(AX*4), Y0, Y1
	VMULPS       (DX)(AX*4), Y1, Y1
	VMOVUPS      Y1, (DI)(AX*4)
	ADDQ         $8, AX
	JMP          mulscale_loop

mulscale_done:
	VZEROUPPER
	RET

// func dotF64AVX2(a, b *float32, n int) float64
TEXT ·dotF64AVX2(SB), NOSPLIT, $0-32
	MOVQ         a+0(FP), SI
	MOVQ         b+8(FP), DX
	MOVQ         n+16(FP), CX
	VXORPD       Y0, Y0, Y0
	VXORPD       Y1, Y1, Y1
	XORQ         AX, AX

dot_loop:
	CMPQ         AX, CX
	JGE          dot_done
	VCVTPS2PD    (SI)(AX*4), Y2
	VCVTPS2PD    16(SI)(AX*4), Y3
	VCVTPS2PD    (DX)(AX*4), Y4
	VCVTPS2PD    16(DX)(AX*4), Y5
	VFMADD231PD  Y4, Y2, Y0
	VFMADD231PD  Y5, Y3, Y1
	ADDQ         $8, AX
	JMP          dot_loop

dot_done:
	VADDPD       Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPD       X1, X0, X0
	VHADDPD      X0, X0, X0
	VMOVSD       X0, ret+24(FP)
	VZEROUPPER
	RET

// func dot3F64AVX2(a, b, c *float32, n int) float64
TEXT ·dot3F64AVX2(SB), NOSPLIT, $0-40
	MOVQ         a+0(FP), SI
	MOVQ         b+8(FP), DX
	MOVQ         c+16(FP), R8
	MOVQ         n+24(FP), CX
	VXORPD       Y0, Y0, Y0
	VXORPD       Y1, Y1, Y1
	XORQ         AX, AX

dot3_loop:
	CMPQ         AX, CX
	JGE          dot3_done
	VCVTPS2PD    (SI)(AX*4), Y2
	VCVTPS2PD    16(SI)(AX*4), Y3
	VCVTPS2PD    (DX)(AX*4), Y4
	VCVTPS2PD    16(DX)(AX*4), Y5
	VMULPD       Y4, Y2, Y2
	VMULPD       Y5, Y3, Y3
	VCVTPS2PD    (R8)(AX*4), Y4
	VCVTPS2PD    16(R8)(AX*4), Y5
	VFMADD231PD  Y4, Y2, Y0
	VFMADD231PD  Y5, Y3, Y1
	ADDQ         $8, AX
	JMP          dot3_loop

dot3_done:
	VADDPD       Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPD       X1, X0, X0
	VHADDPD      X0, X0, X0
	VMOVSD       X0, ret+32(FP)
	VZEROUPPER
	RET

// func rmsBackRowAVX2(dx, dy, w, x *float32, n int, s, k float64)
//
// dx[j] += float32(s·(dy[j]·w[j] − x[j]·k)), in float64.
TEXT ·rmsBackRowAVX2(SB), NOSPLIT, $0-56
	MOVQ         dx+0(FP), DI
	MOVQ         dy+8(FP), SI
	MOVQ         w+16(FP), DX
	MOVQ         x+24(FP), R8
	MOVQ         n+32(FP), CX
	VBROADCASTSD s+40(FP), Y14
	VBROADCASTSD k+48(FP), Y15
	XORQ         AX, AX

rmsback_loop:
	CMPQ         AX, CX
	JGE          rmsback_done
	VCVTPS2PD    (SI)(AX*4), Y0
	VCVTPS2PD    16(SI)(AX*4), Y1
	VCVTPS2PD    (DX)(AX*4), Y2
	VCVTPS2PD    16(DX)(AX*4), Y3
	VMULPD       Y2, Y0, Y0
	VMULPD       Y3, Y1, Y1
	VCVTPS2PD    (R8)(AX*4), Y2
	VCVTPS2PD    16(R8)(AX*4), Y3
	VMULPD       Y15, Y2, Y2
	VMULPD       Y15, Y3, Y3
	VSUBPD       Y2, Y0, Y0
	VSUBPD       Y3, Y1, Y1
	VMULPD       Y14, Y0, Y0
	VMULPD       Y14, Y1, Y1
	VCVTPD2PSY   Y0, X0
	VCVTPD2PSY   Y1, X1
	VINSERTF128  $1, X1, Y0, Y0
	VADDPS       (DI)(AX*4), Y0, Y0
	VMOVUPS      Y0, (DI)(AX*4)
	ADDQ         $8, AX
	JMP          rmsback_loop

rmsback_done:
	VZEROUPPER
	RET

// func softmaxBackRowAVX2(ds, p, dp *float32, n int, dot float64)
//
// ds[j] = float32(p[j]·(dp[j] − dot)), in float64; ds may be dp.
TEXT ·softmaxBackRowAVX2(SB), NOSPLIT, $0-40
	MOVQ         ds+0(FP), DI
	MOVQ         p+8(FP), SI
	MOVQ         dp+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSD dot+32(FP), Y15
	XORQ         AX, AX

smback_loop:
	CMPQ         AX, CX
	JGE          smback_done
	VCVTPS2PD    (DX)(AX*4), Y0
	VCVTPS2PD    16(DX)(AX*4), Y1
	VSUBPD       Y15, Y0, Y0
	VSUBPD       Y15, Y1, Y1
	VCVTPS2PD    (SI)(AX*4), Y2
	VCVTPS2PD    16(SI)(AX*4), Y3
	VMULPD       Y2, Y0, Y0
	VMULPD       Y3, Y1, Y1
	VCVTPD2PSY   Y0, X0
	VCVTPD2PSY   Y1, X1
	VINSERTF128  $1, X1, Y0, Y0
	VMOVUPS      Y0, (DI)(AX*4)
	ADDQ         $8, AX
	JMP          smback_loop

smback_done:
	VZEROUPPER
	RET

// func dotAVX2(a, b *float32, n int) float32
//
// Σ a[i]·b[i] in float32: one chain of fused multiply-adds per lane, the
// lanes then added in a fixed order.
TEXT ·dotAVX2(SB), NOSPLIT, $0-28
	MOVQ         a+0(FP), SI
	MOVQ         b+8(FP), DX
	MOVQ         n+16(FP), CX
	VXORPS       Y0, Y0, Y0
	XORQ         AX, AX

dot_loop:
	VMOVUPS      (SI)(AX*4), Y1
	VFMADD231PS  (DX)(AX*4), Y1, Y0
	ADDQ         $8, AX
	CMPQ         AX, CX
	JLT          dot_loop
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VPERMILPS    $0x4e, X0, X1
	VADDPS       X1, X0, X0
	VPERMILPS    $0xb1, X0, X1
	VADDPS       X1, X0, X0
	MOVSS        X0, ret+24(FP)
	VZEROUPPER
	RET

// func axpyAVX2(y, x *float32, n int, a float32)
//
// y[i] += a·x[i] (one fused multiply-add each).
TEXT ·axpyAVX2(SB), NOSPLIT, $0-28
	MOVQ         y+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS a+24(FP), Y0
	XORQ         AX, AX

axpy_loop:
	VMOVUPS      (DI)(AX*4), Y1
	VFMADD231PS  (SI)(AX*4), Y0, Y1
	VMOVUPS      Y1, (DI)(AX*4)
	ADDQ         $8, AX
	CMPQ         AX, CX
	JLT          axpy_loop
	VZEROUPPER
	RET
