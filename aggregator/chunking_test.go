package aggregator

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/model/safetensors"
)

// TestNormsAndDistancesIndependentOfChunking checks the cross-chunk sums
// bit for bit: inputs with many reduction blocks and a wide dynamic range,
// where a different grouping of the block partials would show.
func TestNormsAndDistancesIndependentOfChunking(t *testing.T) {
	dir := t.TempDir()
	rng := newRNG(77)
	var in []Input
	for k := range 5 {
		var ts []safetensors.Tensor
		for _, sz := range []int{100*kernels.ReduceBlock + 123, 7, 3 * kernels.ReduceBlock} {
			v := make([]float32, sz)
			for i := range v {
				v[i] = float32(rng.NormFloat64() * math.Exp(3*rng.NormFloat64()))
			}
			tt, err := safetensors.FromFloat32(fmt.Sprintf("t%d", sz), safetensors.F32, []int{sz}, v)
			if err != nil {
				t.Fatal(err)
			}
			ts = append(ts, tt)
		}
		p := filepath.Join(dir, fmt.Sprintf("u%d.safetensors", k))
		if _, err := safetensors.WriteFile(p, ts, nil); err != nil {
			t.Fatal(err)
		}
		in = append(in, Input{Path: p})
	}
	type stats struct {
		norms []uint64
		dist  []uint64
	}
	measure := func(chunk, threads int) stats {
		d, err := newDriver(Request{Strategy: &Krum{}, Inputs: in, Backend: kernels.NewCPU(threads),
			Options: Options{MaxNorm: 1e30, ChunkElems: chunk, Threads: threads}})
		if err != nil {
			t.Fatal(err)
		}
		defer d.close()
		if err := d.open(); err != nil {
			t.Fatal(err)
		}
		if err := d.scan(context.Background()); err != nil {
			t.Fatal(err)
		}
		var s stats
		for _, src := range d.good {
			s.norms = append(s.norms, math.Float64bits(src.norm2))
		}
		for _, v := range d.distMatrix {
			s.dist = append(s.dist, math.Float64bits(v))
		}
		return s
	}
	want := measure(0, 1)
	if len(want.dist) != 25 || len(want.norms) != 5 {
		t.Fatalf("got %d distances and %d norms", len(want.dist), len(want.norms))
	}
	for _, c := range []struct{ chunk, threads int }{{4096, 1}, {8192, 2}, {3 * 4096, 4}, {1 << 20, 2}} {
		got := measure(c.chunk, c.threads)
		for i := range want.norms {
			if got.norms[i] != want.norms[i] {
				t.Fatalf("chunk %d: ‖u%d‖² = %v, want %v", c.chunk, i, math.Float64frombits(got.norms[i]), math.Float64frombits(want.norms[i]))
			}
		}
		for i := range want.dist {
			if got.dist[i] != want.dist[i] {
				t.Fatalf("chunk %d: distance %d = %v, want %v", c.chunk, i, math.Float64frombits(got.dist[i]), math.Float64frombits(want.dist[i]))
			}
		}
	}
}

// TestBlockNormMatchesBackend checks the aggregator's own block sums
// against the backends' SquaredNorm, one call per block, bit for bit.
func TestBlockNormMatchesBackend(t *testing.T) {
	rng := newRNG(5)
	x := make([]float32, 19*kernels.ReduceBlock+77)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * math.Exp(4*rng.NormFloat64()))
	}
	for _, be := range []kernels.Backend{kernels.Reference{}, kernels.NewCPU(2)} {
		d := &driver{be: be}
		for _, n := range []int{0, 1, kernels.ReduceBlock, 8 * kernels.ReduceBlock, 9*kernels.ReduceBlock + 3, len(x)} {
			var want float64 = 0.5
			for b := 0; b < n; b += kernels.ReduceBlock {
				want += be.SquaredNorm(x[b:min(b+kernels.ReduceBlock, n)])
			}
			got := 0.5
			d.blockNorm(&got, x[:n])
			if math.Float64bits(got) != math.Float64bits(want) {
				t.Errorf("%s, %d elements: blockNorm %v, SquaredNorm per block %v", be.Name(), n, got, want)
			}
		}
	}
}
