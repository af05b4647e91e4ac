//go:build amd64 && !purego

package engine

// The assembly loops of attn_amd64.s.

//go:noescape
func attnScoresAVX2(s, q, k *float32, ks, n, hd, rep int, scale float32)

//go:noescape
func attnValuesAVX2(o, v *float32, vs, n, hd, rep int, p, inv *float32)

// attnScoresVec sets s[h·n + j] = scale·(q[h·hd : (h+1)·hd]·k[j·ks : j·ks+hd])
// for the rep = len(q)/hd query heads h of one key/value head and the n =
// len(s)/rep keys j, each dot product summed as dotVec sums it, and reports
// whether it did (it does nothing without AVX2, or when hd is not a
// positive multiple of 8).
func attnScoresVec(s, q, k []float32, ks, hd int, scale float32) bool {
	if !haveAVX2 || hd <= 0 || hd%8 != 0 || len(q) == 0 || len(q)%hd != 0 {
		return false
	}
	rep := len(q) / hd
	n := len(s) / rep
	if n == 0 || len(s) != n*rep {
		return false
	}
	_ = k[(n-1)*ks+hd-1] // index check: the assembly reads n rows of hd
	attnScoresAVX2(&s[0], &q[0], &k[0], ks, n, hd, rep, scale)
	return true
}

// attnValuesVec adds Σ_j (p[h·n + j]·inv[h])·v[j·vs + i] to o[h·hd + i],
// one fused multiply-add per j in order (axpyVec's), for the rep =
// len(inv) heads h, i < hd and the n = len(p)/rep keys j, and reports
// whether it did (as attnScoresVec). From o zeroed, o[h·hd:] is what
// axpyVec gives key by key.
func attnValuesVec(o, v []float32, vs, hd int, p, inv []float32) bool {
	rep := len(inv)
	if !haveAVX2 || hd <= 0 || hd%8 != 0 || rep == 0 || len(o) != rep*hd {
		return false
	}
	n := len(p) / rep
	if n == 0 || len(p) != n*rep {
		return false
	}
	_ = v[(n-1)*vs+hd-1] // index check: the assembly reads n rows of hd
	attnValuesAVX2(&o[0], &v[0], vs, n, hd, rep, &p[0], &inv[0])
	return true
}
