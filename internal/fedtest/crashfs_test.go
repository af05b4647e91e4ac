package fedtest

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestCrashFSCloneDuringReuse crash-clones while another goroutine reuses
// files for writing, as pebble does when it rotates its WAL. On a bare
// vfs.MemFS this deadlocks within milliseconds (see CrashFS).
func TestCrashFSCloneDuringReuse(t *testing.T) {
	fs := NewCrashFS()
	f, err := fs.Create("a", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("wal")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Error(err)
		}
	}
	must(f.Close())
	dir, err := fs.OpenDir("")
	if err != nil {
		t.Fatal(err)
	}
	must(dir.Sync())
	must(dir.Close())

	var reuses atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		names := [2]string{"a", "b"}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			g, err := fs.ReuseForWrite(names[i%2], names[(i+1)%2], vfs.WriteCategoryUnspecified)
			if err != nil {
				t.Error(err)
				return
			}
			must(g.Close())
			reuses.Add(1)
		}
	}()
	defer func() { close(stop); <-done }()
	clones := 0
	// At least 300ms and 100 reuses; a deadlock shows as a test timeout,
	// too few reuses after a minute as a failure.
	soft, hard := time.Now().Add(300*time.Millisecond), time.Now().Add(time.Minute)
	for ; time.Now().Before(soft) || reuses.Load() < 100; clones++ {
		select {
		case <-done:
			t.Fatalf("the reusing goroutine stopped after %d reuses", reuses.Load())
		default:
		}
		if time.Now().After(hard) {
			t.Fatalf("only %d reuses in a minute", reuses.Load())
		}
		c := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
		if names, err := c.List(""); err != nil || len(names) != 1 {
			t.Fatalf("clone %d holds %q (%v), want one file", clones, names, err)
		}
	}
	t.Logf("%d clones during %d reuses", clones, reuses.Load())
}
