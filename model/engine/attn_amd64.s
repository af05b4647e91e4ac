//go:build amd64 && !purego

#include "textflag.h"

// AVX2 loops of CachedAttention over the rep query heads of one key/value
// head: one call covers every cached key of the group, where a call per key
// spent most of its time in the call, and each key's row is read from
// memory once for all rep heads (a block of keys stays in L1 while the
// heads take their turns). Each element is computed by exactly the
// operations of the per-key loops they replace (dotAVX2 per key, then a
// product by the scale; one fused multiply-add per value element, keys in
// order), so the results are the same bits. hd is a positive multiple of
// 8; n, rep ≥ 1; ks and vs are row strides in float32 elements.

// func attnScoresAVX2(s, q, k *float32, ks, n, hd, rep int, scale float32)
//
// s[h·n + j] = scale·dotAVX2(q + h·hd, k + j·ks, hd) for h < rep, j < n:
// four keys at a time (four independent chains, each dotAVX2's), every
// head on those four keys before the next four.
TEXT ·attnScoresAVX2(SB), NOSPLIT, $0-60
	MOVQ         s+0(FP), DI           // s of head 0 at key j
	MOVQ         k+16(FP), DX          // key j
	MOVQ         ks+24(FP), R8
	SHLQ         $2, R8                // key stride in bytes
	LEAQ         (R8)(R8*2), R12       // 3·stride
	MOVQ         n+32(FP), CX          // keys left
	MOVQ         hd+40(FP), R9
	MOVQ         n+32(FP), R10
	SHLQ         $2, R10               // s's head stride in bytes
	VBROADCASTSS scale+56(FP), X15

scores4:
	CMPQ         CX, $4
	JLT          scores1
	MOVQ         q+8(FP), R13
	MOVQ         DI, BX
	XORQ         R11, R11

scores4_h:
	VXORPS       Y0, Y0, Y0
	VXORPS       Y1, Y1, Y1
	VXORPS       Y2, Y2, Y2
	VXORPS       Y3, Y3, Y3
	XORQ         AX, AX

scores4_d:
	VMOVUPS      (R13)(AX*4), Y4
	LEAQ         (DX)(AX*4), SI
	VFMADD231PS  (SI), Y4, Y0
	VFMADD231PS  (SI)(R8*1), Y4, Y1
	VFMADD231PS  (SI)(R8*2), Y4, Y2
	VFMADD231PS  (SI)(R12*1), Y4, Y3
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
	VMOVSS       X0, 0(BX)
	VEXTRACTF128 $1, Y1, X5
	VADDPS       X5, X1, X1
	VPERMILPS    $0x4e, X1, X5
	VADDPS       X5, X1, X1
	VPERMILPS    $0xb1, X1, X5
	VADDPS       X5, X1, X1
	VMULSS       X15, X1, X1
	VMOVSS       X1, 4(BX)
	VEXTRACTF128 $1, Y2, X5
	VADDPS       X5, X2, X2
	VPERMILPS    $0x4e, X2, X5
	VADDPS       X5, X2, X2
	VPERMILPS    $0xb1, X2, X5
	VADDPS       X5, X2, X2
	VMULSS       X15, X2, X2
	VMOVSS       X2, 8(BX)
	VEXTRACTF128 $1, Y3, X5
	VADDPS       X5, X3, X3
	VPERMILPS    $0x4e, X3, X5
	VADDPS       X5, X3, X3
	VPERMILPS    $0xb1, X3, X5
	VADDPS       X5, X3, X3
	VMULSS       X15, X3, X3
	VMOVSS       X3, 12(BX)

	ADDQ         R10, BX
	LEAQ         (R13)(R9*4), R13
	INCQ         R11
	CMPQ         R11, rep+48(FP)
	JLT          scores4_h
	ADDQ         $16, DI
	LEAQ         (DX)(R8*4), DX
	SUBQ         $4, CX
	JMP          scores4

scores1:
	TESTQ        CX, CX
	JEQ          scores_done
	MOVQ         q+8(FP), R13
	MOVQ         DI, BX
	XORQ         R11, R11

scores1_h:
	VXORPS       Y0, Y0, Y0
	XORQ         AX, AX

scores1_d:
	VMOVUPS      (R13)(AX*4), Y4
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
	VMOVSS       X0, 0(BX)
	ADDQ         R10, BX
	LEAQ         (R13)(R9*4), R13
	INCQ         R11
	CMPQ         R11, rep+48(FP)
	JLT          scores1_h
	ADDQ         $4, DI
	ADDQ         R8, DX
	DECQ         CX
	JMP          scores1

