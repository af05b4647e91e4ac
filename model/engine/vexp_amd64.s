//go:build amd64 && !purego

#include "textflag.h"

// AVX2+FMA loops of the Host's exp-heavy operations, eight float32 lanes
// at a time. EXP is expf's algorithm (Cephes: reduction by multiples of
// ln 2, a degree-6 polynomial, scaling by 2ⁿ through the exponent bits)
// with fused multiply-adds: within about 2 ulp of e^x. Inputs below
// −87.3365 (ln of the smallest normal float32) give 0 and inputs above
// 88.7228 give +Inf, as in expf; in between, inputs above 88.3 give e^88.3
// (keeping 2ⁿ a normal float32). NaN stays NaN.

// lo at 0
DATA vexpc<>+0(SB)/4, $0xc2aeac50
DATA vexpc<>+4(SB)/4, $0xc2aeac50
DATA vexpc<>+8(SB)/4, $0xc2aeac50
DATA vexpc<>+12(SB)/4, $0xc2aeac50
DATA vexpc<>+16(SB)/4, $0xc2aeac50
DATA vexpc<>+20(SB)/4, $0xc2aeac50
DATA vexpc<>+24(SB)/4, $0xc2aeac50
DATA vexpc<>+28(SB)/4, $0xc2aeac50
// hi (clamp) at 32
DATA vexpc<>+32(SB)/4, $0x42b0999a
DATA vexpc<>+36(SB)/4, $0x42b0999a
DATA vexpc<>+40(SB)/4, $0x42b0999a
DATA vexpc<>+44(SB)/4, $0x42b0999a
DATA vexpc<>+48(SB)/4, $0x42b0999a
DATA vexpc<>+52(SB)/4, $0x42b0999a
DATA vexpc<>+56(SB)/4, $0x42b0999a
DATA vexpc<>+60(SB)/4, $0x42b0999a
// log2e at 64
DATA vexpc<>+64(SB)/4, $0x3fb8aa3b
DATA vexpc<>+68(SB)/4, $0x3fb8aa3b
DATA vexpc<>+72(SB)/4, $0x3fb8aa3b
DATA vexpc<>+76(SB)/4, $0x3fb8aa3b
DATA vexpc<>+80(SB)/4, $0x3fb8aa3b
DATA vexpc<>+84(SB)/4, $0x3fb8aa3b
DATA vexpc<>+88(SB)/4, $0x3fb8aa3b
DATA vexpc<>+92(SB)/4, $0x3fb8aa3b
// ln2hi at 96
DATA vexpc<>+96(SB)/4, $0x3f318000
DATA vexpc<>+100(SB)/4, $0x3f318000
DATA vexpc<>+104(SB)/4, $0x3f318000
DATA vexpc<>+108(SB)/4, $0x3f318000
DATA vexpc<>+112(SB)/4, $0x3f318000
DATA vexpc<>+116(SB)/4, $0x3f318000
DATA vexpc<>+120(SB)/4, $0x3f318000
DATA vexpc<>+124(SB)/4, $0x3f318000
// ln2lo at 128
DATA vexpc<>+128(SB)/4, $0xb95e8083
DATA vexpc<>+132(SB)/4, $0xb95e8083
DATA vexpc<>+136(SB)/4, $0xb95e8083
DATA vexpc<>+140(SB)/4, $0xb95e8083
DATA vexpc<>+144(SB)/4, $0xb95e8083
DATA vexpc<>+148(SB)/4, $0xb95e8083
DATA vexpc<>+152(SB)/4, $0xb95e8083
DATA vexpc<>+156(SB)/4, $0xb95e8083
// c5 at 160
DATA vexpc<>+160(SB)/4, $0x39506967
DATA vexpc<>+164(SB)/4, $0x39506967
DATA vexpc<>+168(SB)/4, $0x39506967
DATA vexpc<>+172(SB)/4, $0x39506967
DATA vexpc<>+176(SB)/4, $0x39506967
DATA vexpc<>+180(SB)/4, $0x39506967
DATA vexpc<>+184(SB)/4, $0x39506967
DATA vexpc<>+188(SB)/4, $0x39506967
// c4 at 192
DATA vexpc<>+192(SB)/4, $0x3ab743ce
DATA vexpc<>+196(SB)/4, $0x3ab743ce
DATA vexpc<>+200(SB)/4, $0x3ab743ce
DATA vexpc<>+204(SB)/4, $0x3ab743ce
DATA vexpc<>+208(SB)/4, $0x3ab743ce
DATA vexpc<>+212(SB)/4, $0x3ab743ce
DATA vexpc<>+216(SB)/4, $0x3ab743ce
DATA vexpc<>+220(SB)/4, $0x3ab743ce
// c3 at 224
DATA vexpc<>+224(SB)/4, $0x3c088908
DATA vexpc<>+228(SB)/4, $0x3c088908
DATA vexpc<>+232(SB)/4, $0x3c088908
DATA vexpc<>+236(SB)/4, $0x3c088908
DATA vexpc<>+240(SB)/4, $0x3c088908
DATA vexpc<>+244(SB)/4, $0x3c088908
DATA vexpc<>+248(SB)/4, $0x3c088908
DATA vexpc<>+252(SB)/4, $0x3c088908
// c2 at 256
DATA vexpc<>+256(SB)/4, $0x3d2aa9c1
DATA vexpc<>+260(SB)/4, $0x3d2aa9c1
DATA vexpc<>+264(SB)/4, $0x3d2aa9c1
DATA vexpc<>+268(SB)/4, $0x3d2aa9c1
DATA vexpc<>+272(SB)/4, $0x3d2aa9c1
DATA vexpc<>+276(SB)/4, $0x3d2aa9c1
DATA vexpc<>+280(SB)/4, $0x3d2aa9c1
DATA vexpc<>+284(SB)/4, $0x3d2aa9c1
// c1 at 288
DATA vexpc<>+288(SB)/4, $0x3e2aaaaa
DATA vexpc<>+292(SB)/4, $0x3e2aaaaa
DATA vexpc<>+296(SB)/4, $0x3e2aaaaa
DATA vexpc<>+300(SB)/4, $0x3e2aaaaa
DATA vexpc<>+304(SB)/4, $0x3e2aaaaa
DATA vexpc<>+308(SB)/4, $0x3e2aaaaa
DATA vexpc<>+312(SB)/4, $0x3e2aaaaa
DATA vexpc<>+316(SB)/4, $0x3e2aaaaa
// c0 at 320
DATA vexpc<>+320(SB)/4, $0x3f000000
DATA vexpc<>+324(SB)/4, $0x3f000000
DATA vexpc<>+328(SB)/4, $0x3f000000
DATA vexpc<>+332(SB)/4, $0x3f000000
DATA vexpc<>+336(SB)/4, $0x3f000000
DATA vexpc<>+340(SB)/4, $0x3f000000
DATA vexpc<>+344(SB)/4, $0x3f000000
DATA vexpc<>+348(SB)/4, $0x3f000000
// one at 352
DATA vexpc<>+352(SB)/4, $0x3f800000
DATA vexpc<>+356(SB)/4, $0x3f800000
DATA vexpc<>+360(SB)/4, $0x3f800000
DATA vexpc<>+364(SB)/4, $0x3f800000
DATA vexpc<>+368(SB)/4, $0x3f800000
DATA vexpc<>+372(SB)/4, $0x3f800000
DATA vexpc<>+376(SB)/4, $0x3f800000
DATA vexpc<>+380(SB)/4, $0x3f800000
// i127 at 384
DATA vexpc<>+384(SB)/4, $0x0000007f
DATA vexpc<>+388(SB)/4, $0x0000007f
DATA vexpc<>+392(SB)/4, $0x0000007f
DATA vexpc<>+396(SB)/4, $0x0000007f
DATA vexpc<>+400(SB)/4, $0x0000007f
DATA vexpc<>+404(SB)/4, $0x0000007f
DATA vexpc<>+408(SB)/4, $0x0000007f
DATA vexpc<>+412(SB)/4, $0x0000007f
// overflow threshold at 416
DATA vexpc<>+416(SB)/4, $0x42b17218
DATA vexpc<>+420(SB)/4, $0x42b17218
DATA vexpc<>+424(SB)/4, $0x42b17218
DATA vexpc<>+428(SB)/4, $0x42b17218
DATA vexpc<>+432(SB)/4, $0x42b17218
DATA vexpc<>+436(SB)/4, $0x42b17218
DATA vexpc<>+440(SB)/4, $0x42b17218
DATA vexpc<>+444(SB)/4, $0x42b17218
// +Inf at 448
DATA vexpc<>+448(SB)/4, $0x7f800000
DATA vexpc<>+452(SB)/4, $0x7f800000
DATA vexpc<>+456(SB)/4, $0x7f800000
DATA vexpc<>+460(SB)/4, $0x7f800000
DATA vexpc<>+464(SB)/4, $0x7f800000
DATA vexpc<>+468(SB)/4, $0x7f800000
DATA vexpc<>+472(SB)/4, $0x7f800000
DATA vexpc<>+476(SB)/4, $0x7f800000
GLOBL vexpc<>(SB), RODATA|NOPTR, $480

