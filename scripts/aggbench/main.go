// Command aggbench is the Go half of scripts/bench-aggregate.sh: it measures
// the machine's parallel streaming-read ceiling, generates safetensors update
// files, and times the in-memory FedAvg kernel path (kernels.Default) over
// such files.
//
//	aggbench ceiling [-mib 1024] [-reps 7]
//	aggbench gen -dir D [-inputs 16] [-mib 64] [-tensors 4]
//	aggbench fedavg [-reps 5] FILE...
//
// Each measurement prints one "name value unit" line on stdout (the best of
// its repetitions); progress goes to stderr.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/model/safetensors"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: aggbench ceiling|gen|fedavg [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "ceiling":
		err = ceiling(os.Args[2:])
	case "gen":
		err = gen(os.Args[2:])
	case "fedavg":
		err = fedavg(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "aggbench:", err)
		os.Exit(1)
	}
}

// ceiling: every core sums its share of one buffer as uint64 words (with
// 256-bit loads on amd64, four independent chains elsewhere) so that the
// loads, not the adds, set the pace. GB/s = buffer bytes / wall time.
func ceiling(args []string) error {
	fs := flag.NewFlagSet("ceiling", flag.ExitOnError)
	mib := fs.Int("mib", 1024, "buffer size in MiB")
	reps := fs.Int("reps", 7, "repetitions (the best is reported)")
	fs.Parse(args)
	cb := newCeilingBuf(*mib)
	best := math.Inf(1)
	for range *reps {
		best = min(best, cb.rep())
	}
	var total uint64
	for _, s := range cb.sums {
		total += s
	}
	fmt.Fprintf(os.Stderr, "ceiling: %d threads, %d MiB, checksum %d\n", len(cb.sums), *mib, total)
	fmt.Printf("ceiling %.2f GB/s\n", cb.bytes()/best/1e9)
	return nil
}

// sumWordsGo sums w in four independent chains.
// ceilingBuf is the read-ceiling buffer and the state of its measurement.
type ceilingBuf struct {
	words []uint64
	sums  []uint64
}

func newCeilingBuf(mib int) *ceilingBuf {
	words := make([]uint64, mib<<20/8)
	for i := range words {
		words[i] = uint64(i)
	}
	return &ceilingBuf{words: words, sums: make([]uint64, runtime.GOMAXPROCS(0))}
}

// rep reads the whole buffer once on every core and returns the seconds
// it took. Shares are claimed 4 MiB at a time, so that a core the
// scheduler slows (on a shared machine) does not hold the others back.
func (cb *ceilingBuf) rep() float64 {
	const piece = 4 << 20 / 8
	words := cb.words
	npieces := (len(words) + piece - 1) / piece
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for t := range cb.sums {
		wg.Go(func() {
			var s uint64
			for {
				p := int(next.Add(1)) - 1
				if p >= npieces {
					break
				}
				s += sumWords(words[p*piece : min((p+1)*piece, len(words))])
			}
			cb.sums[t] = s
		})
	}
	wg.Wait()
	return time.Since(start).Seconds()
}

// bytes returns the buffer's size in bytes.
func (cb *ceilingBuf) bytes() float64 { return float64(len(cb.words) * 8) }

func sumWordsGo(w []uint64) uint64 {
	var s0, s1, s2, s3 uint64
	i := 0
	for ; i+4 <= len(w); i += 4 {
		v := w[i : i+4 : i+4]
		s0 += v[0]
		s1 += v[1]
		s2 += v[2]
		s3 += v[3]
	}
	for ; i < len(w); i++ {
		s0 += w[i]
	}
	return s0 + s1 + s2 + s3
}

// gen writes inputs update files of mib MiB of F32 each, split into tensors
// tensors, with num_samples = 100·(k+1) in the metadata. Values are a cheap
// deterministic sequence that differs per file.
func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	dir := fs.String("dir", "", "output directory")
	inputs := fs.Int("inputs", 16, "number of update files")
	mib := fs.Int("mib", 64, "MiB of F32 data per file")
	tensors := fs.Int("tensors", 4, "tensors per file")
	fs.Parse(args)
	if *dir == "" {
		return errors.New("gen: -dir is required")
	}
	per := *mib << 20 / 4 / *tensors
	specs := make([]safetensors.TensorInfo, *tensors)
	for i := range specs {
		specs[i] = safetensors.TensorInfo{Name: fmt.Sprintf("model.layers.%d.weight", i), DType: safetensors.F32, Shape: []int{per / 1024, 1024}}
	}
	errs := make(chan error, *inputs)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for k := range *inputs {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errs <- writeUpdate(filepath.Join(*dir, fmt.Sprintf("update-%03d.safetensors", k)), specs, k, per)
		}()
	}
	for range *inputs {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

func writeUpdate(path string, specs []safetensors.TensorInfo, k, per int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	sw, err := safetensors.NewWriter(bw, specs, map[string]string{"num_samples": strconv.Itoa(100 * (k + 1))})
	if err != nil {
		f.Close()
		return err
	}
	vals := make([]float32, 1<<16)
	x := uint64(k+1) * 0x9E3779B97F4A7C15
	for range sw.Tensors() {
		for done := 0; done < per; done += len(vals) {
			v := vals[:min(len(vals), per-done)]
			for i := range v {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
				v[i] = float32(int32(x>>32)) * (1.0 / (1 << 31)) * 0.01
			}
			if _, err := sw.Write(unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))); err != nil {
				f.Close()
				return err
			}
		}
	}
	if err := sw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// fedavg loads the files' F32 tensors into memory (one flat vector per
