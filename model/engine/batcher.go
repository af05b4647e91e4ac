package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/model"
)

// ErrBatcherClosed is returned by Batcher.Add after Close.
var ErrBatcherClosed = errors.New("engine: batcher is closed")

// ErrQueueFull is returned by Batcher.Add when MaxQueue requests already
// wait for a slot.
var ErrQueueFull = errors.New("engine: batcher queue is full")

// FinishReason says why a request's generation ended (OpenAI's
// finish_reason where it has one).
type FinishReason string

// The reasons a generation ends.
const (
	// FinishStop: the model produced one of the request's stop tokens
	// (not emitted).
	FinishStop FinishReason = "stop"
	// FinishLength: MaxTokens tokens were generated, or the context is
	// full.
	FinishLength FinishReason = "length"
	// FinishCancelled: the request's context was cancelled (Err says
	// why).
	FinishCancelled FinishReason = "cancelled"
	// FinishError: the device failed (Err says how); the Batcher is
	// unusable.
	FinishError FinishReason = "error"
)

// Token is one event on a request's stream: a generated token (Finish
// empty), or the last event (Finish set, ID −1), after which the channel
// is closed.
type Token struct {
	ID     int
	Finish FinishReason
	Err    error
}

// BatcherConfig sizes a Batcher. Zero fields take the defaults.
type BatcherConfig struct {
	// Slots is how many sequences decode together (default 16).
	Slots int
	// MaxContext is the most positions (prompt and generated tokens) a
	// sequence holds (default: max_position_embeddings, at most 2048;
	// maximum: max_position_embeddings). The key/value cache is
	// (Slots+1)·MaxContext positions of every layer's keys and values,
	// allocated once: 2·layers·kv_heads·head_dim·4 bytes a position.
	MaxContext int
	// PrefillTokens is how many prompt tokens a step runs beside the
	// decoding rows (default 512): longer prompts, and prompts beyond it
	// joining at once, are prefilled in chunks over several steps.
	PrefillTokens int
	// MaxQueue is how many requests may wait for a slot (default 1024);
	// beyond it Add returns ErrQueueFull.
	MaxQueue int
	// AlwaysDecode runs every decoding sequence in every step. By
	// default a step that starts the prefill of a prompt whose request
	// waited behind another prompt's prefill (it arrived while a step with
	// prompt tokens ran) leaves the decoding sequences out, at most one
	// step in two: that prompt's first token comes a step's worth of
	// decoding rows sooner (on the Host, where a step's time grows with
	// its rows, the time to first token of a request arriving during
	// another's prefill, the worst case of a server in its steady state),
	// and each decoding sequence's next token one step later. Which steps
	// a sequence runs in changes none of its tokens.
	AlwaysDecode bool
	// OnFirstToken, if set, is called (from the Batcher's goroutine; it
	// must not block) with each request's time from Add to its first
	// sampled token.
	OnFirstToken func(time.Duration)
}

// BatcherStats are a Batcher's counters, for metrics.
type BatcherStats struct {
	Active          int    // sequences holding a slot
	Queued          int    // requests waiting for a slot
	Requests        uint64 // requests accepted by Add
	PromptTokens    uint64 // prompt tokens prefilled
	GeneratedTokens uint64 // tokens sampled (including stop tokens)
	Steps           uint64 // forward passes run
	HeldSteps       uint64 // steps that left the decoding sequences out (see AlwaysDecode)
	// FirstTokens and FirstTokenTime are the count and sum of the
	// requests' times to first token.
	FirstTokens    uint64
	FirstTokenTime time.Duration
}

// Batcher serves generation requests from one Decoder with continuous
// batching: each step runs one forward pass over every active sequence
// (its next token, or the next chunk of its prompt), samples each
// sequence's next token from its own Sampler, and between steps finished
// and cancelled sequences leave, freeing their slots, and queued requests
// join. A sequence's tokens are those it would get alone (the Decoder's
// rows do not depend on their batch, and each request samples from its own
// seeded stream), and for the same prompt and config they are
// engine.Generate's (with a context of MaxContext).
//
// Add and Stats are safe for concurrent use; the device is used only by
// the Batcher's goroutine until Close returns.
type Batcher struct {
	dec *Decoder
	cfg BatcherConfig
	nV  int

	mu     sync.Mutex
	queue  []*seqState
	closed bool
	err    error // the device failed
	stats  BatcherStats
	wake   chan struct{}
	done   chan struct{}
	cerr   error // Decoder.Close's

	// The sampling loop on kernels' worker pool (the serving goroutine's
	// alone).
	sampling kernels.Job
	draws    drawTask
}

