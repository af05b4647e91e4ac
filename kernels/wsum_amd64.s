//go:build amd64 && !purego

#include "textflag.h"

// One input's contribution to two accumulators of four float64 each:
// widen eight float32 at off(X) to float64, multiply by the broadcast
// weight W, add to Y0 (elements 0-3) and Y1 (4-7). Multiply and add are
// separate instructions, so each rounds on its own, as Reference does.
#define TERM(X, W) \
	VCVTPS2PD (X)(SI*4), Y2  \
	VCVTPS2PD 16(X)(SI*4), Y3 \
	VMULPD    W, Y2, Y2      \
	VMULPD    W, Y3, Y3      \
	VADDPD    Y2, Y0, Y0     \
	VADDPD    Y3, Y1, Y1

// func wsum4AVX2(acc *float64, x0, x1, x2, x3 *float32, w *[4]float64, n int)
TEXT ·wsum4AVX2(SB), NOSPLIT, $0-56
	MOVQ acc+0(FP), DI
	MOVQ x0+8(FP), R8
	MOVQ x1+16(FP), R9
	MOVQ x2+24(FP), R10
	MOVQ x3+32(FP), R11
	MOVQ w+40(FP), AX
	MOVQ n+48(FP), CX
	VBROADCASTSD 0(AX), Y12
	VBROADCASTSD 8(AX), Y13
	VBROADCASTSD 16(AX), Y14
	VBROADCASTSD 24(AX), Y15
	XORQ SI, SI

loop:
	CMPQ SI, CX
	JGE  done
	VMOVUPD (DI)(SI*8), Y0
	VMOVUPD 32(DI)(SI*8), Y1
	TERM(R8, Y12)
	TERM(R9, Y13)
	TERM(R10, Y14)
	TERM(R11, Y15)
	VMOVUPD Y0, (DI)(SI*8)
	VMOVUPD Y1, 32(DI)(SI*8)
	ADDQ $8, SI
	JMP  loop

done:
	VZEROUPPER
	RET

// The AVX-512 form of TERM: sixteen elements into Z0 (0-7) and Z1 (8-15).
#define TERM512(X, W) \
	VCVTPS2PD (X)(SI*4), Z2   \
	VCVTPS2PD 32(X)(SI*4), Z3 \
	VMULPD    W, Z2, Z2       \
	VMULPD    W, Z3, Z3       \
	VADDPD    Z2, Z0, Z0      \
	VADDPD    Z3, Z1, Z1

// func wsum4AVX512(acc *float64, x0, x1, x2, x3 *float32, w *[4]float64, n int)
TEXT ·wsum4AVX512(SB), NOSPLIT, $0-56
	MOVQ acc+0(FP), DI
	MOVQ x0+8(FP), R8
	MOVQ x1+16(FP), R9
	MOVQ x2+24(FP), R10
	MOVQ x3+32(FP), R11
	MOVQ w+40(FP), AX
	MOVQ n+48(FP), CX
	VBROADCASTSD 0(AX), Z12
	VBROADCASTSD 8(AX), Z13
	VBROADCASTSD 16(AX), Z14
	VBROADCASTSD 24(AX), Z15
	XORQ SI, SI

loop512:
	CMPQ SI, CX
	JGE  done512
	VMOVUPD (DI)(SI*8), Z0
	VMOVUPD 64(DI)(SI*8), Z1
	TERM512(R8, Z12)
	TERM512(R9, Z13)
	TERM512(R10, Z14)
	TERM512(R11, Z15)
	VMOVUPD Z0, (DI)(SI*8)
	VMOVUPD Z1, 64(DI)(SI*8)
	ADDQ $16, SI
	JMP  loop512

done512:
	VZEROUPPER
	RET
