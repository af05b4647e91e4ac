//go:build amd64 && !purego

#include "textflag.h"

// AVX2 loops of CachedAttention: one call covers every cached key of a
// query head, where a call per key spent most of its time in the call.
// Each element is computed by exactly the operations of the per-key loop
// they replace (dotAVX2 per key, then a product by the scale; one fused
// multiply-add per value element, keys in order), so the results are the
// same bits. hd is a positive multiple of 8; n ≥ 1; ks and vs are row
// strides in float32 elements.

// func attnScoresAVX2(s, q, k *float32, ks, n, hd int, scale float32)
//
// s[j] = scale·dotAVX2(q, k + j·ks, hd) for j < n, four keys at a time
// (four independent chains, each the same as dotAVX2's).
TEXT ·attnScoresAVX2(SB), NOSPLIT, $0-52
	MOVQ         s+0(FP), DI
	MOVQ         q+8(FP), SI
	MOVQ         k+16(FP), DX
	MOVQ         ks+24(FP), R8
	SHLQ         $2, R8                // key stride in bytes
	MOVQ         n+32(FP), CX
	MOVQ         hd+40(FP), R9
	VBROADCASTSS scale+48(FP), X15
	LEAQ         (R8)(R8*2), R12       // 3·stride

scores4:
	CMPQ         CX, $4
	JLT          scores1
	VXORPS       Y0, Y0, Y0
	VXORPS       Y1, Y1, Y1
	VXORPS       Y2, Y2, Y2
	VXORPS       Y3, Y3, Y3
	XORQ         AX, AX

scores4_d:
	VMOVUPS      (SI)(AX*4), Y4
	LEAQ         (DX)(AX*4), R10
	VFMADD231PS  (R10), Y4, Y0
	VFMADD231PS  (R10)(R8*1), Y4, Y1
	VFMADD231PS  (R10)(R8*2), Y4, Y2
	VFMADD231PS  (R10)(R12*1), Y4, Y3
	ADDQ         $8, AX
	CMPQ         AX, R9
	JLT          scores4_d

	// Each lane sum as dotAVX2 adds it: high half to low, then pairs.
	VEXTRACTF128 $1, Y0, X5
	VADDPS       X5, X0, X0
	VPERMILPS    $0x4e, X0, X5
	VADDPS       X5, X0, X0
	VPERMILPS    $0xb1, X0, X5
	VADDPS       X5, X0, X0
	VMULSS       X15, X0, X0
	VMOVSS       X0, (DI)

	VEXTRACTF128 $1, Y1, X5
	VADDPS       X5, X1, X1
	VPERMILPS    $0x4e, X1, X5
	VADDPS       X5, X1, X1
	VPERMILPS    $0xb1, X1, X5
	VADDPS       X5, X1, X1
	VMULSS       X15, X1, X1
	VMOVSS       X1, 4(DI)

	VEXTRACTF128 $1, Y2, X5
	VADDPS       X5, X2, X2
	VPERMILPS    $0x4e, X2, X5
	VADDPS       X5, X2, X2
	VPERMILPS    $0xb1, X2, X5
	VADDPS       X5, X2, X2
	VMULSS       X15, X2, X2
	VMOVSS       X2, 8(DI)

	VEXTRACTF128 $1, Y3, X5
	VADDPS       X5, X3, X3
	VPERMILPS    $0x4e, X3, X5
	VADDPS       X5, X3, X3
	VPERMILPS    $0xb1, X3, X5
	VADDPS       X5, X3, X3
	VMULSS       X15, X3, X3
	VMOVSS       X3, 12(DI)

	ADDQ         $16, DI
	LEAQ         (DX)(R8*4), DX
	SUBQ         $4, CX
	JMP          scores4

scores1:
	TESTQ        CX, CX
	JEQ          scores_done
	VXORPS       Y0, Y0, Y0
	XORQ         AX, AX

