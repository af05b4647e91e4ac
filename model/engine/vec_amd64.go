//go:build amd64 && !purego

package engine

// The assembly loops of vec_amd64.s; n is a positive multiple of 8.

//go:noescape
func maxAVX2(x *float32, n int) float32

//go:noescape
func scaleAVX2(x *float32, n int, s float32)

//go:noescape
func mulScaleAVX2(y, x, w *float32, n int, s float32)

//go:noescape
func dotF64AVX2(a, b *float32, n int) float64

//go:noescape
func dot3F64AVX2(a, b, c *float32, n int) float64

//go:noescape
func rmsBackRowAVX2(dx, dy, w, x *float32, n int, s, k float64)

//go:noescape
func softmaxBackRowAVX2(ds, p, dp *float32, n int, dot float64)

//go:noescape
func dotAVX2(a, b *float32, n int) float32

//go:noescape
func axpyAVX2(y, x *float32, n int, a float32)

// Each …Vec function below does its work for the longest prefix of its
// slices whose length is a multiple of 8 (all of the same length as the
// first) and returns that length; the caller does the rest with the
// pure-Go loop. They do nothing without AVX2.

// vecLen is the prefix the assembly takes.
func vecLen(n int) int {
	if !haveAVX2 {
		return 0
	}
	return n &^ 7
}

// maxVec returns the prefix's maximum (NaN if it holds a NaN).
func maxVec(x []float32) (int, float32) {
	n := vecLen(len(x))
	if n == 0 {
		return 0, 0
	}
	return n, maxAVX2(&x[0], n)
}

// scaleVec sets x[i] *= s.
func scaleVec(x []float32, s float32) int {
	n := vecLen(len(x))
	if n > 0 {
		scaleAVX2(&x[0], n, s)
	}
	return n
}

// mulScaleVec sets y[i] = x[i]·s·w[i].
func mulScaleVec(y, x, w []float32, s float32) int {
	n := vecLen(len(y))
	if n > 0 {
		_, _ = x[n-1], w[n-1] // index checks: the assembly reads n elements of each
		mulScaleAVX2(&y[0], &x[0], &w[0], n, s)
	}
	return n
}

// dotF64Vec returns Σ a[i]·b[i] in float64.
func dotF64Vec(a, b []float32) (int, float64) {
	n := vecLen(len(a))
	if n == 0 {
		return 0, 0
	}
	_ = b[n-1] // index checks: the assembly reads n elements of each
	return n, dotF64AVX2(&a[0], &b[0], n)
}

// dot3F64Vec returns Σ a[i]·b[i]·c[i] in float64.
func dot3F64Vec(a, b, c []float32) (int, float64) {
	n := vecLen(len(a))
	if n == 0 {
		return 0, 0
	}
	_, _ = b[n-1], c[n-1] // index checks: the assembly reads n elements of each
	return n, dot3F64AVX2(&a[0], &b[0], &c[0], n)
}

// rmsBackRowVec adds float32(s·(dy[i]·w[i] − x[i]·k)) (in float64) to dx[i].
func rmsBackRowVec(dx, dy, w, x []float32, s, k float64) int {
	n := vecLen(len(dx))
	if n > 0 {
		_, _, _ = dy[n-1], w[n-1], x[n-1] // index checks: the assembly reads n elements of each
		rmsBackRowAVX2(&dx[0], &dy[0], &w[0], &x[0], n, s, k)
	}
	return n
}

// softmaxBackRowVec sets ds[i] = float32(p[i]·(dp[i] − dot)) (in float64);
// ds may be dp.
func softmaxBackRowVec(ds, p, dp []float32, dot float64) int {
	n := vecLen(len(ds))
	if n > 0 {
		_, _ = p[n-1], dp[n-1] // index checks: the assembly reads n elements of each
		softmaxBackRowAVX2(&ds[0], &p[0], &dp[0], n, dot)
	}
	return n
}

// dotVec returns Σ a[i]·b[i] in float32 (fused multiply-adds per lane).
func dotVec(a, b []float32) (int, float32) {
	n := vecLen(len(a))
	if n == 0 {
		return 0, 0
	}
	_ = b[n-1] // index checks: the assembly reads n elements of each
	return n, dotAVX2(&a[0], &b[0], n)
}

// axpyVec adds a·x[i] to y[i].
func axpyVec(y, x []float32, a float32) int {
	n := vecLen(len(y))
	if n > 0 {
		_ = x[n-1] // index check: the assembly reads n elements
		axpyAVX2(&y[0], &x[0], n, a)
	}
	return n
}
