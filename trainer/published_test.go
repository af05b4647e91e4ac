package trainer

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/tlsid"
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
