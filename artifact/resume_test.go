package artifact

import (
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fedtune/fedtune/internal/tlsid"
)

// cuttingProxy forwards loopback TCP connections to target, and cuts its
// first connection once more than limit bytes have gone in the chosen
// direction: a link failing mid-transfer, below TLS and gRPC.
type cuttingProxy struct {
	ln       net.Listener
	target   string
	limit    int64
	upstream bool // count client→server bytes (else server→client)
	conns    atomic.Int32
	cut      atomic.Bool
	wg       sync.WaitGroup
}

func newCuttingProxy(t *testing.T, target string, limit int64, upstream bool) *cuttingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttingProxy{ln: ln, target: target, limit: limit, upstream: upstream}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *cuttingProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		first := p.conns.Add(1) == 1
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		closeBoth := func() { c.Close(); s.Close() }
		pipe := func(dst, src net.Conn, counted bool) {
			defer p.wg.Done()
			defer closeBoth()
			var n int64
			buf := make([]byte, 32<<10)
			for {
				k, err := src.Read(buf)
				if k > 0 {
					n += int64(k)
					if first && counted && n > p.limit {
						p.cut.Store(true)
						return
					}
					if _, err := dst.Write(buf[:k]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}
		p.wg.Add(2)
		go pipe(s, c, p.upstream)
		go pipe(c, s, !p.upstream)
	}
}

func TestServiceResumesAfterConnectionCut(t *testing.T) {
	ctx := context.Background()
	alice := newIdent(t)
	ts := startServer(t, tlsid.AllowIDs(alice.id))
	data := randBytes(21, 6<<20+99)
	d := DigestOf(data)

	up := newCuttingProxy(t, ts.addr, 3<<20, true)
	c := dial(t, up.ln.Addr().String(), alice, ts.id.id)
	res, err := c.Upload(ctx, d, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if !up.cut.Load() || res.ResumedFrom == 0 {
		t.Fatalf("upload was not cut and resumed: cut=%v result=%+v", up.cut.Load(), res)
	}
	if res.Sent >= 2*int64(len(data)) {
		t.Fatalf("resumed upload sent %d bytes for a %d-byte blob", res.Sent, len(data))
	}
	if err := ts.store.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
	t.Logf("upload cut after ~3 MiB, resumed from %d", res.ResumedFrom)

	down := newCuttingProxy(t, ts.addr, 3<<20, false)
	c2 := dial(t, down.ln.Addr().String(), alice, ts.id.id)
	var buf bytes.Buffer
	if n, err := c2.Download(ctx, d, &buf); err != nil || n != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("Download through a cut link: n=%d err=%v", n, err)
	}
	if !down.cut.Load() || down.conns.Load() < 2 {
		t.Fatalf("download was not cut and resumed (cut=%v, connections=%d)", down.cut.Load(), down.conns.Load())
	}
	local := openStore(t, t.TempDir())
	down2 := newCuttingProxy(t, ts.addr, 3<<20, false)
	c3 := dial(t, down2.ln.Addr().String(), alice, ts.id.id)
	if _, err := c3.Fetch(ctx, d, local); err != nil || !down2.cut.Load() {
		t.Fatalf("Fetch through a cut link: %v (cut=%v)", err, down2.cut.Load())
	}
	if err := local.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
}

func TestServiceConcurrentUploadsOfOneBlob(t *testing.T) {
	ctx := context.Background()
	alice := newIdent(t)
	ts := startServer(t, tlsid.AllowIDs(alice.id))
	data := randBytes(22, 2<<20+1)
	d := DigestOf(data)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := dial(t, ts.addr, alice, ts.id.id)
			_, errs[i] = c.Upload(ctx, d, bytes.NewReader(data), int64(len(data)))
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("uploader %d: %v", i, err)
		}
	}
	if got := counterValue(ts.metrics.Uploads.WithLabelValues("stored")); got != 1 {
		t.Errorf("stored %v times, want once (the others find it there)", got)
	}
	l, _ := ts.store.List()
	if len(l) != 1 {
		t.Fatalf("store lists %v", l)
	}
	if err := ts.store.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
}
