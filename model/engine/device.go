package engine

import "fmt"

// Buffer is a float32 array in a Device's memory. Its contents are reached
// only through the Device that allocated it.
type Buffer interface {
	// Len is the number of float32 elements.
	Len() int
}

// IntBuffer is an int32 array in a Device's memory (token ids, targets).
type IntBuffer interface {
	// Len is the number of int32 elements.
	Len() int
}

// Gemm describes a (batched) single-precision matrix product on row-major
// matrices:
//
//	C_i = Alpha·op(A_i)·op(B_i) + Beta·C_i   for i = 0 … Batch−1
//
// where op(X) is X or Xᵀ, op(A_i) is M×K, op(B_i) is K×N and C_i is M×N.
// A_i starts StrideA elements after A_{i−1} (likewise B, C). LDA, LDB and
// LDC are the row strides of the stored A, B and C (the number of elements
// from one row to the next); 0 means densely packed (K or M for A, N or K
// for B, N for C, depending on TransA/TransB). Beta == 0 overwrites C
// without reading it (NaNs in C do not propagate).
type Gemm struct {
	TransA, TransB bool
	M, N, K        int
	Alpha, Beta    float32
	A, B, C        Buffer
	LDA, LDB, LDC  int
	// Batch is the number of products; 0 means 1.
	Batch                     int
	StrideA, StrideB, StrideC int
}

// AdamW holds the scalars of one AdamW update; see Device.AdamW.
type AdamW struct {
	// Clip multiplies every gradient element first (global-norm clipping).
	Clip float32
	LR   float32
	// Beta1, Beta2 are the moment decay rates; BC1 = 1−Beta1^step and
	// BC2 = 1−Beta2^step their bias corrections.
	Beta1, Beta2, BC1, BC2 float32
	Eps                    float32
	// Decay applies decoupled weight decay WeightDecay (2-D weights only).
	Decay       bool
	WeightDecay float32
}

