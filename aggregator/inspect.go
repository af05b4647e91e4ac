package aggregator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/fedtune/fedtune/model/safetensors"
)

// inspectChunk bounds the elements the inspection pass hashes and checks
// at a time (a multiple of kernels.ReduceBlock).
const inspectChunk = 1 << 16

// inspection is what one pass over an input's bytes finds: its weight
// digest, the first non-finite value of its logical tensors (in name
// order), and, when asked for, the squared norm of its update.
type inspection struct {
	digest string
	bad    error // an *UpdateError naming the first non-finite value, or nil
	norm2  float64
}

// inspector runs the digest-and-validate pass over the inputs, each read
// once, chunk by chunk: every chunk is hashed and checked while it is in
// cache. It reports progress for the whole pass.
type inspector struct {
	d        *driver
	needNorm bool
	mu       sync.Mutex
	done     int64
	total    int64
}

// inspect reads u once: it hashes its canonical encoding (the weight
// digest: the canonical header of its stored tensors, then their bytes in
// name order) and, for every logical tensor, checks that each value is
// finite and adds ‖u‖² block by block, u being the input minus the base
// (full weights with a base) or the input. w selects the worker's scratch.
// The norm equals what a separate chunked pass over the reference tensors
// computes: tensors in name order, the same chunk boundaries and blocks.
func (in *inspector) inspect(ctx context.Context, w int, u *Update) (res inspection, err error) {
	// A mapped input truncated by someone else while it is read faults;
	// on this goroutine that becomes an error about the input.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			re, ok := r.(interface {
				runtime.Error
				Addr() uintptr
			})
			if !ok {
				panic(r)
			}
			err = &UpdateError{File: u.Name(), Msg: "the file changed (was it truncated?) while it was read", Err: re}
		}
	}()
	d := in.d
	h := sha256.New()
	specs := append([]safetensors.TensorInfo(nil), u.f.Tensors()...)
	sw, err := safetensors.NewWriter(h, specs, nil)
	if err != nil {
		return res, &UpdateError{File: u.Name(), Msg: "digest", Err: err}
	}
	dec := d.decs[w]
	// Each piece is hashed and then checked while it is still in this
	// core's cache; at most inspectChunk elements, a piece is also small
	// enough for the backend to check it on this goroutine. The norm does
	// not depend on the chunk size (see blockNorm).
	chunk := int64(min(d.chunk, inspectChunk))
	for _, t := range sw.Tensors() {
		lt, logical := u.Info(t.Name)
		logical = logical && lt.DType == t.DType
		sz := int64(t.DType.Size())
		n := t.NumElements()
		raw, mapped := u.f.RawView(t.Name)
		var view []float32
		if logical {
			view, _ = u.f.Float32View(t.Name)
		}
		norm := logical && in.needNorm && res.bad == nil
		var baseView []float32
		if norm && u.Kind() == KindFull && d.base != nil {
			bt, ok := d.base.Info(t.Name)
			if !ok || bt.NumElements() != n {
				norm = false // the layout check rejects this input
			} else {
				baseView, _ = d.base.Float32View(t.Name)
			}
		}
		for off := int64(0); off < n; off += chunk {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			m := int(min(chunk, n-off))
			var b []byte
			if mapped {
				b = raw[off*sz : (off+int64(m))*sz]
			} else {
				dec.raw = grow(dec.raw, m*int(sz))
				b = dec.raw
				if err := u.f.ReadRawAt(t.Name, off*sz, b); err != nil {
					return res, &UpdateError{File: u.Name(), Tensor: t.Name, Msg: "digest", Err: err}
				}
			}
			if _, err := sw.Write(b); err != nil {
				return res, &UpdateError{File: u.Name(), Msg: "digest", Err: err}
			}
			if logical && res.bad == nil {
				var x []float32
				if view != nil {
					x = view[off : off+int64(m)]
				} else {
					x = grow(d.tmps2[w], m)
					d.tmps2[w] = x
					if err := dec.Read(u, t.Name, off, x); err != nil {
						res.bad = err
						x = nil
					}
				}
				if x == nil {
					// res.bad says why
				} else if i := d.be.FirstNonFinite(x); i >= 0 {
					res.bad = &UpdateError{File: u.Name(), Tensor: t.Name, Msg: fmt.Sprintf("element %d is %v (every value must be finite)", off+int64(i), x[i])}
				} else if norm {
					var base []float32
					if baseView != nil {
						base = baseView[off : off+int64(m)]
					} else if u.Kind() == KindFull && d.base != nil {
						d.bases[w] = grow(d.bases[w], m)
						base = d.bases[w]
						if err := d.base.ReadFloat32At(t.Name, off, base, nil); err != nil {
							return res, fmt.Errorf("%w: %w", ErrBadBase, err)
						}
					}
					d.tmps[w] = grow(d.tmps[w], m)
					d.blockNorm(&res.norm2, updateOf(u.Kind(), d.tmps[w], x, base))
				}
			}
			u.consumed(t.Name, (off+int64(m))*sz, inspectEvictSpan)
			if logical {
				in.progress(int64(m))
			}
		}
	}
	if err := sw.Close(); err != nil {
		return res, &UpdateError{File: u.Name(), Msg: "digest", Err: err}
	}
	res.digest = hex.EncodeToString(h.Sum(nil))
	return res, nil
}

func (in *inspector) progress(m int64) {
	if in.d.req.Progress == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.done += m
	in.d.req.Progress(Progress{Phase: "validate", Done: in.done, Total: in.total})
}
