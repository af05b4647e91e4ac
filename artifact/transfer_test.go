package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/internal/tlsid"
)

// genBlob returns a reader of n deterministic pseudo-random bytes (never
// held in memory whole) and their digest.
func genBlob(n int64, seed byte) (func() io.Reader, string) {
	mk := func() io.Reader {
		var s [32]byte
		s[0] = seed
		return io.LimitReader(rand.NewChaCha8(s), n)
	}
	h := sha256.New()
	io.Copy(h, mk())
	return mk, hex.EncodeToString(h.Sum(nil))
}

// heapSampler records, while it runs, the peak HeapInuse (which includes
// garbage not yet collected) and the peak live heap (what the last GC
// found reachable: the memory the transfer really holds).
type heapSampler struct {
	peakInuse, peakLive atomic.Uint64
	stop                chan struct{}
	stopOnce            sync.Once
	wg                  sync.WaitGroup
}

func sampleHeap() *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		var ms runtime.MemStats
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			metrics.Read(live)
			h.peakInuse.Store(max(h.peakInuse.Load(), ms.HeapInuse))
			h.peakLive.Store(max(h.peakLive.Load(), live[0].Value.Uint64()))
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

// done stops the sampler and returns the peaks. It may be called more than
// once (a deferred call after an early return or tb.Fatal).
func (h *heapSampler) done() (inuse, live uint64) {
	h.stopOnce.Do(func() { close(h.stop) })
	h.wg.Wait()
	return h.peakInuse.Load(), h.peakLive.Load()
}

// transfer uploads and downloads (verifying) an n-byte blob over TLS on
// loopback and returns the peak heap in use and live heap above the
// baseline.
func transfer(tb testing.TB, n int64) (inuse, live uint64) {
	return transferOver(tb, n, true)
}

func transferOver(tb testing.TB, n int64, secure bool) (inuse, live uint64) {
	alice := newIdent(tb)
	var ts *testServer
	var c *Client
	if secure {
		ts = startServer(tb, tlsid.AllowIDs(alice.id))
		c = dial(tb, ts.addr, alice, ts.id.id)
	} else {
		ts = startServer(tb, nil)
		c = dial(tb, ts.addr, ident{}, "")
	}
	mk, d := genBlob(n, 1)
	ctx := context.Background()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	liveBase := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(liveBase)
	hs := sampleHeap()
	defer hs.done() // stops the sampler if a tb.Fatal below ends the test early
	if _, err := c.Upload(ctx, d, mk(), n); err != nil {
		tb.Fatal(err)
	}
	if got, err := c.Download(ctx, d, io.Discard); err != nil || got != n {
		tb.Fatalf("Download = %d, %v", got, err)
	}
	pi, pl := hs.done()
	return sub(pi, ms.HeapInuse), sub(pl, liveBase[0].Value.Uint64())
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// liveBound is the most live heap an upload plus a download may add: a few
// chunk buffers on each side and gRPC's flow-control windows, not the blob.
// HeapInuse also counts garbage awaiting collection (gRPC allocates each
// received message), which the GC pacer lets grow to about the live heap
// again; inuseBound allows for that.
const (
	liveBound  = 16 << 20
	inuseBound = 96 << 20
)

func TestNoRaceTransferBoundedMemory(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("moves 128 MiB")
	}
	const n = 128 << 20
	inuse, live := transfer(t, n)
	t.Logf("128 MiB up and down: peak live heap +%.1f MiB, peak HeapInuse +%.1f MiB", float64(live)/(1<<20), float64(inuse)/(1<<20))
	checkHeap(t, n, inuse, live)
}

func checkHeap(tb testing.TB, n int64, inuse, live uint64) {
	tb.Helper()
	if live > liveBound || inuse > inuseBound {
		tb.Fatalf("moving %d MiB grew the live heap by %d MiB (bound %d) and HeapInuse by %d MiB (bound %d): memory must not scale with the blob",
			n>>20, live>>20, liveBound>>20, inuse>>20, inuseBound>>20)
	}
}

// BenchmarkTransfer1GiB uploads then downloads (verifying) a 1 GiB blob on
// loopback, over tlsid TLS and, as the baseline, plain text; MB/s counts
// both directions, and the peak heap must stay small.
func BenchmarkTransfer1GiB(b *testing.B) {
	const n = 1 << 30
	for _, secure := range []bool{false, true} {
		name := "plaintext"
		if secure {
			name = "tls"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(2 * n)
			var inuse, live uint64
			for i := 0; i < b.N; i++ {
				in, li := transferOver(b, n, secure)
				inuse, live = max(inuse, in), max(live, li)
			}
			b.ReportMetric(float64(live)/(1<<20), "peak-live-heap-MiB")
			b.ReportMetric(float64(inuse)/(1<<20), "peak-heapinuse-MiB")
			checkHeap(b, n, inuse, live)
		})
	}
}
