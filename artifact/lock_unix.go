//go:build unix

package artifact

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive, non-blocking flock on f. Closing f releases it.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
