package engine

import (
	"math"
	"unsafe"
)

// This file holds the pure-Go twins of the assembly loops (vec_amd64.s,
// vexp_amd64.s, gemm_amd64.s): each computes, bit for bit, what its
// assembly routine computes, lane for lane, with the same fused
// multiply-adds (fma32, exact), the same unfused products and sums, and
// the same fixed order of the final horizontal sums. The Host runs them
// where it has no AVX2 (build tag purego, another architecture, or
// FEDTUNE_ENGINE_ISA=generic), so that a training step gives the same bits
// on every path. Explicit float32(…) and float64(…) conversions stand
// between every product and sum that the assembly does not fuse: without
// them Go may fuse a*b+c (it does on arm64 and with GOAMD64=v3).
//
// Why fused multiply-adds everywhere rather than nowhere: the micro-kernels
// are bound by FMA throughput, and splitting each FMA into a product and a
// sum would halve the speed of every product on every machine with AVX2,
// while emulating an exact FMA costs only the pure-Go path, which is
// already the slow one.

// fma32 returns a·b+c rounded once to float32, as VFMADD…PS does (round to
// nearest even, no flush to zero). a·b is exact in float64; a·b+c rounded
// to float64 and then to float32 is the correctly rounded result except
// when the float64 sum lands exactly halfway between two float32s while the
// exact sum does not: then the float64 rounding error (found exactly by
// TwoSum) says which way to go.
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b)
	s := p + float64(c)
	// A float32 tie among normal float32s has its low 29 float64 bits
	// 1 followed by zeros; among subnormals (exponent below −126) it has
	// more zeros, so those always take the careful path.
	if u := math.Float64bits(s); u&(1<<29-1) != 1<<28 && (u>>52)&0x7ff >= 1023-126 || s == 0 {
		return float32(s) // a zero float64 sum is exact (no addition underflows to zero)
	}
	return fma32Tie(p, float64(c), s, float32(s))
}

// fma32Tie is fma32's rare case: s = p+c rounded to float64 is not a
// float32 and r = float32(s). When s lies exactly halfway between r and
// its neighbour n on s's side, the exact sum lies beyond s on the side its
// rounding error (TwoSum, exact) says, unless that error is zero.
func fma32Tie(p, c, s float64, r float32) float32 {
	var n float32
	if float64(r) < s {
		n = math.Nextafter32(r, float32(math.Inf(1)))
	} else {
		n = math.Nextafter32(r, float32(math.Inf(-1)))
	}
	if float64(r)+float64(n) != 2*s {
		return r
	}
	bv := s - p
	e := (p - (s - bv)) + (c - bv)
	lo, hi := min(r, n), max(r, n)
	switch {
	case e > 0:
		return hi
	case e < 0:
		return lo
	}
	return r // a true tie: float32(s) rounded it to even
}

// The lane emulations below take n, a positive multiple of 8, as their
// assembly twins do.

// maxLanes is maxAVX2: VMAXPS per lane (dst = dst > x ? dst : x), the
// halves then folded in a fixed order; NaN if x holds one.
func maxLanes(x []float32) float32 {
	var m [8]float32
	copy(m[:], x[:8])
	nan := false
	for i := 0; i < len(x); i += 8 {
		for l, v := range x[i : i+8] {
			if v != v {
				nan = true
			}
			if i > 0 {
				m[l] = maxps(m[l], v)
			}
		}
	}
	if nan {
		return math.Float32frombits(0x7fc00000)
	}
	for l := 0; l < 4; l++ {
		m[l] = maxps(m[l], m[l+4])
	}
	m[0], m[1] = maxps(m[0], m[2]), maxps(m[1], m[3])
	return maxps(m[0], m[1])
}

// maxps is MAXPS on one lane: a if a > b, else b.
func maxps(a, b float32) float32 {
	if a > b {
		return a
	}
	return b
}

// scaleLanes is scaleAVX2: x[i] *= s.
func scaleLanes(x []float32, s float32) {
	for i := range x {
		x[i] = s * x[i]
	}
}

// mulScaleLanes is mulScaleAVX2: y[i] = (x[i]·s)·w[i].
func mulScaleLanes(y, x, w []float32, s float32) {
	for i := range y {
		y[i] = float32(x[i]*s) * w[i]
	}
}

// sumLanesF64 adds float64 lanes 0-3 and 4-7 pairwise, then the halves
// of the four sums, then the last two: the assembly's horizontal sum.
func sumLanesF64(acc *[8]float64) float64 {
	var t [4]float64
	for l := range t {
		t[l] = acc[l] + acc[l+4]
	}
	return (t[0] + t[2]) + (t[1] + t[3])
}

