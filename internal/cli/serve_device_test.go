package cli

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/trainer"
)

// TestParseDevice: --device values, and what a binary without CUDA says
// to cuda (in builds with CUDA, cuda and cuda:N are accepted).
func TestParseDevice(t *testing.T) {
	for _, tc := range []struct {
		in, name, err string
	}{
		{"", "host", ""},
		{"host", "host", ""},
		{"cpu", "host", ""},
		{"gpu", "", `--device "gpu": want host, cpu, cuda or cuda:N`},
		{"cudax", "", `--device "cudax": want host`},
		{"cuda:", "", `the GPU number "" is not a non-negative integer`},
		{"cuda:-1", "", `the GPU number "-1"`},
		{"cuda:one", "", `the GPU number "one"`},
	} {
		sd, err := parseDevice(tc.in)
		switch {
		case tc.err == "" && (err != nil || sd.name != tc.name || sd.open != nil):
			t.Errorf("parseDevice(%q) = %+v, %v; want the Host", tc.in, sd, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseDevice(%q): error %v, want one containing %q", tc.in, err, tc.err)
		}
	}
	for _, in := range []string{"cuda", "cuda:0", "cuda:3"} {
		sd, err := parseDevice(in)
		if openCUDA == nil {
			if !errors.Is(err, trainer.ErrNoCUDA) || !strings.Contains(err.Error(), "built without CUDA support") {
				t.Errorf("parseDevice(%q) without CUDA: %v, want trainer.ErrNoCUDA", in, err)
			}
			continue
		}
		if err != nil || sd.name != in || sd.open == nil {
			t.Errorf("parseDevice(%q) = %+v, %v", in, sd, err)
		}
	}
}

// TestServeDeviceErrors: serve and audit receipt refuse a device they
// cannot use before loading anything, saying why.
func TestServeDeviceErrors(t *testing.T) {
	dir := t.TempDir()
	mdir := filepath.Join(dir, "m")
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny.yaml", "--seed", "4", "-o", mdir)
	cases := [][2]string{
		{"serve --device tpu", "serve: --device \"tpu\": want host, cpu, cuda or cuda:N"},
		{"audit receipt --device cuda", "--model, --adapter and --device are for --replay"},
	}
	if openCUDA == nil {
		cases = append(cases, [2]string{"serve --device cuda", "serve: --device cuda: this binary was built without CUDA support; rebuild with -tags fedcuda"})
	}
	for _, tc := range cases {
		args := strings.Fields(tc[0])
		if args[0] == "serve" {
			args = append(args, "--model", mdir, "--addr", "127.0.0.1:0")
		} else {
			args = append(args, filepath.Join(dir, "none.json"))
		}
		_, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), tc[1]) {
			t.Errorf("fedtune %s: %v, want an error containing %q", tc[0], err, tc[1])
		}
	}
}
