package aggregator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fedtune/fedtune/model/safetensors"
)

var (
	benchOnce  sync.Once
	benchDir   string
	benchPaths []string
	benchBytes int64
)

// benchInputs writes 8 inputs of 4 Mi F32 elements (16 MiB) each, once.
func benchInputs(b *testing.B) []Input {
	benchOnce.Do(func() {
		dir, err := osMkdirTemp()
		if err != nil {
			b.Fatal(err)
		}
		benchDir = dir
		rng := newRNG(1)
		for i := range 8 {
			var ts []safetensors.Tensor
			for k := range 4 {
				v := make([]float32, 1<<20)
				for j := range v {
					v[j] = float32(rng.NormFloat64())
				}
				tt, err := safetensors.FromFloat32(fmt.Sprintf("layer.%d", k), safetensors.F32, []int{1024, 1024}, v)
				if err != nil {
					b.Fatal(err)
				}
				ts = append(ts, tt)
			}
			p := filepath.Join(dir, fmt.Sprintf("u%d.safetensors", i))
			if _, err := safetensors.WriteFile(p, ts, nil); err != nil {
				b.Fatal(err)
			}
			benchPaths = append(benchPaths, p)
			benchBytes += 4 << 22
		}
	})
	in := make([]Input, len(benchPaths))
	for i, p := range benchPaths {
		in[i] = Input{Path: p}
	}
	return in
}

// BenchmarkAggregate measures input bytes per second through the whole
// pipeline (open and digest, validate, reduce, write) on 8 × 16 MiB inputs.
func BenchmarkAggregate(b *testing.B) {
	for _, st := range []struct {
		name   string
		params map[string]float64
	}{
		{"fedavg", nil}, {"median", nil}, {"trimmed-mean", nil},
		{"krum", map[string]float64{"num_malicious": 1}}, {"bulyan", map[string]float64{"num_malicious": 1}},
	} {
		b.Run(st.name, func(b *testing.B) {
			in := benchInputs(b)
			out := filepath.Join(b.TempDir(), "out.safetensors")
			b.SetBytes(benchBytes)
			b.ResetTimer()
			for range b.N {
				if _, err := Aggregate(context.Background(), Request{Strategy: mustNew(b, st.name, st.params), Inputs: in, Out: out}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func osMkdirTemp() (string, error) { return os.MkdirTemp("", "aggregator-bench") }
