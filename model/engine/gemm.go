package engine

import (
	"math"
	"sync"

	"gonum.org/v1/gonum/blas"
)

// sgemmVec is the Host's own single-precision GEMM for CPUs with AVX2 and
// FMA, used instead of gonum's pure-Go sgemm (several times slower: it has
// no packing and no register blocking) when no other BLAS is installed. It
// has blas.Float32.Sgemm's signature and semantics (row-major; beta == 0
// overwrites C without reading it) and runs on the calling goroutine only.
//
// It is the usual blocked algorithm: op(B) is packed in blocks of
// gemmKC×gemmNC into panels of 16 columns, and an assembly micro-kernel
// (6×16 on AVX2, 12×16 on AVX-512) accumulates each tile from a panel of
// op(B) and its rows of op(A), read in place (blocks of gemmMC×gemmKC).
// The rows of a block short of a whole tile run on kernels of 8 and 4
// rows, and the last 1 to 3 as a tile packed with zero rows, or on the
// row kernels (planTiles). Every element of C is computed the same way
// wherever it lies and whichever kernel runs it (one chain of fused
// multiply-adds per block of k; edge tiles run the same kernel on a
// copy), so splitting C into blocks of rows or columns, or batching more
// or fewer rows together, does not change any result.
func sgemmVec(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	sgemmBlocked(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, nil, bf16B{})
}

// bf16B is a B operand held as bfloat16 (WrapBF16): its values, each the
// top 16 bits of a float32, and whether the rows of a product short of a
// whole register tile run on the row kernels (as for a packed weight)
// instead of a zero-padded panel of A.
type bf16B struct {
	b       []uint16
	rowKern bool
}

// sgemmBF16 is sgemmVec with op(B) read from bfloat16 values: every block
// of op(B) is widened (exactly) to float32 as it is packed, so the
// micro-kernels see the float32 values sgemmVec would and the results are
// the same bits, without a float32 copy of B. With b.rowKern the short rows
// run as sgemmPacked runs them (the same bits as a packed float32 B).
func sgemmBF16(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b bf16B, ldb int, beta float32, c []float32, ldc int) {
	sgemmBlocked(tA, tB, m, n, k, alpha, a, lda, nil, ldb, beta, c, ldc, nil, b)
}

// sgemmPacked is sgemmVec with op(B) = Wᵀ, W [n, k] given as packWeight
// packed it: the same products on the same panels, so the same results,
// without packing B on every call.
func sgemmPacked(tA blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, packed []float32, beta float32, c []float32, ldc int) {
	sgemmBlocked(tA, blas.Trans, m, n, k, alpha, a, lda, nil, k, beta, c, ldc, packed, bf16B{})
}

// packWeight returns W [n, k] (row-major) in sgemmVec's panel layout for
// op(B) = Wᵀ: panel q (columns 16q … 16q+15 of op(B), zero beyond n)
// holds, for each p < k, the 16 values op(B)[p][16q+j], so the panel of
// a block of k starting at pc is at (16q)·k + 16·pc.
func packWeight(w []float32, n, k int) []float32 {
	panels := (n + gemmNR - 1) / gemmNR
	out := make([]float32, panels*gemmNR*k)
	for q := 0; q < panels; q++ {
		nr := min(gemmNR, n-q*gemmNR)
		d := out[q*gemmNR*k : (q+1)*gemmNR*k]
		for j := 0; j < nr; j++ {
			for p, v := range w[(q*gemmNR+j)*k : (q*gemmNR+j+1)*k] {
				d[p*gemmNR+j] = v
			}
		}
	}
	return out
}

