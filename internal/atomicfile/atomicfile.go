// Package atomicfile owns fedtune's one way to replace a file: the new
// contents go to a temporary file in the same directory, which is synced,
// renamed over the target, and the directory synced, so a crash leaves the
// old file or the new one and never a half-written one.
//
// It is built on github.com/google/renameio/v2 and imports nothing of
// fedtune's.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
)

// Write replaces path with data, created with perm.
func Write(path string, data []byte, perm fs.FileMode) error {
	return WriteFunc(path, perm, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// WriteFunc replaces path with what fill writes to the temporary file. When
// fill fails, the temporary file is removed and path is left as it was.
func WriteFunc(path string, perm fs.FileMode, fill func(f *os.File) error) error {
	dir := filepath.Dir(path)
	pf, err := renameio.NewPendingFile(path, renameio.WithTempDir(dir), renameio.WithPermissions(perm))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer pf.Cleanup() //nolint:errcheck // a no-op after CloseAtomicallyReplace
	if err := fill(pf.File); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := pf.CloseAtomicallyReplace(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
