package kernels

import (
	"encoding/binary"
	"math"
	"slices"
	"testing"
)

// FuzzBackendsAgree feeds arbitrary float32 bit patterns (NaNs, infinities,
// subnormals included) to every method of the CPU backend and checks it
// against Reference, bit for bit.
func FuzzBackendsAgree(f *testing.F) {
	f.Add([]byte{0, 0, 128, 63, 0, 0, 0, 192, 0, 0, 192, 127, 1, 0, 0, 0}, uint8(3), uint8(2))
	f.Add(make([]byte, 64), uint8(1), uint8(7))
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f, 0, 0, 0x80, 0xff, 0, 0, 0, 0x80}, uint8(2), uint8(1))
	c := NewCPU(3)
	f.Fuzz(func(t *testing.T, data []byte, nIn, block uint8) {
		vals := make([]float32, len(data)/4)
		for i := range vals {
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
		k := int(nIn%5) + 1
		m := len(vals) / k
		xs := make([][]float32, k)
		for j := range xs {
			xs[j] = vals[j*m : (j+1)*m]
		}
		w := make([]float64, k)
		for j := range w {
			w[j] = float64(j) + 0.5
		}
		want, got := make([]float64, m), make([]float64, m)
		Reference{}.WeightedSum(want, w, xs)
		c.WeightedSum(got, w, xs)
		for i := range want {
			if math.Float64bits(want[i]) != math.Float64bits(got[i]) && !(math.IsNaN(want[i]) && math.IsNaN(got[i])) {
				t.Fatalf("WeightedSum [%d]: %v, reference %v", i, got[i], want[i])
			}
		}
		eq := func(a, b float64) bool {
			return math.Float64bits(a) == math.Float64bits(b) || (math.IsNaN(a) && math.IsNaN(b))
		}
		if a, b := c.SquaredNorm(vals), (Reference{}).SquaredNorm(vals); !eq(a, b) {
			t.Fatalf("SquaredNorm: %v, reference %v", a, b)
		}
		if a, b := c.FirstNonFinite(vals), (Reference{}).FirstNonFinite(vals); a != b {
			t.Fatalf("FirstNonFinite: %d, reference %d", a, b)
		}
		dm, dr := make([]float32, m), make([]float32, m)
		c.Median(dm, xs)
		Reference{}.Median(dr, xs)
		sameBits32(t, "Median", dm, dr)
		c.TrimmedMean(dm, xs, (k-1)/2)
		Reference{}.TrimmedMean(dr, xs, (k-1)/2)
		for i := range dm {
			if math.Float32bits(dm[i]) != math.Float32bits(dr[i]) && !(dm[i] != dm[i] && dr[i] != dr[i]) {
				t.Fatalf("TrimmedMean [%d]: %v, reference %v", i, dm[i], dr[i])
			}
		}
		b := int(block%16) + 1
		nb := (len(vals) + b - 1) / b
		q1, s1 := make([]int8, len(vals)), make([]float32, nb)
		q2, s2 := make([]int8, len(vals)), make([]float32, nb)
		c.QuantizeInt8(q1, s1, vals, b)
		Reference{}.QuantizeInt8(q2, s2, vals, b)
		if !slices.Equal(q1, q2) {
			t.Fatalf("QuantizeInt8: q %v, reference %v", q1, q2)
		}
		sameBits32(t, "scales", s1, s2)
	})
}
