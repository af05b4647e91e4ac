package engine

import (
	"fmt"
	"os"
)

// ISAEnv names the environment variable that picks the instruction set the
// Host's loops and products run on: "avx512", "avx2" or "generic" (the
// pure-Go loops, as build tag purego gives), or "" or "auto" for the best
// this CPU has. Every choice gives the same bits (lanes.go); the variable
// exists so that this can be checked on one machine. A choice the CPU or
// the build lacks, or an unknown name, makes every Host fail with an error
// that says so (Device.Sync reports it).
const ISAEnv = "FEDTUNE_ENGINE_ISA"

// The instruction sets, from the least to the most.
const (
	isaGeneric = "generic"
	isaAVX2    = "avx2"
	isaAVX512  = "avx512"
)

var isaRank = map[string]int{isaGeneric: 0, isaAVX2: 1, isaAVX512: 2}

var (
	// haveAVX2 selects the assembly loops (vec_amd64.s, vexp_amd64.s) and
	// row kernels; without it their pure-Go twins run.
	haveAVX2 bool
	// gemmKernel is sgemmVec's micro-kernel and its tile height.
	gemmKernel gemmMicro
	// activeISA is the instruction set in use, one of the isa… names.
	activeISA string
	// isaErr is the error ISAEnv's value gave, which NewHost records.
	isaErr error
)

func init() {
	if err := useISA(os.Getenv(ISAEnv)); err != nil {
		isaErr = fmt.Errorf("%s=%q: %w", ISAEnv, os.Getenv(ISAEnv), err)
		_ = useISA("")
	}
}

// ISA returns the instruction set the Host runs on: "avx512", "avx2" or
// "generic".
func ISA() string { return activeISA }

// useISA switches the Host's loops and products to the instruction set
// name ("" or "auto": the best there is). It is not safe to call while a
// Host works; tests call it between steps.
func useISA(name string) error {
	best := bestISA()
	switch name {
	case "", "auto":
		name = best
	case isaGeneric, isaAVX2, isaAVX512:
		if isaRank[name] > isaRank[best] {
			return fmt.Errorf("this CPU or build offers at most %s", best)
		}
	default:
		return fmt.Errorf("unknown instruction set (want avx512, avx2, generic or auto)")
	}
	activeISA = name
	haveAVX2 = isaRank[name] >= isaRank[isaAVX2]
	gemmKernel = kernelFor(name)
	return nil
}

// gemmKernels lists the micro-kernels this CPU can run (for tests).
func gemmKernels() []gemmMicro {
	var ks []gemmMicro
	for _, name := range []string{isaGeneric, isaAVX2, isaAVX512} {
		if isaRank[name] <= isaRank[bestISA()] {
			ks = append(ks, kernelFor(name))
		}
	}
	return ks
}
