package enginetest_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/engine/enginetest"
)

// TestHost runs the suite on the Host device.
func TestHost(t *testing.T) {
	enginetest.TestDevice(t, engine.NewHost)
}

// mutants are Host devices with one operation subtly wrong, and the
// subtest of the suite that must catch each.
var mutants = map[string]struct {
	dev     func() engine.Device
	subtest string
}{
	"gemm-ignores-beta":      {func() engine.Device { return gemmNoBeta{engine.NewHost()} }, "MatMul"},
	"embed-skips-id-check":   {func() engine.Device { return embedNoCheck{engine.NewHost()} }, "Errors"},
	"rmsnorm-dw-scaled":      {func() engine.Device { return rmsDW{engine.NewHost()} }, "RMSNorm"},
	"rope-inverse-ignored":   {func() engine.Device { return ropeNoInverse{engine.NewHost()} }, "RoPE"},
	"merge-ignores-repeat":   {func() engine.Device { return mergeNoRepeat{engine.NewHost()} }, "Heads"},
	"softmax-backward-bias":  {func() engine.Device { return softmaxBias{engine.NewHost()} }, "CausalSoftmax"},
	"cross-entropy-unscaled": {func() engine.Device { return ceUnscaled{engine.NewHost()} }, "CrossEntropy"},
	"adamw-no-bc2":           {func() engine.Device { return adamNoBC2{engine.NewHost()} }, "AdamW"},
}

// TestMutant runs the suite on the mutant named by $ENGINETEST_MUTANT (it
// is run, and expected to fail, by TestSuiteCatchesMutants).
func TestMutant(t *testing.T) {
	m, ok := mutants[os.Getenv("ENGINETEST_MUTANT")]
	if !ok {
		t.Skip("run by TestSuiteCatchesMutants")
	}
	enginetest.TestDevice(t, m.dev)
}

// TestSuiteCatchesMutants checks that the suite fails, in the right
// subtest, on each broken device.
func TestSuiteCatchesMutants(t *testing.T) {
	for name, m := range mutants {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMutant$", "-test.v")
		cmd.Env = append(os.Environ(), "ENGINETEST_MUTANT="+name)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s: the suite passed a broken device", name)
			continue
		}
		if !strings.Contains(string(out), "--- FAIL: TestMutant/"+m.subtest+" ") {
			t.Errorf("%s: subtest %s did not fail; output:\n%s", name, m.subtest, out)
		}
	}
}

type gemmNoBeta struct{ engine.Device }

func (d gemmNoBeta) MatMul(g engine.Gemm) {
	if g.Beta != 0 {
		g.Beta = 1
	}
	d.Device.MatMul(g)
}

type embedNoCheck struct{ engine.Device }

func (d embedNoCheck) Embed(out, table engine.Buffer, ids engine.IntBuffer, dim int) {}

type rmsDW struct{ engine.Device }

func (d rmsDW) RMSNormBackward(dx, dw, dy, x, w, rstd engine.Buffer, rows, dim int) {
	d.Device.RMSNormBackward(dx, dw, dy, x, w, rstd, rows, dim)
	if dw != nil {
		d.Device.Axpy(dw, 0.005, w)
	}
}

type ropeNoInverse struct{ engine.Device }

func (d ropeNoInverse) RoPE(x, cos, sin engine.Buffer, rows, heads, hd, T int, inverse bool) {
	d.Device.RoPE(x, cos, sin, rows, heads, hd, T, false)
}

type mergeNoRepeat struct{ engine.Device }

func (d mergeNoRepeat) MergeHeads(dst, src engine.Buffer, B, T, heads, hd, repeat int) {
	if repeat == 1 {
		d.Device.MergeHeads(dst, src, B, T, heads, hd, 1)
		return
	}
	tmp := d.Device.Alloc(src.Len() / repeat)
	d.Device.MergeHeads(tmp, src, B, T, heads*repeat, hd, 1) // wrong layout
	d.Device.Copy(dst, tmp)
	d.Device.Free(tmp)
}

type softmaxBias struct{ engine.Device }

func (d softmaxBias) CausalSoftmaxBackward(ds, p, dp engine.Buffer, rows, T int) {
	d.Device.CausalSoftmaxBackward(ds, p, dp, rows, T)
	d.Device.Axpy(ds, 0.002, p)
}

type ceUnscaled struct{ engine.Device }

func (d ceUnscaled) CrossEntropy(loss, dlogits, logits engine.Buffer, targets engine.IntBuffer, rows, V int, scale float32) {
	d.Device.CrossEntropy(loss, dlogits, logits, targets, rows, V, 1)
}

type adamNoBC2 struct{ engine.Device }

func (d adamNoBC2) AdamW(w, g, m, v engine.Buffer, p engine.AdamW) {
	p.BC2 = 1
	d.Device.AdamW(w, g, m, v, p)
}
