package engine

import (
	"math"
	"testing"
)

// TestExpf checks expf against math.Exp over the whole normal range (and
// its edges): within 3 float32 ulps (relative 3·2⁻²³).
func TestExpf(t *testing.T) {
	const tol = 3.0 / (1 << 23)
	worst, at := 0.0, float32(0)
	for x := float32(-87.3); x < 88.7; x += 0.000731 {
		want := math.Exp(float64(x))
		if e := math.Abs(float64(expf(x))-want) / want; e > worst {
			worst, at = e, x
		}
	}
	if worst > tol {
		t.Errorf("expf(%g) is %g, math.Exp %g: relative error %.3g > %.3g", at, expf(at), math.Exp(float64(at)), worst, tol)
	}
	t.Logf("worst relative error %.3g at %g", worst, at)
	for _, c := range []struct{ x, want float32 }{
		{0, 1}, {1, float32(math.E)}, {-100, 0}, {float32(math.Inf(-1)), 0},
		{89, float32(math.Inf(1))}, {float32(math.Inf(1)), float32(math.Inf(1))},
	} {
		if got := expf(c.x); math.Abs(float64(got-c.want)) > tol*float64(c.want) && got != c.want {
			t.Errorf("expf(%g) = %g, want %g", c.x, got, c.want)
		}
	}
	if nan := float32(math.NaN()); !math.IsNaN(float64(expf(nan))) {
		t.Errorf("expf(NaN) = %g, want NaN", expf(nan))
	}
	if got := sigmoidf(0); got != 0.5 {
		t.Errorf("sigmoidf(0) = %g, want 0.5", got)
	}
}

// TestVectorLoops checks the assembly loops (where the CPU has them)
// against the pure-Go loops, element by element, at lengths around the
// 8-lane width.
func TestVectorLoops(t *testing.T) {
	if !haveAVX2 {
		t.Skip("no AVX2+FMA on this CPU (or not amd64)")
	}
	const tol = 4.0 / (1 << 23)
	near := func(what string, i int, got, want float32, scale float64) {
		t.Helper()
		if math.IsInf(float64(want), 0) && got == want {
			return
		}
		if d := math.Abs(float64(got - want)); !(d <= tol*(math.Abs(float64(want))+scale)) {
			t.Fatalf("%s[%d] = %g, pure Go %g", what, i, got, want)
		}
	}
	for _, n := range []int{0, 1, 7, 8, 9, 16, 63, 200} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(math.Sin(float64(i)*1.7)) * 30
		}
		if n > 3 {
			x[1], x[2] = -200, 120 // outside exp's range
		}
		// expSum, also in place.
		dst := make([]float32, n)
		k, z := expSum(dst, x, 2.5)
		if k != n&^7 {
			t.Fatalf("n=%d: expSum did %d elements, want %d", n, k, n&^7)
		}
		var want float64
		for i := 0; i < k; i++ {
			e := expf(x[i] - 2.5)
			want += float64(e)
			near("exp", i, dst[i], e, 0)
		}
		if math.Abs(z-want) > tol*want {
			t.Fatalf("n=%d: expSum sum %g, pure Go %g", n, z, want)
		}
		in := append([]float32(nil), x...)
		if k2, z2 := expSum(in, in, 2.5); k2 != k || z2 != z || (k > 0 && in[0] != dst[0]) {
			t.Fatalf("n=%d: expSum in place differs", n)
		}
		// SwiGLU and its backward.
		u, da := make([]float32, n), make([]float32, n)
		for i := range u {
			u[i], da[i] = float32(math.Cos(float64(i))), float32(math.Sin(float64(i)*0.3))
		}
		act, dg, du := make([]float32, n), make([]float32, n), make([]float32, n)
		if got := swigluVec(act, x, u); got != n&^7 {
			t.Fatalf("n=%d: swigluVec did %d elements", n, got)
		}
		swigluBackVec(dg, du, da, x, u)
		for i := 0; i < n&^7; i++ {
			g := x[i]
			s := sigmoidf(g)
			near("act", i, act[i], g*s*u[i], 1)
			near("dg", i, dg[i], da[i]*u[i]*s*(1+g*(1-s)), 1)
			near("du", i, du[i], da[i]*g*s, 1)
		}
	}
	rowLoops(t)
	nan := []float32{float32(math.NaN()), 0, 0, 0, 0, 0, 0, 0}
	if _, z := expSum(nan, nan, 0); !math.IsNaN(z) || !math.IsNaN(float64(nan[0])) {
		t.Errorf("expSum lost a NaN: sum %g, first %g", z, nan[0])
	}
}

// rowLoops checks vec_amd64.s's loops against the pure-Go loops they stand
// for, on rows of 8 to 64 elements with a NaN-free and a NaN case.
func rowLoops(t *testing.T) {
	t.Helper()
	rng := func(i int, f float64) float32 { return float32(math.Sin(float64(i)*f) * 3) }
	for _, n := range []int{8, 16, 24, 64} {
		a, b, c, d := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range a {
			a[i], b[i], c[i], d[i] = rng(i, 1.3), rng(i, 0.7), rng(i, 2.1), rng(i, 0.2)
		}
		want := a[0]
		for _, v := range a {
			want = max(want, v)
		}
		if k, m := maxVec(a); k != n || m != want {
			t.Fatalf("n=%d: maxVec = %d, %g, want %d, %g", n, k, m, n, want)
		}
		a[n-3] = float32(math.NaN())
		if _, m := maxVec(a); !math.IsNaN(float64(m)) {
			t.Fatalf("n=%d: maxVec lost a NaN: %g", n, m)
		}
		a[n-3] = 1
		var dot, dot3 float64
		for i := range a {
			dot += float64(a[i]) * float64(b[i])
			dot3 += float64(a[i]) * float64(b[i]) * float64(c[i])
		}
		if _, got := dotF64Vec(a, b); math.Abs(got-dot) > 1e-12*(1+math.Abs(dot)) {
			t.Fatalf("n=%d: dotF64Vec = %g, want %g", n, got, dot)
		}
		if _, got := dot3F64Vec(a, b, c); math.Abs(got-dot3) > 1e-12*(1+math.Abs(dot3)) {
			t.Fatalf("n=%d: dot3F64Vec = %g, want %g", n, got, dot3)
		}
		y := make([]float32, n)
		mulScaleVec(y, a, b, 0.37)
		sc := append([]float32(nil), a...)
		scaleVec(sc, 0.37)
		dx := append([]float32(nil), d...)
		rmsBackRowVec(dx, a, b, c, 0.8, -1.7)
		ds := append([]float32(nil), b...)
		softmaxBackRowVec(ds, a, ds, 0.45)
		for i := range a {
			// The same operations in the same order: equal bits.
			if w := a[i] * 0.37 * b[i]; y[i] != w {
				t.Fatalf("n=%d: mulScaleVec[%d] = %g, want %g", n, i, y[i], w)
			}
			if w := a[i] * 0.37; sc[i] != w {
				t.Fatalf("n=%d: scaleVec[%d] = %g, want %g", n, i, sc[i], w)
			}
			if w := d[i] + float32(0.8*(float64(a[i])*float64(b[i])-float64(c[i])*-1.7)); dx[i] != w {
				t.Fatalf("n=%d: rmsBackRowVec[%d] = %g, want %g", n, i, dx[i], w)
			}
			if w := float32(float64(a[i]) * (float64(b[i]) - 0.45)); ds[i] != w {
				t.Fatalf("n=%d: softmaxBackRowVec[%d] = %g, want %g", n, i, ds[i], w)
			}
		}
	}
}
