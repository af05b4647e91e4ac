//go:build fedcuda || fedcudaemu

package cudadev_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/engine/cudadev"
	"github.com/fedtune/fedtune/model/engine/enginetest"
	"github.com/fedtune/fedtune/model/modeltest"
)

// openCacheGPU opens GPU 0 as an engine.CacheDevice (skipping without one).
func openCacheGPU(t testing.TB) engine.CacheDevice {
	t.Helper()
	dev, ok := openGPU(t).(engine.CacheDevice)
	if !ok {
		t.Fatal("the CUDA device is not an engine.CacheDevice")
	}
	return dev
}

// TestCacheConformance runs package enginetest's CacheDevice suite:
// ScatterRows, CachedAttention and PackWeight against the Host device (and
// the Host against float64 loops), and the error rules.
func TestCacheConformance(t *testing.T) {
	if err := openGPU(t).Close(); err != nil {
		t.Fatal(err)
	}
	enginetest.TestCacheDevice(t, func() engine.CacheDevice {
		dev, err := cudadev.Open(0)
		if err != nil {
			panic(err) // it opened a moment ago
		}
		return dev.(engine.CacheDevice)
	})
}

// randVec is n seeded values in [-1, 1).
func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.Float64()*2 - 1)
	}
	return v
}

// TestScatterRows compares ScatterRows with the Host's, and checks that a
// repeated index gets its last row on the GPU whatever the launch order.
func TestScatterRows(t *testing.T) {
	gpu := openCacheGPU(t)
	defer gpu.Close()
	host := engine.NewHost().(engine.CacheDevice)
	defer host.Close()
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name    string
		n, d    int
		idx     []int32
		repeats bool
	}{
		{"one row", 5, 3, []int32{4}, false},
		{"permutation", 9, 40, []int32{3, 0, 8, 5, 1}, false},
		{"wide rows", 4, 300, []int32{2, 1}, false},
		{"repeated index", 6, 33, []int32{1, 5, 1, 2, 1}, true},
		{"repeat in the middle", 7, 5, []int32{0, 3, 4, 3, 2, 6}, true},
		{"padding rows", 8, 9, []int32{2, 0, 1, 7, 7, 7}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst0, src := randVec(r, tc.n*tc.d), randVec(r, len(tc.idx)*tc.d)
			var got [2][]float32
			for i, dev := range []engine.CacheDevice{gpu, host} {
				dst, sb, ib := dev.Alloc(len(dst0)), dev.Alloc(len(src)), dev.AllocInt(len(tc.idx))
				dev.Write(dst, 0, dst0)
				dev.Write(sb, 0, src)
				dev.WriteInt(ib, tc.idx)
				dev.ScatterRows(dst, sb, ib, tc.d)
				got[i] = make([]float32, len(dst0))
				dev.Read(got[i], dst, 0)
				if err := dev.Sync(); err != nil {
					t.Fatalf("%s: %v", dev.Name(), err)
				}
				dev.Free(dst)
				dev.Free(sb)
				dev.FreeInt(ib)
			}
			want := slices.Clone(dst0)
			for k, to := range tc.idx { // the last row of each index wins
				copy(want[int(to)*tc.d:(int(to)+1)*tc.d], src[k*tc.d:(k+1)*tc.d])
			}
			if !slices.Equal(got[0], want) {
				t.Errorf("GPU: %v, want %v", got[0], want)
			}
			if !tc.repeats && !slices.Equal(got[1], want) {
				t.Errorf("Host: %v, want %v", got[1], want)
			}
		})
	}
}

