package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/model/safetensors"
)

// DefaultChunkElems is the default number of elements read from each input
// at a time (1 MiB of F32 per input).
const DefaultChunkElems = 1 << 18

// More sentinel errors.
var (
	// ErrDuplicateInput is returned when the same update (same path, same
	// digest or same contributor ID) is listed twice.
	ErrDuplicateInput = errors.New("aggregator: input listed twice")
	// ErrRejected is wrapped by the error Aggregate returns in strict mode
	// when some input was rejected.
	ErrRejected = errors.New("aggregator: inputs rejected")
	// ErrBadState is wrapped by errors about a server state file.
	ErrBadState = errors.New("aggregator: bad server state")
	// ErrBadBase is wrapped by errors about the base model file.
	ErrBadBase = errors.New("aggregator: bad base model")
)

// Input is one update to aggregate.
type Input struct {
	// Path is the update's safetensors file.
	Path string
	// Weight is the input's sample count, its weight in FedAvg-style
	// strategies. Zero means the file's "num_samples" metadata, else 1.
	Weight float64
	// ContributorID, when given (for every input or for none), sets the
	// canonical order; otherwise inputs are ordered by digest.
	ContributorID string
}

// Options apply to every strategy.
type Options struct {
	// Clip, when positive, scales each update u (input − base, or the
	// delta) down to L2 norm Clip if it is longer: u·min(1, Clip/‖u‖).
	Clip float64
	// NoiseMultiplier z, with Clip C, adds Gaussian noise of standard
	// deviation z·C/m (m accepted updates) to every coordinate of the
	// combined result, as DP-FedAvg with fixed clipping. Needs Clip.
	NoiseMultiplier float64
	// Seed, when not zero, seeds the noise (the same seed gives the same
	// noise): for tests only, since anyone who knows it can subtract the
	// noise. Zero, as production uses it, draws a fresh secret key from
	// crypto/rand for every aggregation; it is recorded nowhere.
	Seed uint64
	// MaxNorm, when positive, rejects an update whose norm ‖u‖ exceeds it
	// (u as for Clip; without a base, u is the input itself).
	MaxNorm float64
	// ChunkElems is how many elements of each input are read at a time
	// (0: DefaultChunkElems); it is rounded up to a multiple of
	// kernels.ReduceBlock and never changes the result.
	ChunkElems int
	// Threads is how many goroutines read and decode inputs (0: GOMAXPROCS).
	// It never changes the result.
	Threads int
	// Strict makes any rejection an error (wrapping ErrRejected), returned
	// before anything is written; otherwise rejected inputs are reported in
	// Result.Rejected and the rest are reduced.
	Strict bool
}

// Request describes one aggregation.
type Request struct {
	Strategy Strategy
	Inputs   []Input
	// Base is the current global model (optional for most strategies):
	// the reference layout, the origin of updates for clipping and norms,
	// what delta inputs are added to, and the point FedAvgM/FedOpt step from.
	Base string
	// BaseDigest is Base's weight digest, when the caller knows it: an
	// update that names the model it was trained from (__metadata__
	// fedtune.base) and names another is rejected, as trained from a
	// different starting model.
	BaseDigest string
	// State is the server state file from the previous round (FedAvgM,
	// FedOpt); empty means the first round (zero state).
	State string
	// Out is where the new global is written, atomically, as canonical F32
	// safetensors. Empty keeps it in memory (Result.Tensors).
	Out string
	// StateOut is where the new server state is written, as Out. Empty
	// keeps it in memory (Result.State).
	StateOut string
	Options  Options
	// Backend computes the numerics (nil: kernels.Default()).
	Backend kernels.Backend
	// Logger receives progress and rejections (nil: discard).
	Logger *slog.Logger
	// Progress, if set, is called after each chunk.
	Progress func(Progress)
}

// Progress reports how far a pass has come, in elements read over all inputs.
type Progress struct {
	Phase       string // "validate", "distances", "reduce"
	Done, Total int64
}

// Rejection says why an input was not reduced.
type Rejection struct {
	Input         int // index in Request.Inputs
	Path          string
	ContributorID string
	Digest        string // empty if the file could not be read
	Tensor        string // the tensor at fault, if one is
	Err           error  // wraps ErrInvalidUpdate
}

// Reason returns why the input was rejected, naming file and tensor.
func (r Rejection) Reason() string { return r.Err.Error() }

