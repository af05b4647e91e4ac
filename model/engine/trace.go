package engine

import (
	"encoding/binary"
	"math"

	"github.com/fedtune/fedtune/internal/digest"
)

// Phases of a training step's operations, in the order they run.
const (
	PhaseForward  = "forward"  // the model's forward pass, layer by layer
	PhaseLoss     = "loss"     // cross-entropy: per-row losses, then dlogits
	PhaseBackward = "backward" // the input gradient of each block, top layer first
	PhaseGradient = "gradient" // each trainable tensor's gradient (backward order: top layer first)
	PhaseClip     = "clip"     // the global-norm clipping scale
	PhaseUpdate   = "update"   // AdamW's update of each trainable tensor, in update order
)

// TraceOp is one operation of a training step as a Trace sees it: the
// digest of its output after it ran.
type TraceOp struct {
	// Step is the step (1-based) the operation belongs to.
	Step  int    `json:"step"`
	Phase string `json:"phase"`
	// Layer is the decoder layer the operation belongs to, −1 for the
	// embedding, the final norm, the head and the loss.
	Layer int `json:"layer"`
	// Name names the operation ("input_norm", "q_proj", "attention",
	// "down_proj+residual", "lm_head", "cross_entropy", …) or, in the
	// gradient and update phases, the trainable tensor (its HF or PEFT
	// name).
	Name string `json:"name"`
	// Digest is the SHA-256 of the output's float32 values, little
	// endian, in the buffer's order: for an update, the same bytes as the
	// tensor's data in a canonical F32 safetensors checkpoint, so the
	// digest of a checkpointed tensor compares with it directly.
	Digest string `json:"digest"`
}

// Trace receives every traced operation of a step, in the order they run.
type Trace func(TraceOp)

// SetTrace makes every later step call fn with the digest of each
// operation's output (nil, the default, traces nothing and costs nothing
// but a nil check per operation). Tracing reads buffers back and digests
// them; it changes no value: a traced step gives the same bits as an
// untraced one.
func (t *Trainer) SetTrace(fn Trace) { t.trace = fn }

// TensorDigest returns the digest a TraceOp gives to float32 values v.
func TensorDigest(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return digest.Bytes(b)
}

// traced reports the output b of an operation to the trace, if any.
func (t *Trainer) traced(phase string, layer int, name string, b Buffer) {
	if t.trace == nil || b == nil {
		return
	}
	if cap(t.traceBuf) < b.Len() {
		t.traceBuf = make([]float32, b.Len())
	}
	v := t.traceBuf[:b.Len()]
	t.dev.Read(v, b, 0)
	if t.dev.Sync() != nil {
		return // the step reports the device's error
	}
	t.traceValues(phase, layer, name, v)
}

// traceValues reports host values v as an operation's output.
func (t *Trainer) traceValues(phase string, layer int, name string, v []float32) {
	if t.trace == nil {
		return
	}
	t.trace(TraceOp{Step: t.step + 1, Phase: phase, Layer: layer, Name: name, Digest: TensorDigest(v)})
}

// paramLayer returns the decoder layer a trainable tensor belongs to (−1
// for none).
func paramLayer(name string) int {
	const marker = "layers."
	for i := 0; i+len(marker) <= len(name); i++ {
		if name[i:i+len(marker)] != marker {
			continue
		}
		n, j := 0, i+len(marker)
		for ; j < len(name) && name[j] >= '0' && name[j] <= '9'; j++ {
			n = n*10 + int(name[j]-'0')
		}
		if j > i+len(marker) && j < len(name) && name[j] == '.' {
			return n
		}
	}
	return -1
}

// FirstDifference returns the index of the first operation at which two
// traces of the same step differ (another operation, or another digest of
// its output), and false when they are the same. A trace that ends early
// differs at its end. Comparing a replay's trace with one from another
// device or build names the first operation whose result differs: every
// later one may differ because of it.
func FirstDifference(a, b []TraceOp) (int, bool) {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i, true
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b)), true
	}
	return 0, false
}
