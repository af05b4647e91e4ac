//go:build !amd64 || purego

package engine

// bestISA is all this build offers: the pure-Go loops.
func bestISA() string { return isaGeneric }

// kernelFor is the pure-Go micro-kernel, whatever isa says.
func kernelFor(string) gemmMicro { return genericKernel() }
