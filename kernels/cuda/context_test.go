//go:build fedcuda || fedcudaemu

package cuda

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

// gpuOrdinal is the GPU the tests use: $FEDTUNE_CUDA_DEVICE, else 0.
func gpuOrdinal(t testing.TB) int {
	t.Helper()
	s := os.Getenv("FEDTUNE_CUDA_DEVICE")
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("FEDTUNE_CUDA_DEVICE=%q: %v", s, err)
	}
	return n
}

var (
	sharedOnce sync.Once
	sharedCtx  *Context
	sharedErr  error
)

// testContext returns a Context shared by the package's tests, or skips the
// test with the reason when this machine has no usable GPU.
func testContext(t testing.TB) *Context {
	t.Helper()
	sharedOnce.Do(func() { sharedCtx, sharedErr = Open(gpuOrdinal(t)) })
	if sharedErr != nil {
		if errors.Is(sharedErr, ErrNoDevice) {
			t.Skipf("no GPU here (%v): the CUDA tests need one", sharedErr)
		}
		t.Fatalf("Open: %v", sharedErr)
	}
	return sharedCtx
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedCtx != nil {
		if err := sharedCtx.Close(); err != nil {
			println("closing the shared context:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

// TestOpenWithoutGPU checks that Open reports a missing GPU as an error
// wrapping ErrNoDevice (the process survives gorgonia.org/cu's init), and
// that an ordinal past the last GPU is refused the same way.
func TestOpenWithoutGPU(t *testing.T) {
	c, err := Open(gpuOrdinal(t))
	if err != nil {
		if !errors.Is(err, ErrNoDevice) {
			t.Fatalf("Open failed without wrapping ErrNoDevice: %v", err)
		}
		t.Logf("no GPU, as Open reports: %v", err)
		return
	}
	t.Logf("opened %s", c.Name())
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Alloc(16); !errors.Is(err, ErrClosed) {
		t.Fatalf("Alloc after Close: %v, want ErrClosed", err)
	}
	if _, err := Open(1 << 20); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("Open(1<<20): %v, want ErrNoDevice", err)
	}
	if _, err := Open(-1); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("Open(-1): %v, want ErrNoDevice", err)
	}
}

// deviceCopy allocates room for x on the GPU and copies x there.
func deviceCopy(t testing.TB, c *Context, x []float32) DevicePtr {
	t.Helper()
	p, err := c.Alloc(int64(max(len(x), 1)) * 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(x) > 0 {
		if err := c.HtoD(p, unsafe.Pointer(&x[0]), int64(len(x))*4); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// hostCopy returns n float32 copied from p.
func hostCopy(t testing.TB, c *Context, p DevicePtr, n int) []float32 {
	t.Helper()
	x := make([]float32, n)
	if n > 0 {
		if err := c.DtoH(unsafe.Pointer(&x[0]), p, int64(n)*4); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

func TestContextMemory(t *testing.T) {
	c := testContext(t)
	if !strings.HasPrefix(c.Name(), "cuda:") {
		t.Errorf("Name() = %q", c.Name())
	}
	t.Logf("%s; kernels %v", c.Name(), c.Kernels())
	if lib, err := BLASLibrary(); err != nil {
		t.Logf("cuBLAS: %v", err)
	} else {
		t.Logf("cuBLAS: %s", lib)
	}
	const n = 1<<20 + 3
	p, err := c.Alloc(n * 4)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free(p)
	for i, v := range hostCopy(t, c, p, n) {
		if v != 0 || math.Signbit(float64(v)) {
			t.Fatalf("Alloc: element %d = %v, want +0", i, v)
		}
	}
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(i) - 7.5
	}
	if err := c.HtoD(p, unsafe.Pointer(&x[0]), n*4); err != nil {
		t.Fatal(err)
	}
	q, err := c.Alloc(n * 4)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free(q)
	if err := c.DtoD(q, p, n*4); err != nil {
		t.Fatal(err)
	}
	if got := hostCopy(t, c, q, n); !slices.Equal(got, x) {
		t.Fatal("HtoD, DtoD, DtoH round trip changed the data")
	}
	if err := c.Memset(ptr(q, 4*10), 4*5); err != nil {
		t.Fatal(err)
	}
	got := hostCopy(t, c, q, n)
	for i := range got {
		want := x[i]
		if i >= 10 && i < 15 {
			want = 0
		}
		if got[i] != want {
			t.Fatalf("after Memset: [%d] = %v, want %v", i, got[i], want)
		}
	}
	if err := c.Launch("agg_scale", [3]int{4, 1, 1}, [3]int{256, 1, 1}, 0, q, float32(2), int64(n)); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := hostCopy(t, c, q, 20); got[3] != 2*x[3] || got[12] != 0 {
		t.Fatalf("after agg_scale: %v", got)
	}
}

func TestContextErrors(t *testing.T) {
	c := testContext(t)
	if _, err := c.Alloc(0); err == nil {
		t.Error("Alloc(0) succeeded")
	}
	if err := c.Launch("no_such_kernel", [3]int{1, 1, 1}, [3]int{1, 1, 1}, 0); !errors.Is(err, ErrNoKernel) {
		t.Errorf("unknown kernel: %v", err)
	}
	if err := c.Launch("agg_scale", [3]int{1, 1, 1}, [3]int{1, 1, 1}, 0, DevicePtr(0), 2, int64(1)); err == nil || !strings.Contains(err.Error(), "argument 1 has type int") {
		t.Errorf("int argument: %v", err)
	}
	if err := c.Launch("agg_scale", [3]int{0, 1, 1}, [3]int{1, 1, 1}, 0); err == nil {
		t.Error("zero grid accepted")
	}
	if err := c.HtoD(0, nil, 4); err == nil {
		t.Error("HtoD to nil accepted")
	}
	if err := c.Sync(); err != nil {
		t.Fatalf("the errors above left the stream failed: %v", err)
	}
}

// TestContextConcurrent drives one Context from many goroutines (each on
// whatever OS thread it lands on).
func TestContextConcurrent(t *testing.T) {
	c := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := make([]float32, 4099)
			for i := range x {
				x[i] = float32(g*10000 + i)
			}
			for range 10 {
				p, err := c.Alloc(int64(len(x)) * 4)
				if err != nil {
					errs <- err
					return
				}
				err = c.HtoD(p, unsafe.Pointer(&x[0]), int64(len(x))*4)
				if err == nil {
					err = c.Launch("agg_scale", [3]int{2, 1, 1}, [3]int{128, 1, 1}, 0, p, float32(0.5), int64(len(x)))
				}
				y := make([]float32, len(x))
				if err == nil {
					err = c.DtoH(unsafe.Pointer(&y[0]), p, int64(len(x))*4)
				}
				c.Free(p)
				if err != nil {
					errs <- err
					return
				}
				for i := range y {
					if y[i] != x[i]*0.5 {
						errs <- fmt.Errorf("goroutine %d: [%d] = %v, want %v", g, i, y[i], x[i]*0.5)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// gemmRef computes C = alpha·op(A)·op(B) + beta·C column-major in float64.
func gemmRef(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	at := func(i, l int) float64 {
		if ta {
			return float64(a[l+i*lda])
		}
		return float64(a[i+l*lda])
	}
	bt := func(l, j int) float64 {
		if tb {
			return float64(b[j+l*ldb])
		}
		return float64(b[l+j*ldb])
	}
	for j := range n {
		for i := range m {
			var s float64
			for l := range k {
				s += at(i, l) * bt(l, j)
			}
			c[i+j*ldc] = float32(float64(alpha)*s + float64(beta)*float64(c[i+j*ldc]))
		}
	}
}

// gemmFunc is Sgemm's batched form on some device.
type gemmFunc func(ta, tb bool, m, n, k int, alpha float32, a DevicePtr, lda int, sa int64, b DevicePtr, ldb int, sb int64, beta float32, c DevicePtr, ldc int, sc int64, batch int) error

// checkGemm runs gemm on d over shapes, transposes, padded leading
// dimensions and batches, and compares with gemmRef.
func checkGemmCases(t *testing.T, d device, gemm gemmFunc) {
	t.Helper()
	r := rand.New(rand.NewPCG(21, 22))
	for _, tc := range []struct {
		ta, tb      bool
		m, n, k     int
		batch       int
		alpha, beta float32
	}{
		{false, false, 37, 29, 53, 1, 0.75, -0.5}, {true, false, 64, 16, 128, 1, 1, 0},
		{false, true, 5, 300, 7, 1, -2, 1}, {true, true, 128, 96, 64, 1, 0.5, 0.25},
		{false, false, 33, 17, 65, 3, 1, 0}, {true, false, 16, 64, 32, 4, 0.75, -0.5},
		{false, false, 1, 1, 1, 1, 1, 0}, {true, true, 3, 2, 40, 2, 1, 2},
	} {
		rowsA, colsA := tc.m, tc.k
		if tc.ta {
			rowsA, colsA = tc.k, tc.m
		}
		rowsB, colsB := tc.k, tc.n
		if tc.tb {
			rowsB, colsB = tc.n, tc.k
		}
		lda, ldb, ldc := rowsA+1, rowsB+2, tc.m+3
		sa, sb, sc := lda*colsA, ldb*colsB, ldc*tc.n
		normals := func(n int) []float32 { // no huge values: FP32 sums would overflow
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			return x
		}
		a, b, cc := normals(sa*tc.batch), normals(sb*tc.batch), normals(sc*tc.batch)
		if tc.beta == 0 {
			for i := range cc { // beta 0: C is not read, so NaNs there vanish
				if i%3 == 0 {
					cc[i] = float32(math.NaN())
				}
			}
		}
		want := slices.Clone(cc)
		for i := range tc.batch {
			if tc.beta == 0 {
				for j := range sc {
					want[i*sc+j] = 0
				}
			}
			gemmRef(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, a[i*sa:], lda, b[i*sb:], ldb, tc.beta, want[i*sc:], ldc)
			if tc.beta == 0 { // outside the m×n block C keeps its values
				for j := range sc {
					if row, col := j%ldc, j/ldc; row >= tc.m || col >= tc.n {
						want[i*sc+j] = cc[i*sc+j]
					}
				}
			}
		}
		da, db, dc := deviceCopyOn(t, d, a), deviceCopyOn(t, d, b), deviceCopyOn(t, d, cc)
		if err := gemm(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, da, lda, int64(sa), db, ldb, int64(sb), tc.beta, dc, ldc, int64(sc), tc.batch); err != nil {
			t.Fatal(err)
		}
		got := hostCopyOn(t, d, dc, len(cc))
		for i := range got {
			bothNaN := got[i] != got[i] && want[i] != want[i]
			if got[i] != want[i] && !bothNaN && !(math.Abs(float64(got[i]-want[i])) <= 1e-3*(1+math.Abs(float64(want[i])))) {
				t.Fatalf("%+v: C[%d] = %v, want %v", tc, i, got[i], want[i])
			}
		}
		d.Free(da)
		d.Free(db)
		d.Free(dc)
	}
	if err := gemm(false, false, 4, 4, 4, 1, 0, 3, 0, 0, 4, 0, 0, 0, 4, 0, 1); err == nil {
		t.Error("lda < m accepted")
	}
}

// deviceCopyOn and hostCopyOn are deviceCopy and hostCopy on any device.
func deviceCopyOn(t testing.TB, d device, x []float32) DevicePtr {
	t.Helper()
	p, err := d.Alloc(int64(max(len(x), 1)) * 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(x) > 0 {
		if err := d.HtoD(p, unsafe.Pointer(&x[0]), int64(len(x))*4); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func hostCopyOn(t testing.TB, d device, p DevicePtr, n int) []float32 {
	t.Helper()
	x := make([]float32, n)
	if n > 0 {
		if err := d.DtoH(unsafe.Pointer(&x[0]), p, int64(n)*4); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

// TestSgemm checks cuBLAS (when loaded) and fedtune's own kernel on the GPU.
func TestSgemm(t *testing.T) {
	c := testContext(t)
	t.Run("kernel", func(t *testing.T) {
		checkGemmCases(t, c, func(ta, tb bool, m, n, k int, alpha float32, a DevicePtr, lda int, sa int64, b DevicePtr, ldb int, sb int64, beta float32, cc DevicePtr, ldc int, sc int64, batch int) error {
			return sgemmKernel(c, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, cc, ldc, sc, batch)
		})
	})
	t.Run("cublas", func(t *testing.T) {
		if err := c.BLASError(); err != nil {
			t.Skipf("no cuBLAS here (Sgemm runs the kernel): %v", err)
		}
		checkGemmCases(t, c, c.SgemmStridedBatched)
		checkGemmCases(t, c, func(ta, tb bool, m, n, k int, alpha float32, a DevicePtr, lda int, sa int64, b DevicePtr, ldb int, sb int64, beta float32, cc DevicePtr, ldc int, sc int64, batch int) error {
			for i := range batch { // one Sgemm per product
				o := int64(i) * 4
				if err := c.Sgemm(ta, tb, m, n, k, alpha, ptr(a, o*sa), lda, ptr(b, o*sb), ldb, beta, ptr(cc, o*sc), ldc); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err := c.Sgemm(false, false, -1, 1, 1, 1, 0, 1, 0, 1, 0, 0, 1); err == nil {
		t.Error("negative m accepted")
	}
}

// TestEmbeddedPTX checks, without a GPU, that the embedded PTX defines
// every kernel the Backend launches, each once, and that it was compiled as
// `make kernels` does (no fused multiply-add in the aggregation kernels).
func TestEmbeddedPTX(t *testing.T) {
	names, from, err := embeddedPTX()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, "ptx/aggregate.ptx") {
		t.Fatalf("embedded PTX %v lacks ptx/aggregate.ptx", names)
	}
	for _, k := range []string{"agg_wsum16", "agg_store", "agg_scale", "agg_sqnorm_blocks", "agg_pair_blocks",
		"agg_order_stat", "agg_qscale", "agg_quant", "agg_dequant", "agg_first_nonfinite"} {
		if from[k] != "aggregate.ptx" {
			t.Errorf("kernel %s: defined in %q, want aggregate.ptx", k, from[k])
		}
	}
	src, err := ptxFiles.ReadFile("ptx/aggregate.ptx")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"fma.", ".ftz", ".approx"} {
		if strings.Contains(string(src), bad) {
			t.Errorf("aggregate.ptx contains %q: compile with make kernels (--fmad=false, no fast math)", bad)
		}
	}
	t.Logf("%d kernels in %v", len(from), names)
}

// TestPTXUpToDate recompiles every .cu file with nvcc as `make kernels`
// does and compares with the committed PTX (skipped without nvcc).
func TestPTXUpToDate(t *testing.T) {
	nvcc, err := exec.LookPath("nvcc")
	if err != nil {
		t.Skip("no nvcc here (make kernels installs it)")
	}
	srcs, err := filepath.Glob("*.cu")
	if err != nil {
		t.Fatal(err)
	}
	if len(srcs) == 0 {
		t.Skip("no .cu sources in the working directory (run from kernels/cuda)")
	}
	for _, src := range srcs {
		out := filepath.Join(t.TempDir(), "out.ptx")
		cmd := exec.Command(nvcc, "-ptx", "-arch=compute_70", "--fmad=false", "-O3", "-o", out, src)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nvcc %s: %v\n%s", src, err, msg)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		committed := "ptx/" + strings.TrimSuffix(src, ".cu") + ".ptx"
		want, err := ptxFiles.ReadFile(committed)
		if err != nil {
			t.Fatalf("%s has no committed %s: run make kernels", src, committed)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run make kernels", committed)
		}
	}
}