// file, tensors in name order) and times the FedAvg kernel path: zero the
// float64 accumulator, WeightedSum by num_samples, Store scaled by 1/Σn
// (fused into one pass by kernels.WeightedMean unless -unfused), chunk by
// chunk over the coordinates as the streaming aggregator does.
// GB/s = input bytes / time.
func fedavg(args []string) error {
	fs := flag.NewFlagSet("fedavg", flag.ExitOnError)
	reps := fs.Int("reps", 5, "repetitions (the best is reported)")
	chunk := fs.Int("chunk", 1<<18, "elements per streaming chunk, as the aggregator reduces (0: the whole vector at once)")
	unfused := fs.Bool("unfused", false, "clear, WeightedSum and Store instead of the fused kernels.WeightedMean")
	ceilMiB := fs.Int("ceiling-mib", 1024, "also measure the read ceiling on a buffer of this many MiB, one repetition before each FedAvg repetition (0: off)")
	fs.Parse(args)
	files := fs.Args()
	if len(files) == 0 {
		return errors.New("fedavg: no input files")
	}
	xs := make([][]float32, len(files))
	w := make([]float64, len(files))
	var total float64
	for k, path := range files {
		x, n, err := load(path)
		if err != nil {
			return err
		}
		if k > 0 && len(x) != len(xs[0]) {
			return fmt.Errorf("%s: %d values, %s has %d", path, len(x), files[0], len(xs[0]))
		}
		xs[k], w[k] = x, n
		total += n
	}
	be := kernels.Default()
	n := len(xs[0])
	c := *chunk
	if c <= 0 || c > n {
		c = n
	}
	acc := make([]float64, c)
	dst := make([]float32, n)
	part := make([][]float32, len(xs))
	var cb *ceilingBuf
	if *ceilMiB > 0 {
		cb = newCeilingBuf(*ceilMiB)
	}
	best, bestCeil := math.Inf(1), math.Inf(1)
	for range *reps {
		if cb != nil {
			bestCeil = min(bestCeil, cb.rep())
		}
		start := time.Now()
		for lo := 0; lo < n; lo += c {
			hi := min(lo+c, n)
			for k, x := range xs {
				part[k] = x[lo:hi]
			}
			if *unfused {
				a := acc[:hi-lo]
				clear(a)
				be.WeightedSum(a, w, part)
				be.Store(dst[lo:hi], a, 1/total)
			} else {
				kernels.WeightedMean(be, dst[lo:hi], w, part, 1/total)
			}
		}
		best = min(best, time.Since(start).Seconds())
	}
	bytes := float64(len(xs) * len(xs[0]) * 4)
	fmt.Fprintf(os.Stderr, "fedavg kernel: %d inputs × %d values, chunks of %d, %s backend, fused %v, %d threads, best %.3fs, out[0] = %v\n",
		len(xs), n, c, be.Name(), !*unfused, runtime.GOMAXPROCS(0), best, dst[0])
	fmt.Printf("fedavg_kernel %.2f GB/s\n", bytes/best/1e9)
	if cb != nil {
		fmt.Printf("ceiling %.2f GB/s\n", cb.bytes()/bestCeil/1e9)
	}
	return nil
}

func load(path string) ([]float32, float64, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	n, err := strconv.ParseFloat(f.Metadata()["num_samples"], 64)
	if err != nil || n <= 0 {
		return nil, 0, fmt.Errorf("%s: num_samples %q is not a positive number", path, f.Metadata()["num_samples"])
	}
	var size int64
	for _, t := range f.Tensors() {
		if t.DType != safetensors.F32 {
			return nil, 0, fmt.Errorf("%s: tensor %q is %s, want F32", path, t.Name, t.DType)
		}
		size += t.NumElements()
	}
	out := make([]float32, size)
	bytes := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(out))), 4*len(out))
	var off int64
	for _, t := range f.Tensors() {
		if err := f.ReadRawAt(t.Name, 0, bytes[off:off+t.NumBytes()]); err != nil {
			return nil, 0, err
		}
		off += t.NumBytes()
	}
	return out, n, nil
}
