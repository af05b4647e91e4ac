package kernels

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden.txt")

// goldenInputs builds fixed inputs from the PCG bit stream alone (a
// specified algorithm), so they never change with the Go release.
func goldenInputs() (xs [][]float32, w []float64) {
	src := rand.NewPCG(2026, 11)
	const k, n = 5, 3*ReduceBlock + 1001
	xs = make([][]float32, k)
	for j := range xs {
		xs[j] = make([]float32, n)
		for i := range xs[j] {
			u := src.Uint64()
			// A mantissa in [-1, 1) times 2^e, e in [-20, 11].
			m := float64(int32(u>>32)) / (1 << 31)
			xs[j][i] = float32(math.Ldexp(m, int(u&31)-20))
		}
	}
	w = []float64{100, 250, 1, 3000, 17}
	return xs, w
}

func hashFloats32(x []float32) string {
	h := sha256.New()
	var b [4]byte
	for _, v := range x {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func hashFloats64(x []float64) string {
	h := sha256.New()
	var b [8]byte
	for _, v := range x {
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(v))
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// goldenResults runs every method on the golden inputs.
func goldenResults(be Backend) []string {
	xs, w := goldenInputs()
	n := len(xs[0])
	acc := make([]float64, n)
	be.WeightedSum(acc, w, xs)
	dst := make([]float32, n)
	be.Store(dst, acc, 1/3368.0)
	var out []string
	add := func(name, sum string) { out = append(out, name+" "+sum) }
	add("WeightedSum", hashFloats64(acc))
	add("Store", hashFloats32(dst))
	clear(dst)
	WeightedMean(be, dst, w, xs, 1/3368.0)
	add("WeightedMean", hashFloats32(dst))
	sc := append([]float32(nil), xs[0]...)
	be.Scale(sc, 0.37)
	add("Scale", hashFloats32(sc))
	add("SquaredNorm", hashFloats64([]float64{be.SquaredNorm(xs[1])}))
	d := make([]float64, len(xs)*len(xs))
	be.PairwiseSquaredDistances(d, xs)
	add("PairwiseSquaredDistances", hashFloats64(d))
	be.Median(dst, xs)
	add("Median", hashFloats32(dst))
	be.Median(dst, xs[:4])
	add("Median/even", hashFloats32(dst))
	be.TrimmedMean(dst, xs, 1)
	add("TrimmedMean", hashFloats32(dst))
	q := make([]int8, n)
	scales := make([]float32, (n+63)/64)
	be.QuantizeInt8(q, scales, xs[2], 64)
	qf := make([]float32, n)
	for i, v := range q {
		qf[i] = float32(v)
	}
	add("QuantizeInt8/q", hashFloats32(qf))
	add("QuantizeInt8/scales", hashFloats32(scales))
	be.DequantizeInt8(dst, q, scales, 64)
	add("DequantizeInt8", hashFloats32(dst))
	return out
}

// TestGolden pins the bits of every method on fixed inputs. A change here
// changes every aggregate's digest: it needs a reason, and -update.
func TestGolden(t *testing.T) {
	path := filepath.Join("testdata", "golden.txt")
	ref := goldenResults(Reference{})
	for _, threads := range []int{1, 3} {
		got := goldenResults(NewCPU(threads))
		for i := range ref {
			if got[i] != ref[i] {
				t.Errorf("cpu threads=%d: %s, reference %s", threads, got[i], ref[i])
			}
		}
	}
	if *update {
		body := "# SHA-256 of each method's output bits on goldenInputs (see golden_test.go).\n" + strings.Join(ref, "\n") + "\n"
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGolden -update)", err)
	}
	defer f.Close()
	var want []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			want = append(want, line)
		}
	}
	if len(want) != len(ref) {
		t.Fatalf("%s has %d entries, want %d (run with -update?)", path, len(want), len(ref))
	}
	for i := range ref {
		if ref[i] != want[i] {
			t.Errorf("%s:\n got %s\nwant %s", path, ref[i], want[i])
		}
	}
}
