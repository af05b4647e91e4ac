//go:build amd64 && !purego

#include "textflag.h"

// func sgemmKernel6x16(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool)
//
// The micro-kernel of sgemmVec: with A's 6×k panel at a (element (i, p) at
// a + i·ri + p·rp bytes: packed, or read in place from op(A) of either
// layout) and b a packed k×16 panel of op(B) (16 values per step), it sets
// C[i][j] += alpha·Σ_p A[i][p]·b[p][j] for the 6×16 tile at c (row stride
// ldc elements), or C[i][j] = alpha·Σ… without reading C unless add. Each
// sum is one chain of fused multiply-adds in p order, then one fused
// multiply-add into C (or one product).
TEXT ·sgemmKernel6x16(SB), NOSPLIT, $0-61
	MOVQ         k+0(FP), CX
	MOVQ         a+8(FP), SI
	MOVQ         ri+16(FP), R9
	MOVQ         rp+24(FP), R11
	MOVQ         b+32(FP), DX
	MOVQ         c+40(FP), DI
	MOVQ         ldc+48(FP), R8
	SHLQ         $2, R8
	LEAQ         (SI)(R9*2), R10
	ADDQ         R9, R10
	VXORPS       Y4, Y4, Y4
	VXORPS       Y5, Y5, Y5
	VXORPS       Y6, Y6, Y6
	VXORPS       Y7, Y7, Y7
	VXORPS       Y8, Y8, Y8
	VXORPS       Y9, Y9, Y9
	VXORPS       Y10, Y10, Y10
	VXORPS       Y11, Y11, Y11
	VXORPS       Y12, Y12, Y12
	VXORPS       Y13, Y13, Y13
	VXORPS       Y14, Y14, Y14
	VXORPS       Y15, Y15, Y15
	TESTQ        CX, CX
	JZ           kernel_store

kernel_loop:
	VMOVUPS      (DX), Y0
	VMOVUPS      32(DX), Y1
	VBROADCASTSS (SI), Y2
	VFMADD231PS  Y0, Y2, Y4
	VFMADD231PS  Y1, Y2, Y5
	VBROADCASTSS (SI)(R9*1), Y3
	VFMADD231PS  Y0, Y3, Y6
	VFMADD231PS  Y1, Y3, Y7
	VBROADCASTSS (SI)(R9*2), Y2
	VFMADD231PS  Y0, Y2, Y8
	VFMADD231PS  Y1, Y2, Y9
	VBROADCASTSS (R10), Y3
	VFMADD231PS  Y0, Y3, Y10
	VFMADD231PS  Y1, Y3, Y11
	VBROADCASTSS (R10)(R9*1), Y2
	VFMADD231PS  Y0, Y2, Y12
	VFMADD231PS  Y1, Y2, Y13
	VBROADCASTSS (R10)(R9*2), Y3
	VFMADD231PS  Y0, Y3, Y14
	VFMADD231PS  Y1, Y3, Y15
	ADDQ         R11, SI
	ADDQ         R11, R10
	ADDQ         $64, DX
	DECQ         CX
	JNZ          kernel_loop

kernel_store:
	VBROADCASTSS alpha+56(FP), Y0
	MOVBLZX      add+60(FP), AX
	TESTL        AX, AX
	JZ           kernel_set
	VMOVUPS      (DI), Y1
	VFMADD231PS  Y4, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMOVUPS      32(DI), Y1
	VFMADD231PS  Y5, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Y1
	VFMADD231PS  Y6, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMOVUPS      32(DI), Y1
	VFMADD231PS  Y7, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Y1
	VFMADD231PS  Y8, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMOVUPS      32(DI), Y1
	VFMADD231PS  Y9, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Y1
	VFMADD231PS  Y10, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMOVUPS      32(DI), Y1
	VFMADD231PS  Y11, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Y1
	VFMADD231PS  Y12, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMOVUPS      32(DI), Y1
	VFMADD231PS  Y13, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Y1
	VFMADD231PS  Y14, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMOVUPS      32(DI), Y1
	VFMADD231PS  Y15, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	VZEROUPPER
	RET

kernel_set:
	VMULPS       Y4, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMULPS       Y5, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	ADDQ         R8, DI
	VMULPS       Y6, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMULPS       Y7, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	ADDQ         R8, DI
	VMULPS       Y8, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMULPS       Y9, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	ADDQ         R8, DI
	VMULPS       Y10, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMULPS       Y11, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	ADDQ         R8, DI
	VMULPS       Y12, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMULPS       Y13, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	ADDQ         R8, DI
	VMULPS       Y14, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMULPS       Y15, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	VZEROUPPER
	RET

