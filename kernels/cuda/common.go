//go:build fedcuda || fedcudaemu

package cuda

// This file is shared by the GPU build (tag fedcuda: context.go, blas.go,
// initguard.go on gorgonia.org/cu) and the CPU emulation (tag fedcudaemu
// alone: emu.go, emu.cpp): the errors, the embedded PTX's kernel table, the
// checks of Launch's and the copies' arguments, and the Sgemm fallback
// kernel's launch.

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"regexp"
	"sort"
)

// ErrNoDevice is wrapped by the error Open returns when the CUDA driver
// cannot be initialised or has no such GPU: no NVIDIA driver, no GPU, or a
// driver older than the PTX needs.
var ErrNoDevice = errors.New("cuda: no usable GPU")

// ErrClosed is returned by the methods of a Context after Close.
var ErrClosed = errors.New("cuda: context is closed")

// ErrNoKernel is wrapped by Launch's error for a kernel name that none of
// the embedded PTX modules defines.
var ErrNoKernel = errors.New("cuda: no such kernel")

// ErrNoBLAS is wrapped by the error Sgemm and SgemmStridedBatched return
// when no cuBLAS library could be loaded.
var ErrNoBLAS = errors.New("cuda: cuBLAS unavailable")

// ptxFiles holds the PTX that `make kernels` generates from the .cu sources
// beside this file. Every kernel is extern "C" and its name is unique across
// the files, so a kernel is found by its name alone.
//
//go:embed ptx/*.ptx
var ptxFiles embed.FS

// entryRE finds the kernels a PTX file defines.
var entryRE = regexp.MustCompile(`(?m)^\s*(?:\.visible\s+|\.weak\s+)?\.entry\s+([A-Za-z_$][A-Za-z0-9_$]*)\s*\(`)

// embeddedPTX returns the embedded PTX files (sorted by name) and, for
// each kernel they define, the file defining it; a kernel defined twice is
// an error.
func embeddedPTX() (names []string, from map[string]string, err error) {
	names, err = fs.Glob(ptxFiles, "ptx/*.ptx")
	if err != nil {
		return nil, nil, fmt.Errorf("cuda: listing the embedded PTX: %w", err)
	}
	sort.Strings(names)
	from = map[string]string{}
	for _, name := range names {
		src, err := ptxFiles.ReadFile(name)
		if err != nil {
			return nil, nil, fmt.Errorf("cuda: reading embedded %s: %w", name, err)
		}
		for _, m := range entryRE.FindAllSubmatch(src, -1) {
			k := string(m[1])
			if prev, dup := from[k]; dup {
				return nil, nil, fmt.Errorf("cuda: kernel %q is defined by both %s and %s: kernel names must be unique", k, prev, path.Base(name))
			}
			from[k] = path.Base(name)
		}
	}
	return names, from, nil
}

// ptr offsets a device address by byteOff bytes.
func ptr(d DevicePtr, byteOff int64) DevicePtr { return d + DevicePtr(byteOff) }

func checkCopy(op string, bytes int64, nilPtr bool) error {
	if bytes < 0 {
		return fmt.Errorf("cuda: %s: %d bytes, want >= 0", op, bytes)
	}
	if nilPtr {
		return fmt.Errorf("cuda: %s: nil pointer", op)
	}
	return nil
}

// maxLaunchArgs bounds Launch's argument count.
const maxLaunchArgs = 64

// launchSlots checks a launch's shape and packs its arguments, one 8-byte
// slot each: a value narrower than 8 bytes sits in the slot's low half,
// where a little-endian reader of the kernel parameter's width finds it.
func launchSlots(kernel string, grid, block [3]int, sharedBytes int, args []any) (*[maxLaunchArgs]uint64, error) {
	for i := range 3 {
		if grid[i] < 1 || block[i] < 1 || grid[i] > math.MaxInt32 || block[i] > 1024 {
			return nil, fmt.Errorf("cuda: Launch %s: grid %v block %v: every dimension must be >= 1 (block <= 1024)", kernel, grid, block)
		}
	}
	if sharedBytes < 0 {
		return nil, fmt.Errorf("cuda: Launch %s: %d bytes of shared memory, want >= 0", kernel, sharedBytes)
	}
	if len(args) > maxLaunchArgs {
		return nil, fmt.Errorf("cuda: Launch %s: %d arguments, at most %d", kernel, len(args), maxLaunchArgs)
	}
	var slots [maxLaunchArgs]uint64
	for i, a := range args {
		switch v := a.(type) {
		case DevicePtr:
			slots[i] = uint64(v)
		case int32:
			slots[i] = uint64(uint32(v))
		case uint32:
			slots[i] = uint64(v)
		case int64:
			slots[i] = uint64(v)
		case uint64:
			slots[i] = v
		case float32:
			slots[i] = uint64(math.Float32bits(v))
		case float64:
			slots[i] = math.Float64bits(v)
		default:
			return nil, fmt.Errorf("cuda: Launch %s: argument %d has type %T; want DevicePtr, int32, int64, uint32, uint64, float32 or float64", kernel, i, a)
		}
	}
	return &slots, nil
}

func checkGemm(op string, ints ...int) error {
	for _, v := range ints {
		if v < 0 || v > math.MaxInt32 {
			return fmt.Errorf("cuda: %s: size or leading dimension %d out of range [0, 2^31)", op, v)
		}
	}
	return nil
}

// gemmTile is blas_sgemm's tile edge; a block of gemmTile² threads computes
// one tile of C.
const gemmTile = 16

// sgemmKernel queues blas_sgemm on d: the fallback behind Sgemm and
// SgemmStridedBatched. It checks the leading dimensions as cuBLAS does, so
// a bad call is an error rather than an out-of-bounds access.
func sgemmKernel(d device, transA, transB bool, m, n, k int, alpha float32, a DevicePtr, lda int, sa int64, b DevicePtr, ldb int, sb int64, beta float32, c DevicePtr, ldc int, sc int64, batch int) error {
	rowsA, rowsB := m, k
	if transA {
		rowsA = k
	}
	if transB {
		rowsB = n
	}
	if lda < max(1, rowsA) || ldb < max(1, rowsB) || ldc < max(1, m) {
		return fmt.Errorf("cuda: Sgemm m=%d n=%d k=%d: leading dimensions lda=%d ldb=%d ldc=%d too small (want >= %d, %d, %d)",
			m, n, k, lda, ldb, ldc, max(1, rowsA), max(1, rowsB), max(1, m))
	}
	if m == 0 || n == 0 || batch == 0 {
		return nil
	}
	tiles := int64((m+gemmTile-1)/gemmTile) * int64((n+gemmTile-1)/gemmTile) * int64(batch)
	flag := func(t bool) int32 {
		if t {
			return 1
		}
		return 0
	}
	return d.Launch("blas_sgemm", [3]int{int(min(tiles, 1<<16)), 1, 1}, [3]int{gemmTile * gemmTile, 1, 1}, 0,
		flag(transA), flag(transB), int32(m), int32(n), int32(k), alpha,
		a, int32(lda), sa, b, int32(ldb), sb, beta, c, int32(ldc), sc, int32(batch))
}
