//go:build unix

package engine

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/modeltest"

	"gonum.org/v1/gonum/blas"
)

// BenchmarkSgemmPrefillShapes times each product of a prefill step at the
// SmolLM2-135M shape on one thread (the rows one of two cores takes of a
// 512-row step: 256), packed weight, and reports GFLOP per second of the
// thread's CPU time (steadier than wall time on a shared machine): where a
// prefill's products stand against the MLP's 1536×576, the ceiling.
//
//	go test ./model/engine -run '^$' -bench SgemmPrefillShapes
func BenchmarkSgemmPrefillShapes(b *testing.B) {
	const m = 256
	r := rand.New(rand.NewPCG(5, 6))
	for _, s := range []struct {
		name string
		n, k int
		beta float32
	}{{"q", 576, 576, 0}, {"kv", 192, 576, 0}, {"o", 576, 576, 1}, {"gate", 1536, 576, 0}, {"down", 576, 1536, 1}} {
		w := make([]float32, s.n*s.k)
		for i := range w {
			w[i] = float32(r.NormFloat64())
		}
		// Weights enough to overflow the last-level cache, used in turn
		// (cold), as a forward pass meets them, or one over and over (hot).
		packs := make([][]float32, 24)
		for i := range packs {
			packs[i] = packWeight(w, s.n, s.k)
		}
		a := make([]float32, m*s.k)
		for i := range a {
			a[i] = float32(r.NormFloat64())
		}
		c := make([]float32, m*s.n)
		for _, cold := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s=%dx%dx%d/cold=%v", s.name, m, s.n, s.k, cold), func(b *testing.B) {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				t0 := threadCPU()
				for i := 0; i < b.N; i++ {
					p := packs[0]
					if cold {
						p = packs[i%len(packs)]
					}
					sgemmPacked(blas.NoTrans, m, s.n, s.k, 1, a, s.k, p, s.beta, c, s.n)
				}
				b.ReportMetric(2*float64(b.N*m*s.n*s.k)/(threadCPU()-t0).Seconds()/1e9, "GFLOP/cpu-s")
			})
		}
	}
}

// BenchmarkSplitRows times a Decoder's prefill step at the SmolLM2-135M
// shape (random FP32 weights) on the Host with the products split over the
// cores in blocks of 4 rows (splitRowUnit, even shares) and of 16 (as
// before), alternating in one run (rounds): a 128-token prompt beside 15
// decoding rows (the Batcher's step when a request joins 15 others: 144
// rows after bucketing), beside 7 (136 rows), and four 128-token prompts
// (512 rows). It reports wall and CPU milliseconds per step.
//
//	go test ./model/engine -run '^$' -bench SplitRows -benchtime 5x
func BenchmarkSplitRows(b *testing.B) {
	dec := smolDecoder(b)
	saved := splitRowUnit
	defer func() { splitRowUnit = saved }()
	for round := 0; round < 3; round++ {
		for _, shape := range []struct{ prompts, decoding int }{{1, 15}, {1, 7}, {4, 0}} {
			for _, unit := range []int{16, 4} {
				name := fmt.Sprintf("prompts=%d+decoding=%d/unit=%d", shape.prompts, shape.decoding, unit)
				b.Run(name, func(b *testing.B) {
					splitRowUnit = unit
					benchStep(b, dec, shape.prompts, shape.decoding)
				})
			}
		}
	}
}

// smolDecoder is a Decoder of 16 slots of 1024 positions on the Host at
// the SmolLM2-135M shape, random FP32 weights.
func smolDecoder(b *testing.B) *Decoder {
	c := model.DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 49152, 576, 1536, 30
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 9, 3, 8192
	c.RopeTheta, c.RMSNormEps, c.TieWordEmbeddings = 100000, 1e-5, true
	m, err := model.New(c, 1)
	if err != nil {
		b.Fatal(err)
	}
	dec, err := NewDecoder(NewHost().(CacheDevice), m, 16, 1024)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dec.Close() })
	return dec
}

// benchStep times Decoder.Forward on steps of prompts 128-token prompts
// (slots 0, 1, …, reset each step) beside decoding rows of one token each
// (the last slots, each holding at least 128 positions), every chunk
// asking for its logits, as the Batcher runs them.
func benchStep(b *testing.B, dec *Decoder, prompts, decoding int) {
	const promptLen = 128
	V := dec.nV
	first := dec.Slots() - decoding
	for s := first; s < dec.Slots(); s++ {
		if dec.Len(s) < promptLen {
			dec.Reset(s)
			if _, err := dec.Forward(chunkOf(s, modeltest.IDs(promptLen, V, uint64(s)))); err != nil {
				b.Fatal(err)
			}
		}
	}
	var chunks []Chunk
	tok := make([]int, dec.Slots())
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		chunks = chunks[:0]
		for s := 0; s < prompts; s++ {
			dec.Reset(s)
			chunks = append(chunks, Chunk{Slot: s, Tokens: modeltest.IDs(promptLen, V, uint64(i*prompts+s)), Logits: true})
		}
		for s := first; s < dec.Slots(); s++ {
			if dec.Len(s) == dec.MaxContext() {
				dec.Reset(s)
			}
			tok[s] = (i*31 + s) % V
			chunks = append(chunks, Chunk{Slot: s, Tokens: tok[s : s+1], Logits: true})
		}
		if _, err := dec.Forward(chunks); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/step")
	b.ReportMetric((processCPU()-cpu0).Seconds()*1e3/float64(b.N), "cpu-ms/step")
}

// processCPU is the process's CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSplitRowsCritical is BenchmarkSplitRows's product alone,
// measured so that a loaded machine does not hide the split: the MLP's
// gate product (N 1536, K 576, packed weight) on M rows cut into two
// blocks as MatMul cuts it for two cores (blocks of 16 rows or of 4), each
// block timed on one thread by its CPU time; crit-ms is the longer block's
// time (the step's wall time on two idle cores), sum-ms both blocks'.
//
//	go test ./model/engine -run '^$' -bench SplitRowsCritical
func BenchmarkSplitRowsCritical(b *testing.B) {
	const n, k, parts = 1536, 576, 2
	r := rand.New(rand.NewPCG(7, 8))
	w := make([]float32, n*k)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	packed := packWeight(w, n, k)
	a := make([]float32, 512*k)
	for i := range a {
		a[i] = float32(r.NormFloat64())
	}
	c := make([]float32, 512*n)
	for round := 0; round < 2; round++ {
		for _, m := range []int{136, 144, 512} {
			for _, unit := range []int{16, 4} {
				b.Run(fmt.Sprintf("m=%d/unit=%d", m, unit), func(b *testing.B) {
					runtime.LockOSThread()
					defer runtime.UnlockOSThread()
					units := (m + unit - 1) / unit
					chunk := (units + parts - 1) / parts
					var part [parts]time.Duration
					for i := 0; i < b.N; i++ {
						for p := range parts {
							r0, r1 := min(p*chunk*unit, m), min((p+1)*chunk*unit, m)
							t0 := threadCPU()
							sgemmPacked(blas.NoTrans, r1-r0, n, k, 1, a[r0*k:], k, packed, 0, c[r0*n:], n)
							part[p] += threadCPU() - t0
						}
					}
					b.ReportMetric(float64(max(part[0], part[1]).Microseconds())/1e3/float64(b.N), "crit-ms")
					b.ReportMetric(float64((part[0]+part[1]).Microseconds())/1e3/float64(b.N), "sum-ms")
				})
			}
		}
	}
}
