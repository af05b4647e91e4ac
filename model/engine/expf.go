package engine

import "math"

// expf returns e**x in float32 arithmetic (Cephes' expf: a degree-6
// polynomial after reduction by multiples of ln 2), within about 2 ulp of
// the correctly rounded result. It is several times faster than math.Exp
// with float64 conversions, and the Host's softmax, cross-entropy and
// SwiGLU spend most of their time in exp. Results below the smallest
// normal float32 (x < −87.33) are flushed to 0; x > 88.72 gives +Inf, and
// NaN gives NaN.
func expf(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		ln2Hi = 0.693359375
		ln2Lo = -2.12194440e-4
		hi    = 88.72283905206835
		lo    = -87.33654475055310898657 // ln(2⁻¹²⁶)
	)
	switch {
	case x > hi:
		return float32(math.Inf(1))
	case x < lo:
		return 0
	case x != x:
		return x
	}
	// n = round(x·log2 e), in [−126, 128].
	fn := float32(x*log2e) + 0.5
	n := int32(fn)
	if float32(n) > fn { // floor for negative fn
		n--
	}
	nf := float32(n)
	r := float32(x-float32(nf*ln2Hi)) - float32(nf*ln2Lo)
	z := r * r
	// Every product rounded before its sum (the explicit conversions):
	// the same bits whether or not the compiler could fuse them.
	p := float32(float32(1.9875691500e-4*r) + 1.3981999507e-3)
	p = float32(float32(p*r) + 8.3334519073e-3)
	p = float32(float32(p*r) + 4.1665795894e-2)
	p = float32(float32(p*r) + 1.6666665459e-1)
	p = float32(float32(p*r) + 5.0000001201e-1)
	y := float32(float32(p*z)+r) + 1
	// y·2ⁿ; n may be 128 (x just under hi), which needs two steps.
	if n > 127 {
		return y * 2 * math.Float32frombits(uint32(n-1+127)<<23)
	}
	if n < -126 {
		return y * 0.5 * math.Float32frombits(uint32(n+1+127)<<23)
	}
	return y * math.Float32frombits(uint32(n+127)<<23)
}

// sigmoidf returns 1/(1+e^−x) in float32.
func sigmoidf(x float32) float32 { return 1 / (1 + expf(-x)) }
