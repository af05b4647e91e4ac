package enginetest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fedtune/fedtune/model/engine"
)

// DefaultTolerance is the relative tolerance of TestDevice.
const DefaultTolerance = 1e-3

// TestDevice runs the conformance suite on the devices newDev returns (one
// per subtest, closed at its end) with DefaultTolerance. See TestDeviceTol.
func TestDevice(t *testing.T, newDev func() engine.Device) {
	TestDeviceTol(t, newDev, DefaultTolerance)
}

// TestDeviceTol runs the conformance suite: one subtest per operation
// (named after it), each running the operation with seeded random inputs
// on the device under test and on engine.NewHost. An output element a
// passes against reference b when
//
//	|a − b| ≤ tol·(|b| + rms(reference output))
//
// (relative, with the output's RMS as the floor for elements near zero).
// The device is compared with Host at tol; Host is compared with float64
// loops at min(tol, 1e-4); the device's backward operations are compared
// with central finite differences of the float64 forward at tol. The error
// subtests check that bad arguments make Sync return an error, that the
// error is sticky (later operations do nothing until Sync) and that Sync
// clears it.
func TestDeviceTol(t *testing.T, newDev func() engine.Device, tol float64) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &rig{t: t, dev: newDev(), host: engine.NewHost(), tol: tol, rng: rand.New(rand.NewPCG(7, uint64(len(c.name))))}
			defer func() {
				if err := r.dev.Close(); err != nil {
					t.Errorf("%s: Close: %v", r.dev.Name(), err)
				}
				_ = r.host.Close()
			}()
			c.run(r)
		})
	}
}

var cases = []struct {
	name string
	run  func(r *rig)
}{
	{"Buffers", testBuffers},
	{"MatMul", testMatMul},
	{"Embed", testEmbed},
	{"RMSNorm", testRMSNorm},
	{"RoPE", testRoPE},
	{"Heads", testHeads},
	{"CausalSoftmax", testCausalSoftmax},
	{"SwiGLU", testSwiGLU},
	{"MulAxpy", testMulAxpy},
	{"CrossEntropy", testCrossEntropy},
	{"SquaredNorm", testSquaredNorm},
	{"AdamW", testAdamW},
	{"Errors", testErrors},
}

// rig holds the device under test and the Host reference.
type rig struct {
	t         *testing.T
	dev, host engine.Device
	tol       float64
	rng       *rand.Rand
}

// pair is one logical buffer allocated on both devices.
type pair struct {
	d, h engine.Buffer
	n    int
}

func (p pair) at(side int) engine.Buffer {
	if side == 0 {
		return p.d
	}
	return p.h
}

type ipair struct{ d, h engine.IntBuffer }

func (p ipair) at(side int) engine.IntBuffer {
	if side == 0 {
		return p.d
	}
	return p.h
}

func (r *rig) devs() [2]engine.Device { return [2]engine.Device{r.dev, r.host} }

// put allocates x on both devices.
func (r *rig) put(x []float32) pair {
	p := pair{d: r.dev.Alloc(len(x)), h: r.host.Alloc(len(x)), n: len(x)}
	r.dev.Write(p.d, 0, x)
	r.host.Write(p.h, 0, x)
	return p
}

func (r *rig) ints(x []int32) ipair {
	p := ipair{d: r.dev.AllocInt(len(x)), h: r.host.AllocInt(len(x))}
	r.dev.WriteInt(p.d, x)
	r.host.WriteInt(p.h, x)
	return p
}

// do runs f on the device under test (side 0) and on Host (side 1).
func (r *rig) do(f func(d engine.Device, side int)) {
	for s, d := range r.devs() {
		f(d, s)
	}
}

// sync fails the test on a pending error of either device.
func (r *rig) sync(what string) {
	r.t.Helper()
	for _, d := range r.devs() {
		if err := d.Sync(); err != nil {
			r.t.Fatalf("%s on %s: %v", what, d.Name(), err)
		}
	}
}

// get reads p from both devices.
func (r *rig) get(what string, p pair) (dev, host []float32) {
	r.t.Helper()
	dev, host = make([]float32, p.n), make([]float32, p.n)
	r.dev.Read(dev, p.d, 0)
	r.host.Read(host, p.h, 0)
	r.sync(what)
	return dev, host
}

// check compares p on the device with p on Host (at tol) and, unless want
// is nil, Host with the float64 reference want.
func (r *rig) check(what string, p pair, want []float64) (dev, host []float32) {
	r.t.Helper()
	dev, host = r.get(what, p)
	compare(r.t, what+": "+r.dev.Name()+" vs host", dev, f64(host), r.tol)
	if want != nil {
		compare(r.t, what+": host vs float64 loops", host, want, min(r.tol, 1e-4))
	}
	return dev, host
}

