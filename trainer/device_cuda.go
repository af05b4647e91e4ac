//go:build fedcuda

package trainer

import (
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/engine/cudadev"
)

// In -tags cuda builds DeviceCUDA trains on GPU 0.
func init() {
	engineDevices[DeviceCUDA] = func() (engine.Device, error) { return cudadev.Open(0) }
}