// Device runs the primitive operations of a training step. The Host device
// (plain Go) is the reference; a CUDA device (build tag fedcuda) runs the same
// operations as GPU kernels and must agree with Host to 1e-3 relative.
//
// Errors are sticky, in the manner of bufio.Scanner: an operation that fails
// (bad lengths, a failed launch, an out-of-memory) records its error and
// every later operation does nothing until Sync reports it. Operations may
// run asynchronously; Read, SquaredNorm and Sync wait for everything before
// them. Lengths are in elements. Every buffer must have exactly the length
// its operation's shapes imply (MatMul: at least the extent its strides and
// leading dimensions reach); anything else is an error. Unless an operation
// says otherwise its outputs must not alias its inputs.
//
// Shapes use these names: rows (tokens, N = batch·T), d (hidden size), T
// (sequence length of a window; a row's position is row mod T), hd (head
// dimension), V (vocabulary).
//
// A Device is used by one goroutine at a time.
type Device interface {
	// Name identifies the device ("host", "cuda:0").
	Name() string

	// Alloc returns a zero-filled buffer of n float32s (n == 0 gives an
	// empty buffer; n < 0 is an error).
	Alloc(n int) Buffer
	// AllocInt returns a zero-filled buffer of n int32s.
	AllocInt(n int) IntBuffer
	// Free releases b; b must not be used afterwards. Freeing nil is a no-op.
	Free(b Buffer)
	// FreeInt releases b.
	FreeInt(b IntBuffer)
	// Write copies src into dst starting at element off.
	Write(dst Buffer, off int, src []float32)
	// WriteInt copies src into dst from element 0.
	WriteInt(dst IntBuffer, src []int32)
	// Read copies len(dst) elements of src starting at element off into dst.
	Read(dst []float32, src Buffer, off int)
	// Zero sets every element of b to +0.
	Zero(b Buffer)
	// Copy copies all of src into dst (same length).
	Copy(dst, src Buffer)

	// MatMul computes g (see Gemm).
	MatMul(g Gemm)

	// Embed gathers rows: out[r, :] = table[ids[r], :] for r < ids.Len();
	// table is [V, d], out is [rows, d]. An id outside [0, V) is an error.
	Embed(out, table Buffer, ids IntBuffer, d int)
	// EmbedBackward scatters back: gtable[ids[r], :] += gout[r, :], adding
	// the rows in increasing r for every column (deterministic).
	EmbedBackward(gtable, gout Buffer, ids IntBuffer, d int)

	// RMSNorm writes y[r, :] = x[r, :]·rstd[r]·w and
	// rstd[r] = 1/sqrt(mean_j x[r, j]² + eps), the mean accumulated in
	// float64. x, y are [rows, d]; w is [d]; rstd is [rows].
	RMSNorm(y, rstd, x, w Buffer, rows, d int, eps float32)
	// RMSNormBackward adds the gradient of RMSNorm to dx ([rows, d]) and,
	// unless dw is nil, to dw ([d]), given dy, x, w and the forward's rstd:
	//
	//	dx[r, j] += rstd[r]·(dy[r, j]·w[j] − x[r, j]·rstd[r]²·c[r]/d),
	//	c[r] = Σ_j dy[r, j]·w[j]·x[r, j]
	//	dw[j] += Σ_r dy[r, j]·x[r, j]·rstd[r]  (rows in increasing r)
	RMSNormBackward(dx, dw, dy, x, w, rstd Buffer, rows, d int)

	// RoPE rotates x in place, x being [rows, heads, hd] with rows = B·T,
	// in Hugging Face's rotate-half convention: for j < hd/2, with
	// t = row mod T, c = cos[t, j], s = sin[t, j] (tables [T, hd]; the
	// second half repeats the first):
	//
	//	x'[j]      = x[j]·c − x[j+hd/2]·s
	//	x'[j+hd/2] = x[j+hd/2]·c + x[j]·s
	//
	// With inverse set it applies the transposed rotation (s → −s), which
	// is RoPE's backward.
	RoPE(x, cos, sin Buffer, rows, heads, hd, T int, inverse bool)

	// SplitHeads reorders src [B, T, heads, hd] into dst
	// [B, heads·repeat, T, hd], dst head h reading src head h/repeat
	// (repeat > 1 expands grouped-query key/value heads).
	SplitHeads(dst, src Buffer, B, T, heads, hd, repeat int)
	// MergeHeads is SplitHeads' adjoint: dst [B, T, heads, hd] gets
	// dst[b, t, h, :] = Σ_{g < repeat} src[b, h·repeat+g, t, :] (summed in
	// g order), src being [B, heads·repeat, T, hd]. dst is overwritten.
	MergeHeads(dst, src Buffer, B, T, heads, hd, repeat int)

	// CausalSoftmax writes, for each of the rows rows of s ([rows, T];
	// row r is query position t = r mod T), p[r, j] = exp(s[r, j] − m) /
	// Σ_{k ≤ t} exp(s[r, k] − m) for j ≤ t, m = max_{k ≤ t} s[r, k], and
	// p[r, j] = 0 for j > t. p may alias s.
	CausalSoftmax(p, s Buffer, rows, T int)
	// CausalSoftmaxBackward writes ds[r, j] = p[r, j]·(dp[r, j] − Σ_k
	// p[r, k]·dp[r, k]) for j ≤ t and 0 for j > t. ds may alias dp.
	CausalSoftmaxBackward(ds, p, dp Buffer, rows, T int)

	// SwiGLU writes act[i] = g[i]·σ(g[i])·u[i].
	SwiGLU(act, g, u Buffer)
	// SwiGLUBackward writes dg[i] = dact[i]·u[i]·σ(g[i])·(1 + g[i]·(1 − σ(g[i])))
	// and du[i] = dact[i]·g[i]·σ(g[i]).
	SwiGLUBackward(dg, du, dact, g, u Buffer)

	// Mul writes dst[i] = a[i]·b[i]. dst may alias a or b.
	Mul(dst, a, b Buffer)
	// Axpy adds alpha·x[i] to y[i].
	Axpy(y Buffer, alpha float32, x Buffer)

	// CrossEntropy takes logits [rows, V] and targets [rows] and writes
	// loss[r] = logsumexp(logits[r, :]) − logits[r, targets[r]] and the
	// gradient dlogits[r, j] = scale·(softmax(logits[r, :])[j] − [j ==
	// targets[r]]). dlogits may alias logits. A target outside [0, V) is an
	// error.
	CrossEntropy(loss, dlogits, logits Buffer, targets IntBuffer, rows, V int, scale float32)

	// SquaredNorm returns Σ x[i]² accumulated in float64 (0 after an error).
	SquaredNorm(x Buffer) float64

	// AdamW updates w in place from gradient g and moments m, v (all the
	// same length), element by element exactly as
	//
	//	g' = g·Clip
	//	m  = Beta1·m + (1−Beta1)·g'
	//	v  = Beta2·v + (1−Beta2)·g'·g'
	//	if Decay { w −= LR·WeightDecay·w }
	//	w −= (LR/BC1)·m / (sqrt(v)/sqrt(BC2) + Eps)
	//
	// in float32 (the model package's CPU optimiser).
	AdamW(w, g, m, v Buffer, p AdamW)

	// Sync waits for every operation issued so far and returns the first
	// error since the last Sync (then clears it).
	Sync() error
	// Close releases the device and every buffer still allocated.
	Close() error
}

