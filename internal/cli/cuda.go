//go:build fedcuda

package cli

// Built with the tag fedcuda, the binary has the GPU: kernels/cuda registers
// the "cuda" kernels backend (fedtune aggregate --backend cuda).
import _ "github.com/fedtune/fedtune/kernels/cuda"
