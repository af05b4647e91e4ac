package cli

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/trainer"
)

// openCUDA opens GPU ordinal as an engine device; serve_cuda.go sets it in
// builds with CUDA (-tags fedcuda, or fedcudaemu: the CPU emulation).
var openCUDA func(ordinal int) (engine.Device, error)

// serveDevice is the engine device a served model (or a replay) runs on:
// --device host (also cpu, the default) or cuda[:N].
type serveDevice struct {
	name string                        // as given, for messages
	open func() (engine.Device, error) // nil: the Host
}

// deviceHelp describes --device for serve and audit receipt --replay.
const deviceHelp = "engine device: host (the CPU, default) or cuda[:N] (GPU N, default 0; binaries built with -tags fedcuda)"

// parseDevice reads a --device value: "host", "cpu", "cuda" or "cuda:N".
// cuda in a binary built without CUDA is an error wrapping
// trainer.ErrNoCUDA.
func parseDevice(s string) (serveDevice, error) {
	switch s {
	case "", "host", "cpu":
		return serveDevice{name: "host"}, nil
	}
	rest, ok := strings.CutPrefix(s, "cuda")
	if !ok || (rest != "" && !strings.HasPrefix(rest, ":")) {
		return serveDevice{}, fmt.Errorf("--device %q: want host, cpu, cuda or cuda:N", s)
	}
	ordinal := 0
	if rest != "" {
		n, err := strconv.Atoi(rest[1:])
		if err != nil || n < 0 {
			return serveDevice{}, fmt.Errorf("--device %q: the GPU number %q is not a non-negative integer", s, rest[1:])
		}
		ordinal = n
	}
	if openCUDA == nil {
		return serveDevice{}, fmt.Errorf("--device %s: %w", s, trainer.ErrNoCUDA)
	}
	return serveDevice{name: s, open: func() (engine.Device, error) { return openCUDA(ordinal) }}, nil
}

// openDevice opens the device (a fresh Host when none was chosen).
func (sd serveDevice) openDevice() (engine.Device, error) {
	if sd.open == nil {
		return engine.NewHost(), nil
	}
	dev, err := sd.open()
	if err != nil {
		return nil, fmt.Errorf("--device %s: %w", sd.name, err)
	}
	return dev, nil
}

// loadModel is inference.LoadModelWith on a device of its own, opened for
// the model and closed with its Generator.
func (sd serveDevice) loadModel(dir, adapterDir, id string, slots int, opts inference.LoadOptions) (*inference.Model, error) {
	dev, err := sd.openDevice()
	if err != nil {
		return nil, err
	}
	m, err := inference.LoadModelWith(dir, adapterDir, id, dev, slots, opts)
	if err != nil {
		return nil, errors.Join(err, dev.Close())
	}
	m.Gen = deviceGenerator{m.Gen, dev}
	return m, nil
}

// deviceGenerator is a Generator that owns its device: Close frees the
// generator, then closes the device.
type deviceGenerator struct {
	inference.Generator
	dev engine.Device
}

// Close implements inference.Generator.
func (g deviceGenerator) Close() error { return errors.Join(g.Generator.Close(), g.dev.Close()) }
