package aggregator

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"

	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/model/safetensors"
)

// distances accumulates the pairwise squared distances between n inputs,
// block by block (kernels.ReduceBlock) in coordinate order, so that the
// sums do not depend on the chunk size or the thread count.
type distances struct {
	n     int
	d     []float64
	parts []float64

	// The parallel loop over blocks, on kernels' worker pool, and what its
	// Run reads during add.
	job kernels.Job
	be  kernels.Backend
	xs  [][]float32
	xb  [][][]float32 // per participant slot: the inputs' views of one block
}

func newDistances(n int) *distances { return &distances{n: n, d: make([]float64, n*n)} }

// Run computes the distances of blocks [lo, hi) during add as participant
// slot (kernels.Task), each into its own part: which participant runs a
// block never changes the sums.
func (ds *distances) Run(slot, lo, hi int) {
	n, m, xb := ds.n, len(ds.xs[0]), ds.xb[slot]
	for b := lo; b < hi; b++ {
		blo, bhi := b*kernels.ReduceBlock, min((b+1)*kernels.ReduceBlock, m)
		for i := range ds.xs {
			xb[i] = ds.xs[i][blo:bhi]
		}
		ds.be.PairwiseSquaredDistances(ds.parts[b*n*n:(b+1)*n*n], xb)
	}
}

func (ds *distances) add(dr *driver, xs [][]float32) {
	n := ds.n
	if n < 2 || len(xs[0]) == 0 {
		return
	}
	m := len(xs[0])
	nb := (m + kernels.ReduceBlock - 1) / kernels.ReduceBlock
	ds.parts = grow(ds.parts, nb*n*n)
	clear(ds.parts)
	helpers := min(dr.threads, nb) - 1
	for len(ds.xb) <= helpers {
		ds.xb = append(ds.xb, make([][]float32, n))
	}
	ds.be, ds.xs = dr.be, xs
	ds.job.For(nb, 1, helpers, ds)
	ds.be, ds.xs = nil, nil
	for b := range nb {
		p := ds.parts[b*n*n : (b+1)*n*n]
		for i, v := range p {
			ds.d[i] += v
		}
	}
}

// clip applies s's clipping factor to its chunk x in place: the update
// u = x − base (or x) becomes u·scale, and x = base + u. An unclipped
// input is left exactly as it is.
func (d *driver) clip(s *source, x, base []float32) {
	if s.scale == 1 {
		return
	}
	if d.kind == KindDelta || base == nil {
		d.be.Scale(x, float32(s.scale))
		return
	}
	for i := range x {
		x[i] -= base[i]
	}
	d.be.Scale(x, float32(s.scale))
	for i := range x {
		x[i] = base[i] + x[i]
	}
}

func (d *driver) anyClipped() bool {
	for _, s := range d.good {
		if s.scale != 1 {
			return true
		}
	}
	return false
}

