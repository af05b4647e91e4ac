package enginetest_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/engine/enginetest"
)

func newHostCache() engine.CacheDevice { return engine.NewHost().(engine.CacheDevice) }

// TestHostCache runs the CacheDevice suite on the Host device.
func TestHostCache(t *testing.T) {
	enginetest.TestCacheDevice(t, newHostCache)
}

// cacheMutants are Host devices with one cache operation subtly wrong, and
// the subtest of the CacheDevice suite that must catch each.
var cacheMutants = map[string]struct {
	dev     func() engine.CacheDevice
	subtest string
}{
	"attention-scale-off":  {func() engine.CacheDevice { return attnScale{newHostCache()} }, "CachedAttention"},
	"attention-one-short":  {func() engine.CacheDevice { return attnShort{newHostCache()} }, "CachedAttention"},
	"scatter-drops-bad-id": {func() engine.CacheDevice { return scatterNoCheck{newHostCache()} }, "CacheErrors"},
	"scatter-misses-a-row": {func() engine.CacheDevice { return scatterFirstOnly{newHostCache()} }, "ScatterRows"},
}

// TestCacheMutant runs the CacheDevice suite on the mutant named by
// $ENGINETEST_CACHE_MUTANT (run, and expected to fail, by
// TestCacheSuiteCatchesMutants).
func TestCacheMutant(t *testing.T) {
	m, ok := cacheMutants[os.Getenv("ENGINETEST_CACHE_MUTANT")]
	if !ok {
		t.Skip("run by TestCacheSuiteCatchesMutants")
	}
	enginetest.TestCacheDevice(t, m.dev)
}

// TestCacheSuiteCatchesMutants checks that the CacheDevice suite fails, in
// the right subtest, on each broken device.
func TestCacheSuiteCatchesMutants(t *testing.T) {
	for name, m := range cacheMutants {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCacheMutant$", "-test.v")
		cmd.Env = append(os.Environ(), "ENGINETEST_CACHE_MUTANT="+name)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s: the suite passed a broken device", name)
			continue
		}
		if !strings.Contains(string(out), "--- FAIL: TestCacheMutant/"+m.subtest+" ") {
			t.Errorf("%s: subtest %s did not fail; output:\n%s", name, m.subtest, out)
		}
	}
}

type attnScale struct{ engine.CacheDevice }

func (d attnScale) CachedAttention(out, q, k, v engine.Buffer, at engine.IntBuffer, heads, kvHeads, hd int, scale float32) {
	d.CacheDevice.CachedAttention(out, q, k, v, at, heads, kvHeads, hd, scale*1.01)
}

// attnShort leaves out each row's last position (its own key) where it
// has more than one.
type attnShort struct{ engine.CacheDevice }

func (d attnShort) CachedAttention(out, q, k, v engine.Buffer, at engine.IntBuffer, heads, kvHeads, hd int, scale float32) {
	n := at.Len()
	short := d.AllocInt(n)
	host := make([]int32, n)
	// Recover at's values through Embed of a table of row numbers.
	tbl := make([]float32, 1<<16)
	for i := range tbl {
		tbl[i] = float32(i)
	}
	t := d.Alloc(len(tbl))
	d.Write(t, 0, tbl)
	vals := d.Alloc(n)
	d.Embed(vals, t, at, 1)
	f := make([]float32, n)
	d.Read(f, vals, 0)
	for i := range host {
		host[i] = int32(f[i])
		if i%2 == 1 && host[i] > 0 {
			host[i]--
		}
	}
	d.WriteInt(short, host)
	d.CacheDevice.CachedAttention(out, q, k, v, short, heads, kvHeads, hd, scale)
	for _, b := range []engine.Buffer{t, vals} {
		d.Free(b)
	}
	d.FreeInt(short)
}

type scatterNoCheck struct{ engine.CacheDevice }

func (d scatterNoCheck) ScatterRows(dst, src engine.Buffer, idx engine.IntBuffer, dim int) {}

// scatterFirstOnly writes the first row only.
type scatterFirstOnly struct{ engine.CacheDevice }

func (d scatterFirstOnly) ScatterRows(dst, src engine.Buffer, idx engine.IntBuffer, dim int) {
	if idx.Len() <= 1 {
		d.CacheDevice.ScatterRows(dst, src, idx, dim)
		return
	}
	one := d.AllocInt(1)
	f := make([]float32, 1)
	tbl := d.Alloc(1 << 16)
	vals := make([]float32, 1<<16)
	for i := range vals {
		vals[i] = float32(i)
	}
	d.Write(tbl, 0, vals)
	got := d.Alloc(idx.Len())
	d.Embed(got, tbl, idx, 1)
	d.Read(f, got, 0)
	d.WriteInt(one, []int32{int32(f[0])})
	part := d.Alloc(dim)
	row := make([]float32, dim)
	d.Read(row, src, 0)
	d.Write(part, 0, row)
	d.CacheDevice.ScatterRows(dst, part, one, dim)
	for _, b := range []engine.Buffer{tbl, got, part} {
		d.Free(b)
	}
	d.FreeInt(one)
}
