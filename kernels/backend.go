package kernels

// Backend computes fedtune's numeric primitives over float32 vectors.
//
// Every method is deterministic: its result depends only on its arguments,
// never on the number of threads or on how the work is split. Reductions
// across elements (SquaredNorm, PairwiseSquaredDistances) sum fixed-size
// blocks of ReduceBlock elements sequentially and then add the block partials
// in block order, so a parallel implementation gives the same bits as a
// sequential one. Accumulation is in float64 where the result needs it.
//
// Every floating-point operation a method documents rounds on its own: a
// product that is then added is rounded to its type first (no fused
// multiply-add), as Reference does by writing float64(a*b). A backend that
// runs on hardware with FMA must keep the multiply and the add apart. Where
// a result is NaN, which NaN (its payload bits) is not specified.
//
// Slices passed together must have the lengths the method documents; a
// mismatch is a programming error and panics.
//
// A Backend is safe for concurrent use by several goroutines.
type Backend interface {
	// Name identifies the backend ("reference", "cpu", "cuda").
	Name() string

	// WeightedSum adds Σ_k w[k]·xs[k][i] to acc[i] for every i, in float64,
	// adding the terms one at a time in k order: the result is bit-identical
	// to calling acc[i] += float64(w[k]*float64(xs[k][i])) for k = 0, 1, …
	// in turn (product rounded to float64, then the sum rounded).
	// len(w) == len(xs); every xs[k] has len(acc) elements.
	WeightedSum(acc []float64, w []float64, xs [][]float32)

	// Store writes float32(acc[i]*s) to dst[i]: the product rounded to
	// float64, then to float32. len(dst) == len(acc).
	Store(dst []float32, acc []float64, s float64)

	// Scale multiplies x[i] by s in place (in float32).
	Scale(x []float32, s float32)

	// SquaredNorm returns Σ x[i]², accumulated in float64 by blocks: block b
	// covers x[b·ReduceBlock : (b+1)·ReduceBlock] (the last block may be
	// shorter); its partial is p_b = Σ float64(float64(x[i])·float64(x[i]))
	// added in index order starting from 0, and the result is
	// (((0 + p_0) + p_1) + …). An empty x gives 0.
	SquaredNorm(x []float32) float64

	// PairwiseSquaredDistances adds ‖xs[i]−xs[j]‖² (float64, by blocks) to
	// d[i*n+j] and d[j*n+i] for every pair i < j, n = len(xs). The diagonal
	// is left unchanged. Calling it chunk by chunk over the coordinates and
	// summing into the same d gives the distance over all coordinates.
	//
	// Precisely: with t = float64(xs[i][c]) − float64(xs[j][c]), each block
	// partial is Σ float64(t·t) in coordinate order, the pair's sum is the
	// block partials added in block order starting from 0 (as in
	// SquaredNorm), and that sum is added once to each of the two entries.
	// len(d) == n*n; every xs[k] has the same length.
	PairwiseSquaredDistances(d []float64, xs [][]float32)

	// Median writes the coordinate-wise median of xs to dst: the middle
	// value for odd len(xs), the mean of the two middle values (computed in
	// float64, rounded once) for even len(xs). Values are ordered by the
	// IEEE 754 totalOrder (−NaN < −Inf < … < −0 < +0 < … < +Inf < +NaN), so
	// the result is defined bit for bit even for signed zeros and NaNs.
	// len(xs) >= 1; every xs[k] has len(dst) elements.
	Median(dst []float32, xs [][]float32)

	// TrimmedMean writes to dst the coordinate-wise mean (float64, rounded
	// once) of xs after dropping the k smallest and k largest values at each
	// coordinate. 0 <= 2k < len(xs). The kept values are ordered as in
	// Median and summed in float64 in ascending order; the sum is divided by
	// len(xs)−2k and rounded to float32.
	TrimmedMean(dst []float32, xs [][]float32, k int)

	// QuantizeInt8 quantizes x symmetrically in blocks of block elements:
	// scales[b] = max|x| over block b / 127 (float32 division; 0 for an
	// all-zero block) and q[i] = round-half-away-from-zero(x[i]/scales[b])
	// (float32 division) clamped to [-127, 127]. NaNs are skipped by the
	// maximum and quantize to 0. block > 0; len(q) == len(x);
	// len(scales) == ceil(len(x)/block).
	QuantizeInt8(q []int8, scales []float32, x []float32, block int)

	// DequantizeInt8 writes float32(q[i]) * scales[i/block] to x[i] (float32
	// product). block > 0; len(x) == len(q); len(scales) == ceil(len(q)/block).
	DequantizeInt8(x []float32, q []int8, scales []float32, block int)

	// FirstNonFinite returns the index of the first NaN or ±Inf in x, or -1.
	FirstNonFinite(x []float32) int
}

// ReduceBlock is the number of elements each block of a reduction covers;
// see Backend.
const ReduceBlock = 4096

// WeightedMeaner is implemented by backends with a fused FedAvg kernel
// (CPU and Reference do). Call it through WeightedMean.
type WeightedMeaner interface {
	// WeightedMean writes float32(acc[i]*s) to dst[i], acc[i] being
	// Σ_k w[k]·xs[k][i] summed as WeightedSum does from acc[i] = +0: the
	// result is bit-identical to
	//
	//	acc := make([]float64, len(dst))
	//	be.WeightedSum(acc, w, xs)
	//	be.Store(dst, acc, s)
	//
	// without the accumulator's trip through memory. len(w) == len(xs);
	// every xs[k] has len(dst) elements.
	WeightedMean(dst []float32, w []float64, xs [][]float32, s float64)
}

// WeightedMean computes FedAvg's weighted mean into dst with be: fused if be
// is a WeightedMeaner, else as WeightedSum into a fresh float64 accumulator
// followed by Store. The bits are the same either way.
func WeightedMean(be Backend, dst []float32, w []float64, xs [][]float32, s float64) {
	if m, ok := be.(WeightedMeaner); ok {
		m.WeightedMean(dst, w, xs, s)
		return
	}
	acc := make([]float64, len(dst))
	be.WeightedSum(acc, w, xs)
	be.Store(dst, acc, s)
}