// TestCachedAttentionDeterministic: the same CachedAttention twice gives
// the same bits, on spans long enough that the scores are spread over
// several threads (no atomics; every sum in a fixed order). The agreement
// with the Host is enginetest's (TestCacheConformance).
func TestCachedAttentionDeterministic(t *testing.T) {
	gpu := openCacheGPU(t)
	defer gpu.Close()
	r := rand.New(rand.NewPCG(3, 4))
	const heads, kvHeads, hd, cacheRows = 6, 2, 16, 600
	at := []int32{0, 599, 100, 300, 0, 0, 50, 257}
	rows := len(at) / 2
	q, k, v := randVec(r, rows*heads*hd), randVec(r, cacheRows*kvHeads*hd), randVec(r, cacheRows*kvHeads*hd)
	qb, kb, vb := gpu.Alloc(len(q)), gpu.Alloc(len(k)), gpu.Alloc(len(v))
	ab := gpu.AllocInt(len(at))
	gpu.Write(qb, 0, q)
	gpu.Write(kb, 0, k)
	gpu.Write(vb, 0, v)
	gpu.WriteInt(ab, at)
	var got [2][]float32
	for i := range got {
		ob := gpu.Alloc(len(q))
		gpu.CachedAttention(ob, qb, kb, vb, ab, heads, kvHeads, hd, 0.25)
		got[i] = make([]float32, len(q))
		gpu.Read(got[i], ob, 0)
		if err := gpu.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(got[0], got[1]) {
		t.Error("a second launch gave other bits")
	}
}

// TestCacheErrors: an index or a span outside the cache is the device's
// sticky error, found on the host before anything is launched (the cache
// is left as it was), as are bad shapes; Sync clears it.
func TestCacheErrors(t *testing.T) {
	gpu := openCacheGPU(t)
	defer gpu.Close()
	const n, d = 4, 8
	dst, src, out := gpu.Alloc(n*d), gpu.Alloc(2*d), gpu.Alloc(2*d)
	idx, at := gpu.AllocInt(2), gpu.AllocInt(4)
	before := make([]float32, n*d)
	for i := range before {
		before[i] = float32(i)
	}
	gpu.Write(dst, 0, before)
	gpu.Write(src, 0, make([]float32, 2*d))
	if err := gpu.Sync(); err != nil {
		t.Fatal(err)
	}
	check := func(what, want string) {
		t.Helper()
		err := gpu.Sync()
		if !errors.Is(err, engine.ErrDevice) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an engine.ErrDevice error containing %q", what, err, want)
		}
		if err := gpu.Sync(); err != nil {
			t.Errorf("%s: Sync did not clear the error: %v", what, err)
		}
	}
	gpu.WriteInt(idx, []int32{1, n})
	gpu.ScatterRows(dst, src, idx, d)
	gpu.Zero(dst) // skipped: the error is pending
	check("index n", "index 4 outside [0, 4)")
	got := make([]float32, n*d)
	gpu.Read(got, dst, 0)
	if err := gpu.Sync(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, before) {
		t.Error("a refused ScatterRows (or the Zero after it) changed the cache")
	}
	gpu.WriteInt(idx, []int32{-1, 0})
	gpu.ScatterRows(dst, src, idx, d)
	check("index -1", "index -1 outside")
	gpu.WriteInt(idx, []int32{0, 1})
	gpu.ScatterRows(dst, dst, idx, d)
	check("src of the wrong length", "has 32 elements, want 16")
	gpu.ScatterRows(dst, src, idx, 5)
	check("d not dividing the cache", "not a positive multiple of d = 5")

	// Attention: 2 rows, 1 head of hd 8 over the 4-row cache.
	for _, tc := range []struct {
		at   []int32
		want string
	}{
		{[]int32{0, 3, 2, 2}, "row 1: cache row 2, position 2 outside a cache of 4 rows"},
		{[]int32{-1, 0, 0, 0}, "row 0: cache row -1"},
		{[]int32{0, -2, 0, 0}, "position -2"},
	} {
		gpu.WriteInt(at, tc.at)
		gpu.CachedAttention(out, src, dst, dst, at, 1, 1, d, 1)
		check(fmt.Sprint("at ", tc.at), tc.want)
	}
	gpu.WriteInt(at, []int32{0, 0, 0, 0})
	gpu.CachedAttention(out, src, dst, dst, at, 3, 2, d, 1)
	check("heads 3 over kvHeads 2", "not a multiple of kvHeads")
	gpu.CachedAttention(src, src, dst, dst, at, 1, 1, d, 1)
	check("out aliasing q", "out must not alias q")
	gpu.CachedAttention(out, src, dst, src, at, 1, 1, d, 1)
	check("v shorter than k", "the length of k")
	gpu.PackWeight(dst, 3, d)
	check("PackWeight of a wrong shape", "want 24")
	gpu.PackWeight(dst, n, d)
	if err := gpu.Sync(); err != nil {
		t.Errorf("PackWeight [4, 8]: %v", err)
	}
}

// cacheModel is testConfig's model (grouped-query attention, 6 heads over
// 2, untied head) or a modeltest variant.
func cacheModels(t *testing.T) []struct {
	name string
	m    *model.Model
} {
	t.Helper()
	m, err := model.New(testConfig(), 21)
	if err != nil {
		t.Fatal(err)
	}
	out := []struct {
		name string
		m    *model.Model
	}{{"gqa-6-over-2", m}}
	for i, v := range modeltest.Variants {
		if v.Name == "mha" || v.Name == "mqa" || v.Name == "tied" {
			out = append(out, struct {
				name string
				m    *model.Model
			}{v.Name, modeltest.VariantModel(t, v, uint64(500+i))})
		}
	}
	return out
}

