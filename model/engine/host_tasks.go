package engine

import "math"

// The loop bodies of the Host's parallel operations (see kernels.Task): each
// holds its operation's arguments, set by the operation before the loop
// and cleared after it.

// hostTasks holds one task of each kind per Host.
type hostTasks struct {
	rmsNorm      rmsNormTask
	rmsNormBack  rmsNormBackTask
	rmsNormDW    rmsNormDWTask
	rope         ropeTask
	splitHeads   splitHeadsTask
	mergeHeads   mergeHeadsTask
	softmax      softmaxTask
	softmaxBack  softmaxBackTask
	swiglu       swigluTask
	swigluBack   swigluBackTask
	mul          mulTask
	axpy         axpyTask
	crossEntropy crossEntropyTask
	adamW        adamWTask
	batchGemm    batchGemmTask
	splitGemm    splitGemmTask
	attention    attentionTask
}

// rmsNormTask is RMSNorm over rows [lo, hi).
type rmsNormTask struct {
	xb  []float32
	yb  []float32
	wb  []float32
	rb  []float32
	d   int
	eps float32
}

func (t *rmsNormTask) Run(_, lo, hi int) {
	xb, yb, wb, rb, d, eps := t.xb, t.yb, t.wb, t.rb, t.d, t.eps
	for r := lo; r < hi; r++ {
		xr, yr := xb[r*d:(r+1)*d], yb[r*d:(r+1)*d]
		k, ss := dotF64Vec(xr, xr)
		for _, v := range xr[k:] {
			ss += float64(float64(v) * float64(v))
		}
		s := float32(1 / math.Sqrt(ss/float64(d)+float64(eps)))
		rb[r] = s
		for j := mulScaleVec(yr, xr, wb, s); j < d; j++ {
			yr[j] = xr[j] * s * wb[j]
		}
	}
}

// rmsNormBackTask is RMSNormBackward's dx over rows [lo, hi).
type rmsNormBackTask struct {
	xb  []float32
	dyb []float32
	dxb []float32
	wb  []float32
	rb  []float32
	d   int
}

func (t *rmsNormBackTask) Run(_, lo, hi int) {
	xb, dyb, dxb, wb, rb, d := t.xb, t.dyb, t.dxb, t.wb, t.rb, t.d
	for r := lo; r < hi; r++ {
		xr, dyr, dxr := xb[r*d:(r+1)*d], dyb[r*d:(r+1)*d], dxb[r*d:(r+1)*d]
		n, c := dot3F64Vec(dyr, wb, xr)
		for j := n; j < d; j++ {
			c = math.FMA(float64(dyr[j])*float64(wb[j]), float64(xr[j]), c) // as dot3F64Vec
		}
		s := float64(rb[r])
		k := s * s * c / float64(d)
		for j := rmsBackRowVec(dxr, dyr, wb, xr, s, k); j < d; j++ {
			dxr[j] += float32(s * (float64(dyr[j])*float64(wb[j]) - float64(xr[j])*k))
		}
	}
}

// rmsNormDWTask is RMSNormBackward's dw over columns [lo, hi) (rows in increasing order).
type rmsNormDWTask struct {
	dwb  []float32
	dyb  []float32
	xb   []float32
	rb   []float32
	d    int
	rows int
}

func (t *rmsNormDWTask) Run(_, lo, hi int) {
	dwb, dyb, xb, rb, d, rows := t.dwb, t.dyb, t.xb, t.rb, t.d, t.rows
	for j := lo; j < hi; j++ {
		acc := dwb[j]
		for r := 0; r < rows; r++ {
			acc += dyb[r*d+j] * xb[r*d+j] * rb[r]
		}
		dwb[j] = acc
	}
}

// ropeTask is RoPE over rows [lo, hi).
type ropeTask struct {
	xb      []float32
	cb      []float32
	sb      []float32
	heads   int
	hd      int
	half    int
	T       int
	inverse bool
}

func (t *ropeTask) Run(_, lo, hi int) {
	xb, cb, sb, heads, hd, half, T, inverse := t.xb, t.cb, t.sb, t.heads, t.hd, t.half, t.T, t.inverse
	for r := lo; r < hi; r++ {
		t := r % T
		cs, sn := cb[t*hd:t*hd+half], sb[t*hd:t*hd+half]
		for hh := 0; hh < heads; hh++ {
			v := xb[(r*heads+hh)*hd : (r*heads+hh+1)*hd]
			for j := 0; j < half; j++ {
				c, s := cs[j], sn[j]
				if inverse {
					s = -s
				}
				a, b := v[j], v[j+half]
				v[j] = float32(a*c) - float32(b*s)
				v[j+half] = float32(b*c) + float32(a*s)
			}
		}
	}
}