// Contribution describes an accepted input.
type Contribution struct {
	Input         int // index in Request.Inputs
	Path          string
	ContributorID string
	Digest        string
	Weight        float64 // sample count used
	Share         float64 // its share in the result (see Plan.Shares)
	Norm          float64 // ‖u‖, when clipping or a norm bound asked for it
	ClipScale     float64 // factor applied by clipping (1: unchanged)
}

// Key returns the contributor ID, or the digest when none was given.
func (c Contribution) Key() string {
	if c.ContributorID != "" {
		return c.ContributorID
	}
	return c.Digest
}

// Result is the outcome of Aggregate.
type Result struct {
	Digest   string               // weight digest of the new global (sha256 of the file)
	Path     string               // Request.Out
	Tensors  []safetensors.Tensor // the new global, when Request.Out is empty
	Strategy string
	Params   map[string]float64
	// Accepted lists the inputs that passed validation, in canonical order.
	Accepted []Contribution
	Rejected []Rejection
	// Weights maps each accepted input's Key to its Share.
	Weights     map[string]float64
	NoiseStdDev float64
	// StateDigest, StatePath and State describe the new server state, if the
	// strategy keeps one.
	StateDigest string
	StatePath   string
	State       []safetensors.Tensor
}

// RejectedError lists the inputs rejected in strict mode.
type RejectedError struct{ Rejected []Rejection }

func (e *RejectedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of the inputs rejected:", len(e.Rejected))
	for _, r := range e.Rejected {
		b.WriteString("\n  ")
		b.WriteString(r.Err.Error())
	}
	return b.String()
}

// Unwrap returns ErrRejected.
func (e *RejectedError) Unwrap() error { return ErrRejected }

type source struct {
	req      int
	in       Input
	u        *Update
	digest   string
	key      string
	weight   float64
	norm2    float64
	scale    float64
	rejected bool
	bad      error // a non-finite value found by the inspection pass
	x        []float32
}

type driver struct {
	ctx      context.Context
	req      Request
	opt      Options
	be       kernels.Backend
	log      *slog.Logger
	chunk    int
	threads  int
	base     *safetensors.File
	state    *safetensors.File
	opt8r    ServerOptimizer // nil unless a server step runs
	slots    []string
	ref      []safetensors.TensorInfo
	kind     string
	all      []*source // canonical order, opened ones
	good     []*source
	rejected []Rejection
	decs     []*Decoder
	tmps     [][]float32 // per worker: updates (x − base)
	tmps2    [][]float32 // per worker: decoded chunks
	bases    [][]float32 // per worker: base chunks
	baseBuf  []float32
	// validating: Validate runs only the input checks (see open).
	validating bool
	// distMatrix holds the squared distances between the good inputs when
	// the validation pass could compute them (no clipping).
	distMatrix []float64
}

// Aggregate validates the inputs, reduces the good ones with the strategy
// in canonical order, streaming chunk by chunk, and writes the new global
// (and server state). The result is bit-for-bit the same whatever the order
// of Inputs, the thread count and the chunk size. On error nothing is
// written.
func Aggregate(ctx context.Context, req Request) (*Result, error) {
	d, err := newDriver(req)
	if err != nil {
		return nil, err
	}
	d.ctx = ctx
	defer d.close()
	if err := d.open(); err != nil {
		return nil, err
	}
	if err := d.scan(ctx); err != nil {
		return nil, err
	}
	return d.finish(ctx)
}

// Validate runs Aggregate's input checks on req.Inputs and reduces
// nothing: each input must parse as an update, have the kind of the
// first input (canonical order) and the layout of req.Base (or of that
// input), hold only finite values, and, with Options.MaxNorm, have a norm
// ‖u‖ within it (u as for clipping; Options.Clip only asks for the norm).
// It returns the inputs Aggregate would reject, by input index, each with
// its reason; none when every input passes. req.Strategy, State, Out,
// StateOut and the noise options are ignored. The error is about the
// request itself: a bad base, bad options, duplicate inputs, or ctx.
func Validate(ctx context.Context, req Request) ([]Rejection, error) {
	req.Strategy, req.State, req.StateOut, req.Out = &FedAvg{}, "", "", ""
	req.Options.NoiseMultiplier, req.Options.Seed, req.Options.Strict = 0, 0, false
	d, err := newDriver(req)
	if err != nil {
		return nil, err
	}
	d.ctx, d.validating = ctx, true
	defer d.close()
	if err := d.open(); err != nil {
		return nil, err
	}
	d.bound()
	sort.Slice(d.rejected, func(a, b int) bool { return d.rejected[a].Input < d.rejected[b].Input })
	return d.rejected, nil
}

