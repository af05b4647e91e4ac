package fedtest

import (
	"io"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// CrashFS is a crashable in-memory filesystem (vfs.NewCrashableMem) that
// may be crash-cloned while a store writes to it from other goroutines.
//
// pebble v2.1.7's MemFS.ReuseForWrite takes the clone lock for reading
// and then, through Rename, takes it for reading again; Link and Lock do
// the same. A CrashClone that starts waiting for the lock between the two
// blocks the second read lock, and both wait forever (sync.RWMutex read
// locks must not be taken recursively). Pebble reuses WAL files whenever
// it rotates its WAL, so a test that crash-clones a live store can hang:
// ours did, in CI. Upstream fixed it after v2.1.7 (cockroachdb/pebble#5993).
// CrashFS serializes those three methods with CrashClone; every other
// operation goes straight to the MemFS.
type CrashFS struct {
	*vfs.MemFS
	// reuse is held by ReuseForWrite, Link and Lock (for reading) and by
	// CrashClone (for writing), so a clone never waits between their two
	// read locks.
	reuse *sync.RWMutex
}

// NewCrashFS returns an empty CrashFS.
func NewCrashFS() *CrashFS {
	return &CrashFS{MemFS: vfs.NewCrashableMem(), reuse: new(sync.RWMutex)}
}

// Link implements vfs.FS.
func (fs *CrashFS) Link(oldname, newname string) error {
	fs.reuse.RLock()
	defer fs.reuse.RUnlock()
	return fs.MemFS.Link(oldname, newname)
}

// Lock implements vfs.FS.
func (fs *CrashFS) Lock(name string) (io.Closer, error) {
	fs.reuse.RLock()
	defer fs.reuse.RUnlock()
	return fs.MemFS.Lock(name)
}

// ReuseForWrite implements vfs.FS.
func (fs *CrashFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	fs.reuse.RLock()
	defer fs.reuse.RUnlock()
	return fs.MemFS.ReuseForWrite(oldname, newname, category)
}

// CrashClone returns the filesystem as a crash would leave it: what was
// synced, plus the share of what was not that cfg asks for. The clone is
// a CrashFS too.
func (fs *CrashFS) CrashClone(cfg vfs.CrashCloneCfg) *CrashFS {
	fs.reuse.Lock()
	defer fs.reuse.Unlock()
	return &CrashFS{MemFS: fs.MemFS.CrashClone(cfg), reuse: new(sync.RWMutex)}
}