// sgemmBlocked is sgemmVec, reading op(B) from packed (packWeight's
// layout) instead of packing b when packed is not nil, or packing (and
// widening) bh.b instead of b when that is not nil.
func sgemmBlocked(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int, packed []float32, bh bf16B) {
	if m == 0 || n == 0 {
		return
	}
	// Index checks: the micro-kernels read and write through pointers, so
	// the slices must hold every element the product touches.
	_ = c[(m-1)*ldc+n-1]
	if k > 0 {
		_ = a[opExtent(tA, m, k, lda)-1]
		switch {
		case bh.b != nil:
			_ = bh.b[opExtent(tB, k, n, ldb)-1]
		case packed == nil:
			_ = b[opExtent(tB, k, n, ldb)-1]
		default:
			_ = packed[(n+gemmNR-1)/gemmNR*gemmNR*k-1]
		}
	}
	// With beta == 0 the first block of k overwrites C; otherwise C is
	// scaled by beta first and every block adds to it.
	set := beta == 0 && k > 0 && alpha != 0
	if !set && beta != 1 {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			if beta == 0 {
				clear(row)
				continue
			}
			for j := range row {
				row[j] *= beta
			}
		}
	}
	if k == 0 || alpha == 0 {
		return
	}
	bufs := gemmPool.Get().(*gemmBufs)
	defer gemmPool.Put(bufs)
	transA, transB := tA != blas.NoTrans, tB != blas.NoTrans
	// Rows short of a 4-row tile may go to the row kernels for a packed B,
	// and for a bfloat16 B that stands for one (planTiles).
	rowKern := packed != nil || bh.rowKern
	if packed != nil && m <= gemmMC {
		sgemmPackedFew(transA, m, n, k, alpha, a, lda, packed, set, c, ldc, bufs)
		return
	}
	for jc := 0; jc < n; jc += gemmNC {
		nc := min(gemmNC, n-jc)
		for pc := 0; pc < k; pc += gemmKC {
			kc := min(gemmKC, k-pc)
			add := !set || pc > 0
			switch {
			case bh.b != nil:
				packBBF16(bufs.b[:], transB, bh.b, ldb, pc, jc, kc, nc)
			case packed == nil:
				packB(bufs.b[:], transB, b, ldb, pc, jc, kc, nc)
			}
			for ic := 0; ic < m; ic += gemmMC {
				mc := min(gemmMC, m-ic)
				tiles, full := planTiles(&bufs.plan, mc, rowKern)
				if t := tiles[max(len(tiles)-1, 0):]; len(t) > 0 && t[0].pad {
					// The last few rows as one zero-padded panel.
					packA(bufs.a[:], transA, a, lda, ic+t[0].ir, pc, t[0].mr, kc, t[0].h)
				}
				for jr := 0; jr < nc; jr += gemmNR {
					nr := min(gemmNR, nc-jr)
					bp := &bufs.b[jr*kc]
					if packed != nil {
						bp = &packed[(jc+jr)*k+pc*gemmNR]
					}
					for _, tl := range tiles {
						ir, mr, kern := tl.ir, tl.mr, tl.fn
						var ap *float32
						var ri, rp int
						switch {
						case tl.pad:
							ap, ri, rp = &bufs.a[0], 4, 4*tl.h
						case transA:
							ap, ri, rp = &a[pc*lda+ic+ir], 4, 4*lda
						default:
							ap, ri, rp = &a[(ic+ir)*lda+pc], 4*lda, 4
						}
						ci := (ic+ir)*ldc + jc + jr
						if mr == tl.h && nr == gemmNR {
							kern(kc, ap, ri, rp, bp, &c[ci], ldc, alpha, add)
							continue
						}
						// Edge tile: the same kernel on a copy of its part of C.
						t := &bufs.tile
						if add {
							for i := 0; i < mr; i++ {
								o := ci + i*ldc
								for j, v := range c[o : o+nr] {
									t[i*gemmNR+j] = v
								}
							}
						}
						kern(kc, ap, ri, rp, bp, &t[0], gemmNR, alpha, add)
						for i := 0; i < mr; i++ {
							o := ci + i*ldc
							dst := c[o : o+nr]
							for j := range dst {
								dst[j] = t[i*gemmNR+j]
							}
						}
					}
				}
				if rowKern {
					// Panels of this block of op(B): packed's, or those
					// just packed into bufs.b.
					panels, ps := bufs.b[:], gemmNR*kc
					if packed != nil {
						panels, ps = packed[jc*k+pc*gemmNR:], gemmNR*k
					}
					for i := ic + full; i < ic+mc; i++ {
						sgemmRowPanels(transA, i, jc, pc, nc, kc, alpha, a, lda, panels, ps, c, ldc, add, &bufs.tile)
					}
				}
			}
		}
	}
}