func newDriver(req Request) (*driver, error) {
	o := req.Options
	d := &driver{ctx: context.Background(), req: req, opt: o, be: req.Backend, log: req.Logger}
	if d.be == nil {
		d.be = kernels.Default()
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadParams}, args...)...)
	}
	switch {
	case req.Strategy == nil:
		return nil, bad("no strategy")
	case len(req.Inputs) == 0:
		return nil, fmt.Errorf("no inputs: %w", ErrNoViableUpdates)
	case !finiteNonNeg(o.Clip):
		return nil, bad("clip %v must be a non-negative number", o.Clip)
	case !finiteNonNeg(o.NoiseMultiplier):
		return nil, bad("noise multiplier %v must be a non-negative number", o.NoiseMultiplier)
	case o.NoiseMultiplier > 0 && o.Clip == 0:
		return nil, bad("noise multiplier needs a clipping norm (--clip): σ = z·C/m")
	case !finiteNonNeg(o.MaxNorm):
		return nil, bad("max norm %v must be a non-negative number", o.MaxNorm)
	case o.ChunkElems < 0 || o.Threads < 0:
		return nil, bad("chunk size and thread count must not be negative")
	}
	d.chunk = o.ChunkElems
	if d.chunk == 0 {
		d.chunk = DefaultChunkElems
	}
	d.chunk = (d.chunk + kernels.ReduceBlock - 1) / kernels.ReduceBlock * kernels.ReduceBlock
	d.threads = o.Threads
	if d.threads == 0 {
		d.threads = runtime.GOMAXPROCS(0)
	}
	if so, ok := req.Strategy.(ServerOptimizer); ok && so.Optimizes() {
		d.opt8r = so
		d.slots = so.StateSlots()
		if req.Base == "" {
			return nil, bad("%s needs the current global model (--base) to form the pseudo-gradient", req.Strategy.Name())
		}
	}
	if len(d.slots) == 0 && (req.State != "" || req.StateOut != "") {
		return nil, bad("%s keeps no server state, but a state file was given", strategyDesc(req.Strategy))
	}
	for i, in := range req.Inputs {
		if math.IsNaN(in.Weight) || math.IsInf(in.Weight, 0) || in.Weight < 0 {
			return nil, bad("input %d (%s): weight %v must be a positive number", i, in.Path, in.Weight)
		}
	}
	d.decs = make([]*Decoder, d.threads)
	d.tmps = make([][]float32, d.threads)
	d.tmps2 = make([][]float32, d.threads)
	d.bases = make([][]float32, d.threads)
	for w := range d.decs {
		d.decs[w] = NewDecoder(d.be)
	}
	return d, nil
}

func strategyDesc(s Strategy) string {
	if so, ok := s.(ServerOptimizer); ok && !so.Optimizes() {
		return s.Name() + " (with these parameters)"
	}
	return s.Name()
}

func finiteNonNeg(v float64) bool { return v >= 0 && !math.IsInf(v, 0) }

func (d *driver) close() {
	for _, s := range d.all {
		s.u.Close()
	}
	if d.base != nil {
		d.base.Close()
	}
	if d.state != nil {
		d.state.Close()
	}
}

func (d *driver) reject(s *source, req int, in Input, digest string, err error) {
	r := Rejection{Input: req, Path: in.Path, ContributorID: in.ContributorID, Digest: digest, Err: err}
	var ue *UpdateError
	if errors.As(err, &ue) {
		r.Tensor = ue.Tensor
	}
	if s != nil {
		s.rejected = true
	}
	d.rejected = append(d.rejected, r)
	d.log.Warn("update rejected", "input", in.Path, "contributor", in.ContributorID, "err", err)
}