// CONSTS loads the constants EXP keeps in registers.
#define CONSTS \
	VMOVUPS vexpc<>+0(SB), Y15  \
	VMOVUPS vexpc<>+32(SB), Y14 \
	VMOVUPS vexpc<>+64(SB), Y13 \
	VMOVUPS vexpc<>+352(SB), Y12

// EXP sets Y4 = e^Y1, clobbering Y1-Y6 and Y8.
#define EXP \
	VCMPPS       $1, Y15, Y1, Y6             \
	VCMPPS       $0x1e, vexpc<>+416(SB), Y1, Y8 \
	VMAXPS       Y1, Y15, Y1                 \
	VMINPS       Y1, Y14, Y1                 \
	VMULPS       Y13, Y1, Y2                 \
	VROUNDPS     $0, Y2, Y2                  \
	VMOVAPS      Y1, Y3                      \
	VFNMADD231PS vexpc<>+96(SB), Y2, Y3      \
	VFNMADD231PS vexpc<>+128(SB), Y2, Y3     \
	VMOVUPS      vexpc<>+160(SB), Y4         \
	VFMADD213PS  vexpc<>+192(SB), Y3, Y4     \
	VFMADD213PS  vexpc<>+224(SB), Y3, Y4     \
	VFMADD213PS  vexpc<>+256(SB), Y3, Y4     \
	VFMADD213PS  vexpc<>+288(SB), Y3, Y4     \
	VFMADD213PS  vexpc<>+320(SB), Y3, Y4     \
	VMULPS       Y3, Y3, Y5                  \
	VFMADD213PS  Y3, Y5, Y4                  \
	VADDPS       Y12, Y4, Y4                 \
	VCVTPS2DQ    Y2, Y2                      \
	VPADDD       vexpc<>+384(SB), Y2, Y2     \
	VPSLLD       $23, Y2, Y2                 \
	VMULPS       Y2, Y4, Y4                  \
	VANDNPS      Y4, Y6, Y4                  \
	VBLENDVPS    Y8, vexpc<>+448(SB), Y4, Y4

