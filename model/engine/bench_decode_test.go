//go:build unix

package engine_test

import (
	"fmt"
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
)

// BenchmarkDecodeStep times the Decoder's forward passes at the
// SmolLM2-135M shape (random FP32 weights) on the Host, the pieces of
// BenchmarkServe one at a time:
//
//   - decode=R: one decoding step of R sequences (one token each, at
//     positions from 128 on, logits for every row), as the Batcher runs
//     it with R streams;
//   - prefill=512: four 128-token prompts in one forward pass (the
//     Batcher's default prefill budget), logits for each prompt's last
//     token only;
//   - gemm=512x1536x576: one MatMul of the prefill's largest shape (the
//     MLP's gate or up projection on 512 rows, packed weight), the
//     ceiling prefill's GFLOP/s are compared with.
//
// GFLOP/s counts the products' multiply-adds (2 per weight a row meets,
// the lm_head only for the rows whose logits are asked for; attention not
// counted).
//
//	go test ./model/engine -run '^$' -bench DecodeStep -benchtime 20x
func BenchmarkDecodeStep(b *testing.B) {
	const promptLen, slots, maxCtx = 128, 16, 1024
	m, err := smolLM2()
	if err != nil {
		b.Fatal(err)
	}
	c := m.Config
	body, head := productFLOPs(c)
	dev := engine.NewHost().(engine.CacheDevice)
	dec, err := engine.NewDecoder(dev, m, slots, maxCtx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dec.Close() })
	prompt := func(s int) []int { return modeltest.IDs(promptLen, c.VocabSize, uint64(s)) }
	prefill := func(b *testing.B, from, to int) {
		var chunks []engine.Chunk
		for s := from; s < to; s++ {
			dec.Reset(s)
			chunks = append(chunks, engine.Chunk{Slot: s, Tokens: prompt(s), Logits: true})
		}
		if _, err := dec.Forward(chunks); err != nil {
			b.Fatal(err)
		}
	}
	for _, rows := range []int{1, 4, 8, 12, 13, 16} {
		ready := false // prompts prefilled (once: the benchmark's rounds go on from there)
		b.Run(fmt.Sprintf("decode=%d", rows), func(b *testing.B) {
			if !ready {
				for s := 0; s < rows; s += 4 {
					prefill(b, s, min(s+4, rows))
				}
				ready = true
			}
			chunks := make([]engine.Chunk, rows)
			toks := make([]int, rows)
			for s := range chunks {
				chunks[s] = engine.Chunk{Slot: s, Tokens: toks[s : s+1], Logits: true}
			}
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				if dec.Len(0) == maxCtx {
					b.StopTimer()
					for s := 0; s < rows; s += 4 {
						prefill(b, s, min(s+4, rows))
					}
					b.StartTimer()
				}
				for s := range toks {
					toks[s] = (i*31 + s) % c.VocabSize
				}
				if _, err := dec.Forward(chunks); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/step")
			b.ReportMetric((cpuTime()-cpu0).Seconds()*1e3/float64(b.N), "cpu-ms/step")
			b.ReportMetric(float64(b.N*rows)*(body+head)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
	b.Run("prefill=512", func(b *testing.B) {
		cpu0 := cpuTime()
		for i := 0; i < b.N; i++ {
			prefill(b, 0, 4)
		}
		b.ReportMetric((cpuTime()-cpu0).Seconds()*1e3/float64(b.N), "cpu-ms/op")
		b.ReportMetric(float64(b.N)*(4*promptLen*body+4*head)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		b.ReportMetric(float64(b.N)*(4*promptLen*body+4*head)/(cpuTime()-cpu0).Seconds()/1e9, "GFLOP/cpu-s")
	})
	b.Run("gemm=512x1536x576", func(b *testing.B) {
		const M, N, K = 4 * promptLen, 1536, 576
		x, w, y := dev.Alloc(M*K), dev.Alloc(N*K), dev.Alloc(M*N)
		defer func() { dev.Free(x); dev.Free(w); dev.Free(y) }()
		r := modeltest.RNG(1, "gemm")
		xs, ws := make([]float32, M*K), make([]float32, N*K)
		for i := range xs {
			xs[i] = float32(r.NormFloat64())
		}
		for i := range ws {
			ws[i] = float32(r.NormFloat64() * 0.05)
		}
		dev.Write(x, 0, xs)
		dev.Write(w, 0, ws)
		dev.PackWeight(w, N, K)
		b.ResetTimer()
		cpu0 := cpuTime()
		for i := 0; i < b.N; i++ {
			dev.MatMul(engine.Gemm{TransB: true, M: M, N: N, K: K, Alpha: 1, A: x, B: w, C: y})
		}
		if err := dev.Sync(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(2*float64(b.N*M*N*K)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		b.ReportMetric(2*float64(b.N*M*N*K)/(cpuTime()-cpu0).Seconds()/1e9, "GFLOP/cpu-s")
	})
}

// productFLOPs is the floating-point operations of the Decoder's matrix
// products (2 per multiply-add; attention not counted) for one row
// through every layer (body), and for one row's logits (head).
func productFLOPs(c model.Config) (body, head float64) {
	layer := c.HiddenSize*(c.NumAttentionHeads+2*c.KVHeads())*c.HeadDimension() +
		c.NumAttentionHeads*c.HeadDimension()*c.HiddenSize + 3*c.HiddenSize*c.IntermediateSize
	return 2 * float64(layer*c.NumHiddenLayers), 2 * float64(c.HiddenSize*c.VocabSize)
}