// drawTask draws sequences [lo, hi) of a step's sample (kernels.Task).
type drawTask struct {
	ss     []*seqState
	logits []float32
	V      int
}

// Run draws each sequence's token from its own row with its own sampler.
func (t *drawTask) Run(_, lo, hi int) {
	for k := lo; k < hi; k++ {
		t.ss[k].draw = t.ss[k].smp.Next(t.logits[k*t.V : (k+1)*t.V])
	}
}

// seqState is one request.
type seqState struct {
	ctx    context.Context
	prompt []int
	gc     model.GenerateConfig
	smp    *model.Sampler
	out    chan Token
	start  time.Time

	slot  int
	fed   int // prompt tokens prefilled
	gen   int // tokens emitted
	next  int // the last token sampled, to feed next step
	first bool
	draw  int    // the token drawn this step
	last  [1]int // next, as the chunk of a decoding step
}

// NewBatcher uploads m to dev and starts serving. Close stops it.
func NewBatcher(dev CacheDevice, m *model.Model, cfg BatcherConfig) (*Batcher, error) {
	if cfg.Slots <= 0 {
		cfg.Slots = 16
	}
	if cfg.MaxContext <= 0 {
		cfg.MaxContext = min(m.Config.MaxPositionEmbeddings, 2048)
	}
	if cfg.PrefillTokens <= 0 {
		cfg.PrefillTokens = 512
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 1024
	}
	dec, err := NewDecoder(dev, m, cfg.Slots, cfg.MaxContext)
	if err != nil {
		return nil, err
	}
	b := &Batcher{dec: dec, cfg: cfg, nV: m.Config.VocabSize, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go b.loop()
	return b, nil
}

// Config returns the Batcher's configuration with defaults filled in.
func (b *Batcher) Config() BatcherConfig { return b.cfg }

// Add queues a request to continue prompt under gc (MaxTokens 0: until a
// stop token or a full context) and returns its stream: the generated
// tokens, then one last event with the finish reason. The channel is
// buffered for the whole generation, so a slow reader never holds up the
// batch. Cancelling ctx ends the request at the next step and frees its
// slot. Add fails without queueing on a bad config, an empty prompt, a
// token outside the vocabulary, a prompt longer than MaxContext
// (model.ErrContextFull), a full queue (ErrQueueFull), or a closed or
// failed Batcher.
func (b *Batcher) Add(ctx context.Context, prompt []int, gc model.GenerateConfig) (<-chan Token, error) {
	if err := gc.Validate(); err != nil {
		return nil, err
	}
	if len(prompt) == 0 {
		return nil, fmt.Errorf("engine: batcher: empty prompt")
	}
	if len(prompt) > b.cfg.MaxContext {
		return nil, fmt.Errorf("%w: prompt is %d tokens, the context is %d", model.ErrContextFull, len(prompt), b.cfg.MaxContext)
	}
	for p, id := range prompt {
		if id < 0 || id >= b.nV {
			return nil, fmt.Errorf("engine: batcher: prompt position %d: token %d outside the vocabulary [0, %d)", p, id, b.nV)
		}
	}
	// Room for every token the request can produce and the last event.
	room := b.cfg.MaxContext - len(prompt) + 1
	if gc.MaxTokens > 0 {
		room = min(room, gc.MaxTokens)
	}
	gc.Stop = slices.Clone(gc.Stop)
	s := &seqState{ctx: ctx, prompt: slices.Clone(prompt), gc: gc, smp: model.NewSampler(gc),
		out: make(chan Token, room+1), start: time.Now(), slot: -1}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.err != nil:
		return nil, b.err
	case b.closed:
		return nil, ErrBatcherClosed
	case len(b.queue) >= b.cfg.MaxQueue:
		return nil, ErrQueueFull
	}
	b.queue = append(b.queue, s)
	b.stats.Requests++
	b.stats.Queued = len(b.queue)
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return s.out, nil
}