// open reads the base, the state and every input's header and digest, puts
// the inputs in canonical order and checks their layout.
func (d *driver) open() error {
	req := d.req
	if req.Base != "" {
		f, err := openMapped(req.Base)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadBase, err)
		}
		d.base = f
		for _, t := range f.Tensors() {
			if !t.DType.IsFloat() {
				return fmt.Errorf("%w: %s: tensor %q: dtype %s is not a float type", ErrBadBase, req.Base, t.Name, t.DType)
			}
		}
		d.ref = f.Tensors()
	}
	paths := map[string]int{}
	digests := map[string]int{}
	ids := map[string]int{}
	withID := 0
	for i, in := range req.Inputs {
		clean := filepath.Clean(in.Path)
		if j, dup := paths[clean]; dup {
			return fmt.Errorf("%w: %s is input %d and input %d", ErrDuplicateInput, in.Path, j, i)
		}
		paths[clean] = i
		if in.ContributorID != "" {
			withID++
			if j, dup := ids[in.ContributorID]; dup {
				return fmt.Errorf("%w: contributor %q is input %d (%s) and input %d (%s)", ErrDuplicateInput, in.ContributorID, j, req.Inputs[j].Path, i, in.Path)
			}
			ids[in.ContributorID] = i
		}
	}
	if withID != 0 && withID != len(req.Inputs) {
		return fmt.Errorf("%w: %d of %d inputs have a contributor ID; give one for every input or for none", ErrBadParams, withID, len(req.Inputs))
	}
	// Open every input (headers only), then read each once, in parallel:
	// its digest, whether every value is finite, and its norm when one is
	// needed. Then deal with the outcomes in input order.
	type opened struct {
		u   *Update
		ins inspection
		err error
	}
	res := make([]opened, len(req.Inputs))
	d.parallelN(len(req.Inputs), func(_, i int) {
		res[i].u, res[i].err = OpenUpdate(req.Inputs[i].Path)
	})
	ins := &inspector{d: d, needNorm: d.needNorm()}
	for _, r := range res {
		if r.u != nil {
			for _, t := range r.u.Tensors() {
				ins.total += t.NumElements()
			}
		}
	}
	var ctxErr error
	var ctxOnce sync.Once
	d.parallelN(len(req.Inputs), func(w, i int) {
		r := &res[i]
		if r.err != nil {
			return
		}
		got, err := ins.inspect(d.ctx, w, r.u)
		if err != nil {
			r.u.Close()
			r.u = nil
			r.err = err
			if d.ctx.Err() != nil {
				ctxOnce.Do(func() { ctxErr = d.ctx.Err() })
			}
			return
		}
		r.ins = got
	})
	if ctxErr != nil {
		for _, r := range res {
			if r.u != nil {
				r.u.Close()
			}
		}
		return ctxErr
	}
	var dupErr error
	for i, in := range req.Inputs {
		r := res[i]
		if r.err != nil {
			d.reject(nil, i, in, "", r.err)
			continue
		}
		dg := r.ins.digest
		if j, dup := digests[dg]; dup && dupErr == nil {
			dupErr = fmt.Errorf("%w: %s and %s hold the same update (digest %s)", ErrDuplicateInput, req.Inputs[j].Path, in.Path, dg)
		}
		digests[dg] = i
		s := &source{req: i, in: in, u: r.u, digest: dg, key: dg, weight: in.Weight, scale: 1, bad: r.ins.bad, norm2: r.ins.norm2}
		if in.ContributorID != "" {
			s.key = in.ContributorID
		}
		if s.weight == 0 {
			s.weight = 1
			if n, ok := r.u.NumSamples(); ok {
				s.weight = n
			}
		}
		d.all = append(d.all, s)
	}
	if dupErr != nil {
		return dupErr
	}
	sort.Slice(d.all, func(a, b int) bool { return d.all[a].key < d.all[b].key })
	if len(d.all) == 0 {
		if d.validating {
			return nil
		}
		return d.noViable()
	}
	if d.ref == nil {
		d.ref = d.all[0].u.Tensors()
	}
	d.kind = d.all[0].u.Kind()
	for _, s := range d.all {
		if err := d.checkLayout(s); err != nil {
			d.reject(s, s.req, s.in, s.digest, err)
		} else if s.bad != nil {
			d.reject(s, s.req, s.in, s.digest, s.bad)
		}
	}
	if d.kind == KindDelta && d.base == nil {
		return fmt.Errorf("%w: %s is a delta (__metadata__ %s=%s); deltas need the base model (--base)", ErrBadParams, d.all[0].in.Path, MetaKind, KindDelta)
	}
	if d.opt.Clip > 0 && d.kind == KindFull && d.base == nil {
		return fmt.Errorf("%w: clipping full weights needs the base model (--base): the update is input − base", ErrBadParams)
	}
	if d.validating {
		return nil
	}
	if err := d.openState(); err != nil {
		return err
	}
	return d.checkCount()
}

