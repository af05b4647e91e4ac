package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/trainer"
)

// TestTrainerDeviceFlag: trainer init --device writes the device into the
// config, trainer join --device overrides it, and a device the binary
// lacks is refused with a message that says what to do.
func TestTrainerDeviceFlag(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "d.txt")
	if err := os.WriteFile(data, []byte("some local text\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	initArgs := func(dir, dev string) []string {
		return []string{"trainer", "init", "--dir", dir, "--data", data, "--coordinator", "127.0.0.1:1",
			"--ledger", "127.0.0.1:2", "--insecure", "--device", dev}
	}
	dir := filepath.Join(t.TempDir(), "t")
	var out, errb bytes.Buffer
	if err := RunWith(ctx, initArgs(dir, "host"), &out, &errb); err != nil {
		t.Fatalf("init --device host: %v\n%s", err, errb.String())
	}
	cfg, err := trainer.LoadConfig(filepath.Join(dir, "trainer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Device != trainer.DeviceHost {
		t.Errorf("config device %q, want host", cfg.Device)
	}

	for _, tc := range []struct {
		dev, want string
	}{
		{"tpu", `unknown device "tpu"`},
		{"cuda", "rebuild with -tags fedcuda"},
	} {
		if tc.dev == trainer.DeviceCUDA && trainer.ValidateDevice(tc.dev) == nil {
			continue // a fedcuda binary has it
		}
		err := RunWith(ctx, initArgs(filepath.Join(t.TempDir(), "x"), tc.dev), &out, &errb)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("init --device %s: %v, want an error containing %q", tc.dev, err, tc.want)
		}
		err = RunWith(ctx, []string{"trainer", "join", "--config", filepath.Join(dir, "trainer.yaml"), "--device", tc.dev}, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), "--device") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("join --device %s: %v, want an error naming --device and containing %q", tc.dev, err, tc.want)
		}
	}
}