// Generate runs one request to its end: it adds prompt under gc and hands
// each new token to yield as soon as it is sampled. It returns nil when
// the generation stops at MaxTokens, at a stop token or at a full context,
// or when yield returns false (the request is then cancelled and its slot
// freed at the next step); ctx.Err() when ctx ends first; Add's error, or
// the device's, otherwise. The tokens are those engine.Generate returns
// (with max_position_embeddings = MaxContext).
func (b *Batcher) Generate(ctx context.Context, prompt []int, gc model.GenerateConfig, yield func(tok int) bool) error {
	req, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := b.Add(req, prompt, gc)
	if err != nil {
		return err
	}
	for tok := range stream {
		switch tok.Finish {
		case "":
			if err := ctx.Err(); err != nil {
				return err
			}
			if !yield(tok.ID) {
				return nil
			}
		case FinishStop, FinishLength:
			return nil
		default:
			return tok.Err
		}
	}
	return nil
}

// Stats returns the current counters.
func (b *Batcher) Stats() BatcherStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Close stops accepting requests, lets those queued and running finish,
// frees the Decoder and returns its device error, if any. Cancel the
// requests' contexts first to stop them sooner.
func (b *Batcher) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	<-b.done
	return b.cerr
}

// finish ends s's stream.
func (s *seqState) finish(why FinishReason, err error) {
	s.out <- Token{ID: -1, Finish: why, Err: err}
	close(s.out)
}

