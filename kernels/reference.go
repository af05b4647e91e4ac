package kernels

import (
	"math"
	"slices"
)

// Reference is the plain sequential implementation of Backend, written to be
// obviously correct rather than fast. It is the oracle the other backends
// are tested against; it keeps no state, so its zero value is ready to use.
type Reference struct{}

var (
	_ Backend        = Reference{}
	_ WeightedMeaner = Reference{}
)

// Name returns "reference".
func (Reference) Name() string { return "reference" }

// WeightedSum implements Backend.
func (Reference) WeightedSum(acc []float64, w []float64, xs [][]float32) {
	CheckWeightedSum(acc, w, xs)
	for k, x := range xs {
		for i := range acc {
			acc[i] += float64(w[k] * float64(x[i]))
		}
	}
}

// WeightedMean implements WeightedMeaner by its definition.
func (r Reference) WeightedMean(dst []float32, w []float64, xs [][]float32, s float64) {
	CheckWeightedMean(dst, w, xs)
	acc := make([]float64, len(dst))
	r.WeightedSum(acc, w, xs)
	r.Store(dst, acc, s)
}

// Store implements Backend.
func (Reference) Store(dst []float32, acc []float64, s float64) {
	checkLen("Store", "dst", len(dst), "acc", len(acc))
	for i := range acc {
		dst[i] = float32(float64(acc[i] * s))
	}
}

// Scale implements Backend.
func (Reference) Scale(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}

// SquaredNorm implements Backend.
func (Reference) SquaredNorm(x []float32) float64 {
	var total float64
	for b := 0; b < len(x); b += ReduceBlock {
		var p float64
		for _, v := range x[b:min(b+ReduceBlock, len(x))] {
			p += float64(float64(v) * float64(v))
		}
		total += p
	}
	return total
}

// PairwiseSquaredDistances implements Backend.
func (Reference) PairwiseSquaredDistances(d []float64, xs [][]float32) {
	m := CheckPairwise(d, xs)
	n := len(xs)
	for i := range n {
		for j := i + 1; j < n; j++ {
			var total float64
			for b := 0; b < m; b += ReduceBlock {
				var p float64
				for c := b; c < min(b+ReduceBlock, m); c++ {
					t := float64(xs[i][c]) - float64(xs[j][c])
					p += float64(t * t)
				}
				total += p
			}
			d[i*n+j] += total
			d[j*n+i] += total
		}
	}
}

// Median implements Backend.
func (Reference) Median(dst []float32, xs [][]float32) {
	CheckCoordinatewise("Median", dst, xs)
	n := len(xs)
	vals := make([]float32, n)
	for i := range dst {
		for k := range xs {
			vals[k] = xs[k][i]
		}
		slices.SortFunc(vals, totalOrderCompare)
		if n%2 == 1 {
			dst[i] = vals[n/2]
		} else {
			dst[i] = float32((float64(vals[n/2-1]) + float64(vals[n/2])) / 2)
		}
	}
}

// TrimmedMean implements Backend.
func (Reference) TrimmedMean(dst []float32, xs [][]float32, k int) {
	CheckCoordinatewise("TrimmedMean", dst, xs)
	CheckTrim(k, len(xs))
	n := len(xs)
	vals := make([]float32, n)
	for i := range dst {
		for j := range xs {
			vals[j] = xs[j][i]
		}
		slices.SortFunc(vals, totalOrderCompare)
		var s float64
		for _, v := range vals[k : n-k] {
			s += float64(v)
		}
		dst[i] = float32(s / float64(n-2*k))
	}
}

// QuantizeInt8 implements Backend.
func (Reference) QuantizeInt8(q []int8, scales []float32, x []float32, block int) {
	CheckQuant("QuantizeInt8", len(x), len(q), len(scales), block)
	for b := range scales {
		lo, hi := b*block, min((b+1)*block, len(x))
		var m float32
		for _, v := range x[lo:hi] {
			if a := float32(math.Abs(float64(v))); a > m {
				m = a
			}
		}
		scale := m / 127
		scales[b] = scale
		for i := lo; i < hi; i++ {
			if scale == 0 {
				q[i] = 0
				continue
			}
			r := math.Round(float64(x[i] / scale))
			switch {
			case math.IsNaN(r):
				q[i] = 0
			case r > 127:
				q[i] = 127
			case r < -127:
				q[i] = -127
			default:
				q[i] = int8(r)
			}
		}
	}
}

// DequantizeInt8 implements Backend.
func (Reference) DequantizeInt8(x []float32, q []int8, scales []float32, block int) {
	CheckQuant("DequantizeInt8", len(q), len(x), len(scales), block)
	for i := range q {
		x[i] = float32(q[i]) * scales[i/block]
	}
}

// FirstNonFinite implements Backend.
func (Reference) FirstNonFinite(x []float32) int {
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return i
		}
	}
	return -1
}

// totalOrderKey maps a float32 to a uint32 whose unsigned order is the IEEE
// 754 totalOrder of the floats: negative values (and −NaN) have every bit
// flipped, the others only the sign bit.
func totalOrderKey(v float32) uint32 {
	b := math.Float32bits(v)
	if b&(1<<31) != 0 {
		return ^b
	}
	return b | 1<<31
}

// fromTotalOrderKey inverts totalOrderKey.
func fromTotalOrderKey(k uint32) float32 {
	if k&(1<<31) != 0 {
		return math.Float32frombits(k &^ (1 << 31))
	}
	return math.Float32frombits(^k)
}

func totalOrderCompare(a, b float32) int {
	ka, kb := totalOrderKey(a), totalOrderKey(b)
	switch {
	case ka < kb:
		return -1
	case ka > kb:
		return 1
	}
	return 0
}