// sgemmPackedFew is sgemmBlocked for a packed B and at most gemmMC rows
// (one block of op(A): a decoding step's), in another loop order: groups
// of four panels of B, and within a group every block of k in turn, so
// that B streams from memory once, front to back, four panels at a time,
// rather than one block of k across every panel and then the next. Each
// element of C still takes its blocks of k in order, each on the same
// kernel chain, so the results are sgemmBlocked's bit for bit.
func sgemmPackedFew(transA bool, m, n, k int, alpha float32, a []float32, lda int, packed []float32, set bool, c []float32, ldc int, bufs *gemmBufs) {
	tiles, full := planTiles(&bufs.plan, m, true)
	var pad *gemmTile
	if len(tiles) > 0 && tiles[len(tiles)-1].pad {
		// The last few rows as zero-padded panels, one per block of k.
		pad = &tiles[len(tiles)-1]
		if need := pad.h * k; cap(bufs.pad) < need {
			bufs.pad = make([]float32, need)
		}
		for pc := 0; pc < k; pc += gemmKC {
			packA(bufs.pad[pc*pad.h:], transA, a, lda, pad.ir, pc, pad.mr, min(gemmKC, k-pc), pad.h)
		}
	}
	const group = 4 * gemmNR
	for jg := 0; jg < n; jg += group {
		ng := min(group, n-jg)
		for pc := 0; pc < k; pc += gemmKC {
			kc := min(gemmKC, k-pc)
			add := !set || pc > 0
			for jr := jg; jr < jg+ng; jr += gemmNR {
				nr := min(gemmNR, n-jr)
				bp := &packed[jr*k+pc*gemmNR]
				for _, tl := range tiles {
					ir, mr, kern := tl.ir, tl.mr, tl.fn
					var ap *float32
					var ri, rp int
					switch {
					case tl.pad:
						ap, ri, rp = &bufs.pad[pc*tl.h], 4, 4*tl.h
					case transA:
						ap, ri, rp = &a[pc*lda+ir], 4, 4*lda
					default:
						ap, ri, rp = &a[ir*lda+pc], 4*lda, 4
					}
					ci := ir*ldc + jr
					if mr == tl.h && nr == gemmNR {
						kern(kc, ap, ri, rp, bp, &c[ci], ldc, alpha, add)
						continue
					}
					t := &bufs.tile
					if add {
						for i := 0; i < mr; i++ {
							o := ci + i*ldc
							for j, v := range c[o : o+nr] {
								t[i*gemmNR+j] = v
							}
						}
					}
					kern(kc, ap, ri, rp, bp, &t[0], gemmNR, alpha, add)
					for i := 0; i < mr; i++ {
						o := ci + i*ldc
						dst := c[o : o+nr]
						for j := range dst {
							dst[j] = t[i*gemmNR+j]
						}
					}
				}
			}
			for i := full; i < m; i++ {
				sgemmRowPanels(transA, i, jg, pc, ng, kc, alpha, a, lda, packed[jg*k+pc*gemmNR:], gemmNR*k, c, ldc, add, &bufs.tile)
			}
		}
	}
}

// gemmTile is one register tile of a block of rows of op(A): rows ir …
// ir+mr−1 of the block on a kernel of h ≥ mr rows, read in place (mr ==
// h) or from a zero-padded panel (pad).
type gemmTile struct {
	ir, mr, h int
	fn        gemmKernelFn
	pad       bool
}

// planTiles covers the mc rows of a block of op(A) with register tiles:
// whole tiles of the active kernel, then one 8-row and one 4-row tile
// where the instruction set has those kernels, then the last 1 to 3 rows
// as one zero-padded tile of 4 rows (or of the kernel's height) — except
// with rowKern (a packed B) when they are 1 or 2, or the instruction set
// has no 4-row kernel: those go to the row kernels (sgemmRowPanels), as
// one decoding sequence does (BenchmarkSgemmDecodeRows: one or two rows
// run faster there than in a padded tile, three slower). It returns the
// tiles and how many rows they cover; every kernel computes an element by
// the same chain of operations, so the choice changes no result.
func planTiles(plan *[gemmMC/4 + 3]gemmTile, mc int, rowKern bool) ([]gemmTile, int) {
	k := gemmKernel
	ts := plan[:0]
	ir := 0
	for ; mc-ir >= k.mr; ir += k.mr {
		ts = append(ts, gemmTile{ir: ir, mr: k.mr, h: k.mr, fn: k.fn})
	}
	for _, s := range [...]struct {
		h  int
		fn gemmKernelFn
	}{{8, k.fn8}, {4, k.fn4}} {
		if s.fn != nil && s.h < k.mr && mc-ir >= s.h {
			ts = append(ts, gemmTile{ir: ir, mr: s.h, h: s.h, fn: s.fn})
			ir += s.h
		}
	}
	rest := mc - ir
	switch {
	case rest == 0:
	case rowKern && (rest <= 2 || k.fn4 == nil):
		return ts, ir
	case k.fn4 != nil && k.mr > 4:
		ts = append(ts, gemmTile{ir: ir, mr: rest, h: 4, fn: k.fn4, pad: true})
	default:
		ts = append(ts, gemmTile{ir: ir, mr: rest, h: k.mr, fn: k.fn, pad: true})
	}
	return ts, mc
}

