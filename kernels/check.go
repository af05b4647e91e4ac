package kernels

import "fmt"

// The Check functions check the arguments of a Backend method as its
// contract states them, for every backend (Reference, CPU, and kernels/cuda):
// they panic, because a length mismatch is a programming error in the
// caller (see Backend), with a message that says which argument was wrong.

func checkLen(method, a string, la int, b string, lb int) {
	if la != lb {
		panic(fmt.Sprintf("kernels: %s: len(%s) = %d, len(%s) = %d", method, a, la, b, lb))
	}
}

// CheckWeightedSum checks WeightedSum's arguments.
func CheckWeightedSum(acc []float64, w []float64, xs [][]float32) {
	checkLen("WeightedSum", "w", len(w), "xs", len(xs))
	for k, x := range xs {
		if len(x) != len(acc) {
			panic(fmt.Sprintf("kernels: WeightedSum: len(xs[%d]) = %d, len(acc) = %d", k, len(x), len(acc)))
		}
	}
}

// CheckPairwise checks PairwiseSquaredDistances' arguments and returns the
// common length of the xs.
func CheckPairwise(d []float64, xs [][]float32) int {
	n := len(xs)
	if len(d) != n*n {
		panic(fmt.Sprintf("kernels: PairwiseSquaredDistances: len(d) = %d, want len(xs)² = %d", len(d), n*n))
	}
	if n == 0 {
		return 0
	}
	m := len(xs[0])
	for k, x := range xs {
		if len(x) != m {
			panic(fmt.Sprintf("kernels: PairwiseSquaredDistances: len(xs[%d]) = %d, len(xs[0]) = %d", k, len(x), m))
		}
	}
	return m
}

// CheckCoordinatewise checks the arguments of Median and TrimmedMean
// (method names which).
func CheckCoordinatewise(method string, dst []float32, xs [][]float32) {
	if len(xs) == 0 {
		panic(fmt.Sprintf("kernels: %s: no inputs", method))
	}
	for k, x := range xs {
		if len(x) != len(dst) {
			panic(fmt.Sprintf("kernels: %s: len(xs[%d]) = %d, len(dst) = %d", method, k, len(x), len(dst)))
		}
	}
}

// CheckTrim checks TrimmedMean's k against its n inputs.
func CheckTrim(k, n int) {
	if k < 0 || 2*k >= n {
		panic(fmt.Sprintf("kernels: TrimmedMean: k = %d with %d inputs, want 0 <= 2k < n", k, n))
	}
}

// CheckQuant checks the lengths of QuantizeInt8 or DequantizeInt8 (method
// names which): n values, m of the other representation, ns scales.
func CheckQuant(method string, n, m, ns, block int) {
	if block <= 0 {
		panic(fmt.Sprintf("kernels: %s: block = %d, want > 0", method, block))
	}
	if n != m {
		panic(fmt.Sprintf("kernels: %s: lengths %d and %d differ", method, n, m))
	}
	if want := (n + block - 1) / block; ns != want {
		panic(fmt.Sprintf("kernels: %s: len(scales) = %d, want ceil(%d/%d) = %d", method, ns, n, block, want))
	}
}

// CheckWeightedMean checks WeightedMean's arguments.
func CheckWeightedMean(dst []float32, w []float64, xs [][]float32) {
	checkLen("WeightedMean", "w", len(w), "xs", len(xs))
	for k, x := range xs {
		if len(x) != len(dst) {
			panic(fmt.Sprintf("kernels: WeightedMean: len(xs[%d]) = %d, len(dst) = %d", k, len(x), len(dst)))
		}
	}
}
