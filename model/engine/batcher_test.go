package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
)

// collect reads a stream to its end.
func collect(t *testing.T, ch <-chan engine.Token) ([]int, engine.Token) {
	t.Helper()
	var ids []int
	for tok := range ch {
		if tok.Finish != "" {
			return ids, tok
		}
		ids = append(ids, tok.ID)
	}
	t.Fatal("stream closed without a finish event")
	return nil, engine.Token{}
}

func newBatcher(t *testing.T, m *model.Model, cfg engine.BatcherConfig) *engine.Batcher {
	t.Helper()
	b, err := engine.NewBatcher(engine.NewHost().(engine.CacheDevice), m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// batcherRequests are 8 requests: greedy and sampled, with stop tokens,
// one that runs into the context.
func batcherRequests(V int) (prompts [][]int, gcs []model.GenerateConfig) {
	for i := 0; i < 8; i++ {
		prompts = append(prompts, modeltest.IDs(3+2*i, V, uint64(60+i)))
		gc := model.GenerateConfig{MaxTokens: 6 + i, Seed: uint64(i)}
		if i%2 == 1 {
			gc.Temperature, gc.TopP = 0.8+0.1*float64(i), 0.95
		}
		if i == 3 {
			gc.Stop = []int{1, 2, 3}
		}
		if i == 7 {
			gc.MaxTokens = 0 // until the context (32) is full
		}
		prompts[i] = prompts[i][:min(len(prompts[i]), 30)]
		gcs = append(gcs, gc)
	}
	return prompts, gcs
}

// TestBatcherAloneEqualsBatched: the same request gives the same tokens
// alone, in a batch of 8 joining at once, with a small prefill budget
// (chunked prompts) and with fewer slots than requests (a queue), and
// they are engine.Generate's, whether or not steps hold the decoding
// sequences out while a queued prompt starts (AlwaysDecode). With the
// default budget every prompt of the batch is prefilled in one step (one
// set of products over all of them).
func TestBatcherAloneEqualsBatched(t *testing.T) {
	ctx := context.Background()
	cases := decoderCases(t)
	for _, dc := range append(cases[1:4:4], cases[len(cases)-3:]...) { // gqa, mqa, tied, head-dim-8, head-dim-72, lora-merged
		t.Run(dc.name, func(t *testing.T) {
			m := dc.m
			L := m.Config.MaxPositionEmbeddings
			prompts, gcs := batcherRequests(m.Config.VocabSize)
			want := make([][]int, len(prompts))
			for i := range prompts {
				gc := gcs[i]
				if gc.MaxTokens == 0 {
					gc.MaxTokens = L
				}
				out, err := engine.Generate(ctx, engine.NewHost(), m, prompts[i], gc)
				if err != nil {
					t.Fatal(err)
				}
				want[i] = out
				// Alone in a batcher.
				b := newBatcher(t, m, engine.BatcherConfig{Slots: 1})
				ch, err := b.Add(ctx, prompts[i], gcs[i])
				if err != nil {
					t.Fatal(err)
				}
				got, fin := collect(t, ch)
				if fmt.Sprint(got) != fmt.Sprint(want[i]) {
					t.Errorf("request %d alone: %v, Generate %v", i, got, want[i])
				}
				if wantFin := engine.FinishLength; len(got) < gc.MaxTokens && len(prompts[i])+len(got) <= L {
					if fin.Finish != engine.FinishStop {
						t.Errorf("request %d: finish %q after %d tokens, want stop", i, fin.Finish, len(got))
					}
				} else if fin.Finish != wantFin {
					t.Errorf("request %d: finish %q, want %q", i, fin.Finish, wantFin)
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			}
			for _, cfg := range []engine.BatcherConfig{{Slots: 8}, {Slots: 8, PrefillTokens: 5}, {Slots: 3, PrefillTokens: 7}, {Slots: 3, PrefillTokens: 7, AlwaysDecode: true}} {
				b := newBatcher(t, m, cfg)
				chs := make([]<-chan engine.Token, len(prompts))
				for i := range prompts {
					ch, err := b.Add(ctx, prompts[i], gcs[i])
					if err != nil {
						t.Fatal(err)
					}
					chs[i] = ch
				}
				for i, ch := range chs {
					if got, _ := collect(t, ch); fmt.Sprint(got) != fmt.Sprint(want[i]) {
						t.Errorf("%+v: request %d batched: %v, alone %v", cfg, i, got, want[i])
					}
				}
				st := b.Stats()
				if st.Active != 0 || st.Queued != 0 || st.Requests != 8 || st.FirstTokens != 8 {
					t.Errorf("stats after the batch: %+v", st)
				}
				// With a queue, prompts start behind others' prefill while
				// sequences decode: some steps hold the decoding rows out
				// (none with AlwaysDecode), and the tokens above are the
				// same.
				if held := st.HeldSteps > 0; cfg.Slots == 3 && held == cfg.AlwaysDecode {
					t.Errorf("%+v: %d held steps of %d", cfg, st.HeldSteps, st.Steps)
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestBatcherCancel: cancelled requests (running and queued) end with
// FinishCancelled and give their slots back: afterwards every slot serves
// a new request.
func TestBatcherCancel(t *testing.T) {
	m := modeltest.VariantModel(t, modeltest.Variants[1], 3)
	const slots = 3
	// Six requests on three slots: when the first token is drawn (the
	// hook runs on the Batcher's goroutine, between steps), cancel two
	// running requests (0, 1) and one queued (5).
	var cancels []context.CancelFunc
	ready := make(chan struct{})
	var once sync.Once
	b := newBatcher(t, m, engine.BatcherConfig{Slots: slots, OnFirstToken: func(time.Duration) {
		once.Do(func() {
			<-ready
			for _, i := range []int{0, 1, 5} {
				cancels[i]()
			}
		})
	}})
	defer b.Close()
	bg := context.Background()
	var chs []<-chan engine.Token
	for i := 0; i < 6; i++ {
		ctx, cancel := context.WithCancel(bg)
		cancels = append(cancels, cancel)
		ch, err := b.Add(ctx, []int{1, 2, 3}, model.GenerateConfig{Seed: uint64(i), Temperature: 1})
		if err != nil {
			t.Fatal(err)
		}
		chs = append(chs, ch)
	}
	close(ready)
	for i, ch := range chs {
		_, fin := collect(t, ch)
		cancelled := i == 0 || i == 1 || i == 5
		if cancelled && (fin.Finish != engine.FinishCancelled || !errors.Is(fin.Err, context.Canceled)) {
			t.Errorf("request %d: %+v, want cancelled", i, fin)
		}
		if !cancelled && fin.Finish != engine.FinishLength {
			t.Errorf("request %d: %+v, want length (full context)", i, fin)
		}
	}
	for _, c := range cancels {
		c()
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.Stats().Active != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := b.Stats(); st.Active != 0 || st.Queued != 0 {
		t.Fatalf("after every request ended: %+v", st)
	}
	// Every slot is free: slots requests run at once.
	var wg sync.WaitGroup
	started := make(chan struct{}, slots)
	for i := 0; i < slots; i++ {
		ch, err := b.Add(bg, []int{4, 5}, model.GenerateConfig{MaxTokens: 25})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ch
			started <- struct{}{}
			for range ch {
			}
		}()
	}
	wg.Wait()
	if n := len(started); n != slots {
		t.Errorf("%d of %d requests ran", n, slots)
	}
	// A client that goes away mid-stream without reading: its slot comes back.
	ctx, cancel := context.WithCancel(bg)
	ch, err := b.Add(ctx, []int{1}, model.GenerateConfig{})
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	cancel()
	deadline = time.Now().Add(5 * time.Second)
	for b.Stats().Active != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := b.Stats(); st.Active != 0 {
		t.Errorf("a cancelled, unread request still holds a slot: %+v", st)
	}
}

func TestBatcherAddErrors(t *testing.T) {
	m := modeltest.VariantModel(t, modeltest.Variants[0], 4)
	b := newBatcher(t, m, engine.BatcherConfig{Slots: 1, MaxContext: 8, MaxQueue: 1})
	bg := context.Background()
	for _, tc := range []struct {
		name   string
		prompt []int
		gc     model.GenerateConfig
		is     error
	}{
		{"empty", nil, model.GenerateConfig{}, nil},
		{"vocab", []int{m.Config.VocabSize}, model.GenerateConfig{}, nil},
		{"long", make([]int, 9), model.GenerateConfig{}, model.ErrContextFull},
		{"temperature", []int{1}, model.GenerateConfig{Temperature: -1}, nil},
		{"top_p", []int{1}, model.GenerateConfig{TopP: 2}, nil},
		{"max_tokens", []int{1}, model.GenerateConfig{MaxTokens: -1}, nil},
	} {
		if _, err := b.Add(bg, tc.prompt, tc.gc); err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.is)
		}
	}
	// A full context: 8 positions, a prompt of 8 gives one token.
	ch, err := b.Add(bg, make([]int, 8), model.GenerateConfig{MaxTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	if got, fin := collect(t, ch); len(got) != 1 || fin.Finish != engine.FinishLength {
		t.Errorf("full context: %v, %+v", got, fin)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Add(bg, []int{1}, model.GenerateConfig{}); !errors.Is(err, engine.ErrBatcherClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// TestBatcherQueueFull: beyond MaxQueue waiting requests, Add refuses.
func TestBatcherQueueFull(t *testing.T) {
	m := modeltest.VariantModel(t, modeltest.Variants[0], 4)
	// The first token holds the Batcher's goroutine until the queue has
	// been tried.
	release := make(chan struct{})
	var once sync.Once
	b := newBatcher(t, m, engine.BatcherConfig{Slots: 1, MaxQueue: 2, OnFirstToken: func(time.Duration) {
		once.Do(func() { <-release })
	}})
	ctx, cancel := context.WithCancel(context.Background())
	var full bool
	var chs []<-chan engine.Token
	for i := 0; i < 10 && !full; i++ {
		ch, err := b.Add(ctx, []int{1}, model.GenerateConfig{})
		if errors.Is(err, engine.ErrQueueFull) {
			full = true
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		chs = append(chs, ch)
	}
	if !full || len(chs) > 3 {
		t.Errorf("%d requests accepted by one slot with MaxQueue 2", len(chs))
	}
	close(release)
	cancel()
	for _, ch := range chs {
		collect(t, ch)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestBatcherGenerate: Generate streams engine.Generate's tokens, stops
// early when yield says so (freeing the slot), and reports a cancelled
// context.
func TestBatcherGenerate(t *testing.T) {
	m := modeltest.VariantModel(t, modeltest.Variants[1], 6)
	b := newBatcher(t, m, engine.BatcherConfig{Slots: 1})
	defer b.Close()
	bg := context.Background()
	gc := model.GenerateConfig{MaxTokens: 10, Temperature: 0.9, Seed: 5}
	want, err := engine.Generate(bg, engine.NewHost(), m, []int{7, 8}, gc)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	if err := b.Generate(bg, []int{7, 8}, gc, func(tok int) bool { got = append(got, tok); return true }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Batcher.Generate %v, engine.Generate %v", got, want)
	}
	got = got[:0]
	if err := b.Generate(bg, []int{7, 8}, model.GenerateConfig{}, func(tok int) bool { got = append(got, tok); return len(got) < 3 }); err != nil || len(got) != 3 {
		t.Errorf("stopped by yield after 3: %v, %v", got, err)
	}
	// The one slot is free again: another request runs.
	if err := b.Generate(bg, []int{1}, model.GenerateConfig{MaxTokens: 2}, func(int) bool { return true }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	err = b.Generate(ctx, []int{1}, model.GenerateConfig{}, func(int) bool { cancel(); return true })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