// loop is the Batcher's goroutine: admit, step, repeat.
func (b *Batcher) loop() {
	defer close(b.done)
	active := make([]*seqState, 0, b.cfg.Slots)
	free := make([]int, 0, b.cfg.Slots)
	for s := b.cfg.Slots - 1; s >= 0; s-- {
		free = append(free, s)
	}
	release := func(s *seqState) {
		b.dec.Reset(s.slot)
		free = append(free, s.slot)
		s.slot = -1
	}
	var chunks []Chunk
	var stepping []*seqState
	var ttft []time.Duration
	// ended are the requests that left, whose last events go out once the
	// stats count them out (a client that sees its stream end sees Stats
	// without it).
	type end struct {
		s   *seqState
		why FinishReason
		err error
	}
	var ended []end
	// prevPrompt: the last step ran prompt tokens; prevHeld: it left the
	// decoding sequences out.
	prevPrompt, prevHeld := false, false
	for {
		// Leave: cancelled requests.
		ended = ended[:0]
		kept := active[:0]
		for _, s := range active {
			if err := s.ctx.Err(); err != nil {
				release(s)
				ended = append(ended, end{s, FinishCancelled, err})
				continue
			}
			kept = append(kept, s)
		}
		active = kept
		// Join: queued requests, in order, while slots are free.
		b.mu.Lock()
		for len(b.queue) > 0 && len(free) > 0 {
			s := b.queue[0]
			b.queue[0] = nil
			b.queue = b.queue[1:]
			if err := s.ctx.Err(); err != nil {
				s.finish(FinishCancelled, err)
				continue
			}
			s.slot, free = free[len(free)-1], free[:len(free)-1]
			active = append(active, s)
		}
		b.stats.Active, b.stats.Queued = len(active), len(b.queue)
		idle, closed, failed := len(active) == 0, b.closed, b.err
		for _, e := range ended {
			e.s.finish(e.why, e.err)
		}
		b.mu.Unlock()
		if failed != nil {
			b.failAll(active, failed)
			b.cerr = b.dec.Close()
			return
		}
		if idle {
			if closed {
				b.cerr = b.dec.Close()
				return
			}
			<-b.wake
			continue
		}

		// One step: every decoding sequence's last token (unless held, see
		// AlwaysDecode), and prompt chunks within the prefill budget (at
		// least one chunk). A prompt not yet started waited for the last
		// step: behind another prompt's prefill if that step ran one.
		hold := false
		if !b.cfg.AlwaysDecode && prevPrompt && !prevHeld {
			budget := b.cfg.PrefillTokens
			for _, s := range active {
				if s.fed == len(s.prompt) || budget <= 0 {
					continue
				}
				if s.fed == 0 {
					hold = true // this prompt starts in this step
					break
				}
				budget -= len(s.prompt) - s.fed
			}
		}
		chunks, stepping = chunks[:0], stepping[:0]
		budget := b.cfg.PrefillTokens
		prompt, held := 0, false
		for _, s := range active {
			if s.fed == len(s.prompt) {
				if hold {
					held = true
					continue
				}
				s.last[0] = s.next
				chunks = append(chunks, Chunk{Slot: s.slot, Tokens: s.last[:], Logits: true})
				stepping = append(stepping, s)
				continue
			}
			n := min(len(s.prompt)-s.fed, budget)
			if n <= 0 && prompt > 0 {
				continue
			}
			n = max(n, 1)
			budget -= n
			prompt += n
			done := s.fed+n == len(s.prompt)
			chunks = append(chunks, Chunk{Slot: s.slot, Tokens: s.prompt[s.fed : s.fed+n], Logits: done})
			s.fed += n
			if done {
				stepping = append(stepping, s)
			}
		}
		prevPrompt, prevHeld = prompt > 0, held
		logits, err := b.dec.Forward(chunks)
		if err != nil {
			b.mu.Lock()
			b.err = err
			b.mu.Unlock()
			continue // fails everything above
		}
		b.sample(stepping, logits)
		ttft = ttft[:0]
		ended = ended[:0]
		kept = active[:0]
		for _, s := range active {
			if !slices.Contains(stepping, s) {
				kept = append(kept, s)
				continue
			}
			if !s.first {
				s.first = true
				ttft = append(ttft, time.Since(s.start))
			}
			if why := b.emit(s); why != "" {
				release(s)
				ended = append(ended, end{s, why, nil})
				continue
			}
			kept = append(kept, s)
		}
		active = kept
		b.mu.Lock()
		b.stats.Steps++
		if held {
			b.stats.HeldSteps++
		}
		b.stats.PromptTokens += uint64(prompt)
		b.stats.GeneratedTokens += uint64(len(stepping))
		for _, d := range ttft {
			b.stats.FirstTokens++
			b.stats.FirstTokenTime += d
		}
		b.stats.Active = len(active)
		for _, e := range ended {
			e.s.finish(e.why, e.err)
		}
		b.mu.Unlock()
		if b.cfg.OnFirstToken != nil {
			for _, d := range ttft {
				b.cfg.OnFirstToken(d)
			}
		}
	}
}

// sample draws each stepping sequence's next token from its row of
// logits, in parallel when several sample at a temperature (each from its
// own stream: the order does not matter).
func (b *Batcher) sample(ss []*seqState, logits []float32) {
	V := b.nV
	hot := 0
	for _, s := range ss {
		if s.gc.Temperature > 0 {
			hot++
		}
	}
	b.draws = drawTask{ss: ss, logits: logits, V: V}
	helpers := 0
	if hot >= 2 {
		helpers = len(ss) - 1
	}
	b.sampling.For(len(ss), 1, helpers, &b.draws)
	b.draws = drawTask{}
}

// emit delivers s's drawn token and says whether s is finished: at a stop
// token (not emitted), at MaxTokens, or when its context is full (the
// rules of Generate).
func (b *Batcher) emit(s *seqState) FinishReason {
	if slices.Contains(s.gc.Stop, s.draw) {
		return FinishStop
	}
	s.out <- Token{ID: s.draw}
	s.gen++
	s.next = s.draw
	if s.gen == s.gc.MaxTokens || len(s.prompt)+s.gen-1 >= b.cfg.MaxContext {
		return FinishLength
	}
	return ""
}

// failAll ends every active and queued request with err.
func (b *Batcher) failAll(active []*seqState, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.Active, b.stats.Queued = 0, 0
	for _, s := range append(active, b.queue...) {
		s.finish(FinishError, err)
	}
	b.queue = nil
}