// readInputs points xs[i] at chunk [off, off+m) of tensor name of srcs[i],
// clipped: straight into the mapped file where the input is F32 and
// unclipped, else decoded (and clipped) into the source's buffer.
func (d *driver) readInputs(srcs []*source, xs [][]float32, name string, off int64, m int, base []float32) error {
	var copies []int
	for i, s := range srcs {
		if s.scale == 1 {
			if v, ok := s.u.f.Float32View(name); ok && off+int64(m) <= int64(len(v)) {
				xs[i] = v[off : off+int64(m) : off+int64(m)]
				continue
			}
		}
		copies = append(copies, i)
	}
	if len(copies) == 0 {
		return nil
	}
	errs := make([]error, len(copies))
	d.parallelN(len(copies), func(w, j int) {
		s := srcs[copies[j]]
		s.x = grow(s.x, d.chunk)
		x := s.x[:m]
		if err := d.decs[w].Read(s.u, name, off, x); err != nil {
			errs[j] = fmt.Errorf("%w (did the file change during aggregation?)", err)
			return
		}
		d.clip(s, x, base)
		xs[copies[j]] = x
	})
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// evict drops chunk [off, off+m) of tensor name of every source from the
// process's resident set (see safetensors.File.Evict): each pass reads a
// chunk once, so the memory a pass holds stays O(inputs × chunk) however
// large the mapped inputs are.
func evict(srcs []*source, name string, off int64, m int) {
	for _, s := range srcs {
		s.u.evict(name, off, m)
	}
}

// distancePass computes the distances between the clipped good inputs.
func (d *driver) distancePass(ctx context.Context) ([]float64, error) {
	srcs := d.good
	dist := newDistances(len(srcs))
	needBase := d.base != nil && d.kind == KindFull && d.anyClipped()
	xs := make([][]float32, len(srcs))
	err := d.chunks(ctx, "distances", len(srcs), func(t safetensors.TensorInfo, off int64, m int) error {
		var base []float32
		if needBase {
			var err error
			if base, err = d.readBase(t.Name, off, m); err != nil {
				return err
			}
		}
		if err := d.readInputs(srcs, xs, t.Name, off, m, base); err != nil {
			return err
		}
		dist.add(d, xs)
		evict(srcs, t.Name, off, m)
		return nil
	})
	return dist.d, err
}

// writeF32 writes x as little-endian F32: its own memory where the host is
// little-endian, else encoded into *enc.
func writeF32(w io.Writer, x []float32, enc *[]byte) error {
	b, ok := safetensors.Float32Bytes(x)
	if !ok {
		*enc, _ = safetensors.EncodeFloat32(safetensors.F32, (*enc)[:0], x)
		b = *enc
	}
	_, err := w.Write(b)
	return err
}

// bgWriter writes float32 chunks as F32 to w on its own goroutine. write
// hands a chunk over once the previous one has been written, so the caller
// may refill a buffer two writes after handing it over.
type bgWriter struct {
	w      io.Writer
	work   chan []float32
	done   chan struct{}
	failed atomic.Bool
	err    error // set by the goroutine; read after done
	enc    []byte
	closed bool
}

func newBGWriter(w io.Writer) *bgWriter {
	b := &bgWriter{w: w, work: make(chan []float32), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for x := range b.work {
			if b.err != nil {
				continue
			}
			if b.err = writeF32(b.w, x, &b.enc); b.err != nil {
				b.failed.Store(true)
			}
		}
	}()
	return b
}

// write queues x; it fails early once an earlier write has failed.
func (b *bgWriter) write(x []float32) error {
	if b.failed.Load() {
		return b.stop()
	}
	b.work <- x
	return nil
}

// stop waits for the queued chunks and returns the first write error. It
// may be called more than once.
func (b *bgWriter) stop() error {
	if !b.closed {
		b.closed = true
		close(b.work)
	}
	<-b.done
	return b.err
}

// noise is a Gaussian stream for one tensor: ChaCha8 keyed by the seed and
// the tensor name, turned into normals by Box–Muller, one per element in
// element order, so chunking never changes it.
type noise struct {
	rng   *rand.ChaCha8
	spare float64
	has   bool
}

// noiseKey returns the key of an aggregation's noise: the seed's 8 bytes
// when a test gives one, else 32 bytes from crypto/rand.
func noiseKey(seed uint64) ([]byte, error) {
	if seed != 0 {
		return binary.LittleEndian.AppendUint64(nil, seed), nil
	}
	k := make([]byte, 32)
	if _, err := cryptorand.Read(k); err != nil {
		return nil, fmt.Errorf("aggregator: noise key from crypto/rand: %w", err)
	}
	return k, nil
}

func newNoise(nkey []byte, tensor string) *noise {
	h := sha256.New()
	h.Write([]byte("fedtune/aggregator/noise\x00"))
	h.Write(nkey)
	h.Write([]byte(tensor))
	var key [32]byte
	copy(key[:], h.Sum(nil))
	return &noise{rng: rand.NewChaCha8(key)}
}

func (n *noise) next() float64 {
	if n.has {
		n.has = false
		return n.spare
	}
	u1 := (float64(n.rng.Uint64()>>11) + 1) / (1 << 53) // (0, 1]
	u2 := float64(n.rng.Uint64()>>11) / (1 << 53)       // [0, 1)
	r := math.Sqrt(-2 * math.Log(u1))
	t := 2 * math.Pi * u2
	n.spare, n.has = r*math.Sin(t), true
	return r * math.Cos(t)
}

// sink writes a file atomically, or into memory when path is empty.
type sink struct {
	path   string
	buf    bytes.Buffer
	digest string
}

func (s *sink) run(write func(io.Writer) error) error {
	if s.path == "" {
		h := sha256.New()
		if err := write(io.MultiWriter(&s.buf, h)); err != nil {
			return err
		}
		s.digest = hex.EncodeToString(h.Sum(nil))
		return nil
	}
	dg, err := safetensors.WriteFileFunc(s.path, write)
	s.digest = dg
	return err
}

func (s *sink) tensors() ([]safetensors.Tensor, error) {
	f, err := safetensors.Parse("result", bytes.NewReader(s.buf.Bytes()), int64(s.buf.Len()))
	if err != nil {
		return nil, err
	}
	var out []safetensors.Tensor
	for _, t := range f.Tensors() {
		data, err := f.ReadRaw(t.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, safetensors.Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, Data: data})
	}
	return out, nil
}