// fd compares the device's backward output got (from p) with the finite
// difference gradient want.
func (r *rig) fd(what string, p pair, want []float64) {
	r.t.Helper()
	dev, _ := r.get(what, p)
	compare(r.t, what+": "+r.dev.Name()+" vs finite differences", dev, want, r.tol)
}

func (r *rig) vec(n int, lo, hi float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(lo + (hi-lo)*r.rng.Float64())
	}
	return x
}

func f64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

func rms(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v * v
	}
	if len(x) == 0 {
		return 0
	}
	return math.Sqrt(s / float64(len(x)))
}

// compare checks got against want element by element (see TestDeviceTol).
func compare(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return
	}
	floor := rms(want)
	worst, at := 0.0, -1
	for i := range got {
		g, w := float64(got[i]), want[i]
		den := math.Abs(w) + floor
		e := math.Abs(g - w)
		if math.IsNaN(g) || math.IsInf(g, 0) {
			e = math.Inf(1)
		}
		rel := e / max(den, 1e-30)
		if e == 0 {
			rel = 0
		}
		if rel > worst {
			worst, at = rel, i
		}
	}
	if worst > tol {
		t.Errorf("%s: element %d is %g, want %g (relative difference %.3g > %g)", what, at, got[at], want[at], worst, tol)
		return
	}
	t.Logf("%s: max relative difference %.3g", what, worst)
}

// fdGrad returns the gradient of Σ_i w_i·f(x)_i with respect to x by
// central differences in float64.
func fdGrad(f func(x []float64) []float64, x, w []float64) []float64 {
	x = append([]float64(nil), x...)
	g := make([]float64, len(x))
	dot := func() float64 {
		var s float64
		for i, v := range f(x) {
			s += w[i] * v
		}
		return s
	}
	for i := range x {
		h := 1e-5 * max(1, math.Abs(x[i]))
		old := x[i]
		x[i] = old + h
		up := dot()
		x[i] = old - h
		down := dot()
		x[i] = old
		g[i] = (up - down) / (2 * h)
	}
	return g
}

// ---- Buffers ----

func testBuffers(r *rig) {
	t := r.t
	d := r.dev
	b := d.Alloc(10)
	if b.Len() != 10 {
		t.Fatalf("Alloc(10).Len() = %d", b.Len())
	}
	got := make([]float32, 10)
	for i := range got {
		got[i] = 99
	}
	d.Read(got, b, 0)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != 0 {
			t.Fatalf("Alloc: element %d is %g, want 0", i, v)
		}
	}
	d.Write(b, 3, []float32{1, 2, 3})
	part := make([]float32, 4)
	d.Read(part, b, 2)
	c := d.Alloc(10)
	d.Copy(c, b)
	all := make([]float32, 10)
	d.Read(all, c, 0)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(part) != "[0 1 2 3]" || fmt.Sprint(all) != "[0 0 0 1 2 3 0 0 0 0]" {
		t.Errorf("Write at 3 then Read at 2 gave %v, Copy gave %v", part, all)
	}
	d.Zero(c)
	d.Read(all, c, 0)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(all) != "[0 0 0 0 0 0 0 0 0 0]" {
		t.Errorf("Zero left %v", all)
	}
	ib := d.AllocInt(5)
	if ib.Len() != 5 {
		t.Errorf("AllocInt(5).Len() = %d", ib.Len())
	}
	d.WriteInt(ib, []int32{1, 2, 3, 4, 5})
	empty := d.Alloc(0)
	if empty.Len() != 0 {
		t.Errorf("Alloc(0).Len() = %d", empty.Len())
	}
	d.Free(nil)
	d.Free(empty)
	d.Free(b)
	d.Free(c)
	d.FreeInt(ib)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// ---- MatMul ----

// refGemm computes one Gemm in float64 on host copies of A, B, C.
func refGemm(g engine.Gemm, a, b, c []float32) []float64 {
	out := f64(c)
	l, err := g.Layout()
	if err != nil {
		panic(err) // the suite builds only valid products
	}
	lda, ldb, ldc := l.LDA, l.LDB, l.LDC
	for bi := 0; bi < max(g.Batch, 1); bi++ {
		A, B, C := a[bi*g.StrideA:], b[bi*g.StrideB:], out[bi*g.StrideC:]
		for i := 0; i < g.M; i++ {
			for j := 0; j < g.N; j++ {
				var s float64
				for k := 0; k < g.K; k++ {
					ia, ib := i*lda+k, k*ldb+j
					if g.TransA {
						ia = k*lda + i
					}
					if g.TransB {
						ib = j*ldb + k
					}
					av, bv := A[ia], B[ib]
					s += float64(av) * float64(bv)
				}
				prev := C[i*ldc+j]
				if g.Beta == 0 {
					prev = 0
				}
				C[i*ldc+j] = float64(g.Alpha)*s + float64(g.Beta)*prev
			}
		}
	}
	return out
}

