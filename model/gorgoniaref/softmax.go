package gorgoniaref

import (
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Softmax in the graph is built from Exp, Sum and a division after
// subtracting each row's maximum, not with G.SoftMax / G.LogSoftMax:
// gorgonia.org/tensor v0.9.24 starts every row's running maximum at the
// tensor's first element (xArr[0]) instead of the row's own, so a row
// whose values lie more than about 88 above, or 100 below, that element
// overflows or underflows float32 exp and comes out NaN or ±Inf. Training
// reached that state within a few dozen LoRA steps at lr 2e-2.

// rowMaxOp computes the maximum of each row of a matrix as an [n, 1]
// column. It has no gradient: it is only used as a constant shift before a
// softmax, which does not change the softmax or its gradient.
type rowMaxOp struct{}

var _ G.SDOp = rowMaxOp{}

func (rowMaxOp) Arity() int { return 1 }

func (rowMaxOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	t := G.TensorType{Dims: 2, Of: a}
	return hm.NewFnType(t, t)
}

func (rowMaxOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	if len(in) != 1 {
		return nil, fmt.Errorf("rowmax: want 1 input, got %d", len(in))
	}
	n, err := in[0].DimSize(0)
	if err != nil {
		return nil, err
	}
	return tensor.Shape{n, 1}, nil
}

func (rowMaxOp) Do(in ...G.Value) (G.Value, error) {
	if len(in) != 1 {
		return nil, fmt.Errorf("rowmax: want 1 input, got %d", len(in))
	}
	t, ok := in[0].(tensor.Tensor)
	if !ok || t.Dims() != 2 {
		return nil, fmt.Errorf("rowmax: want a matrix, got %v", in[0])
	}
	n, m := t.Shape()[0], t.Shape()[1]
	switch d := t.Data().(type) {
	case []float32:
		out := make([]float32, n)
		for i := range out {
			mx := float32(math.Inf(-1))
			for _, v := range d[i*m : (i+1)*m] {
				mx = max(mx, v)
			}
			out[i] = mx
		}
		return tensor.New(tensor.WithShape(n, 1), tensor.WithBacking(out)), nil
	case []float64:
		out := make([]float64, n)
		for i := range out {
			mx := math.Inf(-1)
			for _, v := range d[i*m : (i+1)*m] {
				mx = max(mx, v)
			}
			out[i] = mx
		}
		return tensor.New(tensor.WithShape(n, 1), tensor.WithBacking(out)), nil
	}
	return nil, fmt.Errorf("rowmax: unsupported dtype %v", t.Dtype())
}

func (rowMaxOp) ReturnsPtr() bool      { return false }
func (rowMaxOp) CallsExtern() bool     { return false }
func (rowMaxOp) OverwritesInput() int  { return -1 }
func (rowMaxOp) WriteHash(h hash.Hash) { fmt.Fprint(h, "fedtune.RowMax") }
func (rowMaxOp) String() string        { return "RowMax" }

func (op rowMaxOp) Hashcode() uint32 {
	h := fnv.New32a()
	op.WriteHash(h)
	return h.Sum32()
}

func (rowMaxOp) DiffWRT(int) []bool { return []bool{false} }

func (rowMaxOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, errors.New("rowmax has no gradient")
}

// shiftRows returns x [n, m] minus each row's maximum (a constant).
func shiftRows(x *G.Node) (*G.Node, error) {
	mx, err := G.ApplyOp(rowMaxOp{}, x)
	if err != nil {
		return nil, err
	}
	return G.BroadcastSub(x, mx, nil, []byte{1})
}

// stableSoftMax returns the softmax of each row of x [n, m].
func stableSoftMax(x *G.Node) (*G.Node, error) {
	s, err := shiftRows(x)
	if err != nil {
		return nil, err
	}
	e, err := G.Exp(s)
	if err != nil {
		return nil, err
	}
	z, err := rowSum(e)
	if err != nil {
		return nil, err
	}
	return G.BroadcastHadamardDiv(e, z, nil, []byte{1})
}

// stableLogSoftMax returns the log-softmax of each row of x [n, m].
func stableLogSoftMax(x *G.Node) (*G.Node, error) {
	s, err := shiftRows(x)
	if err != nil {
		return nil, err
	}
	e, err := G.Exp(s)
	if err != nil {
		return nil, err
	}
	z, err := rowSum(e)
	if err != nil {
		return nil, err
	}
	lz, err := G.Log(z)
	if err != nil {
		return nil, err
	}
	return G.BroadcastSub(s, lz, nil, []byte{1})
}

// rowSum returns the sum of each row of x [n, m] as an [n, 1] column.
func rowSum(x *G.Node) (*G.Node, error) {
	s, err := G.Sum(x, 1)
	if err != nil {
		return nil, err
	}
	return G.Reshape(s, tensor.Shape{x.Shape()[0], 1})
}