// sgemmRowPanels computes row i of C over columns jc … jc+nc−1 for the
// block of k at pc from packed op(B) (panel q of the block at
// panels[q·ps:], 16 values per p), one row of op(A) at a time on the row
// kernels: each element is the micro-kernels' chain of fused multiply-adds
// (so the same result) without the zero rows a partial panel of A would
// run.
func sgemmRowPanels(transA bool, i, jc, pc, nc, kc int, alpha float32, a []float32, lda int, panels []float32, ps int, c []float32, ldc int, add bool, tile *[gemmMR * gemmNR]float32) {
	ap, rp := &a[i*lda+pc], 4
	if transA {
		ap, rp = &a[pc*lda+i], 4*lda
	}
	jr := 0
	row16, row64 := sgemmRow16Go, sgemmRow64Go
	if haveAVX2 {
		row16, row64 = sgemmRow16, sgemmRow64
	}
	for ; jr+4*gemmNR <= nc; jr += 4 * gemmNR {
		row64(kc, ap, rp, &panels[jr/gemmNR*ps], 4*ps, &c[i*ldc+jc+jr], alpha, add)
	}
	for ; jr < nc; jr += gemmNR {
		nr := min(gemmNR, nc-jr)
		bp := &panels[jr/gemmNR*ps]
		ci := i*ldc + jc + jr
		if nr == gemmNR {
			row16(kc, ap, rp, bp, &c[ci], alpha, add)
			continue
		}
		t := tile[:gemmNR]
		if add {
			copy(t, c[ci:ci+nr])
		}
		row16(kc, ap, rp, bp, &t[0], alpha, add)
		copy(c[ci:ci+nr], t)
	}
}

// Block sizes of sgemmVec: the micro-kernel's tile (gemmMR×gemmNR) and the
// blocks of A (gemmMC×gemmKC, 96 KiB, for L2) and of packed B
// (gemmKC×gemmNC, up to 1 MiB; one 16-column panel, 16 KiB, stays in L1).
const (
	gemmMR = 12 // the tallest tile (AVX-512's)
	gemmNR = 16
	gemmKC = 256
	gemmMC = 96
	gemmNC = 1024
)

// gemmBufs is the packing space of one sgemmVec call.
type gemmBufs struct {
	plan [gemmMC/4 + 3]gemmTile
	pad  []float32 // sgemmPackedFew's zero-padded rows
	a    [gemmMR * gemmKC]float32
	b    [gemmKC * gemmNC]float32
	tile [gemmMR * gemmNR]float32
}

var gemmPool = sync.Pool{New: func() any { return new(gemmBufs) }}

// packB packs op(B)[pc:pc+kc, jc:jc+nc] into panels of gemmNR columns:
// panel q holds, for each p < kc, the gemmNR values op(B)[pc+p][jc+q·gemmNR+j]
// (zero beyond nc). op(B)[p][j] is b[p·ldb+j], or b[j·ldb+p] when trans.
func packB(dst []float32, trans bool, b []float32, ldb, pc, jc, kc, nc int) {
	for jr := 0; jr < nc; jr += gemmNR {
		nr := min(gemmNR, nc-jr)
		d := dst[jr*kc : jr*kc+kc*gemmNR]
		if !trans {
			for p := 0; p < kc; p++ {
				src := b[(pc+p)*ldb+jc+jr:]
				if nr == gemmNR {
					v := *(*[gemmNR]float32)(src) // via a temporary: a direct copy calls memmove
					*(*[gemmNR]float32)(d[p*gemmNR:]) = v
					continue
				}
				row := d[p*gemmNR : p*gemmNR+gemmNR]
				for j := range row {
					row[j] = 0
					if j < nr {
						row[j] = src[j]
					}
				}
			}
			continue
		}
		if nr == gemmNR {
			packB16(d, b[(jc+jr)*ldb+pc:], ldb, kc)
			continue
		}
		for j := 0; j < nr; j++ {
			src := b[(jc+jr+j)*ldb+pc:][:kc]
			for p, v := range src {
				d[p*gemmNR+j] = v
			}
		}
		if nr < gemmNR {
			for p := 0; p < kc; p++ {
				clear(d[p*gemmNR+nr : p*gemmNR+gemmNR])
			}
		}
	}
}