func testMatMul(r *rig) {
	type gc struct {
		name string
		g    engine.Gemm
		nanC bool
	}
	cs := []gc{
		{"NN-7x5x3", engine.Gemm{M: 7, N: 5, K: 3, Alpha: 1}, false},
		{"NT-33x17x65-beta1", engine.Gemm{TransB: true, M: 33, N: 17, K: 65, Alpha: 0.5, Beta: 1}, false},
		{"TN-64x64x64", engine.Gemm{TransA: true, M: 64, N: 64, K: 64, Alpha: 1, Beta: 0.25}, false},
		{"TT-3x70x9", engine.Gemm{TransA: true, TransB: true, M: 3, N: 70, K: 9, Alpha: -2}, false},
		{"NN-130x96x200", engine.Gemm{M: 130, N: 96, K: 200, Alpha: 1}, false},
		{"beta0-ignores-NaN", engine.Gemm{M: 6, N: 4, K: 5, Alpha: 1}, true},
		{"K0-scales-C", engine.Gemm{M: 4, N: 3, K: 0, Alpha: 1, Beta: 0.5}, false},
		{"batched-NT-scores", engine.Gemm{TransB: true, M: 9, N: 9, K: 8, Alpha: float32(1 / math.Sqrt(8)), Batch: 5,
			StrideA: 72, StrideB: 72, StrideC: 81}, false},
		{"batched-TN-padded", engine.Gemm{TransA: true, M: 6, N: 5, K: 7, Alpha: 1, Beta: 1, Batch: 3,
			LDA: 8, LDB: 9, LDC: 7, StrideA: 60, StrideB: 70, StrideC: 40}, false},
		{"batched-broadcast-B", engine.Gemm{M: 5, N: 6, K: 4, Alpha: 1, Batch: 4, StrideA: 20, StrideB: 0, StrideC: 30}, false},
		{"batched-NN-large", engine.Gemm{M: 64, N: 16, K: 64, Alpha: 1, Batch: 6, StrideA: 64 * 64, StrideB: 64 * 16, StrideC: 64 * 16}, false},
	}
	for _, c := range cs {
		g := c.g
		batch := max(g.Batch, 1)
		size := func(rows, cols, ld, stride int) int {
			if ld == 0 {
				ld = cols
			}
			return (batch-1)*stride + (rows-1)*ld + cols
		}
		ar, ac := g.M, g.K
		if g.TransA {
			ar, ac = g.K, g.M
		}
		br, bc := g.K, g.N
		if g.TransB {
			br, bc = g.N, g.K
		}
		av := r.vec(max(size(ar, ac, g.LDA, g.StrideA), 1), -1, 1)
		bv := r.vec(max(size(br, bc, g.LDB, g.StrideB), 1), -1, 1)
		cv := r.vec(size(g.M, g.N, g.LDC, g.StrideC), -1, 1)
		if c.nanC {
			for i := range cv {
				cv[i] = float32(math.NaN())
			}
		}
		A, B, C := r.put(av), r.put(bv), r.put(cv)
		r.do(func(d engine.Device, s int) {
			gg := g
			gg.A, gg.B, gg.C = A.at(s), B.at(s), C.at(s)
			d.MatMul(gg)
		})
		r.check("MatMul "+c.name, C, refGemm(g, av, bv, cv))
	}
}

// ---- Embed ----

func testEmbed(r *rig) {
	const V, d, rows = 11, 6, 23
	table := r.vec(V*d, -1, 1)
	ids := make([]int32, rows)
	for i := range ids {
		ids[i] = int32(r.rng.IntN(V))
	}
	ids[0], ids[1], ids[rows-1] = V-1, 0, 3 // both ends, and repeats
	tb, ib, out := r.put(table), r.ints(ids), r.put(make([]float32, rows*d))
	r.do(func(dv engine.Device, s int) { dv.Embed(out.at(s), tb.at(s), ib.at(s), d) })
	want := make([]float64, rows*d)
	for i, id := range ids {
		for j := 0; j < d; j++ {
			want[i*d+j] = float64(table[int(id)*d+j])
		}
	}
	r.check("Embed", out, want)

	gout := r.vec(rows*d, -1, 1)
	g0 := r.vec(V*d, -1, 1) // accumulates into existing values
	gb, gt := r.put(gout), r.put(g0)
	r.do(func(dv engine.Device, s int) { dv.EmbedBackward(gt.at(s), gb.at(s), ib.at(s), d) })
	wantG := f64(g0)
	for i, id := range ids {
		for j := 0; j < d; j++ {
			wantG[int(id)*d+j] += float64(gout[i*d+j])
		}
	}
	r.check("EmbedBackward", gt, wantG)
	// EmbedBackward is the adjoint of Embed: finite differences of
	// Σ gout·Embed(table) with respect to the table, added to g0.
	fwd := func(tab []float64) []float64 {
		o := make([]float64, rows*d)
		for i, id := range ids {
			copy(o[i*d:(i+1)*d], tab[int(id)*d:])
		}
		return o
	}
	fd := fdGrad(fwd, f64(table), f64(gout))
	for i := range fd {
		fd[i] += float64(g0[i])
	}
	r.fd("EmbedBackward", gt, fd)
}

