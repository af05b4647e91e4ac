package artifact

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// visible lists the blob files and temporary files under dir.
func visible(t *testing.T, dir string) (blobs, temps []string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case strings.HasPrefix(rel, "blobs"+string(filepath.Separator)):
			blobs = append(blobs, rel)
		case strings.HasPrefix(rel, "tmp"), strings.HasPrefix(rel, "uploads"):
			temps = append(temps, rel)
		}
		return nil
	})
	return blobs, temps
}

func TestStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{0, 1, copyBufSize - 1, copyBufSize, 3*copyBufSize + 17} {
		dir := t.TempDir()
		s := openStore(t, dir)
		data := randBytes(uint64(n), n)
		d, size, err := s.Put(ctx, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if d != DigestOf(data) || size != int64(n) {
			t.Fatalf("Put = %s, %d; want %s, %d", d, size, DigestOf(data), n)
		}
		wantPath := filepath.Join(dir, "blobs", d[:2], d)
		if p, _ := s.Path(d); p != wantPath {
			t.Fatalf("Path = %s, want %s", p, wantPath)
		}
		f, err := s.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(f)
		f.Close()
		if !bytes.Equal(got, data) {
			t.Fatalf("Open returned %d bytes differing from the %d put", len(got), n)
		}
		if info, err := s.Stat(d); err != nil || info.Size != int64(n) || info.Digest != d {
			t.Fatalf("Stat = %+v, %v", info, err)
		}
		if ok, err := s.Has(d); !ok || err != nil {
			t.Fatalf("Has = %v, %v", ok, err)
		}
		if err := s.Verify(ctx, d); err != nil {
			t.Fatal(err)
		}
		// Putting it again keeps one copy; PutExpect with the right digest works.
		if _, err := s.PutExpect(ctx, d, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if l, err := s.List(); err != nil || len(l) != 1 || l[0].Digest != d {
			t.Fatalf("List = %+v, %v", l, err)
		}
		if _, temps := visible(t, dir); len(temps) != 0 {
			t.Fatalf("temporary files left: %v", temps)
		}
		if err := s.Delete(d); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.Has(d); ok {
			t.Fatal("Has after Delete")
		}
		if err := s.Delete(d); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second Delete: %v, want ErrNotFound", err)
		}
		if _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Open after Delete: %v, want ErrNotFound", err)
		}
	}
}

func TestStoreMismatchKeepsNothing(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	data := randBytes(1, 1<<20)
	wrong := DigestOf([]byte("something else"))
	_, err := s.PutExpect(context.Background(), wrong, bytes.NewReader(data))
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), DigestOf(data)) {
		t.Fatalf("PutExpect with a wrong digest: %v; want ErrDigestMismatch naming the real digest", err)
	}
	blobs, temps := visible(t, dir)
	if len(blobs)+len(temps) != 0 {
		t.Fatalf("kept after mismatch: blobs %v, temps %v", blobs, temps)
	}
}

func TestStoreBadDigests(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	for _, bad := range []string{"", "abc", "../../etc/passwd", strings.Repeat("Z", 64), strings.ToUpper(DigestOf(nil))} {
		checks := map[string]error{}
		_, checks["Open"] = s.Open(bad)
		_, checks["Stat"] = s.Stat(bad)
		_, checks["Has"] = s.Has(bad)
		checks["Delete"] = s.Delete(bad)
		checks["Verify"] = s.Verify(ctx, bad)
		_, checks["PutExpect"] = s.PutExpect(ctx, bad, strings.NewReader("x"))
		_, checks["ResumePartial"] = s.ResumePartial(ctx, bad)
		_, checks["Path"] = s.Path(bad)
		for op, err := range checks {
			if !errors.Is(err, ErrBadDigest) {
				t.Errorf("%s(%q) = %v; want ErrBadDigest", op, bad, err)
			}
		}
	}
}

func TestStoreConcurrentWritersOneDigest(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	data := randBytes(7, 2*copyBufSize+5)
	want := DigestOf(data)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var err error
			if i%2 == 0 {
				var d string
				d, _, err = s.Put(context.Background(), bytes.NewReader(data))
				if err == nil && d != want {
					err = errors.New("wrong digest " + d)
				}
			} else {
				_, err = s.PutExpect(context.Background(), want, bytes.NewReader(data))
			}
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	blobs, temps := visible(t, dir)
	if len(blobs) != 1 || len(temps) != 0 {
		t.Fatalf("blobs %v, temps %v; want one blob, no temps", blobs, temps)
	}
	if err := s.Verify(context.Background(), want); err != nil {
		t.Fatal(err)
	}
}