// BF16Device is a Device that holds frozen weights as bfloat16, half the
// memory of float32, with the same results: the values are widened to
// float32 (exactly) wherever they are read. The Host is one.
type BF16Device interface {
	Device
	// WrapBF16 returns a read-only buffer of len(w) elements holding the
	// bfloat16 values w (each the top 16 bits of a float32). The device
	// may read w in place for as long as the buffer lives (the Host does:
	// it makes no copy), so w must not change until Free. Only MatMul (as
	// B), Embed (as the table), Read and PackWeight take such a buffer;
	// any other operation on it is an error. A MatMul reading it gives the
	// bits it gives on a float32 buffer of the widened values.
	WrapBF16(w []uint16) Buffer
}

// GemmLayout is a Gemm resolved: its batch count, the stored shapes of A
// and B, the row strides with their defaults filled in, and how many
// elements each of A, B and C must hold for the whole batch (0 when the
// product touches none of it).
type GemmLayout struct {
	Batch                      int
	ARows, ACols, BRows, BCols int
	LDA, LDB, LDC              int
	NeedA, NeedB, NeedC        int
}

// Layout checks g's sizes, batch strides and row strides (not its buffers)
// and returns its layout, or an error saying what is wrong. Every Device
// rejects the same Gemms with it.
func (g Gemm) Layout() (GemmLayout, error) {
	if g.M < 0 || g.N < 0 || g.K < 0 || g.Batch < 0 || g.StrideA < 0 || g.StrideB < 0 || g.StrideC < 0 ||
		g.LDA < 0 || g.LDB < 0 || g.LDC < 0 {
		return GemmLayout{}, fmt.Errorf("negative size, stride or row stride in %s", g.shape())
	}
	l := GemmLayout{Batch: max(g.Batch, 1), ARows: g.M, ACols: g.K, BRows: g.K, BCols: g.N, LDA: g.LDA, LDB: g.LDB, LDC: g.LDC}
	if g.TransA {
		l.ARows, l.ACols = g.K, g.M
	}
	if g.TransB {
		l.BRows, l.BCols = g.N, g.K
	}
	if l.LDA == 0 {
		l.LDA = l.ACols
	}
	if l.LDB == 0 {
		l.LDB = l.BCols
	}
	if l.LDC == 0 {
		l.LDC = g.N
	}
	switch {
	case l.LDA < l.ACols:
		return GemmLayout{}, fmt.Errorf("LDA %d < %d columns of the stored A in %s", l.LDA, l.ACols, g.shape())
	case l.LDB < l.BCols:
		return GemmLayout{}, fmt.Errorf("LDB %d < %d columns of the stored B in %s", l.LDB, l.BCols, g.shape())
	case l.LDC < g.N:
		return GemmLayout{}, fmt.Errorf("LDC %d < N %d in %s", l.LDC, g.N, g.shape())
	}
	need := func(rows, cols, ld, stride int) int {
		if rows == 0 || cols == 0 {
			return 0
		}
		return (l.Batch-1)*stride + (rows-1)*ld + cols
	}
	l.NeedA = need(l.ARows, l.ACols, l.LDA, g.StrideA)
	l.NeedB = need(l.BRows, l.BCols, l.LDB, g.StrideB)
	l.NeedC = need(g.M, g.N, l.LDC, g.StrideC)
	return l, nil
}

// shape describes g without its buffers, for messages.
func (g Gemm) shape() string {
	return fmt.Sprintf("Gemm{TransA:%t TransB:%t M:%d N:%d K:%d LDA:%d LDB:%d LDC:%d Batch:%d Strides:%d,%d,%d}",
		g.TransA, g.TransB, g.M, g.N, g.K, g.LDA, g.LDB, g.LDC, g.Batch, g.StrideA, g.StrideB, g.StrideC)
}
