package engine

// Each …Vec function below does its work for the longest prefix of its
// slices whose length is a multiple of 8 (all of the same length as the
// first) and returns that length; the caller does the rest with its
// scalar loop. The prefix runs the assembly loop where the CPU has AVX2,
// else its pure-Go twin (lanes.go), which gives the same bits.

// vecLen is the prefix the vector loops take.
func vecLen(n int) int { return n &^ 7 }

// maxVec returns the prefix's maximum (NaN if it holds a NaN).
func maxVec(x []float32) (int, float32) {
	n := vecLen(len(x))
	if n == 0 {
		return 0, 0
	}
	if !haveAVX2 {
		return n, maxLanes(x[:n])
	}
	return n, maxAVX2(&x[0], n)
}

// scaleVec sets x[i] *= s.
func scaleVec(x []float32, s float32) int {
	n := vecLen(len(x))
	if n > 0 {
		if !haveAVX2 {
			scaleLanes(x[:n], s)
			return n
		}
		scaleAVX2(&x[0], n, s)
	}
	return n
}

// mulScaleVec sets y[i] = x[i]·s·w[i].
func mulScaleVec(y, x, w []float32, s float32) int {
	n := vecLen(len(y))
	if n > 0 {
		_, _ = x[n-1], w[n-1] // index checks: the assembly reads n elements of each
		if !haveAVX2 {
			mulScaleLanes(y[:n], x, w, s)
			return n
		}
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
	if !haveAVX2 {
		return n, dotF64Lanes(a[:n], b)
	}
	return n, dotF64AVX2(&a[0], &b[0], n)
}

// dot3F64Vec returns Σ a[i]·b[i]·c[i] in float64.
func dot3F64Vec(a, b, c []float32) (int, float64) {
	n := vecLen(len(a))
	if n == 0 {
		return 0, 0
	}
	_, _ = b[n-1], c[n-1] // index checks: the assembly reads n elements of each
	if !haveAVX2 {
		return n, dot3F64Lanes(a[:n], b, c)
	}
	return n, dot3F64AVX2(&a[0], &b[0], &c[0], n)
}

// rmsBackRowVec adds float32(s·(dy[i]·w[i] − x[i]·k)) (in float64) to dx[i].
func rmsBackRowVec(dx, dy, w, x []float32, s, k float64) int {
	n := vecLen(len(dx))
	if n > 0 {
		_, _, _ = dy[n-1], w[n-1], x[n-1] // index checks: the assembly reads n elements of each
		if !haveAVX2 {
			rmsBackRowLanes(dx[:n], dy, w, x, s, k)
			return n
		}
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
		if !haveAVX2 {
			softmaxBackRowLanes(ds[:n], p, dp, dot)
			return n
		}
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
	if !haveAVX2 {
		return n, dotLanes(a[:n], b)
	}
	return n, dotAVX2(&a[0], &b[0], n)
}

// axpyVec adds a·x[i] to y[i].
func axpyVec(y, x []float32, a float32) int {
	n := vecLen(len(y))
	if n > 0 {
		_ = x[n-1] // index check: the assembly reads n elements
		if !haveAVX2 {
			axpyLanes(y[:n], x, a)
			return n
		}
		axpyAVX2(&y[0], &x[0], n, a)
	}
	return n
}

// expSum sets dst[i] = e^(src[i]−m) for a prefix of src whose length is a
// multiple of 8 and returns that length and the prefix's sum (float64);
// the caller does the rest. dst may be src.
func expSum(dst, src []float32, m float32) (int, float64) {
	n := len(src) &^ 7
	if n == 0 {
		return 0, 0
	}
	_ = dst[n-1] // index checks: the assembly reads n elements of each
	if !haveAVX2 {
		return n, expSumLanes(dst[:n], src[:n], m)
	}
	return n, expSumAVX2(&dst[0], &src[0], n, m)
}

// swigluVec does SwiGLU for a prefix of g (a multiple of 8 elements) and
// returns its length.
func swigluVec(act, g, u []float32) int {
	n := len(g) &^ 7
	if n == 0 {
		return 0
	}
	_, _ = act[n-1], u[n-1] // index checks: the assembly reads n elements of each
	if !haveAVX2 {
		swigluLanes(act[:n], g[:n], u)
		return n
	}
	swigluAVX2(&act[0], &g[0], &u[0], n)
	return n
}

// swigluBackVec does SwiGLUBackward for a prefix of g (a multiple of 8
// elements) and returns its length.
func swigluBackVec(dg, du, dact, g, u []float32) int {
	n := len(g) &^ 7
	if n == 0 {
		return 0
	}
	_, _, _, _ = dg[n-1], du[n-1], dact[n-1], u[n-1] // index checks: the assembly reads n elements of each
	if !haveAVX2 {
		swigluBackLanes(dg[:n], du, dact, g[:n], u)
		return n
	}
	swigluBackAVX2(&dg[0], &du[0], &dact[0], &g[0], &u[0], n)
	return n
}