func (d *driver) finish(ctx context.Context) (*Result, error) {
	st := d.req.Strategy
	weights := make([]float64, len(d.good))
	for i, s := range d.good {
		weights[i] = s.weight
	}
	var dist []float64
	if st.NeedsDistances() {
		dist = d.distMatrix
		if dist == nil {
			var err error
			if dist, err = d.distancePass(ctx); err != nil {
				return nil, err
			}
		}
	}
	plan, err := st.Plan(weights, dist)
	if err != nil {
		return nil, err
	}
	if len(plan.Use) == 0 || len(plan.Shares) != len(d.good) {
		return nil, fmt.Errorf("aggregator: %s returned a plan using %d inputs with %d shares for %d inputs", st.Name(), len(plan.Use), len(plan.Shares), len(d.good))
	}
	used := make([]*source, len(plan.Use))
	for j, k := range plan.Use {
		if k < 0 || k >= len(d.good) || (j > 0 && k <= plan.Use[j-1]) {
			return nil, fmt.Errorf("aggregator: %s returned a plan with bad indices %v", st.Name(), plan.Use)
		}
		used[j] = d.good[k]
	}
	res := &Result{Path: d.req.Out, Strategy: st.Name(), Params: st.Params(), Weights: map[string]float64{}}
	res.Rejected = append([]Rejection(nil), d.rejected...)
	slices.SortFunc(res.Rejected, func(a, b Rejection) int { return a.Input - b.Input })
	if d.opt.NoiseMultiplier > 0 {
		res.NoiseStdDev = d.opt.NoiseMultiplier * d.opt.Clip / float64(len(d.good))
	}
	for i, s := range d.good {
		c := Contribution{Input: s.req, Path: s.in.Path, ContributorID: s.in.ContributorID, Digest: s.digest,
			Weight: s.weight, Share: plan.Shares[i], ClipScale: s.scale}
		if d.needNorm() {
			c.Norm = math.Sqrt(s.norm2)
		}
		res.Accepted = append(res.Accepted, c)
		res.Weights[c.Key()] = c.Share
	}

	out := &sink{path: d.req.Out}
	var stOut *sink
	if len(d.slots) > 0 {
		stOut = &sink{path: d.req.StateOut}
	}
	stateExisted := false
	if stOut != nil && stOut.path != "" {
		if _, err := os.Lstat(stOut.path); err == nil {
			stateExisted = true
		}
	}
	stateWritten := false
	err = out.run(func(w io.Writer) error {
		if stOut == nil {
			return d.reduce(ctx, plan, used, res.NoiseStdDev, w, nil)
		}
		err := stOut.run(func(sw io.Writer) error {
			return d.reduce(ctx, plan, used, res.NoiseStdDev, w, sw)
		})
		stateWritten = err == nil
		return err
	})
	if err != nil {
		if stateWritten && !stateExisted && stOut.path != "" {
			os.Remove(stOut.path)
		}
		return nil, err
	}
	res.Digest = out.digest
	if d.req.Out == "" {
		if res.Tensors, err = out.tensors(); err != nil {
			return nil, err
		}
	}
	if stOut != nil {
		res.StateDigest, res.StatePath = stOut.digest, stOut.path
		if stOut.path == "" {
			if res.State, err = stOut.tensors(); err != nil {
				return nil, err
			}
		}
	}
	d.log.Info("aggregated", "strategy", st.Name(), "accepted", len(d.good), "rejected", len(d.rejected), "used", len(used), "digest", res.Digest)
	return res, nil
}

