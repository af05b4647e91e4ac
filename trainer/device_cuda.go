//go:build fedcuda || fedcudaemu

package trainer

import (
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/engine/cudadev"
)

// In -tags fedcuda builds DeviceCUDA trains on GPU 0 (on the emulated GPU
// under -tags fedcudaemu, for tests).
func init() {
	engineDevices[DeviceCUDA] = func() (engine.Device, error) { return cudadev.Open(0) }
}
