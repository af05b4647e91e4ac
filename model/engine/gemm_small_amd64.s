//go:build amd64 && !purego

#include "textflag.h"

// Micro-kernels for the few rows of a product short of a whole tile of
// sgemmKernel12x16 or sgemmKernel6x16 (a decoding step's rows): the same
// contract as those (gemm_amd64.s), each C[i][j] the same chain of fused
// multiply-adds in p order from zero, then one fused multiply-add into C
// (or one product), so a row's results do not depend on the kernel that
// computed it.

// func sgemmKernel8x16(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool)
//
// sgemmKernel12x16 for 8 rows (AVX-512): the same chains of fused
// multiply-adds, so the same results, for the rows of a product short of a
// 12-row tile (a decoding step's few rows) without padding them.
TEXT ·sgemmKernel8x16(SB), NOSPLIT, $0-61
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
	VPXORD       Z4, Z4, Z4
	VPXORD       Z5, Z5, Z5
	VPXORD       Z6, Z6, Z6
	VPXORD       Z7, Z7, Z7
	VPXORD       Z8, Z8, Z8
	VPXORD       Z9, Z9, Z9
	VPXORD       Z10, Z10, Z10
	VPXORD       Z11, Z11, Z11
	TESTQ        CX, CX
	JZ           k8_store

k8_loop:
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
	ADDQ         R11, SI
	ADDQ         R11, R10
	ADDQ         R11, R12
	ADDQ         $64, DX
	DECQ         CX
	JNZ          k8_loop

k8_store:
	VBROADCASTSS alpha+56(FP), Z0
	MOVBLZX      add+60(FP), AX
	TESTL        AX, AX
	JZ           k8_set
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
	VZEROUPPER
	RET

k8_set:
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
	VZEROUPPER
	RET

// func sgemmKernel4x16(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool)
//
// sgemmKernel12x16 for 4 rows (AVX-512).
TEXT ·sgemmKernel4x16(SB), NOSPLIT, $0-61
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
	VPXORD       Z4, Z4, Z4
	VPXORD       Z5, Z5, Z5
	VPXORD       Z6, Z6, Z6
	VPXORD       Z7, Z7, Z7
	TESTQ        CX, CX
	JZ           k4_store

k4_loop:
	VMOVUPS      (DX), Z0
	VBROADCASTSS (SI), Z16
	VFMADD231PS  Z0, Z16, Z4
	VBROADCASTSS (SI)(R9*1), Z17
	VFMADD231PS  Z0, Z17, Z5
	VBROADCASTSS (SI)(R9*2), Z18
	VFMADD231PS  Z0, Z18, Z6
	VBROADCASTSS (R10), Z19
	VFMADD231PS  Z0, Z19, Z7
	ADDQ         R11, SI
	ADDQ         R11, R10
	ADDQ         $64, DX
	DECQ         CX
	JNZ          k4_loop

k4_store:
	VBROADCASTSS alpha+56(FP), Z0
	MOVBLZX      add+60(FP), AX
	TESTL        AX, AX
	JZ           k4_set
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
	VZEROUPPER
	RET

k4_set:
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
	VZEROUPPER
	RET

// func sgemmKernel4x16AVX2(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool)
//
// sgemmKernel6x16 for 4 rows (AVX2): the same chains of fused
// multiply-adds, so the same results.
TEXT ·sgemmKernel4x16AVX2(SB), NOSPLIT, $0-61
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
	TESTQ        CX, CX
	JZ           k4y_store

k4y_loop:
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
	ADDQ         R11, SI
	ADDQ         R11, R10
	ADDQ         $64, DX
	DECQ         CX
	JNZ          k4y_loop

k4y_store:
	VBROADCASTSS alpha+56(FP), Y0
	MOVBLZX      add+60(FP), AX
	TESTL        AX, AX
	JZ           k4y_set
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
	VZEROUPPER
	RET

k4y_set:
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
	VZEROUPPER
	RET
