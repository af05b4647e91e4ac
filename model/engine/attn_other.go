//go:build !amd64 || purego

package engine

// Without the assembly loops the attention helpers do nothing and report
// false: CachedAttention's pure-Go loops do all the work.

func attnScoresVec(s, q, k []float32, ks int, scale float32) bool { return false }

func attnValuesVec(o, v []float32, vs int, p []float32, inv float32) bool { return false }
