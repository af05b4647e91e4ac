//go:build unix

package engine_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
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
// token (p50, p99), and the products' GFLOP of prefilling one batch's
// prompts (prefill-GFLOP: divided by BenchmarkDecodeStep's
// gemm=512x1536x576 GFLOP/s, the floor of streams=16's p99).
//
// staggered=16 is the same load as 16 clients of a server in its steady
// state rather than in a burst: client c sends its first request c·D/16
// after the start, D being the time streams=16 took for its batch (the
// time one answer takes at 16 streams), and its second as soon as its
// first has ended, so requests arrive one every D/16 while about 15 others
// decode. Its time to first token is over the second requests only (each
// arriving at a server busy with the others); tok/s is over the whole run.
//
//	go test ./model/engine -run '^$' -bench Serve -benchtime 1x
func BenchmarkServe(b *testing.B) {
	const promptLen, newTokens = 128, 128
	m, err := smolLM2()
	if err != nil {
		b.Fatal(err)
	}
	gc := model.GenerateConfig{MaxTokens: newTokens}
	var burst time.Duration // streams=16's time for one batch
	for _, streams := range []int{1, 16} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			bt := newServeBatcher(b, m, streams, promptLen+newTokens)
			var st serveStats
			b.ResetTimer()
			cpu0 := cpuTime()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				chs := make([]<-chan engine.Token, streams)
				for s := range chs {
					prompt := modeltest.IDs(promptLen, m.Config.VocabSize, uint64(i*streams+s))
					if chs[s], err = bt.Add(context.Background(), prompt, gc); err != nil {
						b.Fatal(err)
					}
				}
				added := time.Now()
				var wg sync.WaitGroup
				for _, ch := range chs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						st.drain(b, ch, added, true)
					}()
				}
				wg.Wait()
			}
			el := time.Since(start)
			cpu := cpuTime() - cpu0
			b.StopTimer()
			if streams == 16 {
				burst = el / time.Duration(b.N)
			}
			// The products of prefilling every prompt of a batch (and of
			// each one's first logits): what must run before the last
			// stream's first token.
			body, head := productFLOPs(m.Config)
			b.ReportMetric(float64(streams)*(promptLen*body+head)/1e9, "prefill-GFLOP")
			st.report(b, el, cpu)
		})
	}
	b.Run("staggered=16", func(b *testing.B) {
		const streams = 16
		bt := newServeBatcher(b, m, streams, promptLen+newTokens)
		d := burst
		if d == 0 { // run alone: time one burst first
			start := time.Now()
			var st serveStats
			var wg sync.WaitGroup
			for s := 0; s < streams; s++ {
				ch, err := bt.Add(context.Background(), modeltest.IDs(promptLen, m.Config.VocabSize, uint64(s)), gc)
				if err != nil {
					b.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					st.drain(b, ch, start, false)
				}()
			}
			wg.Wait()
			d = time.Since(start)
		}
		gap := d / streams
		b.ResetTimer()
		staggered(b, bt, m, streams, gap, staggerRounds(b))
	})
}

// staggerRounds is how many requests each client of BenchmarkServe's
// staggered=16 sends one after the other: $FEDTUNE_SERVE_ROUNDS, default 2
// (the time to first token is over every request but the first of each
// client: 16 samples at 2 rounds, so p99 is their maximum; more rounds
// give a steadier p99 and take longer).
func staggerRounds(b *testing.B) int {
	v := os.Getenv("FEDTUNE_SERVE_ROUNDS")
	if v == "" {
		return 2
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 2 {
		b.Fatalf("FEDTUNE_SERVE_ROUNDS=%q: want an integer >= 2", v)
	}
	return n
}

// staggered runs b.N times streams clients, client c sending its first
// request c·gap after the start and each next one as soon as the last has
// ended, rounds requests in all; it reports tok/s and tok/cpu-s over the
// whole run and the time to first token of every request but the first of
// each client.
func staggered(b *testing.B, bt *engine.Batcher, m *model.Model, streams int, gap time.Duration, rounds int) {
	const promptLen, newTokens = 128, 128
	gc := model.GenerateConfig{MaxTokens: newTokens}
	var st serveStats
	cpu0 := cpuTime()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		for c := 0; c < streams; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(c) * gap)
				for round := range rounds {
					prompt := modeltest.IDs(promptLen, m.Config.VocabSize, uint64((rounds*i+round)*streams+c))
					added := time.Now()
					ch, err := bt.Add(context.Background(), prompt, gc)
					if err != nil {
						b.Error(err)
						return
					}
					st.drain(b, ch, added, round > 0)
				}
			}()
		}
		wg.Wait()
	}
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	b.ReportMetric(gap.Seconds()*1e3, "gap-ms")
	st.report(b, el, cpu)
}