func TestStoreCrashMidWrite(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	data := randBytes(3, 100000)
	d := DigestOf(data)
	// A writer that died mid-Put leaves a temp file in tmp/; one that died
	// mid-commit leaves its file there too. Neither is a visible blob.
	for _, name := range []string{"put-123", "commit-" + d} {
		if err := os.WriteFile(filepath.Join(dir, "tmp", name), data[:5000], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A partial upload of a blob we do not have is kept to resume; one of a
	// blob we have, and junk, are not.
	other := randBytes(4, 1000)
	os.WriteFile(filepath.Join(dir, "uploads", DigestOf(other)), other[:10], 0o644)
	os.WriteFile(filepath.Join(dir, "uploads", "junk"), nil, 0o644)
	if ok, _ := s.Has(d); ok {
		t.Fatal("an abandoned temp file is visible as a blob")
	}
	if l, _ := s.List(); len(l) != 0 {
		t.Fatalf("List shows %v", l)
	}
	if _, _, err := s.Put(context.Background(), bytes.NewReader(other)); err != nil {
		t.Fatal(err)
	}

	if _, err := OpenStore(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second OpenStore while open: %v; want ErrLocked", err)
	}
	s.Close()
	s2 := openStore(t, dir)
	_, temps := visible(t, dir)
	if len(temps) != 0 {
		t.Fatalf("reopen left %v", temps)
	}
	if ok, _ := s2.Has(d); ok {
		t.Fatal("abandoned blob became visible after reopen")
	}
	if err := s2.Verify(context.Background(), DigestOf(other)); err != nil {
		t.Fatal(err)
	}
}

func TestStoreVerifyDetectsCorruption(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	d, _, err := s.Put(context.Background(), strings.NewReader("weights"))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := s.Path(d)
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, []byte("weightz"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(context.Background(), d); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify of a corrupted blob: %v; want ErrCorrupt", err)
	}
}

func TestPartialResumeAcrossReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	data := randBytes(9, 3*copyBufSize+11)
	d := DigestOf(data)
	p, err := s.ResumePartial(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	p.Write(data[:400000])
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir)
	if n, _ := s.PartialSize(d); n != 400000 {
		t.Fatalf("PartialSize after reopen = %d, want 400000", n)
	}
	p, err = s.ResumePartial(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if p.Offset() != 400000 {
		t.Fatalf("Offset = %d", p.Offset())
	}
	p.Write(data[400000:])
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, temps := visible(t, dir); len(temps) != 0 {
		t.Fatalf("left %v", temps)
	}

	// A partial whose bytes do not match is removed on Commit.
	wrong := DigestOf([]byte("nope"))
	p, _ = s.ResumePartial(ctx, wrong)
	p.Write(data[:10])
	if _, err := p.Commit(); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Commit of wrong bytes: %v", err)
	}
	if n, _ := s.PartialSize(wrong); n != 0 {
		t.Fatal("mismatched partial kept")
	}
}

func TestPartialIsExclusive(t *testing.T) {
	s := openStore(t, t.TempDir())
	d := DigestOf([]byte("x"))
	p, err := s.ResumePartial(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.ResumePartial(ctx, d); !errors.Is(err, context.Canceled) {
		t.Fatalf("second ResumePartial while held: %v; want to wait until ctx is done", err)
	}
	p.Close()
	p2, err := s.ResumePartial(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	p2.Abort()
}

func TestPruneUploads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	old, fresh, open := DigestOf([]byte("old")), DigestOf([]byte("fresh")), DigestOf([]byte("open"))
	for _, d := range []string{old, fresh} {
		p, err := s.ResumePartial(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		p.Write([]byte("xx"))
		p.Close()
	}
	held, err := s.ResumePartial(ctx, open)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	long := time.Now().Add(-48 * time.Hour)
	for _, d := range []string{old, open} {
		os.Chtimes(filepath.Join(dir, "uploads", d), long, long)
	}
	n, err := s.PruneUploads(24 * time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("PruneUploads = %d, %v; want 1 (the old, closed one)", n, err)
	}
	for d, want := range map[string]int64{old: 0, fresh: 2, open: 0} {
		if got, _ := s.PartialSize(d); got != want {
			t.Errorf("PartialSize(%s) = %d, want %d", d[:8], got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "uploads", open)); err != nil {
		t.Errorf("the open partial was pruned: %v", err)
	}
}
