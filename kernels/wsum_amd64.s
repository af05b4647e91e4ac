//go:build amd64 && !purego

#include "textflag.h"

// Both kernels add four weighted inputs into a run of float64 accumulators,
// sixteen elements per iteration. For each input in turn they widen its
// float32 values to float64, multiply by the broadcast weight and add to the
// accumulators: VMULPD then VADDPD, two roundings, never a fused
// multiply-add, so the bits equal Go's acc += float64(w*float64(x)). Every
// input stream is prefetched PF bytes ahead (one cache line per stream per
// iteration): with many streams the hardware prefetcher alone falls behind.
#define PF 1024

// TERM2 adds one input (pointer X, weight W) to Y0-Y3 (elements 0-15).
#define TERM2(X, W) \
	PREFETCHT0 PF(X)(SI*4)   \
	VCVTPS2PD (X)(SI*4), Y4  \
	VCVTPS2PD 16(X)(SI*4), Y5 \
	VCVTPS2PD 32(X)(SI*4), Y6 \
	VCVTPS2PD 48(X)(SI*4), Y7 \
	VMULPD    W, Y4, Y4      \
	VMULPD    W, Y5, Y5      \
	VMULPD    W, Y6, Y6      \
	VMULPD    W, Y7, Y7      \
	VADDPD    Y4, Y0, Y0     \
	VADDPD    Y5, Y1, Y1     \
	VADDPD    Y6, Y2, Y2     \
	VADDPD    Y7, Y3, Y3

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

loop2:
	CMPQ SI, CX
	JGE  done2
	VMOVUPD (DI)(SI*8), Y0
	VMOVUPD 32(DI)(SI*8), Y1
	VMOVUPD 64(DI)(SI*8), Y2
	VMOVUPD 96(DI)(SI*8), Y3
	TERM2(R8, Y12)
	TERM2(R9, Y13)
	TERM2(R10, Y14)
	TERM2(R11, Y15)
	VMOVUPD Y0, (DI)(SI*8)
	VMOVUPD Y1, 32(DI)(SI*8)
	VMOVUPD Y2, 64(DI)(SI*8)
	VMOVUPD Y3, 96(DI)(SI*8)
	ADDQ $16, SI
	JMP  loop2

done2:
	VZEROUPPER
	RET

// TERM512 adds one input (pointer X, weight W) to Z0 (elements 0-7) and
// Z1 (8-15).
#define TERM512(X, W) \
	PREFETCHT0 PF(X)(SI*4)    \
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

// func wmeanAVX512(dst *float32, xs *[wsumGroup]*float32, w *float64, k int, n int, s float64)
// The fused FedAvg kernel: for each run of 32 elements, starts four float64
// accumulators at +0, adds all k weighted inputs in k order (as WeightedSum
// does), multiplies by s and rounds to float32 (as Store does), so the
// accumulator never leaves the registers. The inputs are read as k parallel
// sequential streams. n is a multiple of 32; 1 <= k <= wsumGroup.
TEXT ·wmeanAVX512(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ xs+8(FP), R8
	MOVQ w+16(FP), R9
	MOVQ k+24(FP), R10
	MOVQ n+32(FP), CX
	VBROADCASTSD s+40(FP), Z9
	XORQ SI, SI

outerM:
	CMPQ SI, CX
	JGE  doneM
	VPXORQ Z0, Z0, Z0
	VPXORQ Z1, Z1, Z1
	VPXORQ Z2, Z2, Z2
	VPXORQ Z3, Z3, Z3
	XORQ   BX, BX

innerM:
	MOVQ         (R8)(BX*8), DX
	VBROADCASTSD (R9)(BX*8), Z8
	PREFETCHT0   PF(DX)(SI*4)
	PREFETCHT0   PF+64(DX)(SI*4)
	VCVTPS2PD    (DX)(SI*4), Z4
	VCVTPS2PD    32(DX)(SI*4), Z5
	VCVTPS2PD    64(DX)(SI*4), Z6
	VCVTPS2PD    96(DX)(SI*4), Z7
	VMULPD       Z8, Z4, Z4
	VMULPD       Z8, Z5, Z5
	VMULPD       Z8, Z6, Z6
	VMULPD       Z8, Z7, Z7
	VADDPD       Z4, Z0, Z0
	VADDPD       Z5, Z1, Z1
	VADDPD       Z6, Z2, Z2
	VADDPD       Z7, Z3, Z3
	INCQ         BX
	CMPQ         BX, R10
	JLT          innerM

	VMULPD    Z9, Z0, Z0
	VMULPD    Z9, Z1, Z1
	VMULPD    Z9, Z2, Z2
	VMULPD    Z9, Z3, Z3
	VCVTPD2PS Z0, Y4
	VCVTPD2PS Z1, Y5
	VCVTPD2PS Z2, Y6
	VCVTPD2PS Z3, Y7
	VMOVUPS   Y4, (DI)(SI*4)
	VMOVUPS   Y5, 32(DI)(SI*4)
	VMOVUPS   Y6, 64(DI)(SI*4)
	VMOVUPS   Y7, 96(DI)(SI*4)
	ADDQ      $32, SI
	JMP       outerM

doneM:
	VZEROUPPER
	RET

// func wmeanAVX2(dst *float32, xs *[wsumGroup]*float32, w *float64, k int, n int, s float64)
// wmeanAVX512 with 256-bit registers, sixteen elements per run; n is a
// multiple of 16.
TEXT ·wmeanAVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ xs+8(FP), R8
	MOVQ w+16(FP), R9
	MOVQ k+24(FP), R10
	MOVQ n+32(FP), CX
	VBROADCASTSD s+40(FP), Y9
	XORQ SI, SI

outerM2:
	CMPQ SI, CX
	JGE  doneM2
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	XORQ   BX, BX

innerM2:
	MOVQ         (R8)(BX*8), DX
	VBROADCASTSD (R9)(BX*8), Y8
	PREFETCHT0   PF(DX)(SI*4)
	VCVTPS2PD    (DX)(SI*4), Y4
	VCVTPS2PD    16(DX)(SI*4), Y5
	VCVTPS2PD    32(DX)(SI*4), Y6
	VCVTPS2PD    48(DX)(SI*4), Y7
	VMULPD       Y8, Y4, Y4
	VMULPD       Y8, Y5, Y5
	VMULPD       Y8, Y6, Y6
	VMULPD       Y8, Y7, Y7
	VADDPD       Y4, Y0, Y0
	VADDPD       Y5, Y1, Y1
	VADDPD       Y6, Y2, Y2
	VADDPD       Y7, Y3, Y3
	INCQ         BX
	CMPQ         BX, R10
	JLT          innerM2

	VMULPD     Y9, Y0, Y0
	VMULPD     Y9, Y1, Y1
	VMULPD     Y9, Y2, Y2
	VMULPD     Y9, Y3, Y3
	VCVTPD2PSY Y0, X4
	VCVTPD2PSY Y1, X5
	VCVTPD2PSY Y2, X6
	VCVTPD2PSY Y3, X7
	VMOVUPS    X4, (DI)(SI*4)
	VMOVUPS    X5, 16(DI)(SI*4)
	VMOVUPS    X6, 32(DI)(SI*4)
	VMOVUPS    X7, 48(DI)(SI*4)
	ADDQ       $16, SI
	JMP        outerM2

doneM2:
	VZEROUPPER
	RET
