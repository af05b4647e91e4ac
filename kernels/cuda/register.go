//go:build fedcuda

package cuda

import (
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/fedtune/fedtune/kernels"
)

// The "cuda" kernels backend exists only in the GPU build: the CPU
// emulation (tag fedcudaemu alone) is for this package's tests and must not
// pass for a GPU in the registry.

// processBackend is the Backend kernels.Open("cuda") returns: GPU
// $FEDTUNE_CUDA_DEVICE (default 0), opened once per process.
var processBackend = sync.OnceValues(func() (*Backend, error) {
	ordinal := 0
	if s := os.Getenv("FEDTUNE_CUDA_DEVICE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("cuda: FEDTUNE_CUDA_DEVICE=%q: want a GPU number >= 0", s)
		}
		ordinal = n
	}
	return OpenBackend(ordinal)
})

func init() {
	kernels.Register("cuda", func() (kernels.Backend, error) {
		b, err := processBackend()
		if err != nil {
			return nil, err
		}
		return b, nil
	})
}
