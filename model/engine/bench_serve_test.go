//go:build unix

package engine_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
)

// smolLM2Config is SmolLM2-135M's architecture (HuggingFaceTB/SmolLM2-135M
// config.json).
func smolLM2Config() model.Config {
	c := model.DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 49152, 576, 1536, 30
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 9, 3, 8192
	c.RopeTheta, c.RMSNormEps, c.TieWordEmbeddings = 100000, 1e-5, true
	return c
}

var smolLM2 = sync.OnceValues(func() (*model.Model, error) { return model.New(smolLM2Config(), 1) })

// BenchmarkServe runs the Batcher on the Host at the SmolLM2-135M shape
// (random weights, FP32): streams concurrent requests of 128-token prompts
// and 128 new tokens (greedy), all added at once. It reports generated
// tokens per second over the whole run, per second of the process's CPU
// time (steadier on a shared machine), and the requests' time to first
// token (p50, p99).
//
//	go test ./model/engine -run '^$' -bench Serve -benchtime 1x
func BenchmarkServe(b *testing.B) {
	const promptLen, newTokens = 128, 128
	m, err := smolLM2()
	if err != nil {
		b.Fatal(err)
	}
	for _, streams := range []int{1, 16} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			bt, err := engine.NewBatcher(engine.NewHost().(engine.CacheDevice), m,
				engine.BatcherConfig{Slots: streams, MaxContext: promptLen + newTokens})
			if err != nil {
				b.Fatal(err)
			}
			defer bt.Close()
			var ttft []time.Duration
			var tokens int
			b.ResetTimer()
			cpu0 := cpuTime()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				chs := make([]<-chan engine.Token, streams)
				for s := range chs {
					prompt := modeltest.IDs(promptLen, m.Config.VocabSize, uint64(i*streams+s))
					if chs[s], err = bt.Add(context.Background(), prompt, model.GenerateConfig{MaxTokens: newTokens}); err != nil {
						b.Fatal(err)
					}
				}
				added := time.Now()
				var mu sync.Mutex
				var wg sync.WaitGroup
				for _, ch := range chs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						n := 0
						for tok := range ch {
							if tok.Finish != "" {
								if tok.Err != nil {
									b.Error(tok.Err)
								}
								break
							}
							if n == 0 {
								mu.Lock()
								ttft = append(ttft, time.Since(added))
								mu.Unlock()
							}
							n++
						}
						mu.Lock()
						tokens += n
						mu.Unlock()
					}()
				}
				wg.Wait()
			}
			el := time.Since(start)
			cpu := cpuTime() - cpu0
			b.StopTimer()
			slices.Sort(ttft)
			pct := func(p float64) float64 { return ttft[min(len(ttft)-1, int(p*float64(len(ttft))))].Seconds() * 1e3 }
			b.ReportMetric(float64(tokens)/el.Seconds(), "tok/s")
			b.ReportMetric(float64(tokens)/cpu.Seconds(), "tok/cpu-s")
			b.ReportMetric(pct(0.50), "ttft-p50-ms")
			b.ReportMetric(pct(0.99), "ttft-p99-ms")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