// func sgemmKernel12x16(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool)
//
// sgemmKernel6x16 for AVX-512: a 12×16 tile, one 16-lane register per row
// (the same chains of fused multiply-adds, so the same results).
TEXT ·sgemmKernel12x16(SB), NOSPLIT, $0-61
	MOVQ         k+0(FP), CX
	MOVQ         a+8(FP), SI
	MOVQ         ri+16(FP), R9
	MOVQ         rp+24(FP), R11
	MOVQ         b+32(FP), DX
	MOVQ         c+40(FP), DI
	MOVQ         ldc+48(FP), R8
	SHLQ         $2, R8
	LEAQ         (SI)(R9*2), R10
	ADDQ         R9, R10
	LEAQ         (R10)(R9*2), R12
	ADDQ         R9, R12
	LEAQ         (R12)(R9*2), R13
	ADDQ         R9, R13
	VPXORD       Z4, Z4, Z4
	VPXORD       Z5, Z5, Z5
	VPXORD       Z6, Z6, Z6
	VPXORD       Z7, Z7, Z7
	VPXORD       Z8, Z8, Z8
	VPXORD       Z9, Z9, Z9
	VPXORD       Z10, Z10, Z10
	VPXORD       Z11, Z11, Z11
	VPXORD       Z12, Z12, Z12
	VPXORD       Z13, Z13, Z13
	VPXORD       Z14, Z14, Z14
	VPXORD       Z15, Z15, Z15
	TESTQ        CX, CX
	JZ           kernel12_store

kernel12_loop:
	VMOVUPS      (DX), Z0
	VBROADCASTSS (SI), Z16
	VFMADD231PS  Z0, Z16, Z4
	VBROADCASTSS (SI)(R9*1), Z17
	VFMADD231PS  Z0, Z17, Z5
	VBROADCASTSS (SI)(R9*2), Z18
	VFMADD231PS  Z0, Z18, Z6
	VBROADCASTSS (R10), Z19
	VFMADD231PS  Z0, Z19, Z7
	VBROADCASTSS (R10)(R9*1), Z20
	VFMADD231PS  Z0, Z20, Z8
	VBROADCASTSS (R10)(R9*2), Z21
	VFMADD231PS  Z0, Z21, Z9
	VBROADCASTSS (R12), Z22
	VFMADD231PS  Z0, Z22, Z10
	VBROADCASTSS (R12)(R9*1), Z23
	VFMADD231PS  Z0, Z23, Z11
	VBROADCASTSS (R12)(R9*2), Z24
	VFMADD231PS  Z0, Z24, Z12
	VBROADCASTSS (R13), Z25
	VFMADD231PS  Z0, Z25, Z13
	VBROADCASTSS (R13)(R9*1), Z26
	VFMADD231PS  Z0, Z26, Z14
	VBROADCASTSS (R13)(R9*2), Z27
	VFMADD231PS  Z0, Z27, Z15
	ADDQ         R11, SI
	ADDQ         R11, R10
	ADDQ         R11, R12
	ADDQ         R11, R13
	ADDQ         $64, DX
	DECQ         CX
	JNZ          kernel12_loop

kernel12_store:
	VBROADCASTSS alpha+56(FP), Z0
	MOVBLZX      add+60(FP), AX
	TESTL        AX, AX
	JZ           kernel12_set
	VMOVUPS      (DI), Z1
	VFMADD231PS  Z4, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Z1
	VFMADD231PS  Z5, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Z1
	VFMADD231PS  Z6, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Z1
	VFMADD231PS  Z7, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Z1
	VFMADD231PS  Z8, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Z1
	VFMADD231PS  Z9, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Z1
	VFMADD231PS  Z10, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Z1
	VFMADD231PS  Z11, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Z1
	VFMADD231PS  Z12, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Z1
	VFMADD231PS  Z13, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Z1
	VFMADD231PS  Z14, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMOVUPS      (DI), Z1
	VFMADD231PS  Z15, Z0, Z1
	VMOVUPS      Z1, (DI)
	VZEROUPPER
	RET

kernel12_set:
	VMULPS       Z4, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMULPS       Z5, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMULPS       Z6, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMULPS       Z7, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMULPS       Z8, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMULPS       Z9, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMULPS       Z10, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMULPS       Z11, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMULPS       Z12, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMULPS       Z13, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMULPS       Z14, Z0, Z1
	VMOVUPS      Z1, (DI)
	ADDQ         R8, DI
	VMULPS       Z15, Z0, Z1
	VMOVUPS      Z1, (DI)
	VZEROUPPER
	RET

// func sgemmRow16(k int, a *float32, rp int, b, c *float32, alpha float32, add bool)
//
// One row of sgemmKernel6x16: C[j] += alpha·Σ_p A[p]·b[p][j] (or = without
// reading C unless add) for j < 16, A[p] at a + p·rp bytes.
TEXT ·sgemmRow16(SB), NOSPLIT, $0-45
	MOVQ         k+0(FP), CX
	MOVQ         a+8(FP), SI
	MOVQ         rp+16(FP), R11
	MOVQ         b+24(FP), DX
	MOVQ         c+32(FP), DI
	VXORPS       Y4, Y4, Y4
	VXORPS       Y5, Y5, Y5
	TESTQ        CX, CX
	JZ           row16_store

