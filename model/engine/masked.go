package engine

import (
	"fmt"
	"math"

	"github.com/fedtune/fedtune/model"
)

// maskedOff is the score added where attention crosses documents: far
// enough below any score that its exponential is 0 in float32.
const maskedOff = -1e30

// batchMasks is the state of a masked step (StepBatch): per-token loss
// weights, document segments and rotary positions, each active only when
// the batch sets it.
type batchMasks struct {
	weighted, segmented, positioned bool

	wHost    []float32 // [N] loss weights of the last batch
	wSum     float64
	diagHost []float32 // [B, T, T]: w/Σw on each window's diagonal
	diag     Buffer
	biasHost []float32 // [B·H, T, T]: 0 within a document, maskedOff across
	bias     Buffer
	cosHost  []float32 // rotary tables [T, hd], gathered per row below
	sinHost  []float32
	rowCos   []float32 // [N, hd]
	rowSin   []float32
	pcos     Buffer
	psin     Buffer
}

// clearMasks makes the next forward and backward the plain ones.
func (t *Trainer) clearMasks() {
	t.mk.weighted, t.mk.segmented, t.mk.positioned = false, false, false
}

// setMasks validates b's weights, segments and positions and uploads them;
// it changes nothing when b is bad.
func (t *Trainer) setMasks(b model.Batch) error {
	B, T, N := t.nB, t.nT, t.nN
	rows := func(what string, n int) error {
		if n != B {
			return fmt.Errorf("engine: batch has %d %s rows, want %d", n, what, B)
		}
		return nil
	}
	if b.Loss != nil {
		if err := rows("loss", len(b.Loss)); err != nil {
			return err
		}
		var sum float64
		for r, w := range b.Loss {
			if len(w) != T {
				return fmt.Errorf("engine: loss row %d has %d weights, want seq_len = %d", r, len(w), T)
			}
			for p, v := range w {
				if !(v >= 0) || math.IsInf(float64(v), 0) {
					return fmt.Errorf("engine: loss row %d position %d: weight %g is not finite and ≥ 0", r, p, v)
				}
				sum += float64(v)
			}
		}
		if sum == 0 {
			return fmt.Errorf("engine: the batch's loss weights sum to 0: no target to train on; skipping the step")
		}
		t.mk.wSum = sum
	}
	if b.Segments != nil {
		if err := rows("segment", len(b.Segments)); err != nil {
			return err
		}
		for r, s := range b.Segments {
			if len(s) != T {
				return fmt.Errorf("engine: segment row %d has %d entries, want seq_len = %d", r, len(s), T)
			}
		}
	}
	if b.Positions != nil {
		if err := rows("position", len(b.Positions)); err != nil {
			return err
		}
		for r, ps := range b.Positions {
			if len(ps) != T {
				return fmt.Errorf("engine: position row %d has %d entries, want seq_len = %d", r, len(ps), T)
			}
			for p, v := range ps {
				if v < 0 || v >= T {
					return fmt.Errorf("engine: position row %d entry %d: position %d outside [0, %d)", r, p, v, T)
				}
			}
		}
	}
	dev := t.dev
	t.mk.weighted, t.mk.segmented, t.mk.positioned = b.Loss != nil, b.Segments != nil, b.Positions != nil
	if t.mk.weighted {
		if t.mk.diag == nil {
			t.mk.wHost, t.mk.diagHost, t.mk.diag = make([]float32, N), make([]float32, B*T*T), t.alloc(B*T*T)
		}
		inv := 1 / t.mk.wSum
		for r, w := range b.Loss {
			for p, v := range w {
				t.mk.wHost[r*T+p] = v
				t.mk.diagHost[(r*T+p)*T+p] = float32(float64(v) * inv)
			}
		}
		dev.Write(t.mk.diag, 0, t.mk.diagHost)
	}
	if t.mk.segmented {
		H := t.nH
		if t.mk.bias == nil {
			t.mk.biasHost, t.mk.bias = make([]float32, B*H*T*T), t.alloc(B*H*T*T)
		}
		for r, s := range b.Segments {
			blk := t.mk.biasHost[r*H*T*T : (r+1)*H*T*T]
			first := blk[:T*T]
			for q := range T {
				for k := range T {
					v := float32(0)
					if s[k] != s[q] {
						v = maskedOff
					}
					first[q*T+k] = v
				}
			}
			for h := 1; h < H; h++ {
				copy(blk[h*T*T:(h+1)*T*T], first)
			}
		}
		dev.Write(t.mk.bias, 0, t.mk.biasHost)
	}
	if t.mk.positioned {
		hd := t.hd
		if t.mk.pcos == nil {
			t.mk.cosHost, t.mk.sinHost = ropeTables(&t.c, T)
			t.mk.rowCos, t.mk.rowSin = make([]float32, N*hd), make([]float32, N*hd)
			t.mk.pcos, t.mk.psin = t.alloc(N*hd), t.alloc(N*hd)
		}
		for r, ps := range b.Positions {
			for p, v := range ps {
				row := r*T + p
				copy(t.mk.rowCos[row*hd:(row+1)*hd], t.mk.cosHost[v*hd:(v+1)*hd])
				copy(t.mk.rowSin[row*hd:(row+1)*hd], t.mk.sinHost[v*hd:(v+1)*hd])
			}
		}
		dev.Write(t.mk.pcos, 0, t.mk.rowCos)
		dev.Write(t.mk.psin, 0, t.mk.rowSin)
	}
	return nil
}

