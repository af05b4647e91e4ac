// Package kernels owns the numeric primitives that fedtune's aggregator and
// trainer share: weighted accumulation, scaling, norms and clipping,
// pairwise distances, coordinate-wise median and trimmed mean, int8
// quantization with per-block scales, and finite checks, all over []float32.
//
// Backend is the seam. Three implementations give bit-identical results:
//
//   - Reference: plain sequential loops, written to be obviously correct;
//     the oracle every other backend is tested against.
//   - CPU (Default, NewCPU): the default. Each call is split into fixed
//     chunks run on the worker pool (no goroutine per call),
//     allocation-free once warm. WeightedSum keeps a
//     tile of the accumulator in L1 while every input adds into it, four
//     inputs per pass, each element still taking its terms in k order; on
//     amd64 its inner loop is AVX-512 or AVX2 assembly (chosen at start from
//     the CPU's features; build tag purego forces pure Go), which multiplies
//     and adds in separate instructions, never FMA, so it rounds as the Go
//     code does. Results never depend on the thread count.
//   - behind the build tag "fedcuda", a GPU backend (kernels/cuda), bit for
//     bit the same; Open("cuda") returns it where it is built in. The tag
//     is not "cuda": under that one Gorgonia switches to its own cuDNN
//     engine and nothing that imports package model builds.
//
// WeightedMean (the WeightedMeaner extension) is FedAvg's whole step —
// accumulate, scale, round to float32 — in one pass: on amd64 the CPU
// backend keeps the float64 accumulators in registers across up to 16
// inputs, so the only memory traffic is the inputs read once and the result
// written once. It gives exactly the bits of WeightedSum followed by Store.
//
// The exact order of every floating-point operation is part of each
// method's contract (see Backend), so that `fedtune aggregate` gives the
// same digest on any machine and any backend.
//
// The worker pool (Job, Task, PoolSize) is one process-wide set of worker
// goroutines: a Job runs a loop's chunks on its caller and on the workers
// that join while it is open, so a caller never waits for a worker busy
// elsewhere and loops may nest. The CPU backend and model/engine's Host
// device both run on it.
//
// kernels imports nothing else of fedtune's.
package kernels