// headsArgs are the arguments of SplitHeads and MergeHeads.
type headsArgs struct {
	d      []float32
	s      []float32
	T      int
	heads  int
	hd     int
	repeat int
	HH     int
}

// splitHeadsTask is SplitHeads over output heads (b, h) [lo, hi).
type splitHeadsTask struct{ headsArgs }

func (t *splitHeadsTask) Run(_, lo, hi int) {
	d, s, T, heads, hd, repeat, HH := t.d, t.s, t.T, t.heads, t.hd, t.repeat, t.HH
	for bh := lo; bh < hi; bh++ {
		b, hh := bh/HH, bh%HH
		for t := 0; t < T; t++ {
			copy(d[(bh*T+t)*hd:(bh*T+t+1)*hd], s[((b*T+t)*heads+hh/repeat)*hd:])
		}
	}
}

// mergeHeadsTask is MergeHeads over rows (b, t) [lo, hi).
type mergeHeadsTask struct{ headsArgs }

func (t *mergeHeadsTask) Run(_, lo, hi int) {
	d, s, T, heads, hd, repeat, HH := t.d, t.s, t.T, t.heads, t.hd, t.repeat, t.HH
	for bt := lo; bt < hi; bt++ {
		b, t := bt/T, bt%T
		for hh := 0; hh < heads; hh++ {
			out := d[(bt*heads+hh)*hd : (bt*heads+hh+1)*hd]
			copy(out, s[((b*HH+hh*repeat)*T+t)*hd:])
			for g := 1; g < repeat; g++ {
				in := s[((b*HH+hh*repeat+g)*T+t)*hd:]
				for j := range out {
					out[j] += in[j]
				}
			}
		}
	}
}

// softmaxTask is CausalSoftmax over rows [lo, hi).
type softmaxTask struct {
	pb []float32
	sb []float32
	T  int
}

func (t *softmaxTask) Run(_, lo, hi int) {
	pb, sb, T := t.pb, t.sb, t.T
	for r := lo; r < hi; r++ {
		t := r % T
		sr, pr := sb[r*T:r*T+t+1], pb[r*T:r*T+t+1]
		m := rowMax(sr)
		k, z := expSum(pr, sr, m)
		for j := k; j < len(sr); j++ {
			e := expf(sr[j] - m)
			z += float64(e)
			pr[j] = e
		}
		inv := float32(1 / z)
		for j := scaleVec(pr, inv); j < len(pr); j++ {
			pr[j] *= inv
		}
		clear(pb[r*T+t+1 : (r+1)*T])
	}
}

// softmaxBackTask is CausalSoftmaxBackward over rows [lo, hi).
type softmaxBackTask struct {
	db  []float32
	pb  []float32
	dpb []float32
	T   int
}

func (t *softmaxBackTask) Run(_, lo, hi int) {
	db, pb, dpb, T := t.db, t.pb, t.dpb, t.T
	for r := lo; r < hi; r++ {
		t := r % T
		pr, dpr, dr := pb[r*T:r*T+t+1], dpb[r*T:r*T+t+1], db[r*T:r*T+t+1]
		k, dot := dotF64Vec(pr, dpr)
		for j := k; j <= t; j++ {
			dot += float64(float64(pr[j]) * float64(dpr[j]))
		}
		for j := softmaxBackRowVec(dr, pr, dpr, dot); j <= t; j++ {
			dr[j] = float32(float64(pr[j]) * (float64(dpr[j]) - dot))
		}
		clear(db[r*T+t+1 : (r+1)*T])
	}
}

// swigluTask is SwiGLU over 8-element blocks [lo, hi).
type swigluTask struct {
	ab []float32
	gb []float32
	ub []float32
	n  int
}

func (t *swigluTask) Run(_, lo, hi int) {
	// Chunks of whole 8-lane vectors: the same elements take the vector
	// loop whatever the split.
	lo, hi = lo*8, min(hi*8, t.n)
	ab, gb, ub := t.ab[lo:hi], t.gb[lo:hi], t.ub[lo:hi]
	for i := swigluVec(ab, gb, ub); i < len(gb); i++ {
		g := gb[i]
		ab[i] = g * sigmoidf(g) * ub[i]
	}
}

