//go:build amd64 && !purego

package engine

// The assembly loops of attn_amd64.s.

//go:noescape
func attnScoresAVX2(s, q, k *float32, ks, n, hd int, scale float32)

//go:noescape
func attnValuesAVX2(o, v *float32, vs, n, hd int, p *float32, inv float32)

// attnScoresVec sets s[j] = scale·(q·k[j·ks : j·ks+len(q)]) for every j <
// len(s), each dot product summed as dotVec sums it, and reports whether it
// did (it does nothing without AVX2, or when len(q) is not a positive
// multiple of 8).
func attnScoresVec(s, q, k []float32, ks int, scale float32) bool {
	hd, n := len(q), len(s)
	if !haveAVX2 || hd == 0 || hd%8 != 0 || n == 0 {
		return false
	}
	_ = k[(n-1)*ks+hd-1] // index check: the assembly reads n rows of hd
	attnScoresAVX2(&s[0], &q[0], &k[0], ks, n, hd, scale)
	return true
}

// attnValuesVec sets o[i] = Σ_j (p[j]·inv)·v[j·vs + i], from zero with one
// fused multiply-add per j in order (axpyVec's), for i < len(o), and
// reports whether it did (as attnScoresVec).
func attnValuesVec(o, v []float32, vs int, p []float32, inv float32) bool {
	hd, n := len(o), len(p)
	if !haveAVX2 || hd == 0 || hd%8 != 0 || n == 0 {
		return false
	}
	_ = v[(n-1)*vs+hd-1] // index check: the assembly reads n rows of hd
	attnValuesAVX2(&o[0], &v[0], vs, n, hd, &p[0], inv)
	return true
}
