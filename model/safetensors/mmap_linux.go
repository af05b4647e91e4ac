//go:build linux

package safetensors

import (
	"os"

	"golang.org/x/sys/unix"
)

func mmapFile(fh *os.File, size int) ([]byte, error) {
	return unix.Mmap(int(fh.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
}

func munmap(b []byte) error { return unix.Munmap(b) }

var pageSize = int64(os.Getpagesize())

// adviseDontNeed drops the whole pages of b inside [lo, hi) from the
// resident set. Inner rounding leaves neighbouring bytes mapped; the end of
// the mapping counts as a page boundary.
func adviseDontNeed(b []byte, lo, hi int64) {
	lo = (lo + pageSize - 1) / pageSize * pageSize
	if hi != int64(len(b)) {
		hi = hi / pageSize * pageSize
	}
	if lo < hi {
		_ = unix.Madvise(b[lo:hi], unix.MADV_DONTNEED)
	}
}