// packBBF16 is packB for a bfloat16 b, widening every value exactly.
func packBBF16(dst []float32, trans bool, b []uint16, ldb, pc, jc, kc, nc int) {
	for jr := 0; jr < nc; jr += gemmNR {
		nr := min(gemmNR, nc-jr)
		d := dst[jr*kc : jr*kc+kc*gemmNR]
		if !trans {
			for p := 0; p < kc; p++ {
				src := b[(pc+p)*ldb+jc+jr:]
				row := d[p*gemmNR : p*gemmNR+gemmNR]
				if nr == gemmNR {
					widen16(row, src[:gemmNR])
					continue
				}
				for j := range row {
					row[j] = 0
					if j < nr {
						row[j] = bf16f(src[j])
					}
				}
			}
			continue
		}
		if nr == gemmNR {
			packB16BF16(d, b[(jc+jr)*ldb+pc:], ldb, kc)
			continue
		}
		for j := 0; j < nr; j++ {
			src := b[(jc+jr+j)*ldb+pc:][:kc]
			for p, v := range src {
				d[p*gemmNR+j] = bf16f(v)
			}
		}
		for p := 0; p < kc; p++ {
			clear(d[p*gemmNR+nr : p*gemmNR+gemmNR])
		}
	}
}

// bf16f widens the bfloat16 value v to float32 (exact).
func bf16f(v uint16) float32 { return math.Float32frombits(uint32(v) << 16) }

// widen16 widens 16 bfloat16 values into d.
func widen16(d []float32, s []uint16) {
	d, s = d[:gemmNR], s[:gemmNR]
	for j, v := range s {
		d[j] = bf16f(v)
	}
}

// packB16BF16 is packB16 for a bfloat16 b: d[p·16+j] = b[j·ldb+p] widened.
func packB16BF16(d []float32, b []uint16, ldb, kc int) {
	var rows [gemmNR][]uint16
	for j := range rows {
		rows[j] = b[j*ldb:][:kc]
	}
	d = d[:gemmNR*kc]
	for j0 := 0; j0 < gemmNR; j0 += 4 {
		s0, s1, s2, s3 := rows[j0], rows[j0+1], rows[j0+2], rows[j0+3]
		for p := range s0 {
			o := d[p*gemmNR+j0 : p*gemmNR+j0+4 : p*gemmNR+j0+4]
			o[0], o[1], o[2], o[3] = bf16f(s0[p]), bf16f(s1[p]), bf16f(s2[p]), bf16f(s3[p])
		}
	}
}

// widenBF16 returns src widened to float32.
func widenBF16(src []uint16) []float32 {
	out := make([]float32, len(src))
	for i, v := range src {
		out[i] = bf16f(v)
	}
	return out
}

// packA packs the mr < h rows op(A)[i0:i0+mr, pc:pc+kc] as one panel of
// height h: d[p·h+i] = op(A)[i0+i][pc+p], zero for i ≥ mr. op(A)[i][p] is
// a[i·lda+p], or a[p·lda+i] when trans.
func packA(d []float32, trans bool, a []float32, lda, i0, pc, mr, kc, h int) {
	d = d[:kc*h]
	clear(d)
	if trans {
		for p := 0; p < kc; p++ {
			copy(d[p*h:p*h+mr], a[(pc+p)*lda+i0:][:mr])
		}
		return
	}
	for i := 0; i < mr; i++ {
		for p, v := range a[(i0+i)*lda+pc:][:kc] {
			d[p*h+i] = v
		}
	}
}

// gemmKernelFn is a micro-kernel: sgemmKernel6x16's contract for its
// height of rows.
type gemmKernelFn func(k int, a *float32, ri, rp int, b, c *float32, ldc int, alpha float32, add bool)

// gemmMicro is an instruction set's micro-kernel and its tile height, and
// its kernels of 8 and 4 rows (nil where it has none) for the rows of a
// block short of a whole tile.
type gemmMicro struct {
	fn       gemmKernelFn
	mr       int
	fn8, fn4 gemmKernelFn
}

// packB16 packs 16 rows of b (row stride ldb, kc values each) into d:
// d[p·16+j] = b[j·ldb+p].
func packB16(d, b []float32, ldb, kc int) {
	var rows [gemmNR][]float32
	for j := range rows {
		rows[j] = b[j*ldb:][:kc]
	}
	d = d[:gemmNR*kc]
	for j0 := 0; j0 < gemmNR; j0 += 4 {
		s0, s1, s2, s3 := rows[j0], rows[j0+1], rows[j0+2], rows[j0+3]
		for p := range s0 {
			o := d[p*gemmNR+j0 : p*gemmNR+j0+4 : p*gemmNR+j0+4]
			o[0], o[1], o[2], o[3] = s0[p], s1[p], s2[p], s3[p]
		}
	}
}

// opExtent is how many elements of a row-major matrix with leading
// dimension ld hold op(X), an r×c matrix (X itself, or X transposed).
func opExtent(t blas.Transpose, r, c, ld int) int {
	if t == blas.NoTrans {
		return (r-1)*ld + c
	}
	return (c-1)*ld + r
}