// rope rotates x ([N, heads, hd]) at the step's positions: each row's
// position in its window, or the batch's Positions.
func (t *Trainer) rope(x Buffer, heads int, inverse bool) {
	if t.mk.positioned {
		// Tables gathered per row: row r reads row r mod N = r.
		t.dev.RoPE(x, t.mk.pcos, t.mk.psin, t.nN, heads, t.hd, t.nN, inverse)
		return
	}
	t.dev.RoPE(x, t.cos, t.sin, t.nN, heads, t.hd, t.nT, inverse)
}

// maskScores adds the cross-document mask to attention scores
// [B·H, T, T] before the causal softmax.
func (t *Trainer) maskScores(s Buffer) {
	if t.mk.segmented {
		t.dev.Axpy(s, 1, t.mk.bias)
	}
}

// lossOf turns the per-row losses of the last forward into the step's
// loss: their mean, or their weighted mean Σ w·ℓ / Σ w.
func (t *Trainer) lossOf() float64 {
	var sum float64
	if t.mk.weighted {
		for r, l := range t.lossHost {
			if w := t.mk.wHost[r]; w != 0 {
				sum += float64(float64(w) * float64(l))
			}
		}
		return sum / t.mk.wSum
	}
	for _, l := range t.lossHost {
		sum += float64(l)
	}
	return sum / float64(t.nN)
}

// headBackward starts backward from dlogits (in t.logits): dhf =
// dlogits·head and, in full fine-tuning, the head's gradient. With loss
// weights each row r of dlogits counts w_r/Σw (dlogits itself is
// unscaled): the rows of dhf are scaled after the product, and the
// head's gradient reads the final norm's output scaled the same way.
func (t *Trainer) headBackward(full bool) {
	dev := t.dev
	N, d, T := t.nN, t.d, t.nT
	hg := t.grads[model.LMHeadName]
	if t.c.TieWordEmbeddings {
		hg = t.grads[model.EmbedName]
	}
	if !t.mk.weighted {
		dev.MatMul(Gemm{M: N, N: d, K: t.nV, Alpha: 1, A: t.logits, B: t.head(), C: t.dhf})
		if full {
			dev.MatMul(Gemm{TransA: true, M: t.nV, N: d, K: N, Alpha: 1, Beta: 1, A: t.logits, B: t.hf, C: hg})
		}
		return
	}
	// diag(w/Σw) per window, as B products of [T, T]·[T, d].
	rowScale := func(dst, src Buffer) {
		dev.MatMul(Gemm{M: T, N: d, K: T, Alpha: 1, A: t.mk.diag, B: src, C: dst,
			Batch: t.nB, StrideA: T * T, StrideB: T * d, StrideC: T * d})
	}
	dev.MatMul(Gemm{M: N, N: d, K: t.nV, Alpha: 1, A: t.logits, B: t.head(), C: t.dh})
	rowScale(t.dhf, t.dh)
	if full {
		rowScale(t.dx, t.hf) // t.dx is zeroed before its first use below
		dev.MatMul(Gemm{TransA: true, M: t.nV, N: d, K: N, Alpha: 1, Beta: 1, A: t.logits, B: t.dx, C: hg})
	}
}
