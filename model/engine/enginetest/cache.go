package enginetest

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedtune/fedtune/model/engine"
)

// TestCacheDevice runs the key/value-cache part of the suite (the
// operations of engine.CacheDevice) on the devices newDev returns, with
// DefaultTolerance. See TestCacheDeviceTol.
func TestCacheDevice(t *testing.T, newDev func() engine.CacheDevice) {
	TestCacheDeviceTol(t, newDev, DefaultTolerance)
}

// TestCacheDeviceTol runs the CacheDevice suite, one subtest per
// operation, comparing the device under test with engine.NewHost as
// TestDeviceTol does: ScatterRows must copy the rows exactly;
// CachedAttention (multi-head, grouped-query and multi-query heads, spans
// of one position to a whole cache, several sequences side by side) must
// agree with Host at tol and Host with float64 loops; a MatMul reading a
// PackWeight-ed weight must give the product of the weight's current
// values, before and after a Write into it; and an index or span outside
// the cache, or heads that are not a multiple of kvHeads, must be the
// device's sticky error, leaving the cache as it was.
func TestCacheDeviceTol(t *testing.T, newDev func() engine.CacheDevice, tol float64) {
	for _, c := range cacheCases {
		t.Run(c.name, func(t *testing.T) {
			r := &rig{t: t, dev: newDev(), host: engine.NewHost(), tol: tol, rng: rand.New(rand.NewPCG(11, uint64(len(c.name))))}
			defer func() {
				if err := r.dev.Close(); err != nil {
					t.Errorf("%s: Close: %v", r.dev.Name(), err)
				}
				_ = r.host.Close()
			}()
			c.run(r)
		})
	}
}

var cacheCases = []struct {
	name string
	run  func(r *rig)
}{
	{"ScatterRows", testScatterRows},
	{"CachedAttention", testCachedAttention},
	{"PackWeight", testPackWeight},
	{"CacheErrors", testCacheErrors},
}

// cache returns side's device as a CacheDevice.
func (r *rig) cache(side int) engine.CacheDevice {
	return r.devs()[side].(engine.CacheDevice)
}

func testScatterRows(r *rig) {
	for _, tc := range []struct {
		n, d int
		idx  []int32
	}{
		{5, 3, []int32{4}},
		{9, 13, []int32{3, 0, 8, 5, 1}},
		{4, 300, []int32{2, 1, 0, 3}},
	} {
		dst0, src := r.vec(tc.n*tc.d, -1, 1), r.vec(len(tc.idx)*tc.d, -1, 1)
		dst, s, id := r.put(dst0), r.put(src), r.ints(tc.idx)
		r.do(func(_ engine.Device, side int) {
			r.cache(side).ScatterRows(dst.at(side), s.at(side), id.at(side), tc.d)
		})
		want := slices.Clone(dst0)
		for k, to := range tc.idx {
			copy(want[int(to)*tc.d:(int(to)+1)*tc.d], src[k*tc.d:(k+1)*tc.d])
		}
		dev, host := r.get("ScatterRows", dst)
		for side, got := range [][]float32{dev, host} {
			if !slices.Equal(got, want) {
				r.t.Errorf("ScatterRows of %d rows of %d into %d on %s: not the rows copied", len(tc.idx), tc.d, tc.n, r.devs()[side].Name())
			}
		}
	}
}

// refCachedAttention is CachedAttention in float64.
func refCachedAttention(q, k, v []float32, at []int32, heads, kvHeads, hd int, scale float32) []float64 {
	rows, w, rep := len(at)/2, kvHeads*hd, heads/kvHeads
	out := make([]float64, rows*heads*hd)
	for r := 0; r < rows; r++ {
		c, n := int(at[2*r]), int(at[2*r+1])+1
		for h := 0; h < heads; h++ {
			g := h / rep
			s := make([]float64, n)
			m := math.Inf(-1)
			for j := range s {
				var dot float64
				for i := 0; i < hd; i++ {
					dot += float64(q[(r*heads+h)*hd+i]) * float64(k[(c+j)*w+g*hd+i])
				}
				s[j] = float64(scale) * dot
				m = math.Max(m, s[j])
			}
			var z float64
			for j := range s {
				s[j] = math.Exp(s[j] - m)
				z += s[j]
			}
			for j := range s {
				for i := 0; i < hd; i++ {
					out[(r*heads+h)*hd+i] += s[j] / z * float64(v[(c+j)*w+g*hd+i])
				}
			}
		}
	}
	return out
}

