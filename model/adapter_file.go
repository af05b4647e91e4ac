package model

import (
	"fmt"
	"slices"
	"strings"

	"github.com/fedtune/fedtune/model/safetensors"
)

// ReadAdapterFile reads an adapter's weights alone (a safetensors file in
// PEFT's tensor names, as a federated job's global adapter is stored) as an
// Adapter of shape lc. Tensors must be of a float type; their shapes are
// checked against a base model when the adapter is merged or applied.
func ReadAdapterFile(path string, lc LoRAConfig) (*Adapter, error) {
	if err := lc.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := notDelta(path, f); err != nil {
		return nil, err
	}
	ad := &Adapter{Config: lc, Tensors: map[string]*Tensor{}}
	for _, ti := range f.Tensors() {
		if !ti.DType.IsFloat() {
			return nil, fmt.Errorf("%s: tensor %q: dtype %s is not a float type: %w", path, ti.Name, ti.DType, ErrAdapter)
		}
		name := strings.Replace(strings.Replace(ti.Name, ".lora_A.default.", ".lora_A.", 1), ".lora_B.default.", ".lora_B.", 1)
		data, err := f.Float32s(ti.Name)
		if err != nil {
			return nil, err
		}
		ad.Tensors[name] = &Tensor{Shape: slices.Clone(ti.Shape), Data: data}
	}
	return ad, nil
}
