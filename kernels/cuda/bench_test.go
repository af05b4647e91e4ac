//go:build fedcuda

package cuda

import (
	"testing"

	"gorgonia.org/cu"
)

// Device-resident FedAvg beside a plain device-to-device copy of the same
// bytes: the ratio of their bytes/s (both count the bytes read) says how
// close the fused kernel comes to the memory system's copy rate. The
// weighted mean reads 16 inputs of 64 MiB and writes 64 MiB; the copy reads
// and writes 1 GiB. scripts/bench-cuda.sh prints the ratio.
const (
	benchInputs     = 16
	benchInputBytes = 64 << 20
)

// benchInputsOnDevice allocates the 16 inputs as one 1 GiB region and
// returns it with the input addresses.
func benchInputsOnDevice(b *testing.B, c *Context) (cu.DevicePtr, []cu.DevicePtr) {
	b.Helper()
	base, err := c.Alloc(benchInputs * benchInputBytes)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Free(base) })
	xs := make([]cu.DevicePtr, benchInputs)
	for k := range xs {
		xs[k] = ptr(base, int64(k)*benchInputBytes)
	}
	// Alloc zero-filled it; the kernels' speed does not depend on the
	// values (no data-dependent branches for finite inputs).
	if err := c.Sync(); err != nil {
		b.Fatal(err)
	}
	return base, xs
}

func BenchmarkWeightedMeanGPU(b *testing.B) {
	c := testContext(b)
	be := NewBackend(c)
	b.Cleanup(func() { be.Close() })
	_, xs := benchInputsOnDevice(b, c)
	dst, err := c.Alloc(benchInputBytes)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Free(dst) })
	w := make([]float64, benchInputs)
	for k := range w {
		w[k] = float64(k + 1)
	}
	n := benchInputBytes / 4
	if err := be.WeightedMeanDevice(dst, w, xs, n, 1.0/136); err != nil { // warm up
		b.Fatal(err)
	}
	if err := c.Sync(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchInputs * benchInputBytes)
	b.ResetTimer()
	// A b.N loop rather than b.Loop: the launches are asynchronous, and the
	// Sync after the loop must count in the time.
	for range b.N {
		if err := be.WeightedMeanDevice(dst, w, xs, n, 1.0/136); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Sync(); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkCopyD2D(b *testing.B) {
	c := testContext(b)
	src, _ := benchInputsOnDevice(b, c)
	dst, err := c.Alloc(benchInputs * benchInputBytes)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Free(dst) })
	if err := c.DtoD(dst, src, benchInputs*benchInputBytes); err != nil { // warm up
		b.Fatal(err)
	}
	if err := c.Sync(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchInputs * benchInputBytes)
	b.ResetTimer()
	for range b.N { // b.N, as above: the Sync below is timed
		if err := c.DtoD(dst, src, benchInputs*benchInputBytes); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Sync(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWeightedMeanHost is the kernels.Backend path: 16 host inputs of
// 16 MiB copied to the GPU, reduced, and the result copied back.
func BenchmarkWeightedMeanHost(b *testing.B) {
	be := NewBackend(testContext(b))
	b.Cleanup(func() { be.Close() })
	const n = 4 << 20
	xs := make([][]float32, benchInputs)
	w := make([]float64, benchInputs)
	for k := range xs {
		xs[k] = make([]float32, n)
		for i := range xs[k] {
			xs[k][i] = float32(i%1000) * 0.001
		}
		w[k] = float64(k + 1)
	}
	dst := make([]float32, n)
	b.SetBytes(benchInputs * n * 4)
	b.ResetTimer()
	for b.Loop() {
		be.WeightedMean(dst, w, xs, 1.0/136)
	}
}