row16_loop:
	VBROADCASTSS (SI), Y2
	VFMADD231PS  (DX), Y2, Y4
	VFMADD231PS  32(DX), Y2, Y5
	ADDQ         R11, SI
	ADDQ         $64, DX
	DECQ         CX
	JNZ          row16_loop

row16_store:
	VBROADCASTSS alpha+40(FP), Y0
	MOVBLZX      add+44(FP), AX
	TESTL        AX, AX
	JZ           row16_set
	VMOVUPS      (DI), Y1
	VFMADD231PS  Y4, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMOVUPS      32(DI), Y1
	VFMADD231PS  Y5, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	VZEROUPPER
	RET

row16_set:
	VMULPS       Y4, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMULPS       Y5, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	VZEROUPPER
	RET

// func sgemmRow64(k int, a *float32, rp int, b *float32, ps int, c *float32, alpha float32, add bool)
//
// sgemmRow16 on four panels at b, b+ps, b+2ps, b+3ps (bytes) into C[0:64].
TEXT ·sgemmRow64(SB), NOSPLIT, $0-53
	MOVQ         k+0(FP), CX
	MOVQ         a+8(FP), SI
	MOVQ         rp+16(FP), R11
	MOVQ         b+24(FP), DX
	MOVQ         ps+32(FP), R12
	MOVQ         c+40(FP), DI
	LEAQ         (DX)(R12*1), R8
	LEAQ         (R8)(R12*1), R9
	LEAQ         (R9)(R12*1), R10
	VXORPS       Y4, Y4, Y4
	VXORPS       Y5, Y5, Y5
	VXORPS       Y6, Y6, Y6
	VXORPS       Y7, Y7, Y7
	VXORPS       Y8, Y8, Y8
	VXORPS       Y9, Y9, Y9
	VXORPS       Y10, Y10, Y10
	VXORPS       Y11, Y11, Y11
	TESTQ        CX, CX
	JZ           row64_store

row64_loop:
	VBROADCASTSS (SI), Y2
	VFMADD231PS  (DX), Y2, Y4
	VFMADD231PS  32(DX), Y2, Y5
	VFMADD231PS  (R8), Y2, Y6
	VFMADD231PS  32(R8), Y2, Y7
	VFMADD231PS  (R9), Y2, Y8
	VFMADD231PS  32(R9), Y2, Y9
	VFMADD231PS  (R10), Y2, Y10
	VFMADD231PS  32(R10), Y2, Y11
	ADDQ         R11, SI
	ADDQ         $64, DX
	ADDQ         $64, R8
	ADDQ         $64, R9
	ADDQ         $64, R10
	DECQ         CX
	JNZ          row64_loop

row64_store:
	VBROADCASTSS alpha+48(FP), Y0
	MOVBLZX      add+52(FP), AX
	TESTL        AX, AX
	JZ           row64_set
	VMOVUPS      (DI), Y1
	VFMADD231PS  Y4, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMOVUPS      32(DI), Y1
	VFMADD231PS  Y5, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	VMOVUPS      64(DI), Y1
	VFMADD231PS  Y6, Y0, Y1
	VMOVUPS      Y1, 64(DI)
	VMOVUPS      96(DI), Y1
	VFMADD231PS  Y7, Y0, Y1
	VMOVUPS      Y1, 96(DI)
	VMOVUPS      128(DI), Y1
	VFMADD231PS  Y8, Y0, Y1
	VMOVUPS      Y1, 128(DI)
	VMOVUPS      160(DI), Y1
	VFMADD231PS  Y9, Y0, Y1
	VMOVUPS      Y1, 160(DI)
	VMOVUPS      192(DI), Y1
	VFMADD231PS  Y10, Y0, Y1
	VMOVUPS      Y1, 192(DI)
	VMOVUPS      224(DI), Y1
	VFMADD231PS  Y11, Y0, Y1
	VMOVUPS      Y1, 224(DI)
	VZEROUPPER
	RET

row64_set:
	VMULPS       Y4, Y0, Y1
	VMOVUPS      Y1, (DI)
	VMULPS       Y5, Y0, Y1
	VMOVUPS      Y1, 32(DI)
	VMULPS       Y6, Y0, Y1
	VMOVUPS      Y1, 64(DI)
	VMULPS       Y7, Y0, Y1
	VMOVUPS      Y1, 96(DI)
	VMULPS       Y8, Y0, Y1
	VMOVUPS      Y1, 128(DI)
	VMULPS       Y9, Y0, Y1
	VMOVUPS      Y1, 160(DI)
	VMULPS       Y10, Y0, Y1
	VMOVUPS      Y1, 192(DI)
	VMULPS       Y11, Y0, Y1
	VMOVUPS      Y1, 224(DI)
	VZEROUPPER
	RET
