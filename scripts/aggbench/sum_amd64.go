//go:build amd64 && !purego

package main

import "golang.org/x/sys/cpu"

//go:noescape
func sumWordsAVX2(p *uint64, n int) uint64

// sumWords returns the wrapping sum of w, with vector loads where the CPU
// has AVX2.
func sumWords(w []uint64) uint64 {
	v := len(w) &^ 15
	var s uint64
	if cpu.X86.HasAVX2 && v > 0 {
		s = sumWordsAVX2(&w[0], v)
	} else {
		v = 0
	}
	return s + sumWordsGo(w[v:])
}
