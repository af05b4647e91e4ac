package trainer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// publishedStore runs a real artifact server (plain text, loopback) on a
// fresh store and returns a client and the store.
func publishedStore(t *testing.T) (*artifact.Client, *artifact.Store) {
	t.Helper()
	st, err := artifact.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := artifact.NewServer(artifact.ServerConfig{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, tlsid.InsecureServerOption()) }()
	c, err := artifact.Dial(ln.Addr().String(), tlsid.InsecureDialOption())
	if err != nil {
		t.Fatal(err)
	}
	c.Retries = 0
	t.Cleanup(func() {
		c.Close()
		cancel()
		<-done
		st.Close()
	})
	return c, st
}

func publishedFixture(t *testing.T, c *artifact.Client) (*dspub.Signed, *datasets.Dataset) {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	seed[1] = 3
	key := ed25519.NewKeyFromSeed(seed)
	d := &datasets.Dataset{Name: "lines"}
	for i := range 40 {
		d.Samples = append(d.Samples, datasets.Sample{ID: fmt.Sprint(i), Text: fmt.Sprintf("line %d of the published set", i)})
	}
	sm, err := PublishDataset(context.Background(), c, key, d, []byte("# Lines\nA card.\n"),
		datasets.PublishOptions{Name: "lines", Format: dspub.FormatText, Licence: "CC-BY-4.0", ShardSamples: 8})
	if err != nil {
		t.Fatal(err)
	}
	return sm, d
}