scores1_d:
	VMOVUPS      (SI)(AX*4), Y4
	VFMADD231PS  (DX)(AX*4), Y4, Y0
	ADDQ         $8, AX
	CMPQ         AX, R9
	JLT          scores1_d
	VEXTRACTF128 $1, Y0, X5
	VADDPS       X5, X0, X0
	VPERMILPS    $0x4e, X0, X5
	VADDPS       X5, X0, X0
	VPERMILPS    $0xb1, X0, X5
	VADDPS       X5, X0, X0
	VMULSS       X15, X0, X0
	VMOVSS       X0, (DI)
	ADDQ         $4, DI
	ADDQ         R8, DX
	DECQ         CX
	JMP          scores1

scores_done:
	VZEROUPPER
	RET

// func attnValuesAVX2(o, v *float32, vs, n, hd int, p *float32, inv float32)
//
// o[i] = Σ_{j<n} (p[j]·inv)·v[j·vs + i] for i < hd: from zero, one fused
// multiply-add per key in key order, 64 elements of o held in registers
// at a time (then 8).
TEXT ·attnValuesAVX2(SB), NOSPLIT, $0-52
	MOVQ         o+0(FP), DI
	MOVQ         v+8(FP), SI
	MOVQ         vs+16(FP), R8
	SHLQ         $2, R8                // value stride in bytes
	MOVQ         n+24(FP), CX
	MOVQ         hd+32(FP), R9
	MOVQ         p+40(FP), DX
	VBROADCASTSS inv+48(FP), Y15
	SHLQ         $2, R9                // hd in bytes
	XORQ         AX, AX                // byte offset into o and each row of v

values64:
	MOVQ         R9, BX
	SUBQ         AX, BX
	CMPQ         BX, $256
	JLT          values8
	VXORPS       Y0, Y0, Y0
	VXORPS       Y1, Y1, Y1
	VXORPS       Y2, Y2, Y2
	VXORPS       Y3, Y3, Y3
	VXORPS       Y4, Y4, Y4
	VXORPS       Y5, Y5, Y5
	VXORPS       Y6, Y6, Y6
	VXORPS       Y7, Y7, Y7
	LEAQ         (SI)(AX*1), R10
	MOVQ         DX, R11
	MOVQ         CX, R13

values64_j:
	VBROADCASTSS (R11), Y8
	VMULPS       Y15, Y8, Y8
	VFMADD231PS  (R10), Y8, Y0
	VFMADD231PS  32(R10), Y8, Y1
	VFMADD231PS  64(R10), Y8, Y2
	VFMADD231PS  96(R10), Y8, Y3
	VFMADD231PS  128(R10), Y8, Y4
	VFMADD231PS  160(R10), Y8, Y5
	VFMADD231PS  192(R10), Y8, Y6
	VFMADD231PS  224(R10), Y8, Y7
	ADDQ         R8, R10
	ADDQ         $4, R11
	DECQ         R13
	JNZ          values64_j
	VMOVUPS      Y0, (DI)(AX*1)
	VMOVUPS      Y1, 32(DI)(AX*1)
	VMOVUPS      Y2, 64(DI)(AX*1)
	VMOVUPS      Y3, 96(DI)(AX*1)
	VMOVUPS      Y4, 128(DI)(AX*1)
	VMOVUPS      Y5, 160(DI)(AX*1)
	VMOVUPS      Y6, 192(DI)(AX*1)
	VMOVUPS      Y7, 224(DI)(AX*1)
	ADDQ         $256, AX
	JMP          values64

values8:
	CMPQ         AX, R9
	JGE          values_done
	VXORPS       Y0, Y0, Y0
	LEAQ         (SI)(AX*1), R10
	MOVQ         DX, R11
	MOVQ         CX, R13

values8_j:
	VBROADCASTSS (R11), Y8
	VMULPS       Y15, Y8, Y8
	VFMADD231PS  (R10), Y8, Y0
	ADDQ         R8, R10
	ADDQ         $4, R11
	DECQ         R13
	JNZ          values8_j
	VMOVUPS      Y0, (DI)(AX*1)
	ADDQ         $32, AX
	JMP          values8

values_done:
	VZEROUPPER
	RET