// ---- RMSNorm ----

func refRMSNorm(x, w []float64, rows, d int, eps float64) []float64 {
	y := make([]float64, len(x))
	for r := 0; r < rows; r++ {
		var ss float64
		for j := 0; j < d; j++ {
			ss += x[r*d+j] * x[r*d+j]
		}
		s := 1 / math.Sqrt(ss/float64(d)+eps)
		for j := 0; j < d; j++ {
			y[r*d+j] = x[r*d+j] * s * w[j]
		}
	}
	return y
}

func testRMSNorm(r *rig) {
	for _, sz := range []struct {
		rows, d int
		eps     float32
		fd      bool
	}{{5, 7, 1e-5, true}, {13, 24, 1e-2, true}, {64, 256, 1e-6, false}} {
		rows, d := sz.rows, sz.d
		name := fmt.Sprintf("%dx%d", rows, d)
		xv, wv := r.vec(rows*d, -2, 2), r.vec(d, 0.5, 1.5)
		x, w, y, rs := r.put(xv), r.put(wv), r.put(make([]float32, rows*d)), r.put(make([]float32, rows))
		r.do(func(dv engine.Device, s int) { dv.RMSNorm(y.at(s), rs.at(s), x.at(s), w.at(s), rows, d, sz.eps) })
		r.check("RMSNorm y "+name, y, refRMSNorm(f64(xv), f64(wv), rows, d, float64(sz.eps)))
		wantR := make([]float64, rows)
		for i := range wantR {
			var ss float64
			for j := 0; j < d; j++ {
				ss += float64(xv[i*d+j]) * float64(xv[i*d+j])
			}
			wantR[i] = 1 / math.Sqrt(ss/float64(d)+float64(sz.eps))
		}
		r.check("RMSNorm rstd "+name, rs, wantR)

		dyv, dx0, dw0 := r.vec(rows*d, -1, 1), r.vec(rows*d, -1, 1), r.vec(d, -1, 1)
		dy, dx, dw := r.put(dyv), r.put(dx0), r.put(dw0)
		r.do(func(dv engine.Device, s int) {
			dv.RMSNormBackward(dx.at(s), dw.at(s), dy.at(s), x.at(s), w.at(s), rs.at(s), rows, d)
		})
		// Float64 loops of the documented formula.
		wantDx, wantDw := f64(dx0), f64(dw0)
		for i := 0; i < rows; i++ {
			var c float64
			for j := 0; j < d; j++ {
				c += float64(dyv[i*d+j]) * float64(wv[j]) * float64(xv[i*d+j])
			}
			s := wantR[i]
			for j := 0; j < d; j++ {
				wantDx[i*d+j] += s * (float64(dyv[i*d+j])*float64(wv[j]) - float64(xv[i*d+j])*s*s*c/float64(d))
				wantDw[j] += float64(dyv[i*d+j]) * float64(xv[i*d+j]) * s
			}
		}
		r.check("RMSNormBackward dx "+name, dx, wantDx)
		r.check("RMSNormBackward dw "+name, dw, wantDw)
		if sz.fd {
			fx := fdGrad(func(xx []float64) []float64 { return refRMSNorm(xx, f64(wv), rows, d, float64(sz.eps)) }, f64(xv), f64(dyv))
			fw := fdGrad(func(ww []float64) []float64 { return refRMSNorm(f64(xv), ww, rows, d, float64(sz.eps)) }, f64(wv), f64(dyv))
			for i := range fx {
				fx[i] += float64(dx0[i])
			}
			for i := range fw {
				fw[i] += float64(dw0[i])
			}
			r.fd("RMSNormBackward dx "+name, dx, fx)
			r.fd("RMSNormBackward dw "+name, dw, fw)
		}
		// dw == nil: only dx.
		dx2 := r.put(dx0)
		r.do(func(dv engine.Device, s int) {
			dv.RMSNormBackward(dx2.at(s), nil, dy.at(s), x.at(s), w.at(s), rs.at(s), rows, d)
		})
		r.check("RMSNormBackward dw=nil "+name, dx2, wantDx)
	}
}

// ---- RoPE ----

func refRoPE(x, cos, sin []float64, rows, heads, hd, T int, inverse bool) []float64 {
	y := append([]float64(nil), x...)
	half := hd / 2
	for r := 0; r < rows; r++ {
		t := r % T
		for h := 0; h < heads; h++ {
			v := y[(r*heads+h)*hd:]
			for j := 0; j < half; j++ {
				c, s := cos[t*hd+j], sin[t*hd+j]
				if inverse {
					s = -s
				}
				a, b := v[j], v[j+half]
				v[j], v[j+half] = a*c-b*s, b*c+a*s
			}
		}
	}
	return y
}