func (d *driver) noViable() error {
	sort.Slice(d.rejected, func(a, b int) bool { return d.rejected[a].Input < d.rejected[b].Input })
	if len(d.rejected) > 0 {
		return fmt.Errorf("%w: %w", ErrNoViableUpdates, &RejectedError{Rejected: d.rejected})
	}
	return ErrNoViableUpdates
}

// checkCount fails early when too few inputs remain for the strategy, or
// in strict mode when any was rejected.
func (d *driver) checkCount() error {
	if d.opt.Strict && len(d.rejected) > 0 {
		sort.Slice(d.rejected, func(a, b int) bool { return d.rejected[a].Input < d.rejected[b].Input })
		return &RejectedError{Rejected: d.rejected}
	}
	n := 0
	for _, s := range d.all {
		if !s.rejected {
			n++
		}
	}
	if n == 0 {
		return d.noViable()
	}
	return d.req.Strategy.Check(n)
}

func (d *driver) checkLayout(s *source) error {
	u := s.u
	bad := func(tensor, format string, args ...any) error {
		return &UpdateError{File: u.Name(), Tensor: tensor, Msg: fmt.Sprintf(format, args...)}
	}
	refName := "the base model"
	if d.base == nil {
		refName = "the first input, " + d.all[0].in.Path
	}
	if u.Kind() != d.kind {
		return bad("", "kind %q differs from %q of %s", u.Kind(), d.kind, d.all[0].in.Path)
	}
	if b := u.Base(); b != "" && d.req.BaseDigest != "" && b != d.req.BaseDigest {
		return bad("", "trained from model %s (__metadata__ %s), but the round's base is %s", b, MetaBase, d.req.BaseDigest)
	}
	for _, t := range d.ref {
		ut, ok := u.Info(t.Name)
		if !ok {
			return bad(t.Name, "missing (present in %s)", refName)
		}
		if !equalShape(ut.Shape, t.Shape) {
			return bad(t.Name, "shape %v, but %s has %v", ut.Shape, refName, t.Shape)
		}
	}
	if len(u.Tensors()) != len(d.ref) {
		for _, t := range u.Tensors() {
			if _, ok := d.refInfo(t.Name); !ok {
				return bad(t.Name, "unexpected tensor (not in %s)", refName)
			}
		}
	}
	return nil
}

func (d *driver) refInfo(name string) (safetensors.TensorInfo, bool) {
	i := sort.Search(len(d.ref), func(i int) bool { return d.ref[i].Name >= name })
	if i < len(d.ref) && d.ref[i].Name == name {
		return d.ref[i], true
	}
	return safetensors.TensorInfo{}, false
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func stateName(slot, tensor string) string { return slot + "/" + tensor }

func (d *driver) openState() error {
	if d.req.State == "" {
		return nil
	}
	f, err := safetensors.Open(d.req.State)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadState, err)
	}
	d.state = f
	want := 0
	for _, slot := range d.slots {
		for _, t := range d.ref {
			name := stateName(slot, t.Name)
			st, ok := f.Info(name)
			if !ok {
				return fmt.Errorf("%w: %s: tensor %q missing (is it a %s state for this model?)", ErrBadState, d.req.State, name, d.req.Strategy.Name())
			}
			if st.DType != safetensors.F32 || !equalShape(st.Shape, t.Shape) {
				return fmt.Errorf("%w: %s: tensor %q is %s%v, want F32%v", ErrBadState, d.req.State, name, st.DType, st.Shape, t.Shape)
			}
			want++
		}
	}
	if len(f.Tensors()) != want {
		for _, t := range f.Tensors() {
			slot, tensor, _ := strings.Cut(t.Name, "/")
			if _, ok := d.refInfo(tensor); !ok || !contains(d.slots, slot) {
				return fmt.Errorf("%w: %s: unexpected tensor %q for %s", ErrBadState, d.req.State, t.Name, d.req.Strategy.Name())
			}
		}
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func (d *driver) live() []*source {
	var out []*source
	for _, s := range d.all {
		if !s.rejected {
			out = append(out, s)
		}
	}
	return out
}

// parallelN runs fn(w, i) for i in [0, n) on up to d.threads goroutines;
// worker w owns d.decs[w] and the other per-worker buffers.
func (d *driver) parallelN(n int, fn func(w, i int)) {
	workers := min(d.threads, n)
	if workers <= 1 {
		for i := range n {
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(w, i)
			}
		}()
	}
	wg.Wait()
}

