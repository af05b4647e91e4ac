//go:build fedcuda || fedcudaemu

package cli

import "github.com/fedtune/fedtune/model/engine/cudadev"

// In builds with CUDA, serve --device cuda[:N] and audit receipt --replay
// --device cuda[:N] run the engine on GPU N (on the CPU emulation of GPU 0
// under -tags fedcudaemu).
func init() { openCUDA = cudadev.Open }