scores_done:
	VZEROUPPER
	RET

// func attnValuesAVX2(o, v *float32, vs, n, hd, rep int, p, inv *float32)
//
// o[h·hd + i] += Σ_{j<n} (p[h·n + j]·inv[h])·v[j·vs + i] for h < rep,
// i < hd: one fused multiply-add per key in key order onto o (the caller
// zeroes it). 64 elements of a head's o are held in registers (then 8)
// over a block of 16 keys, every head over that block before the next.
TEXT ·attnValuesAVX2(SB), NOSPLIT, $0-64
	MOVQ         o+0(FP), DI
	MOVQ         vs+16(FP), R8
	SHLQ         $2, R8                // value stride in bytes
	MOVQ         hd+32(FP), R9
	SHLQ         $2, R9                // hd in bytes
	XORQ         AX, AX                // byte offset into each head of o and row of v

values64:
	MOVQ         R9, BX
	SUBQ         AX, BX
	CMPQ         BX, $256
	JLT          values8
	XORQ         BX, BX                // first key of the block

values64_blk:
	MOVQ         n+24(FP), CX
	SUBQ         BX, CX
	JLE          values64_next
	CMPQ         CX, $16
	JLE          values64_heads
	MOVQ         $16, CX

values64_heads:
	XORQ         R11, R11
	LEAQ         (DI)(AX*1), R12       // o of head h at the offset

values64_h:
	VMOVUPS      (R12), Y0
	VMOVUPS      32(R12), Y1
	VMOVUPS      64(R12), Y2
	VMOVUPS      96(R12), Y3
	VMOVUPS      128(R12), Y4
	VMOVUPS      160(R12), Y5
	VMOVUPS      192(R12), Y6
	VMOVUPS      224(R12), Y7
	MOVQ         inv+56(FP), SI
	VBROADCASTSS (SI)(R11*4), Y15
	MOVQ         n+24(FP), SI
	IMULQ        R11, SI
	ADDQ         BX, SI
	SHLQ         $2, SI
	ADDQ         p+48(FP), SI          // p[h·n + first key]
	MOVQ         BX, R10
	IMULQ        R8, R10
	ADDQ         v+8(FP), R10
	ADDQ         AX, R10               // the first key's row at the offset
	MOVQ         CX, R13

values64_j:
	VBROADCASTSS (SI), Y8
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
	ADDQ         $4, SI
	DECQ         R13
	JNZ          values64_j
	VMOVUPS      Y0, (R12)
	VMOVUPS      Y1, 32(R12)
	VMOVUPS      Y2, 64(R12)
	VMOVUPS      Y3, 96(R12)
	VMOVUPS      Y4, 128(R12)
	VMOVUPS      Y5, 160(R12)
	VMOVUPS      Y6, 192(R12)
	VMOVUPS      Y7, 224(R12)
	ADDQ         R9, R12
	INCQ         R11
	CMPQ         R11, rep+40(FP)
	JLT          values64_h
	ADDQ         CX, BX
	JMP          values64_blk

values64_next:
	ADDQ         $256, AX
	JMP          values64

values8:
	CMPQ         AX, R9
	JGE          values_done
	XORQ         BX, BX

values8_blk:
	MOVQ         n+24(FP), CX
	SUBQ         BX, CX
	JLE          values8_next
	CMPQ         CX, $16
	JLE          values8_heads
	MOVQ         $16, CX

values8_heads:
	XORQ         R11, R11
	LEAQ         (DI)(AX*1), R12

values8_h:
	VMOVUPS      (R12), Y0
	MOVQ         inv+56(FP), SI
	VBROADCASTSS (SI)(R11*4), Y15
	MOVQ         n+24(FP), SI
	IMULQ        R11, SI
	ADDQ         BX, SI
	SHLQ         $2, SI
	ADDQ         p+48(FP), SI
	MOVQ         BX, R10
	IMULQ        R8, R10
	ADDQ         v+8(FP), R10
	ADDQ         AX, R10
	MOVQ         CX, R13

values8_j:
	VBROADCASTSS (SI), Y8
	VMULPS       Y15, Y8, Y8
	VFMADD231PS  (R10), Y8, Y0
	ADDQ         R8, R10
	ADDQ         $4, SI
	DECQ         R13
	JNZ          values8_j
	VMOVUPS      Y0, (R12)
	ADDQ         R9, R12
	INCQ         R11
	CMPQ         R11, rep+40(FP)
	JLT          values8_h
	ADDQ         CX, BX
	JMP          values8_blk

values8_next:
	ADDQ         $32, AX
	JMP          values8

values_done:
	VZEROUPPER
	RET