func testRoPE(r *rig) {
	const B, T, heads, hd = 3, 5, 3, 8
	rows := B * T
	cosv, sinv := make([]float32, T*hd), make([]float32, T*hd)
	for t := 0; t < T; t++ {
		for j := 0; j < hd/2; j++ {
			ang := float64(t) / math.Pow(10000, float64(2*j)/hd)
			for _, jj := range []int{j, j + hd/2} {
				cosv[t*hd+jj], sinv[t*hd+jj] = float32(math.Cos(ang)), float32(math.Sin(ang))
			}
		}
	}
	xv := r.vec(rows*heads*hd, -1, 1)
	cs, sn := r.put(cosv), r.put(sinv)
	for _, inv := range []bool{false, true} {
		x := r.put(xv)
		r.do(func(d engine.Device, s int) { d.RoPE(x.at(s), cs.at(s), sn.at(s), rows, heads, hd, T, inv) })
		r.check(fmt.Sprintf("RoPE inverse=%v", inv), x, refRoPE(f64(xv), f64(cosv), f64(sinv), rows, heads, hd, T, inv))
		// The inverse rotation is the forward's backward (its transpose).
		dy := r.vec(rows*heads*hd, -1, 1)
		g := r.put(dy)
		r.do(func(d engine.Device, s int) { d.RoPE(g.at(s), cs.at(s), sn.at(s), rows, heads, hd, T, !inv) })
		r.fd(fmt.Sprintf("RoPE inverse=%v as backward", !inv), g, fdGrad(func(xx []float64) []float64 {
			return refRoPE(xx, f64(cosv), f64(sinv), rows, heads, hd, T, inv)
		}, f64(xv), f64(dy)))
	}
}

// ---- SplitHeads / MergeHeads ----

func refSplit(src []float64, B, T, heads, hd, rep int) []float64 {
	HH := heads * rep
	dst := make([]float64, B*HH*T*hd)
	for b := 0; b < B; b++ {
		for h := 0; h < HH; h++ {
			for t := 0; t < T; t++ {
				for j := 0; j < hd; j++ {
					dst[((b*HH+h)*T+t)*hd+j] = src[((b*T+t)*heads+h/rep)*hd+j]
				}
			}
		}
	}
	return dst
}

func testHeads(r *rig) {
	for _, sz := range []struct{ B, T, heads, hd, rep int }{{2, 3, 2, 4, 3}, {3, 5, 4, 6, 1}, {1, 7, 1, 2, 4}} {
		name := fmt.Sprintf("B%d-T%d-heads%d-hd%d-repeat%d", sz.B, sz.T, sz.heads, sz.hd, sz.rep)
		small, big := sz.B*sz.T*sz.heads*sz.hd, sz.B*sz.T*sz.heads*sz.rep*sz.hd
		sv := r.vec(small, -1, 1)
		src, dst := r.put(sv), r.put(r.vec(big, -1, 1))
		r.do(func(d engine.Device, s int) { d.SplitHeads(dst.at(s), src.at(s), sz.B, sz.T, sz.heads, sz.hd, sz.rep) })
		r.check("SplitHeads "+name, dst, refSplit(f64(sv), sz.B, sz.T, sz.heads, sz.hd, sz.rep))

		gv := r.vec(big, -1, 1)
		g, m := r.put(gv), r.put(r.vec(small, -1, 1)) // MergeHeads overwrites dst
		r.do(func(d engine.Device, s int) { d.MergeHeads(m.at(s), g.at(s), sz.B, sz.T, sz.heads, sz.hd, sz.rep) })
		r.fd("MergeHeads (SplitHeads' adjoint) "+name, m, fdGrad(func(x []float64) []float64 {
			return refSplit(x, sz.B, sz.T, sz.heads, sz.hd, sz.rep)
		}, f64(sv), f64(gv)))
	}
}

// ---- CausalSoftmax ----

func refCausalSoftmax(s []float64, rows, T int) []float64 {
	p := make([]float64, len(s))
	for r := 0; r < rows; r++ {
		t := r % T
		m := math.Inf(-1)
		for j := 0; j <= t; j++ {
			m = math.Max(m, s[r*T+j])
		}
		var z float64
		for j := 0; j <= t; j++ {
			z += math.Exp(s[r*T+j] - m)
		}
		for j := 0; j <= t; j++ {
			p[r*T+j] = math.Exp(s[r*T+j]-m) / z
		}
	}
	return p
}