// dotF64Lanes is dotF64AVX2: eight float64 lanes of Σ a·b (each product
// exact), then sumLanesF64.
func dotF64Lanes(a, b []float32) float64 {
	var acc [8]float64
	for i := 0; i < len(a); i += 8 {
		for l := 0; l < 8; l++ {
			acc[l] += float64(float64(a[i+l]) * float64(b[i+l])) // exact product: fused or not, the same
		}
	}
	return sumLanesF64(&acc)
}

// dot3F64Lanes is dot3F64AVX2: eight float64 lanes of Σ (a·b)·c, the last
// product fused with the sum.
func dot3F64Lanes(a, b, c []float32) float64 {
	var acc [8]float64
	for i := 0; i < len(a); i += 8 {
		for l := 0; l < 8; l++ {
			acc[l] = math.FMA(float64(a[i+l])*float64(b[i+l]), float64(c[i+l]), acc[l])
		}
	}
	return sumLanesF64(&acc)
}

// rmsBackRowLanes is rmsBackRowAVX2: dx[i] += float32(s·(dy·w − x·k)).
func rmsBackRowLanes(dx, dy, w, x []float32, s, k float64) {
	for i := range dx {
		u := float64(float64(x[i]) * k)
		v := float64(float64(dy[i])*float64(w[i]) - u)
		dx[i] += float32(v * s)
	}
}

// softmaxBackRowLanes is softmaxBackRowAVX2: ds[i] = float32((dp−dot)·p).
func softmaxBackRowLanes(ds, p, dp []float32, dot float64) {
	for i := range ds {
		ds[i] = float32(float64(float64(dp[i])-dot) * float64(p[i]))
	}
}

// dotLanes is dotAVX2: eight float32 lanes of fused multiply-adds, then
// lanes l and l+4, then l and l+2, then 0 and 1.
func dotLanes(a, b []float32) float32 {
	var acc [8]float32
	for i := 0; i < len(a); i += 8 {
		for l := 0; l < 8; l++ {
			acc[l] = fma32(a[i+l], b[i+l], acc[l])
		}
	}
	var t [4]float32
	for l := range t {
		t[l] = float32(acc[l] + acc[l+4])
	}
	return float32(t[0]+t[2]) + float32(t[1]+t[3])
}

// axpyLanes is axpyAVX2: y[i] = fma(a, x[i], y[i]).
func axpyLanes(y, x []float32, a float32) {
	for i := range y {
		y[i] = fma32(a, x[i], y[i])
	}
}

// The constants of vexp_amd64.s's EXP.
var (
	expLo    = math.Float32frombits(0xc2aeac50) // ln of the smallest normal float32
	expClamp = math.Float32frombits(0x42b0999a) // 88.3
	expLog2e = math.Float32frombits(0x3fb8aa3b)
	expLn2Hi = math.Float32frombits(0x3f318000)
	expLn2Lo = math.Float32frombits(0xb95e8083)
	expC     = [6]float32{
		math.Float32frombits(0x39506967), math.Float32frombits(0x3ab743ce), math.Float32frombits(0x3c088908),
		math.Float32frombits(0x3d2aa9c1), math.Float32frombits(0x3e2aaaaa), math.Float32frombits(0x3f000000),
	}
	expOver = math.Float32frombits(0x42b17218) // above it, +Inf
)

// expLane is one lane of vexp_amd64.s's EXP.
func expLane(x float32) float32 {
	under, over := x < expLo, x > expOver
	x1 := x
	if expLo > x1 {
		x1 = expLo
	}
	if expClamp < x1 {
		x1 = expClamp
	}
	n := float32(math.RoundToEven(float64(x1 * expLog2e)))
	r := fma32(-expLn2Hi, n, x1)
	r = fma32(-expLn2Lo, n, r)
	p := expC[0]
	for _, c := range expC[1:] {
		p = fma32(r, p, c)
	}
	p = fma32(float32(r*r), p, r)
	p = float32(p + 1)
	var ni int32 = math.MinInt32 // VCVTPS2DQ's integer indefinite, for NaN
	if n == n {
		ni = int32(n)
	}
	y := p * math.Float32frombits(uint32(ni+127)<<23)
	switch {
	case over:
		return float32(math.Inf(1))
	case under:
		return 0
	}
	return y
}

