package engine_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/engine/enginetest"
)

// TestHostConformance runs the device conformance suite on Host itself:
// Host against float64 loops and finite differences (and trivially against
// itself).
func TestHostConformance(t *testing.T) {
	enginetest.TestDevice(t, engine.NewHost)
}

// TestHostBadArguments checks that Host records an error, rather than
// panicking, for arguments the conformance suite does not try: nil,
// foreign and freed buffers, aliasing outputs, bad Gemm shapes, a closed
// device.
func TestHostBadArguments(t *testing.T) {
	h := engine.NewHost()
	other := engine.NewHost()
	a, b := h.Alloc(6), h.Alloc(6)
	foreign := other.Alloc(6)
	freed := h.Alloc(6)
	h.Free(freed)
	ids := h.AllocInt(2)
	cases := []struct {
		name, want string
		op         func()
	}{
		{"nil buffer", "x is nil", func() { h.Axpy(a, 1, nil) }},
		{"foreign buffer", "not allocated by this host device", func() { h.Mul(a, foreign, b) }},
		{"freed buffer", "was freed", func() { h.Copy(a, freed) }},
		{"negative Alloc", "negative length", func() { h.Alloc(-1) }},
		{"aliased RMSNorm", "y must not alias x", func() { h.RMSNorm(a, h.Alloc(3), a, h.Alloc(2), 3, 2, 1e-5) }},
		{"aliased Gemm", "C must not alias", func() { h.MatMul(engine.Gemm{M: 2, N: 3, K: 2, A: a, B: b, C: a}) }},
		{"small LDA", "LDA 1 < 2", func() { h.MatMul(engine.Gemm{M: 2, N: 2, K: 2, LDA: 1, A: a, B: b, C: h.Alloc(4)}) }},
		{"negative M", "negative size", func() { h.MatMul(engine.Gemm{M: -1, N: 2, K: 2, A: a, B: b, C: h.Alloc(4)}) }},
		{"odd head dim", "head dimension 3 is odd", func() { h.RoPE(a, h.Alloc(3), h.Alloc(3), 2, 1, 3, 1, false) }},
		{"zero rows", "must be positive", func() { h.CausalSoftmax(a, b, 0, 6) }},
		{"Embed bad table", "not a positive multiple of d = 4", func() { h.Embed(h.Alloc(8), a, ids, 4) }},
		{"CrossEntropy targets", "targets has 2 elements, want rows = 3", func() { h.CrossEntropy(h.Alloc(3), a, b, ids, 3, 2, 1) }},
		{"AdamW shared buffers", "four distinct buffers", func() { h.AdamW(a, b, b, h.Alloc(6), engine.AdamW{}) }},
		{"WriteInt too long", "do not fit", func() { h.WriteInt(ids, []int32{1, 2, 3}) }},
	}
	for _, c := range cases {
		c.op()
		err := h.Sync()
		if err == nil || !errors.Is(err, engine.ErrDevice) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Sync = %v, want ErrDevice containing %q", c.name, err, c.want)
		}
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h.Zero(a)
	if err := h.Sync(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("operation after Close: %v", err)
	}
}