// reduce is the reduction pass: it streams the used inputs through the
// plan's combiner and writes the new global to w and the state to sw.
func (d *driver) reduce(ctx context.Context, plan *Plan, used []*source, sigma float64, w, sw io.Writer) error {
	var nkey []byte
	if sigma > 0 {
		var err error
		if nkey, err = noiseKey(d.opt.Seed); err != nil {
			return err
		}
	}
	specs := make([]safetensors.TensorInfo, len(d.ref))
	for i, t := range d.ref {
		specs[i] = safetensors.TensorInfo{Name: t.Name, DType: safetensors.F32, Shape: t.Shape}
	}
	ow, err := safetensors.NewWriter(w, specs, nil)
	if err != nil {
		return err
	}
	var stw *safetensors.Writer
	var spills []*os.File
	if sw != nil {
		var sspecs []safetensors.TensorInfo
		for _, slot := range d.slots {
			for _, t := range d.ref {
				sspecs = append(sspecs, safetensors.TensorInfo{Name: stateName(slot, t.Name), DType: safetensors.F32, Shape: t.Shape})
			}
		}
		if stw, err = safetensors.NewWriter(sw, sspecs, nil); err != nil {
			return err
		}
		// The state file lays out every tensor of slot 0, then of slot 1, …:
		// later slots are spilled to temporary files and copied at the end.
		dir := ""
		if d.req.StateOut != "" {
			dir = filepath.Dir(d.req.StateOut)
		}
		for range d.slots[1:] {
			f, err := os.CreateTemp(dir, ".fedtune-state-*")
			if err != nil {
				return err
			}
			os.Remove(f.Name())
			spills = append(spills, f)
		}
		defer func() {
			for _, f := range spills {
				f.Close()
			}
		}()
	}
	needBase := d.base != nil && (d.kind == KindDelta || d.opt8r != nil || d.anyClipped())
	xs := make([][]float32, len(used))
	// The output is written (and hashed) on its own goroutine while the
	// next chunk is computed: two sets of result buffers take turns.
	var agg, outBuf [2][]float32
	for i := range agg {
		agg[i] = make([]float32, d.chunk)
		outBuf[i] = make([]float32, d.chunk)
	}
	bw := newBGWriter(ow)
	defer bw.stop()
	turn := 0
	delta := make([]float32, d.chunk)
	state := make([][]float32, len(d.slots))
	for i := range state {
		state[i] = make([]float32, d.chunk)
	}
	var enc []byte
	var nz *noise
	var cur string
	err = d.chunks(ctx, "reduce", len(used), func(t safetensors.TensorInfo, off int64, m int) error {
		if t.Name != cur {
			cur = t.Name
			if sigma > 0 {
				nz = newNoise(nkey, t.Name)
			}
		}
		var base []float32
		if needBase {
			var err error
			if base, err = d.readBase(t.Name, off, m); err != nil {
				return err
			}
		}
		if err := d.readInputs(used, xs, t.Name, off, m, base); err != nil {
			return err
		}
		turn ^= 1
		a := agg[turn][:m]
		plan.Combiner.Combine(d.be, a, xs)
		evict(used, t.Name, off, m)
		if sigma > 0 {
			for i := range a {
				a[i] = float32(float64(a[i]) + float64(sigma*nz.next()))
			}
		}
		res := a
		switch {
		case d.opt8r != nil:
			dl := delta[:m]
			if d.kind == KindDelta {
				copy(dl, a)
			} else {
				for i := range dl {
					dl[i] = a[i] - base[i]
				}
			}
			st := make([][]float32, len(state))
			for k, slot := range d.slots {
				st[k] = state[k][:m]
				if d.state != nil {
					if err := d.state.ReadFloat32At(stateName(slot, t.Name), off, st[k], nil); err != nil {
						return fmt.Errorf("%w: %w", ErrBadState, err)
					}
				} else {
					clear(st[k])
				}
			}
			res = outBuf[turn][:m]
			d.opt8r.Step(res, base, dl, st)
			if stw != nil {
				for k := range st {
					dst := io.Writer(stw)
					if k > 0 {
						dst = spills[k-1]
					}
					if err := writeF32(dst, st[k], &enc); err != nil {
						return err
					}
				}
			}
		case d.kind == KindDelta:
			res = outBuf[turn][:m]
			for i := range res {
				res[i] = float32(float64(base[i]) + float64(a[i]))
			}
		}
		return bw.write(res)
	})
	if werr := bw.stop(); err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	for _, f := range spills {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.Copy(stw, f); err != nil {
			return err
		}
	}
	if stw != nil {
		if err := stw.Close(); err != nil {
			return err
		}
	}
	return ow.Close()
}