// expSumLanes is expSumAVX2: dst[i] = e^(src[i]−m) and their sum in eight
// float64 lanes, then sumLanesF64.
func expSumLanes(dst, src []float32, m float32) float64 {
	var acc [8]float64
	for i := 0; i < len(src); i += 8 {
		for l := 0; l < 8; l++ {
			e := expLane(float32(src[i+l] - m))
			dst[i+l] = e
			acc[l] += float64(e)
		}
	}
	return sumLanesF64(&acc)
}

// sigmoidLane is vexp_amd64.s's SIGMOID: 1/(1+e^(0−g)).
func sigmoidLane(g float32) float32 {
	return 1 / float32(expLane(float32(0-g))+1)
}

// swigluLanes is swigluAVX2: act = (g·σ(g))·u.
func swigluLanes(act, g, u []float32) {
	for i := range g {
		act[i] = float32(g[i]*sigmoidLane(g[i])) * u[i]
	}
}

// swigluBackLanes is swigluBackAVX2: dg = ((da·u)·s)·fma(g, 1−s, 1),
// du = (da·g)·s.
func swigluBackLanes(dg, du, dact, g, u []float32) {
	for i := range g {
		gi, da := g[i], dact[i]
		s := sigmoidLane(gi)
		f := fma32(gi, float32(1-s), 1)
		dg[i] = float32(float32(da*u[i])*s) * f
		du[i] = float32(da*gi) * s
	}
}

// sgemmKernelGo is sgemmKernel6x16 (and sgemmKernel12x16) in Go, for any
// tile height h: each C[i][j] is one chain of fused multiply-adds over p
// from zero, then fma(alpha, sum, C[i][j]) when add, else alpha·sum.
func sgemmKernelGo(h int) func(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool) {
	return func(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool) {
		var acc [gemmMR][gemmNR]float32
		bs := unsafe.Slice(b, k*gemmNR)
		for i := 0; i < h; i++ {
			row := &acc[i]
			ap := unsafe.Add(unsafe.Pointer(a), i*ri)
			for p := 0; p < k; p++ {
				av := *(*float32)(unsafe.Add(ap, p*rp))
				bp := (*[gemmNR]float32)(bs[p*gemmNR:])
				fmaRow(row, av, bp)
			}
			cs := unsafe.Slice((*float32)(unsafe.Add(unsafe.Pointer(c), 4*i*ldc)), gemmNR)
			storeTile(cs, row, alpha, add)
		}
	}
}

// genericKernel is the pure-Go micro-kernels: sgemmKernelGo at 6 rows and
// at 4.
func genericKernel() gemmMicro {
	return gemmMicro{fn: sgemmKernelGo(6), mr: 6, fn4: sgemmKernelGo(4)}
}

// fmaRow sets acc[j] = fma32(a, b[j], acc[j]), with fma32's common case
// written out in the loop (fma32 is too large to inline).
func fmaRow(acc *[gemmNR]float32, a float32, b *[gemmNR]float32) {
	af := float64(a)
	for j, c := range acc {
		p := af * float64(b[j])
		s := p + float64(c)
		if u := math.Float64bits(s); u&(1<<29-1) != 1<<28 && (u>>52)&0x7ff >= 1023-126 || s == 0 {
			acc[j] = float32(s) // a zero float64 sum is exact (no addition underflows to zero)
			continue
		}
		acc[j] = fma32Tie(p, float64(c), s, float32(s))
	}
}

// storeTile is the micro-kernels' store of one row of sums.
func storeTile(c []float32, sum *[gemmNR]float32, alpha float32, add bool) {
	for j, v := range sum {
		if add {
			c[j] = fma32(v, alpha, c[j])
		} else {
			c[j] = v * alpha
		}
	}
}

// sgemmRow16Go is sgemmRow16 in Go.
func sgemmRow16Go(k int, a *float32, rp int, b, c *float32, alpha float32, add bool) {
	var acc [gemmNR]float32
	bs := unsafe.Slice(b, k*gemmNR)
	for p := 0; p < k; p++ {
		av := *(*float32)(unsafe.Add(unsafe.Pointer(a), p*rp))
		bp := (*[gemmNR]float32)(bs[p*gemmNR:])
		fmaRow(&acc, av, bp)
	}
	storeTile(unsafe.Slice(c, gemmNR), &acc, alpha, add)
}

// sgemmRow64Go is sgemmRow64 in Go.
func sgemmRow64Go(k int, a *float32, rp int, b *float32, ps int, c *float32, alpha float32, add bool) {
	for q := 0; q < 4; q++ {
		sgemmRow16Go(k, a, rp, (*float32)(unsafe.Add(unsafe.Pointer(b), q*ps)), (*float32)(unsafe.Add(unsafe.Pointer(c), 4*q*gemmNR)), alpha, add)
	}
}
