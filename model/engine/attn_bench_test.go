package engine

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkCachedAttention is one layer's attention of a decoding step at
// the SmolLM2-135M shape: 16 sequences of 192 cached positions, 9 query
// heads over 3 key/value heads of 64.
func BenchmarkCachedAttention(b *testing.B) {
	const rows, heads, kvHeads, hd, ctx = 16, 9, 3, 64, 256
	h := NewHost().(*host)
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(n int) Buffer {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		buf := h.Alloc(n)
		h.Write(buf, 0, x)
		return buf
	}
	q, out := fill(rows*heads*hd), h.Alloc(rows*heads*hd)
	k, v := fill(rows*ctx*kvHeads*hd), fill(rows*ctx*kvHeads*hd)
	at := make([]int32, 2*rows)
	for r := range rows {
		at[2*r], at[2*r+1] = int32(r*ctx), 191
	}
	ab := h.AllocInt(2 * rows)
	h.WriteInt(ab, at)
	b.ResetTimer()
	for range b.N {
		h.CachedAttention(out, q, k, v, ab, heads, kvHeads, hd, 0.125)
	}
	if err := h.Sync(); err != nil {
		b.Fatal(err)
	}
}