func TestPublishFetch(t *testing.T) {
	c, _ := publishedStore(t)
	sm, d := publishedFixture(t, c)
	dir := filepath.Join(t.TempDir(), "out")
	if err := FetchPublished(context.Background(), c, sm, dir); err != nil {
		t.Fatal(err)
	}
	back, err := datasets.Load(filepath.Join(dir, "data.jsonl"), datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The fetched samples give the published root, and the root of the
	// source dataset's private-data manifest too.
	hs, _ := datasets.SampleHashes(back)
	if r := datasets.NewTree(hs).Root(); fmt.Sprintf("%x", r) != sm.Root {
		t.Fatalf("fetched data gives root %x, published %s", r, sm.Root)
	}
	hs, _ = datasets.SampleHashes(d)
	if r := datasets.NewTree(hs).Root(); fmt.Sprintf("%x", r) != sm.Root {
		t.Fatalf("source data gives root %x, published %s", r, sm.Root)
	}
	if card, err := os.ReadFile(filepath.Join(dir, "README.md")); err != nil || !strings.HasPrefix(string(card), "# Lines") {
		t.Fatalf("card %q, %v", card, err)
	}
	r, err := OpenPublished(context.Background(), c, sm)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Range(context.Background(), 5, 19)
	if err != nil || len(got) != 14 {
		t.Fatalf("Range(5, 19) = %d samples, %v", len(got), err)
	}
	all, _ := dspubTexts(t, filepath.Join(dir, "data.jsonl"))
	for i, s := range got {
		if s != all[5+i] {
			t.Fatalf("range sample %d = %q, want %q", 5+i, s, all[5+i])
		}
	}
	if _, err := r.Range(context.Background(), 39, 41); err == nil {
		t.Fatal("a range past the end was read")
	}
}

func dspubTexts(t *testing.T, path string) ([]string, error) {
	t.Helper()
	d, err := datasets.Load(path, datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range d.Samples {
		out = append(out, s.Text)
	}
	return out, nil
}

func TestFetchTamperedShard(t *testing.T) {
	c, st := publishedStore(t)
	sm, _ := publishedFixture(t, c)
	// The store's operator edits sample 3 of shard 2 (sample 19).
	path, err := st.Path(sm.Shards[2].Digest)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	texts, err := dspub.DecodeShard(b)
	if err != nil {
		t.Fatal(err)
	}
	texts[3] += " (edited)"
	os.Chmod(path, 0o644)
	if err := os.WriteFile(path, dspub.EncodeShard(texts), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "out")
	err = FetchPublished(context.Background(), c, sm, dir)
	var se *dspub.ShardError
	if !errors.As(err, &se) || se.Shard != 2 || !se.HasSample || se.Sample != 19 {
		t.Fatalf("fetch of a tampered shard: %v; want shard 2, sample 19 named", err)
	}
	if !strings.Contains(err.Error(), "shard 2") || !strings.Contains(err.Error(), "sample 19") {
		t.Fatalf("error %q does not name shard 2 and sample 19", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a refused fetch wrote %s", dir)
	}
	// A reader of a range that does not touch shard 2 is not bothered;
	// one that does is refused.
	r, err := OpenPublished(context.Background(), c, sm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Range(context.Background(), 0, 16); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Range(context.Background(), 10, 20); !errors.As(err, &se) || se.Sample != 19 {
		t.Fatalf("range over the tampered shard: %v", err)
	}
}

// genSource serves a published dataset generated on the fly, so that the
// test itself holds no copy of it; with measure set it records the
// highest live heap (after a collection, every 4 MiB sent) while it
// streams.
type genSource struct {
	text    func(i int) string
	order   []int // leaf order -> sample
	shards  []dspub.Shard
	leaves  []byte
	ldg     string
	measure bool
	sent    int
	peak    uint64
}

func (g *genSource) shard(k int, w io.Writer) error {
	var buf []byte
	sh := g.shards[k]
	for j := sh.First; j < sh.First+sh.Samples; j++ {
		b, _ := json.Marshal(g.text(g.order[j]))
		buf = append(append(buf, b...), '\n')
		if len(buf) >= 64<<10 || j == sh.First+sh.Samples-1 {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			g.sent += len(buf)
			buf = buf[:0]
			if g.measure && g.sent >= 4<<20 {
				g.sent = 0
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				g.peak = max(g.peak, ms.HeapAlloc)
			}
		}
	}
	return nil
}

func (g *genSource) Download(ctx context.Context, dg string, w io.Writer) (int64, error) {
	if dg == g.ldg {
		n, err := w.Write(g.leaves)
		return int64(n), err
	}
	for k, sh := range g.shards {
		if sh.Digest == dg {
			cw := &countWriter{w: w}
			err := g.shard(k, cw)
			return cw.n, err
		}
	}
	return 0, fmt.Errorf("no blob %s", dg)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// TestFetchStreams: fetching a published dataset of 64 MiB keeps the live
// heap far below the dataset's size: each shard streams to disk as its
// samples check, one sample at a time.
func TestFetchStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 64 MiB")
	}
	const samples, size = 40000, 1600
	pad := strings.Repeat("abcdefghijklmnopqrstuvwxyz0123456789", size/36+1)
	text := func(i int) string { s := fmt.Sprintf("sample %08d ", i); return s + pad[i%36:i%36+size-len(s)] }
	hs := make([][32]byte, samples)
	for i := range hs {
		hs[i] = sha256.Sum256([]byte(text(i)))
	}
	order := make([]int, samples)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return bytes.Compare(hs[order[a]][:], hs[order[b]][:]) < 0 })
	leaves := make([][32]byte, samples)
	for j, i := range order {
		leaves[j] = hs[i]
	}
	hs = nil
	g := &genSource{text: text, order: order, leaves: dspub.EncodeLeaves(leaves)}
	g.ldg = digest.Bytes(g.leaves)
	const per = 500
	for first := 0; first < samples; first += per {
		g.shards = append(g.shards, dspub.Shard{First: uint64(first), Samples: per, Bytes: per * size})
	}
	for k := range g.shards {
		h := sha256.New()
		if err := g.shard(k, h); err != nil {
			t.Fatal(err)
		}
		g.shards[k].Digest = hex.EncodeToString(h.Sum(nil))
	}
	seed := make([]byte, ed25519.SeedSize)
	key := ed25519.NewKeyFromSeed(seed)
	root := datasets.NewTree(leaves).Root()
	m := &dspub.Manifest{Version: dspub.Version, Name: "big", Format: dspub.FormatText, Licence: "CC0-1.0",
		Owner: ledger.KeyID(key.Public().(ed25519.PublicKey)), Samples: samples, Bytes: samples * size,
		Root: hex.EncodeToString(root[:]), Leaves: g.ldg, Shards: g.shards}
	sm, err := dspub.Sign(key, m)
	if err != nil {
		t.Fatal(err)
	}
	leaves = nil
	// The heap in use before the fetch (what earlier tests left live
	// included) is the baseline; the fetch's peak is measured above it.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	g.measure = true
	dir := filepath.Join(t.TempDir(), "out")
	if err := FetchPublished(context.Background(), g, sm, dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "data.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	g.peak -= min(g.peak, base)
	t.Logf("data.jsonl %d bytes; peak live heap while streaming %d bytes above the %d before", st.Size(), g.peak, base)
	if st.Size() < samples*size {
		t.Fatalf("data.jsonl holds %d bytes, want at least %d", st.Size(), samples*size)
	}
	if limit := uint64(samples * size / 4); g.peak > limit {
		t.Errorf("peak live heap %d bytes while fetching %d bytes of samples; want under %d (streamed, not held)", g.peak, samples*size, limit)
	}
	// A bad shard leaves no data.jsonl behind and names the shard.
	g.order[3*per+7], g.order[3*per+8] = g.order[3*per+8], g.order[3*per+7]
	dir2 := filepath.Join(t.TempDir(), "out")
	err = FetchPublished(context.Background(), g, sm, dir2)
	var se *dspub.ShardError
	if !errors.As(err, &se) || se.Shard != 3 || !strings.Contains(err.Error(), "shard 3") {
		t.Fatalf("fetch with shard 3 out of order: %v", err)
	}
	if _, err := os.Stat(dir2); !os.IsNotExist(err) {
		t.Fatalf("a refused fetch left %s", dir2)
	}
}

// endlessSource serves blobs from an inner source, except that shard k's
// download never ends: one line that never closes.
type endlessSource struct {
	inner BlobSource
	shard string
}

func (s *endlessSource) Download(ctx context.Context, dg string, w io.Writer) (int64, error) {
	if dg != s.shard {
		return s.inner.Download(ctx, dg, w)
	}
	line := []byte("\"" + strings.Repeat("a", 4096))
	var n int64
	for {
		k, err := w.Write(line)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
}

// TestFetchEndlessShard: a store that streams a shard without end (one
// line that never closes, so no sample can be checked) is cut off once the
// shard passes what its samples can encode to; the error names the shard
// and nothing is written.
func TestFetchEndlessShard(t *testing.T) {
	c, _ := publishedStore(t)
	sm, _ := publishedFixture(t, c)
	src := &endlessSource{inner: c, shard: sm.Shards[1].Digest}
	dir := filepath.Join(t.TempDir(), "out")
	done := make(chan error, 1)
	go func() { done <- FetchPublished(context.Background(), src, sm, dir) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the fetch of an endless shard did not stop")
	}
	var se *dspub.ShardError
	if !errors.As(err, &se) || se.Shard != 1 || !strings.Contains(err.Error(), "shard 1") || !strings.Contains(err.Error(), "can encode to") {
		t.Fatalf("endless shard: %v; want shard 1 named", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a refused fetch left %s", dir)
	}
}