// swigluBackTask is SwiGLUBackward over 8-element blocks [lo, hi).
type swigluBackTask struct {
	dgb []float32
	dub []float32
	dab []float32
	gb  []float32
	ub  []float32
	n   int
}

func (t *swigluBackTask) Run(_, lo, hi int) {
	lo, hi = lo*8, min(hi*8, t.n)
	dgb, dub, dab, gb, ub := t.dgb[lo:hi], t.dub[lo:hi], t.dab[lo:hi], t.gb[lo:hi], t.ub[lo:hi]
	for i := swigluBackVec(dgb, dub, dab, gb, ub); i < len(gb); i++ {
		g := gb[i]
		s := sigmoidf(g)
		da := dab[i]
		dgb[i] = da * ub[i] * s * (1 + float32(g*(1-s)))
		dub[i] = da * g * s
	}
}

// mulTask is Mul over elements [lo, hi).
type mulTask struct {
	db []float32
	ab []float32
	bb []float32
}

func (t *mulTask) Run(_, lo, hi int) {
	db, ab, bb := t.db, t.ab, t.bb
	for i := lo; i < hi; i++ {
		db[i] = ab[i] * bb[i]
	}
}

// axpyTask is Axpy over elements [lo, hi).
type axpyTask struct {
	yb    []float32
	xb    []float32
	alpha float32
}

func (t *axpyTask) Run(_, lo, hi int) {
	yb, xb, alpha := t.yb, t.xb, t.alpha
	for i := lo; i < hi; i++ {
		yb[i] += float32(alpha * xb[i])
	}
}

// crossEntropyTask is CrossEntropy over rows [lo, hi).
type crossEntropyTask struct {
	lb    []float32
	db    []float32
	xb    []float32
	tb    []int32
	V     int
	scale float32
}

func (t *crossEntropyTask) Run(_, lo, hi int) {
	lb, db, xb, tb, V, scale := t.lb, t.db, t.xb, t.tb, t.V, t.scale
	for r := lo; r < hi; r++ {
		xr, dr := xb[r*V:(r+1)*V], db[r*V:(r+1)*V]
		m := rowMax(xr)
		// dr may alias xr: read the target logit first, then keep
		// each exp(x − m) in dr.
		tgt := int(tb[r])
		xt := xr[tgt]
		k, z := expSum(dr, xr, m)
		for j := k; j < V; j++ {
			e := expf(xr[j] - m)
			z += float64(e)
			dr[j] = e
		}
		// The target's term in float64, and the others' sum, keep the
		// loss and its gradient accurate when p[tgt] is close to 1.
		rest := z - float64(dr[tgt])
		et := math.Exp(float64(xt) - float64(m))
		zt := et + rest
		if et > 1e-30 {
			lb[r] = float32(math.Log1p(rest / et))
		} else {
			lb[r] = float32(float64(m) + math.Log(zt) - float64(xt))
		}
		sc := float64(scale)
		inv := float32(sc / zt)
		for j := scaleVec(dr, inv); j < V; j++ {
			dr[j] *= inv
		}
		dr[tgt] = float32(-sc * (rest / zt))
	}
}

// adamWTask is AdamW over elements [lo, hi).
type adamWTask struct {
	wb       []float32
	gb       []float32
	mb       []float32
	vb       []float32
	p        AdamW
	stepSize float32
	sqrtBC2  float32
	b1       float32
	b2       float32
}

func (t *adamWTask) Run(_, lo, hi int) {
	wb, gb, mb, vb, p, stepSize, sqrtBC2, b1, b2 := t.wb, t.gb, t.mb, t.vb, t.p, t.stepSize, t.sqrtBC2, t.b1, t.b2
	for j := lo; j < hi; j++ {
		gj := gb[j] * p.Clip
		mb[j] = float32(b1*mb[j]) + float32((1-b1)*gj)
		vb[j] = float32(b2*vb[j]) + float32((1-b2)*gj*gj)
		if p.Decay {
			wb[j] -= float32(p.LR * p.WeightDecay * wb[j])
		}
		den := float32(math.Sqrt(float64(vb[j])))/sqrtBC2 + p.Eps
		wb[j] -= float32(stepSize * mb[j] / den)
	}
}