func testCausalSoftmax(r *rig) {
	for _, sz := range []struct {
		rows, T int
		scale   float64
		fd      bool
	}{{21, 7, 3, true}, {128, 64, 30, false}, {3, 1, 1, true}} {
		name := fmt.Sprintf("%dx%d", sz.rows, sz.T)
		sv := r.vec(sz.rows*sz.T, -sz.scale, sz.scale)
		want := refCausalSoftmax(f64(sv), sz.rows, sz.T)
		s, p := r.put(sv), r.put(r.vec(sz.rows*sz.T, -1, 1))
		r.do(func(d engine.Device, i int) { d.CausalSoftmax(p.at(i), s.at(i), sz.rows, sz.T) })
		r.check("CausalSoftmax "+name, p, want)
		inplace := r.put(sv)
		r.do(func(d engine.Device, i int) { d.CausalSoftmax(inplace.at(i), inplace.at(i), sz.rows, sz.T) })
		r.check("CausalSoftmax in place "+name, inplace, want)

		dpv := r.vec(sz.rows*sz.T, -1, 1)
		dp, ds := r.put(dpv), r.put(r.vec(sz.rows*sz.T, -1, 1))
		r.do(func(d engine.Device, i int) { d.CausalSoftmaxBackward(ds.at(i), p.at(i), dp.at(i), sz.rows, sz.T) })
		pv, _ := r.get("CausalSoftmax", p)
		wantDs := make([]float64, len(dpv))
		for row := 0; row < sz.rows; row++ {
			t := row % sz.T
			var dot float64
			for j := 0; j <= t; j++ {
				dot += float64(pv[row*sz.T+j]) * float64(dpv[row*sz.T+j])
			}
			for j := 0; j <= t; j++ {
				wantDs[row*sz.T+j] = float64(pv[row*sz.T+j]) * (float64(dpv[row*sz.T+j]) - dot)
			}
		}
		r.check("CausalSoftmaxBackward "+name, ds, wantDs)
		r.do(func(d engine.Device, i int) { d.CausalSoftmaxBackward(dp.at(i), p.at(i), dp.at(i), sz.rows, sz.T) })
		r.check("CausalSoftmaxBackward in place "+name, dp, wantDs)
		if sz.fd {
			r.fd("CausalSoftmaxBackward "+name, ds, fdGrad(func(x []float64) []float64 {
				return refCausalSoftmax(x, sz.rows, sz.T)
			}, f64(sv), f64(dpv)))
		}
	}
}

// ---- SwiGLU ----

