package node

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/kernels"
)

func TestParseConfig(t *testing.T) {
	const good = "listen: 127.0.0.1:0\nkey: a.key\nledger: 127.0.0.1:7101\ncoordinator: 127.0.0.1:7400\ncoordinator_id: abc\n"
	for _, tc := range []struct{ name, yaml, wantErr string }{
		{"good", good, ""},
		{"insecure needs no coordinator_id", "key: a\nledger: l:1\ncoordinator: c:1\ninsecure: true\n", ""},
		{"unknown key", good + "colour: red\n", `aggregator.yaml:6: unknown key "colour"`},
		{"missing", "listen: ''\n", "listen: required; key: required; ledger: required; coordinator: required; coordinator_id: required over TLS"},
		{"not a map", "- a\n", "cannot unmarshal"},
		{"reference backend", good + "backend: reference\n", ""},
		{"unknown backend", good + "backend: tpu\n", `backend: kernels: unknown backend "tpu" (have cpu, reference`},
		{"ledger pinned", good + "ledger_genesis: genesis.yaml\nledger_node_ids: ['" + strings.Repeat("ab", 32) + "']\n", ""},
		{"ledger node IDs without genesis", good + "ledger_node_ids: ['" + strings.Repeat("ab", 32) + "']\n", "ledger_node_ids: needs ledger_genesis"},
		{"ledger node ID bad", good + "ledger_genesis: g.yaml\nledger_node_ids: [NODE]\n", `ledger_node_ids: "NODE" is not a ledger key ID`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig("aggregator.yaml", []byte(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.DataDir != "aggregator" {
					t.Errorf("defaults not filled: %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v, want ErrConfig containing %q", err, tc.wantErr)
			}
		})
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "a.yaml")
	if err := os.WriteFile(p, []byte(good+"ledger_genesis: genesis.yaml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range []string{c.Key, c.DataDir, c.LedgerGenesis} {
		if !strings.HasPrefix(got, dir) {
			t.Errorf("path %s not resolved against %s", got, dir)
		}
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); !errors.Is(err, ErrConfig) {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("listen: 127.0.0.1:0\nkey: k\nledger: l:1\ncoordinator: c:1\ncoordinator_id: x\n"))
	f.Add([]byte("insecure: yes\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz", data)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
			return
		}
		if err := c.Validate(); err != nil && !errors.Is(err, ErrConfig) {
			t.Fatalf("error %v does not wrap ErrConfig", err)
		}
	})
}

// A binary built without CUDA refuses backend: cuda at validation, naming
// the build tag that adds it.
func TestConfigCUDABackendWithoutTag(t *testing.T) {
	if slices.Contains(kernels.Backends(), "cuda") {
		t.Skip("this binary has the cuda backend")
	}
	_, err := ParseConfig("aggregator.yaml", []byte("key: a\nledger: l:1\ncoordinator: c:1\ninsecure: true\nbackend: cuda\n"))
	if err == nil || !strings.Contains(err.Error(), "rebuild with -tags fedcuda") {
		t.Fatalf("ParseConfig: %v, want the build tag named", err)
	}
}

// LoadConfig validates after its edits: a file without coordinator_id
// loads only when an edit (the command line's --insecure) makes it
// insecure, and the error names the file and the field.
func TestLoadConfigEditThenValidate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.yaml")
	if err := os.WriteFile(p, []byte("key: a.key\nledger: l:1\ncoordinator: c:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), p+": ") || !strings.Contains(err.Error(), "coordinator_id: required over TLS") {
		t.Fatalf("LoadConfig without coordinator_id: %v", err)
	}
	c, err := LoadConfig(p, func(c *Config) { c.Insecure = true })
	if err != nil || !c.Insecure {
		t.Fatalf("LoadConfig with the insecure edit: %+v, %v", c, err)
	}
}
