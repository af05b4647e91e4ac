package kernels

import (
	"flag"
	"fmt"
	"testing"
)

// benchN is the length of each input in the benchmarks; -kernels.n=16777216
// gives the 16 inputs × 64 MiB.
var benchN = flag.Int("kernels.n", 1<<20, "elements per input vector in the kernels benchmarks")

// benchInputs returns k inputs of n elements with cheap, varied values.
func benchInputs(k, n int) [][]float32 {
	xs := make([][]float32, k)
	for j := range xs {
		xs[j] = make([]float32, n)
		for i := range xs[j] {
			xs[j][i] = float32((i*7+j*13)%1001)*0.001 - 0.5
		}
	}
	return xs
}

func benchBackends() []Backend { return []Backend{Reference{}, Default()} }

// BenchmarkWeightedSum is FedAvg's reduction: 16 inputs into one float64
// accumulator. Bytes are the float32 inputs read.
func BenchmarkWeightedSum(b *testing.B) {
	n := *benchN
	xs := benchInputs(16, n)
	w := make([]float64, 16)
	for i := range w {
		w[i] = float64(i + 1)
	}
	acc := make([]float64, n)
	for _, be := range benchBackends() {
		b.Run(fmt.Sprintf("%s/16x%d", be.Name(), n), func(b *testing.B) {
			b.SetBytes(int64(16 * n * 4))
			for b.Loop() {
				be.WeightedSum(acc, w, xs)
			}
		})
	}
}

// BenchmarkFedAvg is the whole in-memory FedAvg: zero, accumulate 16 inputs,
// store scaled to float32. Bytes are the float32 inputs read.
func BenchmarkFedAvg(b *testing.B) {
	n := *benchN
	xs := benchInputs(16, n)
	w := make([]float64, 16)
	for i := range w {
		w[i] = float64(i + 1)
	}
	acc := make([]float64, n)
	dst := make([]float32, n)
	for _, be := range benchBackends() {
		b.Run(fmt.Sprintf("%s/16x%d", be.Name(), n), func(b *testing.B) {
			b.SetBytes(int64(16 * n * 4))
			for b.Loop() {
				clear(acc)
				be.WeightedSum(acc, w, xs)
				be.Store(dst, acc, 1.0/136)
			}
		})
	}
}

// BenchmarkWeightedMean is the fused FedAvg (see WeightedMeaner).
func BenchmarkWeightedMean(b *testing.B) {
	n := *benchN
	xs := benchInputs(16, n)
	w := make([]float64, 16)
	for i := range w {
		w[i] = float64(i + 1)
	}
	dst := make([]float32, n)
	for _, be := range benchBackends() {
		b.Run(fmt.Sprintf("%s/16x%d", be.Name(), n), func(b *testing.B) {
			b.SetBytes(int64(16 * n * 4))
			for b.Loop() {
				WeightedMean(be, dst, w, xs, 1.0/136)
			}
		})
	}
}

func BenchmarkSquaredNorm(b *testing.B) {
	n := 16 * *benchN
	x := benchInputs(1, n)[0]
	for _, be := range benchBackends() {
		b.Run(fmt.Sprintf("%s/%d", be.Name(), n), func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			for b.Loop() {
				be.SquaredNorm(x)
			}
		})
	}
}

func BenchmarkFirstNonFinite(b *testing.B) {
	n := 16 * *benchN
	x := benchInputs(1, n)[0]
	for _, be := range benchBackends() {
		b.Run(fmt.Sprintf("%s/%d", be.Name(), n), func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			for b.Loop() {
				be.FirstNonFinite(x)
			}
		})
	}
}

// BenchmarkPairwiseSquaredDistances is Krum's cost: 16 inputs, 120 pairs.
// Bytes are the inputs (each read once per pair in principle).
func BenchmarkPairwiseSquaredDistances(b *testing.B) {
	n := *benchN / 4
	xs := benchInputs(16, n)
	d := make([]float64, 16*16)
	for _, be := range benchBackends() {
		b.Run(fmt.Sprintf("%s/16x%d", be.Name(), n), func(b *testing.B) {
			b.SetBytes(int64(16 * n * 4))
			for b.Loop() {
				be.PairwiseSquaredDistances(d, xs)
			}
		})
	}
}

func BenchmarkMedian(b *testing.B) {
	n := *benchN / 4
	xs := benchInputs(16, n)
	dst := make([]float32, n)
	for _, be := range benchBackends() {
		b.Run(fmt.Sprintf("%s/16x%d", be.Name(), n), func(b *testing.B) {
			b.SetBytes(int64(16 * n * 4))
			for b.Loop() {
				be.Median(dst, xs)
			}
		})
	}
}

func BenchmarkTrimmedMean(b *testing.B) {
	n := *benchN / 4
	xs := benchInputs(16, n)
	dst := make([]float32, n)
	for _, be := range benchBackends() {
		b.Run(fmt.Sprintf("%s/16x%d", be.Name(), n), func(b *testing.B) {
			b.SetBytes(int64(16 * n * 4))
			for b.Loop() {
				be.TrimmedMean(dst, xs, 2)
			}
		})
	}
}

func BenchmarkQuantizeInt8(b *testing.B) {
	n := 4 * *benchN
	x := benchInputs(1, n)[0]
	q := make([]int8, n)
	scales := make([]float32, (n+63)/64)
	for _, be := range benchBackends() {
		b.Run(fmt.Sprintf("%s/%d", be.Name(), n), func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			for b.Loop() {
				be.QuantizeInt8(q, scales, x, 64)
			}
		})
		b.Run(fmt.Sprintf("dequantize/%s/%d", be.Name(), n), func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			for b.Loop() {
				be.DequantizeInt8(x, q, scales, 64)
			}
		})
	}
}