func refSwiGLU(g, u []float64) []float64 {
	a := make([]float64, len(g))
	for i := range g {
		a[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
	}
	return a
}

func testSwiGLU(r *rig) {
	for _, n := range []int{37, 5000} {
		gv, uv := r.vec(n, -8, 8), r.vec(n, -2, 2)
		g, u, act := r.put(gv), r.put(uv), r.put(make([]float32, n))
		r.do(func(d engine.Device, s int) { d.SwiGLU(act.at(s), g.at(s), u.at(s)) })
		r.check(fmt.Sprintf("SwiGLU n=%d", n), act, refSwiGLU(f64(gv), f64(uv)))
		dav := r.vec(n, -1, 1)
		da, dg, du := r.put(dav), r.put(make([]float32, n)), r.put(make([]float32, n))
		r.do(func(d engine.Device, s int) { d.SwiGLUBackward(dg.at(s), du.at(s), da.at(s), g.at(s), u.at(s)) })
		wantG, wantU := make([]float64, n), make([]float64, n)
		for i := range wantG {
			gg, uu := float64(gv[i]), float64(uv[i])
			sg := 1 / (1 + math.Exp(-gg))
			wantG[i] = float64(dav[i]) * uu * sg * (1 + gg*(1-sg))
			wantU[i] = float64(dav[i]) * gg * sg
		}
		r.check(fmt.Sprintf("SwiGLUBackward dg n=%d", n), dg, wantG)
		r.check(fmt.Sprintf("SwiGLUBackward du n=%d", n), du, wantU)
		if n < 100 {
			r.fd("SwiGLUBackward dg", dg, fdGrad(func(x []float64) []float64 { return refSwiGLU(x, f64(uv)) }, f64(gv), f64(dav)))
			r.fd("SwiGLUBackward du", du, fdGrad(func(x []float64) []float64 { return refSwiGLU(f64(gv), x) }, f64(uv), f64(dav)))
		}
	}
}

// ---- Mul, Axpy ----

func testMulAxpy(r *rig) {
	const n = 3001
	av, bv := r.vec(n, -3, 3), r.vec(n, -3, 3)
	a, b, dst := r.put(av), r.put(bv), r.put(make([]float32, n))
	want := make([]float64, n)
	for i := range want {
		want[i] = float64(av[i]) * float64(bv[i])
	}
	r.do(func(d engine.Device, s int) { d.Mul(dst.at(s), a.at(s), b.at(s)) })
	r.check("Mul", dst, want)
	r.do(func(d engine.Device, s int) { d.Mul(a.at(s), a.at(s), b.at(s)) })
	r.check("Mul in place", a, want)
	yv := r.vec(n, -1, 1)
	y := r.put(yv)
	r.do(func(d engine.Device, s int) { d.Axpy(y.at(s), -0.75, b.at(s)) })
	wantY := make([]float64, n)
	for i := range wantY {
		wantY[i] = float64(yv[i]) - 0.75*float64(bv[i])
	}
	r.check("Axpy", y, wantY)
}

// ---- CrossEntropy ----

func refCE(logits []float64, tg []int32, rows, V int) []float64 {
	loss := make([]float64, rows)
	for r := 0; r < rows; r++ {
		x := logits[r*V : (r+1)*V]
		m := math.Inf(-1)
		for _, v := range x {
			m = math.Max(m, v)
		}
		var z float64
		for _, v := range x {
			z += math.Exp(v - m)
		}
		loss[r] = m + math.Log(z) - x[tg[r]]
	}
	return loss
}

func testCrossEntropy(r *rig) {
	for _, sz := range []struct {
		rows, V int
		scale   float64
		fd      bool
	}{{9, 37, 4, true}, {4, 1000, 50, false}, {70, 256, 8, false}} {
		name := fmt.Sprintf("%dx%d", sz.rows, sz.V)
		xv := r.vec(sz.rows*sz.V, -sz.scale, sz.scale)
		tg := make([]int32, sz.rows)
		for i := range tg {
			tg[i] = int32(r.rng.IntN(sz.V))
		}
		tg[0] = int32(sz.V - 1)
		scale := float32(1) / float32(sz.rows)
		x, tb, loss, dl := r.put(xv), r.ints(tg), r.put(make([]float32, sz.rows)), r.put(make([]float32, sz.rows*sz.V))
		r.do(func(d engine.Device, s int) {
			d.CrossEntropy(loss.at(s), dl.at(s), x.at(s), tb.at(s), sz.rows, sz.V, scale)
		})
		wantL := refCE(f64(xv), tg, sz.rows, sz.V)
		r.check("CrossEntropy loss "+name, loss, wantL)
		wantD := make([]float64, len(xv))
		for row := 0; row < sz.rows; row++ {
			lse := wantL[row] + float64(xv[row*sz.V+int(tg[row])])
			for j := 0; j < sz.V; j++ {
				p := math.Exp(float64(xv[row*sz.V+j]) - lse)
				if j == int(tg[row]) {
					p--
				}
				wantD[row*sz.V+j] = float64(scale) * p
			}
		}
		r.check("CrossEntropy dlogits "+name, dl, wantD)
		if sz.fd {
			w := make([]float64, sz.rows)
			for i := range w {
				w[i] = float64(scale)
			}
			r.fd("CrossEntropy dlogits "+name, dl, fdGrad(func(l []float64) []float64 { return refCE(l, tg, sz.rows, sz.V) }, f64(xv), w))
		}
		// dlogits may alias logits.
		loss2 := r.put(make([]float32, sz.rows))
		r.do(func(d engine.Device, s int) {
			d.CrossEntropy(loss2.at(s), x.at(s), x.at(s), tb.at(s), sz.rows, sz.V, scale)
		})
		r.check("CrossEntropy in place loss "+name, loss2, wantL)
		r.check("CrossEntropy in place dlogits "+name, x, wantD)
	}
}

// ---- SquaredNorm ----

func testSquaredNorm(r *rig) {
	for _, n := range []int{1, 1000, 300001} {
		xv := r.vec(n, -2, 2)
		x := r.put(xv)
		var want float64
		for _, v := range xv {
			want += float64(v) * float64(v)
		}
		got, hg := r.dev.SquaredNorm(x.d), r.host.SquaredNorm(x.h)
		r.sync("SquaredNorm")
		what := fmt.Sprintf("SquaredNorm n=%d", n)
		compare(r.t, what+": "+r.dev.Name()+" vs float64", []float32{float32(got)}, []float64{want}, min(r.tol, 1e-5))
		compare(r.t, what+": host vs float64", []float32{float32(hg)}, []float64{want}, 1e-6)
	}
}

// ---- AdamW ----

func testAdamW(r *rig) {
	const n = 4099
	for _, decay := range []bool{false, true} {
		wv, gv, mv := r.vec(n, -1, 1), r.vec(n, -0.1, 0.1), r.vec(n, -0.01, 0.01)
		vv := r.vec(n, 0, 1e-4)
		p := engine.AdamW{Clip: 0.7, LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Decay: decay, WeightDecay: 0.1}
		p.BC1 = float32(1 - math.Pow(0.9, 3))
		p.BC2 = float32(1 - math.Pow(0.999, 3))
		w, g, m, v := r.put(wv), r.put(gv), r.put(mv), r.put(vv)
		r.do(func(d engine.Device, s int) { d.AdamW(w.at(s), g.at(s), m.at(s), v.at(s), p) })
		ww, wm, wvv := make([]float64, n), make([]float64, n), make([]float64, n)
		for j := 0; j < n; j++ {
			gj := float64(gv[j]) * float64(p.Clip)
			wm[j] = float64(p.Beta1)*float64(mv[j]) + (1-float64(p.Beta1))*gj
			wvv[j] = float64(p.Beta2)*float64(vv[j]) + (1-float64(p.Beta2))*gj*gj
			wj := float64(wv[j])
			if decay {
				wj -= float64(p.LR) * float64(p.WeightDecay) * wj
			}
			wj -= float64(p.LR) / float64(p.BC1) * wm[j] / (math.Sqrt(wvv[j])/math.Sqrt(float64(p.BC2)) + float64(p.Eps))
			ww[j] = wj
		}
		name := fmt.Sprintf("AdamW decay=%v", decay)
		r.check(name+" m", m, wm)
		r.check(name+" v", v, wvv)
		r.check(name+" w", w, ww)
		r.check(name+" g unchanged", g, f64(gv))
	}
}

// ---- Errors ----

func testErrors(r *rig) {
	d := r.dev
	const V, dd = 5, 3
	table := d.Alloc(V * dd)
	out := d.Alloc(4 * dd)
	ids := d.AllocInt(4)
	logits := d.Alloc(4 * V)
	loss := d.Alloc(4)
	x := d.Alloc(12)
	short := d.Alloc(11)
	w := d.Alloc(3)
	rs := d.Alloc(4)
	probe := d.Alloc(3)
	if err := d.Sync(); err != nil {
		r.t.Fatal(err)
	}
	bad := []struct {
		name string
		op   func()
	}{
		{"Embed id = V", func() { d.WriteInt(ids, []int32{0, 1, V, 2}); d.Embed(out, table, ids, dd) }},
		{"Embed id < 0", func() { d.WriteInt(ids, []int32{0, -1, 1, 2}); d.Embed(out, table, ids, dd) }},
		{"EmbedBackward id = V", func() { d.WriteInt(ids, []int32{0, 1, 2, V}); d.EmbedBackward(table, out, ids, dd) }},
		{"CrossEntropy target = V", func() {
			d.WriteInt(ids, []int32{0, V, 1, 2})
			d.CrossEntropy(loss, logits, logits, ids, 4, V, 1)
		}},
		{"RMSNorm short y", func() { d.RMSNorm(short, rs, x, w, 4, 3, 1e-5) }},
		{"RMSNorm rows mismatch", func() { d.RMSNorm(out, rs, x, w, 3, 4, 1e-5) }},
		{"MatMul C too short", func() { d.MatMul(engine.Gemm{M: 4, N: 3, K: 3, Alpha: 1, A: x, B: table, C: short}) }},
		{"MatMul A too short", func() { d.MatMul(engine.Gemm{M: 4, N: 3, K: 4, Alpha: 1, A: short, B: x, C: out}) }},
		{"Write past the end", func() { d.Write(x, 10, []float32{1, 2, 3}) }},
		{"Read past the end", func() { d.Read(make([]float32, 5), x, 8) }},
		{"Copy length mismatch", func() { d.Copy(short, x) }},
		{"SwiGLU length mismatch", func() { d.SwiGLU(short, x, x) }},
	}
	for _, b := range bad {
		d.Write(probe, 0, []float32{1, 2, 3})
		if err := d.Sync(); err != nil {
			r.t.Fatalf("%s: setup: %v", b.name, err)
		}
		b.op()
		d.Zero(probe) // must do nothing: the error is sticky
		if err := d.Sync(); err == nil {
			r.t.Errorf("%s: Sync returned no error", b.name)
			continue
		} else {
			r.t.Logf("%s: %v", b.name, err)
		}
		if err := d.Sync(); err != nil {
			r.t.Errorf("%s: second Sync still reports %v", b.name, err)
		}
		got := make([]float32, 3)
		d.Read(got, probe, 0)
		if err := d.Sync(); err != nil {
			r.t.Fatalf("%s: Read after the error was cleared: %v", b.name, err)
		}
		if fmt.Sprint(got) != "[1 2 3]" {
			r.t.Errorf("%s: an operation after the error ran (probe is %v, want [1 2 3])", b.name, got)
		}
	}
	if n := d.SquaredNorm(x); n != 0 {
		r.t.Errorf("SquaredNorm of zeros = %g", n)
	}
	d.Copy(short, x)
	if n := d.SquaredNorm(probe); n != 0 {
		r.t.Errorf("SquaredNorm after an error = %g, want 0", n)
	}
	if err := d.Sync(); err == nil {
		r.t.Error("Copy length mismatch: no error")
	}
}