// BenchmarkServePolicy is BenchmarkServe's staggered=16 with the Batcher
// holding decoding rows out of a step that starts a prompt which waited
// behind another's prefill (the default) and with AlwaysDecode, the two
// alternating in one run (pairs in ABBA order, $FEDTUNE_SERVE_PAIRS,
// default 2), on the same arrival gap: 1/16 of a burst of 16 streams timed
// once first (or $FEDTUNE_SERVE_GAP_MS).
//
//	go test ./model/engine -run '^$' -bench ServePolicy -benchtime 1x -timeout 60m
func BenchmarkServePolicy(b *testing.B) {
	const streams, promptLen, newTokens = 16, 128, 128
	m, err := smolLM2()
	if err != nil {
		b.Fatal(err)
	}
	var gap time.Duration
	if v := os.Getenv("FEDTUNE_SERVE_GAP_MS"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			b.Fatalf("FEDTUNE_SERVE_GAP_MS=%q: want a positive integer", v)
		}
		gap = time.Duration(ms) * time.Millisecond
	} else {
		bt := newServeBatcherConfig(b, m, engine.BatcherConfig{Slots: streams, MaxContext: promptLen + newTokens})
		start := time.Now()
		var st serveStats
		var wg sync.WaitGroup
		for s := 0; s < streams; s++ {
			ch, err := bt.Add(context.Background(), modeltest.IDs(promptLen, m.Config.VocabSize, uint64(s)), model.GenerateConfig{MaxTokens: newTokens})
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				st.drain(b, ch, start, false)
			}()
		}
		wg.Wait()
		gap = time.Since(start) / streams
		bt.Close()
	}
	pairs := 2
	if v := os.Getenv("FEDTUNE_SERVE_PAIRS"); v != "" {
		if pairs, err = strconv.Atoi(v); err != nil || pairs < 1 {
			b.Fatalf("FEDTUNE_SERVE_PAIRS=%q: want a positive integer", v)
		}
	}
	for pair := range pairs {
		// ABBA: a load that drifts over the run favours neither.
		order := []bool{false, true}
		if pair%2 == 1 {
			order = []bool{true, false}
		}
		for _, always := range order {
			b.Run(fmt.Sprintf("always-decode=%v", always), func(b *testing.B) {
				bt := newServeBatcherConfig(b, m, engine.BatcherConfig{Slots: streams, MaxContext: promptLen + newTokens, AlwaysDecode: always})
				b.ResetTimer()
				staggered(b, bt, m, streams, gap, staggerRounds(b))
			})
		}
	}
}

func newServeBatcher(b *testing.B, m *model.Model, slots, ctx int) *engine.Batcher {
	return newServeBatcherConfig(b, m, engine.BatcherConfig{Slots: slots, MaxContext: ctx})
}

func newServeBatcherConfig(b *testing.B, m *model.Model, cfg engine.BatcherConfig) *engine.Batcher {
	bt, err := engine.NewBatcher(engine.NewHost().(engine.CacheDevice), m, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bt.Close() })
	return bt
}

// serveStats gathers a benchmark's generated tokens and times to first
// token.
type serveStats struct {
	mu     sync.Mutex
	tokens int
	ttft   []time.Duration
}

// drain reads one request's stream to its end, counting its tokens and,
// when timed, the time from added to its first token.
func (st *serveStats) drain(b *testing.B, ch <-chan engine.Token, added time.Time, timed bool) {
	n := 0
	for tok := range ch {
		if tok.Finish != "" {
			if tok.Err != nil {
				b.Error(tok.Err)
			}
			break
		}
		if n == 0 && timed {
			st.mu.Lock()
			st.ttft = append(st.ttft, time.Since(added))
			st.mu.Unlock()
		}
		n++
	}
	st.mu.Lock()
	st.tokens += n
	st.mu.Unlock()
}

func (st *serveStats) report(b *testing.B, el, cpu time.Duration) {
	if len(st.ttft) == 0 {
		b.Fatal("no request produced a token")
	}
	slices.Sort(st.ttft)
	pct := func(p float64) float64 {
		return st.ttft[min(len(st.ttft)-1, int(p*float64(len(st.ttft))))].Seconds() * 1e3
	}
	b.ReportMetric(float64(st.tokens)/el.Seconds(), "tok/s")
	b.ReportMetric(float64(st.tokens)/cpu.Seconds(), "tok/cpu-s")
	b.ReportMetric(pct(0.50), "ttft-p50-ms")
	b.ReportMetric(pct(0.99), "ttft-p99-ms")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