func (d *driver) totalElems() int64 {
	var n int64
	for _, t := range d.ref {
		n += t.NumElements()
	}
	return n
}

// chunks calls fn for every chunk of every reference tensor, in canonical
// order, reporting progress for count inputs.
func (d *driver) chunks(ctx context.Context, phase string, count int, fn func(t safetensors.TensorInfo, off int64, m int) error) error {
	total := d.totalElems() * int64(count)
	var done int64
	for _, t := range d.ref {
		n := t.NumElements()
		for off := int64(0); off < n; off += int64(d.chunk) {
			if err := ctx.Err(); err != nil {
				return err
			}
			m := int(min(int64(d.chunk), n-off))
			if err := fn(t, off, m); err != nil {
				return err
			}
			done += int64(m) * int64(count)
			if d.req.Progress != nil {
				d.req.Progress(Progress{Phase: phase, Done: done, Total: total})
			}
		}
	}
	return nil
}

func (d *driver) readBase(name string, off int64, m int) ([]float32, error) {
	if v, ok := d.base.Float32View(name); ok && off+int64(m) <= int64(len(v)) {
		return v[off : off+int64(m)], nil
	}
	d.baseBuf = grow(d.baseBuf, m)
	if err := d.base.ReadFloat32At(name, off, d.baseBuf, nil); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadBase, err)
	}
	return d.baseBuf, nil
}

// needNorm reports whether the validation pass computes update norms.
func (d *driver) needNorm() bool { return d.opt.Clip > 0 || d.opt.MaxNorm > 0 }

// updateOf writes the update u = x − base (full weights with a base) or
// u = x into tmp and returns it; kind is the input's kind.
func updateOf(kind string, tmp, x, base []float32) []float32 {
	if kind == KindDelta || base == nil {
		return x
	}
	tmp = tmp[:len(x)]
	for i := range x {
		tmp[i] = x[i] - base[i]
	}
	return tmp
}

// blockNorm adds ‖u‖² to *acc block by block (kernels.ReduceBlock): each
// block's partial Σ float64(u[i])² in index order from 0, as
// kernels.Backend.SquaredNorm defines it, then the partials one at a time in
// block order, so that the sum is the same however the tensor is cut into
// chunks. It runs on the calling goroutine, eight blocks side by side.
func (d *driver) blockNorm(acc *float64, u []float32) {
	const B = kernels.ReduceBlock
	var parts [8]float64
	for b := 0; b < len(u); b += 8 * B {
		seg := u[b:min(b+8*B, len(u))]
		n := (len(seg) + B - 1) / B
		kernels.BlockSquaredNorms(parts[:n], seg)
		for _, p := range parts[:n] {
			*acc += p
		}
	}
}

// bound rejects the live inputs whose norm exceeds Options.MaxNorm and
// sets the clipping factors of the others.
func (d *driver) bound() {
	if !d.needNorm() {
		return
	}
	for _, s := range d.live() {
		norm := math.Sqrt(s.norm2)
		if d.opt.MaxNorm > 0 && !(norm <= d.opt.MaxNorm) {
			d.reject(s, s.req, s.in, s.digest, &UpdateError{File: s.u.Name(), Msg: fmt.Sprintf("update norm %.6g exceeds the bound %.6g (--max-norm)", norm, d.opt.MaxNorm)})
			continue
		}
		if d.opt.Clip > 0 && norm > d.opt.Clip {
			s.scale = d.opt.Clip / norm
		}
	}
}

// scan finishes validation: the inspection pass has checked every value
// and computed the norms; here the norm bound rejects, clipping factors are
// set, and (for strategies that need them, without clipping) the pairwise
// distances between the accepted inputs are computed.
func (d *driver) scan(ctx context.Context) error {
	d.bound()
	d.good = d.live()
	if err := d.checkCount(); err != nil {
		return err
	}
	if d.req.Strategy.NeedsDistances() && d.opt.Clip == 0 {
		var err error
		if d.distMatrix, err = d.distancePass(ctx); err != nil {
			return err
		}
	}
	return nil
}
