//go:build !linux

package safetensors

import (
	"errors"
	"os"
)

func mmapFile(*os.File, int) ([]byte, error) {
	return nil, errors.New("memory-mapping is only used on Linux")
}

func munmap([]byte) error { return nil }

func adviseDontNeed([]byte, int64, int64) {}