func testCachedAttention(r *rig) {
	for _, tc := range []struct {
		name               string
		heads, kvHeads, hd int
		cacheRows          int
		at                 []int32
		scale              float32
	}{
		{"mha one position", 2, 2, 8, 4, []int32{0, 0}, 0.35},
		{"gqa prefill", 6, 2, 16, 40, []int32{0, 0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6}, 0.25},
		{"gqa slots side by side", 6, 2, 16, 150, []int32{0, 49, 50, 7, 100, 31, 0, 12}, 0.25},
		{"mqa long span", 4, 1, 12, 300, []int32{0, 299, 100, 150}, 0.3},
		{"wide head", 2, 1, 72, 10, []int32{2, 7, 0, 0}, 0.1},
	} {
		rows := len(tc.at) / 2
		q := r.vec(rows*tc.heads*tc.hd, -3, 3) // peaked softmaxes too
		k := r.vec(tc.cacheRows*tc.kvHeads*tc.hd, -1, 1)
		v := r.vec(len(k), -1, 1)
		qp, kp, vp, op, ap := r.put(q), r.put(k), r.put(v), r.put(make([]float32, len(q))), r.ints(tc.at)
		r.do(func(_ engine.Device, side int) {
			r.cache(side).CachedAttention(op.at(side), qp.at(side), kp.at(side), vp.at(side), ap.at(side), tc.heads, tc.kvHeads, tc.hd, tc.scale)
		})
		r.check("CachedAttention "+tc.name, op, refCachedAttention(q, k, v, tc.at, tc.heads, tc.kvHeads, tc.hd, tc.scale))
	}
}

func testPackWeight(r *rig) {
	const M, N, K = 3, 7, 5
	x, w := r.vec(M*K, -1, 1), r.vec(N*K, -1, 1)
	xp, wp, cp := r.put(x), r.put(w), r.put(make([]float32, M*N))
	r.do(func(_ engine.Device, side int) { r.cache(side).PackWeight(wp.at(side), N, K) })
	g := engine.Gemm{TransB: true, M: M, N: N, K: K, Alpha: 1}
	mul := func() {
		r.do(func(d engine.Device, side int) {
			gg := g
			gg.A, gg.B, gg.C = xp.at(side), wp.at(side), cp.at(side)
			d.MatMul(gg)
		})
	}
	mul()
	r.check("MatMul on a packed weight", cp, refGemm(g, x, w, make([]float32, M*N)))
	// A Write into the weight drops any packed copy.
	w2 := r.vec(N*K, -1, 1)
	r.do(func(d engine.Device, side int) { d.Write(wp.at(side), 0, w2) })
	mul()
	r.check("MatMul after a Write into the packed weight", cp, refGemm(g, x, w2, make([]float32, M*N)))
}

func testCacheErrors(r *rig) {
	d := r.cache(0)
	const n, dd = 4, 8
	cache := d.Alloc(n * dd)
	src := d.Alloc(2 * dd)
	out := d.Alloc(2 * dd)
	idx, at := d.AllocInt(2), d.AllocInt(4)
	before := r.vec(n*dd, -1, 1)
	d.Write(cache, 0, before)
	if err := d.Sync(); err != nil {
		r.t.Fatal(err)
	}
	for _, b := range []struct {
		name string
		op   func()
	}{
		{"ScatterRows index = rows", func() { d.WriteInt(idx, []int32{1, n}); d.ScatterRows(cache, src, idx, dd) }},
		{"ScatterRows index < 0", func() { d.WriteInt(idx, []int32{-1, 0}); d.ScatterRows(cache, src, idx, dd) }},
		{"ScatterRows d not dividing the cache", func() { d.WriteInt(idx, []int32{0, 1}); d.ScatterRows(cache, src, idx, 5) }},
		{"CachedAttention span past the cache", func() {
			d.WriteInt(at, []int32{0, 3, 2, 2})
			d.CachedAttention(out, src, cache, cache, at, 1, 1, dd, 1)
		}},
		{"CachedAttention cache row < 0", func() {
			d.WriteInt(at, []int32{-1, 0, 0, 0})
			d.CachedAttention(out, src, cache, cache, at, 1, 1, dd, 1)
		}},
		{"CachedAttention heads not a multiple of kvHeads", func() {
			d.WriteInt(at, []int32{0, 0, 0, 0})
			d.CachedAttention(out, src, cache, cache, at, 3, 2, dd, 1)
		}},
		{"CachedAttention out aliasing q", func() {
			d.WriteInt(at, []int32{0, 0, 0, 0})
			d.CachedAttention(src, src, cache, cache, at, 1, 1, dd, 1)
		}},
		{"PackWeight of the wrong shape", func() { d.PackWeight(cache, 3, dd) }},
	} {
		b.op()
		d.Zero(cache) // must do nothing: the error is sticky
		if err := d.Sync(); err == nil {
			r.t.Errorf("%s: Sync returned no error", b.name)
			continue
		}
		if err := d.Sync(); err != nil {
			r.t.Errorf("%s: Sync did not clear the error: %v", b.name, err)
		}
		got := make([]float32, n*dd)
		d.Read(got, cache, 0)
		if err := d.Sync(); err != nil {
			r.t.Fatal(err)
		}
		if !slices.Equal(got, before) {
			r.t.Errorf("%s: the cache changed", b.name)
			d.Write(cache, 0, before)
		}
	}
}