// decodeScript is a sequence of Decoder.Forward calls over three slots:
// whole prefills, a prefill in chunks beside another slot's decoding, and
// decoding steps of every slot together.
func decodeScript(V int) [][]engine.Chunk {
	ids := func(n int, seed uint64) []int { return modeltest.IDs(n, V, seed) }
	p1 := ids(12, 2)
	steps := [][]engine.Chunk{
		{{Slot: 0, Tokens: ids(17, 1), Logits: true}},                                          // prefill
		{{Slot: 1, Tokens: p1[:5], Logits: false}, {Slot: 0, Tokens: ids(1, 3), Logits: true}}, // chunked prefill beside decoding
		{{Slot: 2, Tokens: ids(3, 4), Logits: true}, {Slot: 1, Tokens: p1[5:], Logits: true}},  // two prefills
		{{Slot: 0, Tokens: ids(1, 5), Logits: true}, {Slot: 1, Tokens: ids(1, 6), Logits: true}, // decode, three slots
			{Slot: 2, Tokens: ids(1, 7), Logits: true}},
	}
	for s := 0; s < 4; s++ {
		steps = append(steps, []engine.Chunk{{Slot: 2, Tokens: ids(1, uint64(10+s)), Logits: true},
			{Slot: 0, Tokens: ids(1, uint64(20+s)), Logits: true}, {Slot: 1, Tokens: ids(1, uint64(30+s)), Logits: true}})
	}
	return steps
}

// TestDecoderAgrees runs the same Decoder.Forward calls on the GPU and on
// the Host (prefill, chunked prefill, decoding of several slots at once,
// grouped-query, multi-head and multi-query attention, a tied head) and
// compares every logit returned; then it checks that the GPU gives the
// same bits when the script runs again.
func TestDecoderAgrees(t *testing.T) {
	gpu := openCacheGPU(t)
	defer gpu.Close()
	host := engine.NewHost().(engine.CacheDevice)
	defer host.Close()
	for _, mc := range cacheModels(t) {
		t.Run(mc.name, func(t *testing.T) {
			script := decodeScript(mc.m.Config.VocabSize)
			run := func(dev engine.CacheDevice) [][]float32 {
				dec, err := engine.NewDecoder(dev, mc.m, 3, 32)
				if err != nil {
					t.Fatal(err)
				}
				defer func() {
					if err := dec.Close(); err != nil {
						t.Error(err)
					}
				}()
				var out [][]float32
				for i, chunks := range script {
					l, err := dec.Forward(chunks)
					if err != nil {
						t.Fatalf("%s: step %d: %v", dev.Name(), i, err)
					}
					out = append(out, slices.Clone(l))
				}
				return out
			}
			g, h := run(gpu), run(host)
			for i := range h {
				agree(t, fmt.Sprintf("step %d logits, GPU vs Host", i), g[i], h[i], 1e-4)
			}
			again := run(gpu)
			for i := range g {
				if !slices.Equal(again[i], g[i]) {
					t.Errorf("step %d: the GPU gave other bits the second time", i)
				}
			}
		})
	}
}

// TestBatcherSameTokens generates greedily with the Batcher on the GPU
// and on the Host, several requests at once (continuous batching, prompts
// longer than a prefill chunk), and checks that every request gets the
// same tokens.
func TestBatcherSameTokens(t *testing.T) {
	gpu := openCacheGPU(t)
	defer gpu.Close()
	host := engine.NewHost().(engine.CacheDevice)
	defer host.Close()
	m, err := model.New(testConfig(), 33)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	prompts := [][]int{modeltest.IDs(9, V, 1), modeltest.IDs(21, V, 2), modeltest.IDs(3, V, 3), modeltest.IDs(14, V, 4)}
	gc := model.GenerateConfig{MaxTokens: 10}
	generate := func(dev engine.CacheDevice) [][]int {
		b, err := engine.NewBatcher(dev, m, engine.BatcherConfig{Slots: 3, MaxContext: 40, PrefillTokens: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := b.Close(); err != nil {
				t.Errorf("%s: Close: %v", dev.Name(), err)
			}
		}()
		out := make([][]int, len(prompts))
		var wg sync.WaitGroup
		for i, p := range prompts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := b.Generate(context.Background(), p, gc, func(tok int) bool {
					out[i] = append(out[i], tok)
					return true
				})
				if err != nil {
					t.Errorf("%s: request %d: %v", dev.Name(), i, err)
				}
			}()
		}
		wg.Wait()
		return out
	}
	g, h := generate(gpu), generate(host)
	for i := range prompts {
		if len(h[i]) != gc.MaxTokens {
			t.Errorf("Host request %d: %d tokens, want %d", i, len(h[i]), gc.MaxTokens)
		}
		if !slices.Equal(g[i], h[i]) {
			t.Errorf("request %d: GPU tokens %v, Host tokens %v", i, g[i], h[i])
		}
	}
}