// SIGMOID sets Y5 = 1/(1+e^−Y7), clobbering Y1-Y6; Y0 must be zero.
#define SIGMOID \
	VSUBPS Y7, Y0, Y1 \
	EXP               \
	VADDPS Y12, Y4, Y4 \
	VDIVPS Y4, Y12, Y5

// func expSumAVX2(dst, src *float32, n int, m float32) float64
TEXT ·expSumAVX2(SB), NOSPLIT, $0-40
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS m+24(FP), Y0
	CONSTS
	VXORPD       Y10, Y10, Y10
	VXORPD       Y11, Y11, Y11
	XORQ         AX, AX

expsum_loop:
	CMPQ         AX, CX
	JGE          expsum_done
	VMOVUPS      (SI)(AX*4), Y1
	VSUBPS       Y0, Y1, Y1
	EXP
	VMOVUPS      Y4, (DI)(AX*4)
	VCVTPS2PD    X4, Y7
	VEXTRACTF128 $1, Y4, X8
	VCVTPS2PD    X8, Y8
	VADDPD       Y7, Y10, Y10
	VADDPD       Y8, Y11, Y11
	ADDQ         $8, AX
	JMP          expsum_loop

expsum_done:
	VADDPD       Y11, Y10, Y10
	VEXTRACTF128 $1, Y10, X11
	VADDPD       X11, X10, X10
	VHADDPD      X10, X10, X10
	VMOVSD       X10, ret+32(FP)
	VZEROUPPER
	RET

// func swigluAVX2(act, gate, u *float32, n int)
TEXT ·swigluAVX2(SB), NOSPLIT, $0-32
	MOVQ    act+0(FP), DI
	MOVQ    gate+8(FP), SI
	MOVQ    u+16(FP), DX
	MOVQ    n+24(FP), CX
	CONSTS
	VXORPS  Y0, Y0, Y0
	XORQ    AX, AX

swiglu_loop:
	CMPQ    AX, CX
	JGE     swiglu_done
	VMOVUPS (SI)(AX*4), Y7
	SIGMOID
	VMULPS  Y5, Y7, Y5
	VMULPS  (DX)(AX*4), Y5, Y5
	VMOVUPS Y5, (DI)(AX*4)
	ADDQ    $8, AX
	JMP     swiglu_loop

swiglu_done:
	VZEROUPPER
	RET

// func swigluBackAVX2(dg, du, dact, gate, u *float32, n int)
TEXT ·swigluBackAVX2(SB), NOSPLIT, $0-48
	MOVQ        dg+0(FP), DI
	MOVQ        du+8(FP), R8
	MOVQ        dact+16(FP), R9
	MOVQ        gate+24(FP), SI
	MOVQ        u+32(FP), DX
	MOVQ        n+40(FP), CX
	CONSTS
	VXORPS      Y0, Y0, Y0
	XORQ        AX, AX

swiglub_loop:
	CMPQ        AX, CX
	JGE         swiglub_done
	VMOVUPS     (SI)(AX*4), Y7
	SIGMOID
	VMOVUPS     (R9)(AX*4), Y8
	VSUBPS      Y5, Y12, Y9
	VFMADD213PS Y12, Y7, Y9
	VMULPS      (DX)(AX*4), Y8, Y10
	VMULPS      Y5, Y10, Y10
	VMULPS      Y9, Y10, Y10
	VMOVUPS     Y10, (DI)(AX*4)
	VMULPS      Y7, Y8, Y11
	VMULPS      Y5, Y11, Y11
	VMOVUPS     Y11, (R8)(AX*4)
	ADDQ        $8, AX
	JMP         swiglub_loop

swiglub_done:
	VZEROUPPER
	RET
