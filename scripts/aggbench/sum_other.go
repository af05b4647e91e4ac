//go:build !amd64 || purego

package main

func sumWords(w []uint64) uint64 { return sumWordsGo(w) }
